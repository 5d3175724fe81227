"""Preprocessing to model space with MONAI transforms (the offline N4 step: `kneeoa.data.offline`; the cohort
Dataset: `kneeoa.data.dataset`).

`preprocess_volume`: orientation to RAS (axis flips/permutation only, MONAI `Orientation`), optional
resampling to `spacing_mm` (`Spacing`), z-score with a std floor of 1e-6 (as the paper), permutation
(i, j, k) -> model space (D, H, W) = (k, i, j), trilinear resize (align_corners=False) to `input_shape`.
Without a spacing it runs the same steps reordered for speed on the model's device (`kneeoa.data.resample`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneeoa.data.resample import STD_FLOOR  # one definition: the fast path and the MONAI path share it
from kneeoa.data.volume import Volume
from kneeoa.errors import InputError


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """(D, H, W) as three positive ints, else ValueError."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be three positive sizes (D, H, W), got {tuple(input_shape)}")
    return shape  # type: ignore[return-value]


# Why not MONAI's invertible transforms (Orientation -> Transpose -> Resize, undone with `Compose.inverse`)
# for `to_model_space` / `model_map_to_volume`: measured on an oblique 20x28x18 volume (MONAI 1.6), the chain
# does not reproduce our preprocessing (it resizes before the z-score, we z-score the full-resolution volume
# as the paper does: max |diff| 1.7 in z units), and its inverse of a (1, D, H, W) map came back in another
# axis order (28, 18, 20 instead of 20, 28, 18). The inverse also needs the forward pass's MetaTensor trace,
# which the fast path (`kneeoa.data.resample`) and a saliency map made from a plain tensor do not carry.
def to_model_space(array_ijk: Any) -> Any:
    """(..., i, j, k) -> (..., k, i, j) = (D, H, W); numpy arrays or torch tensors (the paper's permute)."""
    if isinstance(array_ijk, torch.Tensor):
        return array_ijk.movedim(-1, -3)
    return np.moveaxis(np.asarray(array_ijk), -1, -3)


def from_model_space(array_dhw: Any) -> Any:
    """(..., D, H, W) = (..., k, i, j) -> (..., i, j, k); inverse of `to_model_space`."""
    if isinstance(array_dhw, torch.Tensor):
        return array_dhw.movedim(-3, -1)
    return np.moveaxis(np.asarray(array_dhw), -3, -1)


def zscore(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / max(std, 1e-6) over the whole tensor (population std, as numpy's default)."""
    x = x.float()
    return (x - x.mean()) / torch.clamp(x.std(unbiased=False), min=STD_FLOOR)


def _oriented(volume: Volume, spacing_mm: Sequence[float] | None, reorient: str = "ras"):
    """MONAI MetaTensor (1, i, j, k) of the volume reoriented to RAS and optionally resampled."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    img = MetaTensor(torch.as_tensor(np.asarray(volume.array, dtype=np.float32))[None],
                     affine=torch.as_tensor(np.asarray(volume.affine, dtype=np.float64)))
    if reorient != "none":
        img = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(img)  # our affines are RAS
    if spacing_mm is not None:
        img = Spacing(pixdim=tuple(float(s) for s in spacing_mm), mode="bilinear", padding_mode="border")(img)
    return img


def preprocess_volume(volume: Volume, input_shape: Sequence[int], spacing_mm: Sequence[float] | None = None,
                      device: Any = "cpu", dtype: torch.dtype = torch.float32, reorient: str = "ras") -> torch.Tensor:
    """A Volume -> tensor (1, D, H, W) on `device` in model space, z-scored, resized to `input_shape`.

    Without `spacing_mm` this is the fast path (`kneeoa.data.resample`: resize before z-score, on the
    device); with it, MONAI's Spacing resamples first (`preprocess_volume_monai`). Both agree within float
    rounding (tested). `reorient="none"` keeps the file's voxel order (the paper's; see contracts.vocab.REORIENT).
    """
    shape = check_input_shape(input_shape)
    if spacing_mm is None:
        from kneeoa.data.resample import preprocess_array

        return _finite(preprocess_array(volume.array, volume.affine, shape, device, dtype, reorient), volume)
    return preprocess_volume_monai(volume, shape, spacing_mm, reorient).to(device=device, dtype=dtype)


def _finite(x: torch.Tensor, volume: Volume) -> torch.Tensor:
    return finite_input(x, volume.path)


def finite_input(x: torch.Tensor, path: str | Path | None) -> torch.Tensor:
    """Finite float32 voxels can still overflow the z-score (a sum of values near 3e38 is inf): never hand
    the model NaN, it would answer with a confident-looking grade.

    The float32 sum is checked, not every voxel (`isfinite(x).all()` costs ~50x more, measured): a NaN or
    Inf makes the sum non-finite, and a finite z-scored input cannot overflow it (|z| <= sqrt(voxels), and a
    resize only averages), so the test is exact."""
    if not bool(torch.isfinite(x.sum(dtype=torch.float32))):
        raise InputError("intensities overflow float32 when z-scored (NaN/Inf after normalisation)", path)
    return x


def preprocess_volume_monai(volume: Volume, input_shape: Sequence[int],
                            spacing_mm: Sequence[float] | None = None, reorient: str = "ras") -> torch.Tensor:
    """The MONAI path (Orientation, optional Spacing, z-score in full, permute, Resize) on the CPU, float32."""
    from monai.transforms import Resize

    shape = check_input_shape(input_shape)
    img = _oriented(volume, spacing_mm, reorient)
    x = zscore(img.as_tensor())
    x = to_model_space(x)  # (1, k, i, j)
    if tuple(x.shape[1:]) != shape:
        x = Resize(spatial_size=shape, mode="trilinear", align_corners=False)(x)
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
    return _finite(x.float().contiguous(), volume)


def model_map_to_volume(map_dhw: Any, volume: Volume, reorient: str = "ras") -> np.ndarray:
    """A model-space map (D, H, W) back onto `volume`'s original (i, j, k) grid: undo resize, permute, RAS.

    Trilinear; valid whether or not `preprocess_volume` resampled to a spacing (the extent is the same).
    A tensor is resampled on its own device (`kneeoa.data.resample.map_to_original_grid`).
    """
    from kneeoa.data.resample import map_to_original_grid

    m = map_dhw if isinstance(map_dhw, torch.Tensor) else torch.as_tensor(np.asarray(map_dhw, dtype=np.float32))
    out = map_to_original_grid(m.detach(), volume.affine, volume.array.shape, reorient)
    return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)
