"""Which tibial plate is medial: by the knee side and the image's affine, and one label per plate."""

from __future__ import annotations

import numpy as np
import pytest

from kneeoa.segmentation.postprocess import LATERAL, MEDIAL, consistent_tibial_plates, plates_by_knee_side


def _two_plates(low_i_label: int, high_i_label: int) -> np.ndarray:
    labels = np.zeros((20, 8, 8), dtype=np.uint8)
    labels[:, :, :3] = 3  # tibia
    labels[2:8, 2:6, 3] = low_i_label
    labels[12:18, 2:6, 3] = high_i_label
    return labels


@pytest.mark.parametrize("x_sign", [1.0, -1.0])  # i towards the patient's right (RAS +x) or left
def test_the_medial_plate_is_the_one_towards_the_midline_for_each_knee_side(x_sign):
    affine = np.diag([x_sign * 0.5, 0.5, 0.7, 1.0])
    swapped = _two_plates(LATERAL, LATERAL)  # the network called both plates lateral
    right = plates_by_knee_side(swapped, affine, "right")
    left = plates_by_knee_side(swapped, affine, "left")
    # right knee: medial = towards the patient's left = smaller RAS x
    low_i_is_medial_in_right_knee = x_sign > 0
    assert (right[4, 3, 3] == MEDIAL) == low_i_is_medial_in_right_knee
    assert (right[14, 3, 3] == MEDIAL) != low_i_is_medial_in_right_knee
    assert left[4, 3, 3] != right[4, 3, 3] and left[14, 3, 3] != right[14, 3, 3]
    assert np.array_equal(right == 3, swapped == 3)  # nothing but the plates changes


def test_a_plate_split_between_labels_takes_its_majority_and_two_plates_never_share_one():
    labels = _two_plates(MEDIAL, LATERAL)
    labels[2:4, 2:6, 3] = LATERAL  # a third of the medial plate mislabelled
    fixed = consistent_tibial_plates(labels)
    assert set(np.unique(fixed[2:8, 2:6, 3])) == {MEDIAL} and set(np.unique(fixed[12:18, 2:6, 3])) == {LATERAL}
    both_lateral = consistent_tibial_plates(_two_plates(LATERAL, LATERAL))
    assert {int(both_lateral[4, 3, 3]), int(both_lateral[14, 3, 3])} == {MEDIAL, LATERAL}
