"""The fast preprocessing path equals the MONAI path (the implementation before issue 20) within float
rounding, for every axis orientation, memory order and stored dtype; so does the saliency's way back."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from kneeoa.data.preprocess import model_map_to_volume, preprocess_volume
from kneeoa.data.resample import map_to_original_grid, preprocess_array, ras_layout
from kneeoa.data.volume import Volume

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("datapath_reference", REPO / "benchmarks/baselines/datapath_reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

TOL = {"atol": 2e-5, "rtol": 1e-5}  # z-scored values are O(1): float32 rounding of a reordered computation


def signed_permutations():
    """All 48 axis-aligned orientations (permutation x flips) as 3x3 matrices, with anisotropic spacing."""
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            for row, (col, sign) in enumerate(zip(perm, signs)):
                m[row, col] = sign * (0.4, 0.7, 1.1)[col]
            yield m


def affine_of(rot: np.ndarray, tilt: float = 0.0) -> np.ndarray:
    c, s = np.cos(tilt), np.sin(tilt)
    a = np.eye(4)
    a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ rot
    a[:3, 3] = (5.0, -3.0, 12.0)
    return a


def texture(shape, dtype=np.float32, order="C", seed=0) -> np.ndarray:
    """Smooth structure plus noise: interpolation errors would show, and every axis is distinguishable."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    x = 300 + 40 * np.sin(i / 3) + 25 * np.cos(j / 2) + 7 * k + rng.normal(0, 10, shape)
    return np.asarray(x.astype(dtype), order=order)


@pytest.mark.parametrize("rot", list(signed_permutations()))
def test_every_orientation_matches_the_monai_path(rot):
    affine = affine_of(rot, tilt=0.2)  # a tilt below 45 degrees keeps the closest axis codes
    array = texture((17, 12, 9))
    for shape in [(10, 8, 6), (20, 26, 14)]:  # down- and upsampling
        fast = preprocess_volume(Volume(array, affine), shape)
        torch.testing.assert_close(fast, reference.preprocess_reference(array, affine, shape), **TOL)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.float32, np.float64, ">i2"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_stored_dtype_and_memory_order_do_not_change_the_result(dtype, order):
    # the device path gets the stored voxels (int16 for most MRI), NIfTI data comes Fortran-ordered
    rot = np.diag([-0.5, 0.5, 1.2])[[1, 0, 2]]
    affine = affine_of(rot)
    array = texture((19, 15, 11), dtype=np.dtype(dtype), order=order)
    fast = preprocess_array(array, affine, (12, 9, 16))
    expected = reference.preprocess_reference(array.astype(np.float32), affine, (12, 9, 16))
    assert fast.dtype == torch.float32 and fast.is_contiguous() and fast.shape == (1, 12, 9, 16)
    torch.testing.assert_close(fast, expected, **TOL)


def test_no_resize_is_an_exact_permutation_of_the_z_scored_grid():
    array = texture((8, 6, 7), order="F")
    affine = affine_of(np.diag([-1.0, 1.0, 1.0]))
    fast = preprocess_volume(Volume(array, affine), (7, 8, 6))
    torch.testing.assert_close(fast, reference.preprocess_reference(array, affine, (7, 8, 6)), **TOL)


def test_the_z_score_after_the_resize_equals_the_z_score_before_it():
    # the reason the fast path may resize first: linear interpolation preserves affine maps
    x = torch.as_tensor(texture((30, 22, 14)))[None, None]
    mean, std = x.mean(), x.std(unbiased=False)

    def resize(t):
        return torch.nn.functional.interpolate(t, size=(13, 17, 9), mode="trilinear", align_corners=False)

    torch.testing.assert_close(resize((x - mean) / std), (resize(x) - mean) / std, **TOL)


def test_a_constant_volume_keeps_the_std_floor():
    out = preprocess_array(np.full((6, 6, 6), 7.0, np.float32), np.eye(4), (4, 4, 4))
    assert torch.count_nonzero(out) == 0  # (x - mean) / 1e-6 with x == mean everywhere


def test_the_model_dtype_is_honoured():
    out = preprocess_array(texture((9, 9, 9)), np.eye(4), (4, 5, 6), dtype=torch.float64)
    assert out.dtype == torch.float64


@pytest.mark.parametrize("rot", [np.eye(3), np.diag([-1.0, 1.0, -1.0])[[2, 0, 1]], np.diag([1.0, -1.0, 1.0])])
def test_the_saliency_map_goes_back_exactly_as_before(rot):
    affine = affine_of(rot, tilt=0.1)
    shape_ijk = (13, 10, 7)
    flips, model_from = ras_layout(affine)
    assert sorted(model_from) == [0, 1, 2]
    smap = np.random.default_rng(1).random((6, 8, 5)).astype(np.float32)
    expected = reference.map_back_reference(smap, affine, shape_ijk)
    back = map_to_original_grid(torch.as_tensor(smap), affine, shape_ijk)
    np.testing.assert_allclose(back.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(model_map_to_volume(smap, Volume(np.zeros(shape_ijk, np.float32), affine)),
                               expected, atol=1e-6)
