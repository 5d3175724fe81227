"""Saliency-cartilage overlap on a 100-voxel hand case."""

import numpy as np
import pytest

from kneeoa.analysis.overlap import saliency_overlap, top_k_count


def _hand_case():
    """Flat voxels 0-5 femoral (2), 6-9 medial tibial (4), 10-11 lateral tibial (5), 12-20 femur (1).

    Saliency 100 - i for voxel i < 50 (so the top-k are the first k voxels) and -1 beyond (S+ = 0 there).
    """
    mask = np.zeros(100, dtype=np.int16)
    mask[0:6], mask[6:10], mask[10:12], mask[12:21] = 2, 4, 5, 1
    saliency = np.where(np.arange(100) < 50, 100.0 - np.arange(100), -1.0)
    return saliency.reshape(4, 5, 5), mask.reshape(4, 5, 5)


def test_union_of_cartilage_labels():
    s, m = _hand_case()
    r = saliency_overlap(s, m)
    total = sum(100 - i for i in range(50))  # 3775: negatives do not count
    assert r["mass_roi"] == pytest.approx(sum(100 - i for i in range(12)) / total)
    assert r["roi_voxels"] == 12
    # k = 1, 5, 10 voxels, all on cartilage: top-k@ROI = 1; Dice = 2k / (k + 12)
    assert (r["top1_roi"], r["top5_roi"], r["top10_roi"]) == (1.0, 1.0, 1.0)
    assert (r["dice1"], r["dice5"], r["dice10"]) == pytest.approx((2 / 13, 10 / 17, 20 / 22))


def test_per_compartment_numbers_share_the_global_top_k():
    s, m = _hand_case()
    r = saliency_overlap(s, m)
    fem, med, lat = r["femoral"], r["medial_tibial"], r["lateral_tibial"]
    assert fem["mass_roi"] == pytest.approx(585 / 3775)
    assert (fem["top10_roi"], fem["dice10"]) == pytest.approx((0.6, 12 / 16))
    assert (med["top1_roi"], med["top10_roi"], med["dice10"]) == pytest.approx((0.0, 0.4, 8 / 14))
    assert (lat["top10_roi"], lat["dice10"], lat["roi_voxels"]) == (0.0, 0.0, 2)


def test_paper_label_set_leaves_out_lateral_tibial_cartilage():
    s, m = _hand_case()
    r = saliency_overlap(s, m, labels=(2, 4))
    assert r["roi_voxels"] == 10
    assert "lateral_tibial" not in r and "femoral" in r
    assert r["dice10"] == pytest.approx(20 / 20)


def test_without_compartments_only_the_union_is_reported():
    s, m = _hand_case()
    assert not any(isinstance(v, dict) for v in saliency_overlap(s, m, compartments=False).values())


def test_all_zero_saliency_has_undefined_mass():
    _, m = _hand_case()
    assert np.isnan(saliency_overlap(np.zeros(m.shape), m)["mass_roi"])


def test_grids_must_match():
    s, m = _hand_case()
    with pytest.raises(ValueError, match="shape"):
        saliency_overlap(s, m[:, :, :4])


def test_top_k_count_rounds_before_ceiling():
    assert top_k_count(0.01, 300) == 3  # 0.01 * 300 is 3.0000000000000004 in floating point
    assert top_k_count(0.05, 10) == 1
    assert top_k_count(0.10, 101) == 11


def test_volumes_are_accepted_as_well_as_arrays():
    """What read_volume / compute_saliency return can go in directly (it raised a raw TypeError)."""
    from kneeoa.analysis.overlap import saliency_overlap as overlap
    from kneeoa.data.volume import Volume

    sal = np.zeros((4, 4, 4))
    sal[0] = 1.0
    mask = np.zeros((4, 4, 4), dtype=np.uint8)
    mask[0] = 2
    as_arrays = overlap(sal, mask)
    as_volumes = overlap(Volume(sal, np.eye(4)), Volume(mask, np.eye(4)))
    assert as_volumes["mass_roi"] == as_arrays["mass_roi"] == 1.0
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    with pytest.raises(ValueError, match="different grids"):
        overlap(Volume(sal, np.eye(4)), Volume(mask, shifted))
