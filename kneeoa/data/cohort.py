"""Cohorts: a list of cases (image, optional mask, KL grade, split) read from a folder.

`load_cohort(root)` reads the OAI-ZIB-CM layout when it finds it (see `kneeoa.data.oaizib`), else a
generic folder of volumes (see `kneeoa.data.folder`). Cases without a KL grade are kept (they can
still be scored) but listed in `Cohort.ungraded`, reported, and left out of supervised splits.
"""

from __future__ import annotations

from pathlib import Path

from kneeoa.data import folder, oaizib
from kneeoa.data.case import (  # noqa: F401  (the cohort API: one import for callers)
    SPLITS,
    Case,
    Cohort,
    CohortWarning,
    check_unique_ids,
    format_summary,
    report_ungraded,
    volume_shape,
    warn,
)
from kneeoa.errors import InputError


def load_cohort(root: str | Path, labels: str | Path | None = None) -> Cohort:
    """Read a cohort folder: OAI-ZIB-CM layout if detected, else a generic folder of volumes."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("cohort folder not found" if not root.exists() else "cohort path is not a folder", root)
    if oaizib.is_oaizib(root):
        if labels is not None:
            raise InputError("an OAI-ZIB-CM folder takes its labels from subInfo_*.xlsx; do not pass labels=",
                             Path(labels))
        return oaizib.read_oaizib(root)
    return folder.read_folder(root, labels=labels)
