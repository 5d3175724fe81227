"""Generic cohort folder: any folder of volumes, optional masks matched by name, optional labels table.

- Images: `*.nii`, `*.nii.gz`, `*.nrrd`, `*.nhdr`, `*.mha`, `*.mhd` directly in the folder, and
  sub-folders holding a DICOM series. Case id = file name without its suffix (or the folder name), and
  without nnU-Net's channel tag: `oaizib_161_0000.nii.gz` is case `oaizib_161` (kneeoa.contracts.case_ids).
- Masks: `masks/<id>.*` or `labels/<id>.*`, or a sibling `<name>_mask.*` / `<name>_seg.*`.
- Labels: a table (`labels=`, or `labels.csv` / `labels.xlsx` in the folder) with an id column
  (case_id, case, id, subject or image) and a KL column (kl, kl_grade, klgrade); optional `split`
  column (train/test). Without one, graded cases are 'train' and ungraded ones 'unlabelled'.
"""

from __future__ import annotations

from pathlib import Path

from kneeoa.contracts.case_ids import case_id_from_name
from kneeoa.data.case import Case, Cohort, check_unique_ids, report_ungraded, warn
from kneeoa.data.tables import read_table
from kneeoa.data.volume import volume_stem, volume_suffix
from kneeoa.errors import InputError
from kneeoa.hierarchy import validate_kl

MASK_FOLDERS = ("masks", "labels")
MASK_SUFFIXES = ("_mask", "_seg")
ID_COLUMNS = ("case_id", "case", "id", "subject", "image")
KL_COLUMNS = ("kl", "kl_grade", "klgrade")


def _is_dicom_folder(folder: Path, probe: int = 5) -> bool:
    """True if one of the first files has the DICOM preamble ('DICM' at byte 128)."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")][:probe]
    for path in files:
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                return True
    return False


def _find_images(root: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if path.name in MASK_FOLDERS or not _is_dicom_folder(path):
                continue
            cid = case_id_from_name(path.name)
        elif volume_suffix(path) and not volume_stem(path).endswith(MASK_SUFFIXES):
            cid = case_id_from_name(path)
        else:
            continue
        if cid in images:
            raise InputError(f"duplicate case id {cid!r}: {images[cid].name} and {path.name}", root)
        images[cid] = path
    return images


def _mask_listing(root: Path) -> dict[tuple[str, str], list[Path]]:
    """(folder, stem) -> volume files in masks/, labels/ and the root ('' = root), each folder listed once.

    Matching n cases against this index is O(n); listing the folder per case was O(n^2) (minutes at 2,000 cases).
    """
    listing: dict[tuple[str, str], list[Path]] = {}
    for sub in (*MASK_FOLDERS, ""):
        folder = root / sub if sub else root
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if volume_suffix(p):
                    listing.setdefault((sub, volume_stem(p)), []).append(folder / p.name)
    return listing


def _find_mask(root: Path, cid: str, listing: dict[tuple[str, str], list[Path]] | None = None,
               image: Path | None = None) -> Path | None:
    listing = _mask_listing(root) if listing is None else listing
    # the case id, and the image's own stem (`x_0000` for an nnU-Net image) for sibling masks named after it
    names = {cid, volume_stem(image)} if image is not None else {cid}
    candidates = [p for sub in MASK_FOLDERS for p in sorted(q for n in names for q in listing.get((sub, n), []))]
    candidates += sorted(q for n in names for s in MASK_SUFFIXES for q in listing.get(("", f"{n}{s}"), []))
    if len(candidates) > 1:
        raise InputError(f"several masks match case {cid!r}: {', '.join(str(c) for c in candidates)}", root)
    return candidates[0] if candidates else None


def _pick_column(header: list[str], choices: tuple[str, ...], what: str, table: Path) -> str:
    by_lower = {h.lower().replace("-", "_").replace(" ", "_"): h for h in header}
    for choice in choices:
        if choice in by_lower:
            return by_lower[choice]
    raise InputError(f"missing {what} column (one of {', '.join(choices)}; found: {', '.join(header)})", table)


def _read_labels(table: Path, images: dict[str, Path]) -> dict[str, tuple[int | None, str | None, dict]]:
    rows = read_table(table)
    if not rows:
        raise InputError("labels table has a header but no rows", table)
    header = list(rows[0])
    id_col = _pick_column(header, ID_COLUMNS, "case id", table)
    kl_col = _pick_column(header, KL_COLUMNS, "KL grade", table)
    split_col = next((h for h in header if h.lower() == "split"), None)
    labels: dict[str, tuple[int | None, str | None, dict]] = {}
    for line, row in enumerate(rows, start=2):
        raw_id = row[id_col]
        if raw_id is None:
            raise InputError(f"row {line}: empty case id", table)
        cid = case_id_from_name(str(raw_id).strip())  # accept file names as ids (the one case-id rule)
        if isinstance(raw_id, float) and raw_id.is_integer():
            cid = str(int(raw_id))
        if cid in labels:
            raise InputError(f"row {line}: case id {cid!r} appears twice", table)
        try:
            kl = validate_kl(row[kl_col])
        except ValueError as err:
            raise InputError(f"row {line} (case {cid}): {err}", table) from None
        split = None if split_col is None or row[split_col] is None else str(row[split_col]).strip().lower()
        if split not in (None, "train", "test"):
            raise InputError(f"row {line} (case {cid}): split {row[split_col]!r} is not train or test", table)
        labels[cid] = (kl, split, {k: v for k, v in row.items() if k not in (id_col, kl_col, split_col)})
    missing = sorted(set(labels) - set(images))
    if missing:
        raise InputError(f"{len(missing)} table row(s) have no image in the folder: {', '.join(missing)}", table)
    return labels


def read_folder(root: str | Path, labels: str | Path | None = None) -> Cohort:
    """Read a generic cohort folder (see the module docstring for what is matched)."""
    root = Path(root)
    images = _find_images(root)
    if not images:
        raise InputError("no volumes found (.nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd files or DICOM sub-folders)", root)
    if labels is None:
        labels = next((root / n for n in ("labels.csv", "labels.xlsx") if (root / n).is_file()), None)
    table = _read_labels(Path(labels), images) if labels is not None else {}
    cases = []
    listing = _mask_listing(root)
    for cid, image in images.items():
        kl, split, extra = table.get(cid, (None, None, {}))
        if table and cid not in table:
            warn(f"{image}: no row in labels table {labels}; kept as ungraded")
        split = split or ("unlabelled" if kl is None else "train")
        cases.append(Case(cid, image, _find_mask(root, cid, listing, image), kl, split, None, extra))
    check_unique_ids(cases, root)
    # without any labels table nothing is "missing": list the cases as ungraded but do not warn
    ungraded = report_ungraded(cases, root) if table else [c.case_id for c in cases]
    return Cohort(root, "folder", cases, ungraded)
