"""Image + mask -> tensors for the segmenter, and the label-balanced patch sampler.

Preprocessing (the same in training and inference): optional resampling to the preset's spacing
(trilinear for images, nearest for masks), then a per-volume z-score. Arrays stay in NIfTI (i, j, k) order,
so a label map goes back onto the image grid without any axis juggling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.data.resample import STD_FLOOR
from kneeoa.errors import InputError


def target_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float] | None) -> tuple[int, ...]:
    """Grid size after resampling `shape` at `spacing` to `target` spacing (None: unchanged)."""
    if target is None:
        return tuple(int(n) for n in shape)
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resample(array: Any, shape: Sequence[int], is_label: bool = False) -> Any:
    """(C, i, j, k) tensor -> the same on grid `shape` (nearest for labels, trilinear otherwise)."""
    import torch.nn.functional as F

    if tuple(array.shape[1:]) == tuple(shape):
        return array
    x = array[None].float()
    if is_label:
        return F.interpolate(x, size=tuple(shape), mode="nearest")[0].to(array.dtype)
    return F.interpolate(x, size=tuple(shape), mode="trilinear", align_corners=False)[0]


def zscore(x: Any) -> Any:
    """The segmenter's z-score: the grading floor (STD_FLOOR), but torch's sample std (what the bundled
    segmenter was trained with; kneeoa.data.preprocess.zscore uses the population std)."""
    std = x.std()
    return (x - x.mean()) / max(float(std), STD_FLOOR)


def prepare_image(volume: Any, spacing_mm: Sequence[float] | None) -> Any:
    """Volume -> (1, i, j, k) float32 tensor, resampled to `spacing_mm` and z-scored."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))[None]
    x = resample(x, target_shape(volume.shape, volume.spacing_mm, spacing_mm))
    return zscore(x)


def read_reference_mask(path: str | Path, image: Any) -> np.ndarray:
    """A mask file checked against the image's grid and the OAI-ZIB-CM labels (InputError otherwise)."""
    from kneeoa.contracts.vocab import MASK_LABELS
    from kneeoa.data.volume import check_labels, check_same_grid, read_volume

    mask = read_volume(path, is_label=True)
    check_same_grid(image, mask)  # overlap voxel by voxel only makes sense on the image's own grid
    check_labels(mask, MASK_LABELS)
    return np.asarray(mask.array)


def load_pair(case: Any, spacing_mm: Sequence[float] | None) -> dict:
    """{'image', 'label'} tensors of a case with a mask (mask checked against the image's grid and labels)."""
    import torch

    from kneeoa.data.volume import read_volume

    if case.mask is None:
        raise InputError("case has no mask; a segmenter trains on cases with reference masks", case.image)
    image = read_volume(case.image)
    mask = read_reference_mask(case.mask, image)  # on the image's grid (checked), so resampled like it
    label = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None]
    label = resample(label, target_shape(image.shape, image.spacing_mm, spacing_mm), is_label=True)
    return {"image": prepare_image(image, spacing_mm), "label": label.long(), "case_id": case.case_id}


def training_transform(cfg: dict) -> Any:
    """Random crops centred on labels with the preset's class ratios (MONAI), plus intensity jitter.

    No flips: mirroring left-right turns a right knee into a left one, which is valid anatomy but doubles
    what the network must tell apart; which plate is medial is settled by the knee side where it is known
    (`postprocess.plates_by_knee_side`).
    """
    from monai import transforms as T

    return T.Compose([
        T.SpatialPadd(keys=["image", "label"], spatial_size=cfg["patch"]),
        T.RandCropByLabelClassesd(keys=["image", "label"], label_key="label", spatial_size=cfg["patch"],
                                  ratios=list(cfg["class_ratios"]), num_classes=6,
                                  num_samples=int(cfg["samples_per_volume"])),
        T.RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        T.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
    ])


class PairDataset:
    """Preprocessed (image, label) pairs kept in memory (cache_rate 1) or read per access (0)."""

    def __init__(self, cases: list, spacing_mm: Sequence[float] | None, cache: bool):
        self.cases = list(cases)
        self.spacing_mm = spacing_mm
        self._cache = [load_pair(c, spacing_mm) for c in self.cases] if cache else None

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        if self._cache is not None:
            return self._cache[index]
        return load_pair(self.cases[index], self.spacing_mm)


class CropDataset:
    """Wraps a PairDataset: every item is a list of `samples_per_volume` label-balanced crops."""

    def __init__(self, pairs: PairDataset, transform: Any):
        self.pairs = pairs
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> list[dict]:
        item = self.pairs[index]
        crops = self.transform({"image": item["image"], "label": item["label"]})
        return [{"image": c["image"].as_tensor() if hasattr(c["image"], "as_tensor") else c["image"],
                 "label": c["label"].as_tensor() if hasattr(c["label"], "as_tensor") else c["label"]}
                for c in crops]


def collate_crops(batch: list[list[dict]]) -> dict:
    """Flatten the per-volume crop lists into one batch (module level: worker processes pickle it)."""
    import torch

    crops = [c for item in batch for c in item]
    return {"image": torch.stack([c["image"] for c in crops]), "label": torch.stack([c["label"] for c in crops])}
