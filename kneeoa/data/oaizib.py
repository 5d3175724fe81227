"""OAI-ZIB-CM reader (SPEC section 3): nnU-Net folders + subject tables, the official split by folder.

Layout: `imagesTr/oaizib_001_0000.nii.gz`, `labelsTr/oaizib_001.nii.gz`, `imagesTs/`, `labelsTs/`,
`subInfo_train.xlsx` / `subInfo_test.xlsx` (or .csv) with at least `CMT-ID` and `KLGrade`, and
`kneeSideInfo.csv` without header (`oaizib_001.nii.gz,right`). Case id `oaizib_%03d` = CMT-ID.

The paper's own folder is flat: `oaizib_001_0000_n4_z.nii.gz` (N4 + z-scored) for every knee in one
folder, split by the two subject tables. A folder with such files (or plain `oaizib_001_0000.nii.gz`) and
the subInfo tables, but no imagesTr/ or imagesTs/, is read that way; it has no masks.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from kneeoa.data.case import Case, Cohort, check_unique_ids, report_ungraded, warn
from kneeoa.data.tables import read_table, require_columns
from kneeoa.errors import InputError
from kneeoa.hierarchy import validate_kl

# split -> (image folder, mask folder, table stem); the folder is the official split
FOLDERS = {"train": ("imagesTr", "labelsTr", "subInfo_train"), "test": ("imagesTs", "labelsTs", "subInfo_test")}
REQUIRED_COLUMNS = ("CMT-ID", "KLGrade")
KNEE_SIDE_FILE = "kneeSideInfo.csv"
IMAGE_RE = re.compile(r"^oaizib_(\d+)_0000(_n4_z)?\.nii(\.gz)?$")  # _n4_z: the paper's preprocessed files
MASK_RE = re.compile(r"^oaizib_(\d+)\.nii(\.gz)?$")


def case_id(cmt_id: int) -> str:
    """OAI-ZIB-CM case id for a CMT-ID: 1 -> 'oaizib_001'."""
    return f"oaizib_{cmt_id:03d}"


def _table_path(root: Path, stem: str) -> Path | None:
    for suffix in (".xlsx", ".csv"):
        if (root / f"{stem}{suffix}").is_file():
            return root / f"{stem}{suffix}"
    return None


def is_oaizib(root: Path) -> bool:
    """True if `root` looks like OAI-ZIB-CM: an imagesTr/imagesTs folder or a subInfo table."""
    return any((root / img).is_dir() or _table_path(root, stem) for img, _, stem in FOLDERS.values())


def _files_by_id(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    """CMT-ID -> file for the files in `folder` named like `pattern`; others are reported and skipped."""
    found: dict[int, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        match = pattern.match(path.name)
        if not match:
            warn(f"{path}: not named like an OAI-ZIB-CM file ({pattern.pattern}); skipped")
            continue
        cmt = int(match.group(1))
        if cmt in found:
            raise InputError(f"two files for case {case_id(cmt)}: {found[cmt].name} and {path.name}", folder)
        found[cmt] = path
    return found


def _cmt_id(value, line: int, table: Path) -> int:
    try:
        f = float(value)
        if f != int(f) or f < 0:
            raise ValueError
        return int(f)
    except (TypeError, ValueError):
        raise InputError(f"row {line}: CMT-ID {value!r} is not a whole number", table) from None


def read_knee_sides(path: Path) -> dict[str, str]:
    """`kneeSideInfo.csv` (no header): case id -> 'left'/'right'."""
    sides: dict[str, str] = {}
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"unreadable knee side table: {err}", path) from None
    for line, row in enumerate(rows, start=1):
        row = [v.strip() for v in row if v.strip()]
        if not row:
            continue
        if len(row) != 2:
            raise InputError(f"row {line}: expected 2 values (file name, side), found {len(row)}: {row}", path)
        name, side = row
        match = MASK_RE.match(name) or IMAGE_RE.match(name)
        if not match or side.lower() not in ("left", "right"):
            raise InputError(f"row {line}: expected 'oaizib_NNN.nii.gz,left|right', found {','.join(row)!r}", path)
        sides[case_id(int(match.group(1)))] = side.lower()
    return sides


def flat_images(root: Path) -> dict[int, Path] | None:
    """CMT-ID -> image of the paper's flat layout (no imagesTr/ or imagesTs/), None for the nnU-Net layout."""
    if any((root / image_dir).is_dir() for image_dir, _, _ in FOLDERS.values()):
        return None
    found: dict[int, Path] = {}
    for path in sorted(root.iterdir()):
        match = IMAGE_RE.match(path.name)
        if match:
            cmt = int(match.group(1))
            if cmt in found:
                raise InputError(f"two files for case {case_id(cmt)}: {found[cmt].name} and {path.name}", root)
            found[cmt] = path
    return found or None


