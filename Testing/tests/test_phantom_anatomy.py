"""Phantom knees: mask labels, orientation, grid, and severity-driven findings (same knee, two severities)."""

import numpy as np
import pytest

from kneeoa.data.phantom.case import FOV_MM, grid_for, synthesize_case
from kneeoa.data.phantom.findings import findings_for
from kneeoa.data.phantom.severity import case_labels


def _centroid_ras(mask, affine, label):
    ijk = np.argwhere(mask == label).mean(axis=0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


def _medial_joint_space_mm(mask, spacing_k, footprint):
    """Median count of non-bone voxels between femur (1) and tibia (3) over the medial plate's columns."""
    gaps = []
    for i, j in zip(*np.nonzero(footprint)):
        column = mask[i, j]
        femur, tibia = np.nonzero(column == 1)[0], np.nonzero(column == 3)[0]
        if femur.size and tibia.size:
            gaps.append(femur.min() - tibia.max() - 1)
    return float(np.median(gaps)) * spacing_k


@pytest.mark.parametrize("case_number", [1, 2, 6, 9, 16])  # true KL 4, 3, 0, 4, 1 in cohort seed 0
def test_mask_holds_exactly_labels_0_to_5_each_present_even_on_a_coarse_grid(case_number):
    case = synthesize_case(0, case_number, (24, 24, 24))
    assert case.mask_ijk.dtype == np.uint8
    assert set(np.unique(case.mask_ijk)) == {0, 1, 2, 3, 4, 5}


def test_model_shape_maps_to_nifti_ijk_on_a_diagonal_ras_grid():
    case = synthesize_case(0, 3, (20, 24, 28))  # (D, H, W)
    assert case.image_ijk.shape == case.mask_ijk.shape == (24, 28, 20)  # (H, W, D)
    spacing = np.diag(case.affine)[:3]
    assert np.allclose(spacing, [FOV_MM / 24, FOV_MM / 28, FOV_MM / 20])
    rotation_part = case.affine[:3, :3]
    assert np.allclose(rotation_part, np.diag(np.diag(rotation_part))) and np.all(spacing > 0)  # RAS+, diagonal
    centre = case.affine @ np.array([11.5, 13.5, 9.5, 1.0])
    assert np.allclose(centre[:3], 0.0)  # field of view centred on the origin
    assert np.all(np.isfinite(case.image_ijk)) and case.image_ijk.min() >= 0


def test_femur_is_superior_and_medial_is_towards_the_body_midline():
    for number in (1, 2, 3, 4):
        labels = case_labels(0, number)
        case = synthesize_case(0, number, (32, 32, 32))
        femur, tibia = (_centroid_ras(case.mask_ijk, case.affine, k) for k in (1, 3))
        medial, lateral = (_centroid_ras(case.mask_ijk, case.affine, k) for k in (4, 5))
        assert femur[2] > tibia[2] + 20  # superior (RAS z)
        # right knee: medial plate towards the patient's left (-x); left knee: towards +x
        assert (medial[0] < lateral[0]) == (labels.knee_side == "right")
        assert abs(medial[2] - lateral[2]) < 10 and abs(medial[0] - lateral[0]) > 25  # side by side


def test_medial_cartilage_thins_more_than_lateral_as_severity_grows():
    healthy = synthesize_case(0, 5, (32, 32, 32), severity=0.3).mask_ijk
    severe = synthesize_case(0, 5, (32, 32, 32), severity=4.7).mask_ijk
    medial = (severe == 4).sum() / (healthy == 4).sum()
    lateral = (severe == 5).sum() / (healthy == 5).sum()
    assert medial < 0.6
    assert medial < lateral


def test_medial_joint_space_narrows_as_severity_grows():
    shape = (48, 48, 48)
    spacing_k = grid_for(shape).spacing_mm[2]
    healthy = synthesize_case(0, 5, shape, severity=0.3).mask_ijk
    severe = synthesize_case(0, 5, shape, severity=4.7).mask_ijk
    footprint = (healthy == 4).any(axis=2)
    assert _medial_joint_space_mm(severe, spacing_k, footprint) < _medial_joint_space_mm(healthy, spacing_k,
                                                                                         footprint) - 1.0


def test_osteophytes_appear_from_grade_2_and_grow():
    rng = np.random.default_rng(0)
    assert all(not findings_for(g, rng).osteophytes for g in np.linspace(0.0, 1.65, 30))
    sizes = {g: [s.size_mm for _ in range(30) for s in findings_for(g, rng).osteophytes] for g in (2.5, 4.5)}
    assert sizes[2.5] and np.mean(sizes[4.5]) > np.mean(sizes[2.5])


def test_sclerosis_and_flattening_only_at_high_grades():
    rng = np.random.default_rng(0)
    low = [findings_for(g, rng) for g in np.linspace(0.0, 2.5, 20)]
    high = findings_for(4.8, rng)
    assert all(f.sclerosis_medial == 0 and f.flattening_mm == 0 for f in low)
    assert high.sclerosis_medial > 0.5 and high.flattening_mm > 1.0
    assert high.sclerosis_medial > high.sclerosis_lateral


def test_same_arguments_give_identical_arrays_and_another_seed_does_not():
    a = synthesize_case(4, 7, (24, 24, 24))
    b = synthesize_case(4, 7, (24, 24, 24))
    c = synthesize_case(5, 7, (24, 24, 24))
    assert np.array_equal(a.image_ijk, b.image_ijk) and np.array_equal(a.mask_ijk, b.mask_ijk)
    assert not np.array_equal(a.image_ijk, c.image_ijk)
