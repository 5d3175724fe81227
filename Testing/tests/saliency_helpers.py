"""Small builders for the saliency tests: tiny models and an oblique, non-square image on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kneeoa.data.volume import Volume, read_volume, write_nifti
from kneeoa.models.registry import ModelSpec, build_model

IMAGE_SHAPE = (20, 28, 18)  # (i, j, k): no two sides equal, none equal to the model's
# tiny sizes per backbone: M3T needs a cube and costs 3N slices, so it gets the smallest
TINY = {"resnet3d": ((24, 24, 24), 4), "m3t": ((16, 16, 16), 8), "nnmamba": ((24, 24, 24), 4)}


def tiny_model(backbone: str = "resnet3d", variant: str = "dual", seed: int = 0):
    """A randomly initialised narrow model in eval mode."""
    shape, width = TINY[backbone]
    torch.manual_seed(seed)
    return build_model(ModelSpec(backbone, variant, input_shape=shape, width=width)).eval()


def oblique_affine() -> np.ndarray:
    """ijk->RAS with a 30 degree rotation, anisotropic spacing, a flipped axis and an offset origin."""
    theta = np.deg2rad(30.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0.0], [np.sin(theta), np.cos(theta), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.7, -0.5, 1.2])
    affine[:3, 3] = [-12.5, 30.0, 4.25]
    return affine


def knee_like_array(shape: tuple[int, int, int] = IMAGE_SHAPE, seed: int = 0) -> np.ndarray:
    """A smooth off-centre blob plus noise: structure for the gradients to find, not a constant."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    blob = np.exp(-((grid[0] - 0.3) ** 2 + (grid[1] + 0.2) ** 2 + grid[2] ** 2) / 0.2)
    return (100 * blob + rng.normal(0, 5, shape)).astype(np.float32)


def write_image(path: Path, shape: tuple[int, int, int] = IMAGE_SHAPE, seed: int = 0) -> Path:
    """The oblique test image as NIfTI."""
    return write_nifti(path, knee_like_array(shape, seed), oblique_affine())


def oblique_volume(tmp_path: Path) -> Volume:
    """The oblique test image read back from disk, as a user's file would be."""
    return read_volume(write_image(tmp_path / "knee_0000.nii.gz"))


def cartilage_mask(shape: tuple[int, int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Labels 2/4/5 in three slabs of the image, the rest background."""
    mask = np.zeros(shape, dtype=np.uint8)
    mask[4:8, 6:20, 5:12] = 2
    mask[10:13, 6:12, 5:12] = 4
    mask[10:13, 14:20, 5:12] = 5
    return mask
