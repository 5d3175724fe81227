"""Cartilage thickness (mm) against shapes whose thickness is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kneeoa.contracts.segmentation import thickness_columns
from kneeoa.segmentation.thickness import compartment_thickness, interface_thickness


def _slab(n_plate: int, shape=(20, 18, 24)) -> np.ndarray:
    """Tibia (3) below k=8, a medial plate (4) of n_plate voxels on top of it, air above."""
    mask = np.zeros(shape, dtype=np.uint8)
    mask[:, :, :8] = 3
    mask[:, :, 8:8 + n_plate] = 4
    return mask


@pytest.mark.parametrize("n_plate", [1, 3, 6])
def test_a_slab_of_n_voxels_on_its_bone_is_n_voxels_thick_in_mm_on_anisotropic_spacing(n_plate):
    spacing = (0.4, 0.5, 0.7)  # the slab's normal is k: only the k spacing may count
    values = interface_thickness(_slab(n_plate), plate=4, bone=3, spacing_mm=spacing)
    assert values.size == 20 * 18  # every plate voxel touching the bone is measured
    # away from the slab's sides the joint is straight above: exactly n * 0.7 mm
    assert np.median(values) == pytest.approx(n_plate * 0.7)
    assert values.max() == pytest.approx(n_plate * 0.7)


def test_slab_columns_give_mean_and_low_percentile_and_nan_for_missing_plates():
    out = compartment_thickness(_slab(4), (1.0, 1.0, 0.5))
    assert list(out) == thickness_columns()
    assert out["medial_tibial_thickness_mean_mm"] == pytest.approx(2.0)
    assert out["medial_tibial_thickness_p5_mm"] == pytest.approx(2.0)
    assert math.isnan(out["femoral_thickness_mean_mm"]) and math.isnan(out["lateral_tibial_thickness_p5_mm"])


def test_a_thinner_plate_measures_thinner_and_a_plate_off_its_bone_is_not_measured():
    thick = compartment_thickness(_slab(5), (0.5, 0.5, 0.5))["medial_tibial_thickness_mean_mm"]
    thin = compartment_thickness(_slab(2), (0.5, 0.5, 0.5))["medial_tibial_thickness_mean_mm"]
    assert thin < thick
    floating = np.zeros((10, 10, 10), dtype=np.uint8)
    floating[2:8, 2:8, 5] = 4  # cartilage with no tibia under it
    assert interface_thickness(floating, 4, 3, (1, 1, 1)).size == 0


def test_a_spherical_shell_on_a_spherical_bone_has_the_shell_width():
    # femur = ball of radius 10 mm, femoral cartilage = shell 10..13 mm (3 mm), 0.5 mm voxels
    grid = np.indices((64, 64, 64)).astype(float) * 0.5
    r = np.sqrt(sum((g - 16.0) ** 2 for g in grid))
    mask = np.zeros(r.shape, dtype=np.uint8)
    mask[r < 10.0] = 1
    mask[(r >= 10.0) & (r < 13.0)] = 2
    values = interface_thickness(mask, plate=2, bone=1, spacing_mm=(0.5, 0.5, 0.5))
    # voxelisation moves each surface by up to half a voxel: within one voxel (0.5 mm) of the true 3 mm
    assert abs(float(np.mean(values)) - 3.0) < 0.5
