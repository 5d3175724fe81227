"""The one case-id rule: a file name -> the id that every table, mask and map of that case uses.

`imagesTs/oaizib_161_0000.nii.gz` -> `oaizib_161`: the volume extension goes, and so does nnU-Net's channel
tag `_0000` (OAI-ZIB-CM images carry it, its masks and subject tables do not). Score, saliency, segment,
predict and the labels tables all call `case_id_from_name`, so one case has one id in every output and
the files join (e.g. `oaizib_161_saliency.nii.gz` next to `labelsTs/oaizib_161.nii.gz`). The one subject
rule, `subject_of`, groups a subject's knees (CV folds, the calibration hold-out).
Standard library only (the Slicer modules read it before torch exists).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
# nnU-Net names image files <case>_<channel:04d>; KneeOA's volumes are single-channel, so only channel 0
# is a tag (a case really called `knee_0012` keeps its digits).
NNUNET_CHANNEL = "_0000"
SALIENCY_SUFFIX = "_saliency.nii.gz"
SUBJECT_COLUMN = "SubjectID"  # OAI-ZIB-CM subject tables (and the phantom's): a person, one or two knees


def volume_suffix(name: str | PurePath) -> str:
    """The volume extension of `name` ('.nii.gz', '.nrrd', ...; matched case-insensitively) or ''."""
    lower = PurePath(name).name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    return ""


def volume_stem(name: str | PurePath) -> str:
    """The file name without its volume extension (`case_1.nii.gz` -> `case_1`); a folder keeps its name."""
    base = PurePath(name).name
    suffix = volume_suffix(base)
    return base[: len(base) - len(suffix)] if suffix else base


def case_id_from_name(name: str | PurePath) -> str:
    """`oaizib_161_0000.nii.gz`, `oaizib_161.nii.gz`, `oaizib_161_0000` -> `oaizib_161` (folders: their name)."""
    stem = volume_stem(name)
    return stem[: -len(NNUNET_CHANNEL)] if stem.endswith(NNUNET_CHANNEL) and stem != NNUNET_CHANNEL else stem


def saliency_map_name(case_id: str, head: str | None = None) -> str:
    """The file name of a case's saliency map: `<case_id>_saliency.nii.gz` (score, saliency, study), or
    `<case_id>_saliency_<head>.nii.gz` when both heads of a Dual model are explained."""
    return f"{case_id}{SALIENCY_SUFFIX}" if head is None else f"{case_id}_saliency_{head}.nii.gz"


def subject_of(case: Any) -> str:
    """The subject a knee (a `Case`) belongs to: its table's `SubjectID`, else the knee itself (one knee,
    one subject). Both of a subject's knees (the phantom's `--bilateral`, OAI's left and right) get one id,
    so the CV folds and the calibration hold-out never split them. A number is one id however the table
    stored it: 9000099 (xlsx integer), 9000099.0 (xlsx float) and " 9000099" (CSV text) are one subject."""
    value = (getattr(case, "extra", None) or {}).get(SUBJECT_COLUMN)
    text = "" if value is None else str(value).strip()
    if not text:
        return str(case.case_id)
    try:
        return str(int(text))  # exact for any length of digits
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text  # nan/inf are not integers: kept as written
