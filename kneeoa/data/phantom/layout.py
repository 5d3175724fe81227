"""Where a phantom cohort puts its cases: the OAI-ZIB-CM / nnU-Net style names and folders.

Its own module so the cohort writer and the preview (which the writer calls) both read it without importing
each other.
"""

from __future__ import annotations

from pathlib import Path

SPLIT_DIRS = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}


def case_id(case_number: int) -> str:
    """OAI-ZIB-CM case id, e.g. `oaizib_007`."""
    return f"oaizib_{case_number:03d}"


def case_paths(out_dir: Path, split: str, case_number: int) -> tuple[Path, Path]:
    """(image, mask) paths of a case in the nnU-Net style layout."""
    images, labels = SPLIT_DIRS[split]
    cid = case_id(case_number)
    return out_dir / images / f"{cid}_0000.nii.gz", out_dir / labels / f"{cid}.nii.gz"
