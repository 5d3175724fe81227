"""The one case-id rule: a file name -> the id that every table, mask and map of that case uses.

`imagesTs/oaizib_161_0000.nii.gz` -> `oaizib_161`: the volume extension goes, and so does nnU-Net's channel
tag `_0000` (OAI-ZIB-CM images carry it, its masks and subject tables do not). Score, saliency, segment,
predict and the labels tables all call `case_id_from_name`, so one case has one id in every output and
the files join (e.g. `oaizib_161_saliency.nii.gz` next to `labelsTs/oaizib_161.nii.gz`).
Standard library only (the Slicer modules read it before torch exists).
"""

from __future__ import annotations

from pathlib import PurePath

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
# nnU-Net names image files <case>_<channel:04d>; KneeOA's volumes are single-channel, so only channel 0
# is a tag (a case really called `knee_0012` keeps its digits).
NNUNET_CHANNEL = "_0000"
SALIENCY_SUFFIX = "_saliency.nii.gz"


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
