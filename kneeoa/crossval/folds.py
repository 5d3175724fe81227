"""Subject-grouped, KL-stratified folds over all graded knees, and one cohort view per fold.

The fold table (STUDY/folds.csv) is written once and reused on every resume, so an interrupted study
never trains a run on a different split. A fold's cohort view (STUDY/folds/fold<k>/) is an OAI-ZIB-CM
folder whose imagesTs/ holds fold k and imagesTr/ the other folds, as links to the original files, so
every run is a plain `kneeoa train` + `kneeoa predict` on it and any engine can run it.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from kneeoa.contracts.case_ids import subject_of  # the one subject rule (also the calibration hold-out's)
from kneeoa.contracts.studies import FOLD_COLUMNS, FOLD_TABLE, fold_dir
from kneeoa.errors import ConfigError, InputError


def assign_folds(cases: list, k: int, seed: int = 0) -> dict[str, int]:
    """case_id -> fold in 0..k-1: scikit-learn's StratifiedGroupKFold on KL grade, grouped by subject."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    groups = [subject_of(c) for c in cases]
    if k < 2:
        raise ConfigError(f"--folds must be at least 2, got {k}")
    if len(set(groups)) < k:
        raise ConfigError(f"{len(set(groups))} subjects cannot fill {k} folds (need at least one subject per fold)")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds: dict[str, int] = {}
    with warnings.catch_warnings():
        # a KL grade with fewer knees than folds: sklearn warns; the folds are still subject-grouped
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(cases)), [c.kl for c in cases], groups)):
            for i in test_idx:
                folds[cases[i].case_id] = fold
    return folds


def fold_rows(cases: list, folds: dict[str, int]) -> list[dict]:
    return [{"case_id": c.case_id, "CMT-ID": c.cmt_id, "subject": subject_of(c), "KLGrade": c.kl,
             "fold": folds[c.case_id]} for c in cases]


def load_or_make_folds(study: Path, cohort, k: int, seed: int = 0) -> dict[str, int]:
    """The study's fold table: read it when present (and check it matches the cohort), else make and write it."""
    from kneeoa.data.tables import read_table, write_table

    cases = cohort.split("all")  # every graded knee, whatever its official split
    path = study / FOLD_TABLE
    if path.is_file():
        rows = read_table(path)
        folds = {str(r["case_id"]): int(float(r["fold"])) for r in rows}
        if set(folds) != {c.case_id for c in cases}:
            raise ConfigError("the fold table lists other knees than the cohort holds; use a new --out", path)
        if len(set(folds.values())) != k:
            raise ConfigError(f"the fold table has {len(set(folds.values()))} folds, not --folds {k}; "
                              "use a new --out", path)
        return folds
    folds = assign_folds(cases, k, seed)
    write_table(path, fold_rows(cases, folds), FOLD_COLUMNS)
    return folds


def write_fold_views(study: Path, cohort, folds: dict[str, int]) -> list[Path]:
    """STUDY/folds/fold<k>/ for every fold (OAI-ZIB-CM layout, links to the originals); returns the roots."""
    if cohort.kind != "oaizib":
        raise InputError("the cv protocol reads OAI-ZIB-CM layout cohorts (kneeoa phantom writes one)", cohort.root)
    by_id = {c.case_id: c for c in cohort.split("all")}
    roots = []
    for fold in sorted(set(folds.values())):
        root = study / "folds" / fold_dir(fold)
        members = {"train": [], "test": []}
        for cid, f in sorted(folds.items()):
            members["test" if f == fold else "train"].append(by_id[cid])
        _write_view(root, members)
        roots.append(root)
    return roots


def _write_view(root: Path, members: dict[str, list]) -> None:
    from kneeoa.data.oaizib import FOLDERS, KNEE_SIDE_FILE
    from kneeoa.data.tables import write_table
    from kneeoa.utils.atomic import atomic_write_text

    sides = []
    for split, cases in members.items():
        image_dir, mask_dir, stem = FOLDERS[split]
        for case in cases:
            _link(case.image, root / image_dir / case.image.name)
            if case.mask is not None:
                _link(case.mask, root / mask_dir / case.mask.name)
            if case.extra.get("knee_side"):
                sides.append(f"{case.case_id}.nii.gz,{case.extra['knee_side']}\n")
        extra = list(dict.fromkeys(k for c in cases for k in c.extra if k != "knee_side"))
        rows = [{"CMT-ID": c.cmt_id, "KLGrade": c.kl, **{k: c.extra.get(k) for k in extra}} for c in cases]
        write_table(root / f"{stem}.csv", rows, ["CMT-ID", "KLGrade", *extra])
    if sides:
        atomic_write_text(root / KNEE_SIDE_FILE, "".join(sorted(sides)))


def _link(source: Path, dest: Path) -> None:
    """A symbolic link to the original (a copy where links are not allowed); an existing one is kept."""
    if dest.is_symlink() or dest.exists():
        if dest.resolve() == source.resolve():
            return
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source.resolve(), dest)
    except OSError:  # e.g. Windows without the symlink privilege
        shutil.copy2(source, dest)