def _read_split(root: Path, split: str, seen: dict[int, str], sides: dict[str, str],
                flat: dict[int, Path] | None = None) -> list[Case]:
    image_dir, mask_dir, stem = FOLDERS[split]
    table = _table_path(root, stem)
    images = flat if flat is not None else _files_by_id(root / image_dir, IMAGE_RE)
    masks = {} if flat is not None else _files_by_id(root / mask_dir, MASK_RE)
    if flat is not None:
        image_dir = root.name  # messages name the flat folder itself
    if table is None:
        if images and flat is None:
            raise InputError(f"{len(images)} images in {image_dir}/ but no {stem}.xlsx (or .csv) table", root)
        return []
    rows = read_table(table)
    if not rows:
        raise InputError("table has a header but no rows", table)
    require_columns(rows, REQUIRED_COLUMNS, table)
    cases, missing = [], []
    for line, row in enumerate(rows, start=2):
        cmt = _cmt_id(row["CMT-ID"], line, table)
        if cmt in seen:
            raise InputError(f"row {line}: CMT-ID {cmt} appears twice (also in {seen[cmt]})", table)
        seen[cmt] = f"{table.name} row {line}"
        try:
            kl = validate_kl(row["KLGrade"])
        except ValueError as err:
            raise InputError(f"row {line} (CMT-ID {cmt}): {err}", table) from None
        if cmt not in images:
            missing.append(case_id(cmt))
            continue
        extra = {k: v for k, v in row.items() if k not in REQUIRED_COLUMNS}
        if case_id(cmt) in sides:
            extra["knee_side"] = sides[case_id(cmt)]
        cases.append(Case(case_id(cmt), images[cmt], masks.get(cmt), kl, split, cmt, extra))
    if missing:
        raise InputError(f"{len(missing)} table row(s) have no image in {image_dir}/: {', '.join(missing)}", table)
    listed = {c.cmt_id for c in cases}
    for cmt in sorted(set(images) - listed) if flat is None else ():  # flat: unlisted knees handled once, later
        if cmt in seen:
            raise InputError(f"{case_id(cmt)} has an image in {image_dir}/ but its row is in {seen[cmt]}", root)
        warn(f"{images[cmt]}: image has no row in {table.name}; kept as ungraded")
        cases.append(Case(case_id(cmt), images[cmt], masks.get(cmt), None, split, cmt, {}))
    for cmt in sorted(set(masks) - set(images)):
        warn(f"{masks[cmt]}: mask without an image; ignored")
    return sorted(cases, key=lambda c: c.cmt_id)


def read_oaizib(root: str | Path) -> Cohort:
    """Read an OAI-ZIB-CM folder (official split by folder); ungraded knees reported and listed."""
    root = Path(root)
    side_file = root / KNEE_SIDE_FILE
    sides = read_knee_sides(side_file) if side_file.is_file() else {}
    seen: dict[int, str] = {}
    flat = flat_images(root)
    cases = _read_split(root, "train", seen, sides, flat) + _read_split(root, "test", seen, sides, flat)
    if flat is not None:
        for cmt in sorted(set(flat) - {c.cmt_id for c in cases}):
            warn(f"{flat[cmt]}: image is in neither subject table; kept as ungraded")
            cases.append(Case(case_id(cmt), flat[cmt], None, None, "unlabelled", cmt, {}))
    if not cases:
        raise InputError("OAI-ZIB-CM folder holds no cases (imagesTr/ and imagesTs/ empty or missing)", root)
    check_unique_ids(cases, root)
    return Cohort(root, "oaizib", cases, report_ungraded(cases, root))
