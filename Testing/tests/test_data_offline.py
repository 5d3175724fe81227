"""`kneeoa preprocess` (N4, resample, z-score into a cohort of the same layout) and the paper's flat folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kneeoa.cli import main
from kneeoa.data.cohort import load_cohort
from kneeoa.data.offline import resample_to_size
from kneeoa.data.volume import read_volume


def test_resampling_keeps_the_physical_extent_and_voxel_centres():
    affine = np.array([[0.0, 0.0, 0.7, -20.0], [-0.5, 0.0, 0.0, 12.0], [0.0, 0.4, 0.0, 3.0], [0, 0, 0, 1]])
    array = np.arange(8 * 6 * 4, dtype=np.float32).reshape(8, 6, 4)
    out, new = resample_to_size(array, affine, (4, 3, 8))
    assert out.shape == (4, 3, 8)

    def corner(a, shape):  # world position of the outer edge of voxel (0,0,0) and of the last voxel
        return a @ [-0.5, -0.5, -0.5, 1], a @ [shape[0] - 0.5, shape[1] - 0.5, shape[2] - 0.5, 1]

    for before, after in zip(corner(affine, array.shape), corner(new, out.shape)):
        np.testing.assert_allclose(before, after, atol=1e-9)
    labels = np.zeros((8, 6, 4), np.uint8)
    labels[4:, :, :] = 2
    lab, _ = resample_to_size(labels, affine, (4, 3, 8), is_label=True)
    assert set(np.unique(lab)) == {0, 2} and (lab[2:] == 2).all() and (lab[:2] == 0).all()


def test_preprocess_writes_a_cohort_in_the_same_layout_and_resumes(phantom_cohort, tmp_path, capsys):
    out = tmp_path / "n4"
    args = ["preprocess", "--n4", "--zscore", "--resample", "16", "20", "12", "--n4-shrink", "2",
            "--n4-iterations", "5,5", "--workers", "2", str(phantom_cohort), str(out)]
    assert main(args) == 0
    before, after = load_cohort(phantom_cohort), load_cohort(out)
    assert [(c.case_id, c.kl, c.split) for c in after.cases] == [(c.case_id, c.kl, c.split) for c in before.cases]
    case = after.cases[0]
    image, mask = read_volume(case.image), read_volume(case.mask, is_label=True)
    assert image.shape == mask.shape == (16, 20, 12)
    np.testing.assert_allclose(image.affine, mask.affine)
    assert abs(float(image.array.mean())) < 1e-4 and abs(float(image.array.std()) - 1) < 1e-4
    assert set(np.unique(mask.array)) <= {0, 1, 2, 3, 4, 5}
    settings = json.loads((out / "preprocess.json").read_text(encoding="utf-8"))["settings"]
    assert settings["n4"] and settings["size"] == [16, 20, 12] and settings["n4_iterations"] == [5, 5]
    # resumable: a removed output is the only one redone; other settings are refused
    case.image.unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert f"1 case(s) written, {len(after.cases) - 1} already done" in capsys.readouterr().err
    assert main(["preprocess", "--zscore", str(phantom_cohort), str(out)]) == 1
    assert "other settings" in capsys.readouterr().err


def test_preprocess_needs_a_step_and_an_outside_folder(phantom_cohort, capsys):
    assert main(["preprocess", str(phantom_cohort), str(phantom_cohort.parent / "x")]) == 1
    assert "nothing to do" in capsys.readouterr().err
    assert main(["preprocess", "--zscore", str(phantom_cohort), str(phantom_cohort / "inside")]) == 1
    assert "outside" in capsys.readouterr().err


def test_the_papers_flat_folder_is_read_directly(phantom_cohort, tmp_path):
    flat = tmp_path / "resampled_standardlize"
    flat.mkdir()
    reference = load_cohort(phantom_cohort)
    for case in reference.cases:
        shutil.copy(case.image, flat / f"{case.case_id}_0000_n4_z.nii.gz")
    for table in phantom_cohort.glob("subInfo_*"):
        shutil.copy(table, flat / table.name)
    cohort = load_cohort(flat)
    assert cohort.kind == "oaizib"
    assert [(c.case_id, c.kl, c.split) for c in cohort.cases] == \
        [(c.case_id, c.kl, c.split) for c in reference.cases]
    assert all(c.mask is None and c.image.parent == flat for c in cohort.cases)
    extra = flat / "oaizib_999_0000_n4_z.nii.gz"
    shutil.copy(reference.cases[0].image, extra)
    with pytest.warns(UserWarning, match="neither subject table"):
        cohort = load_cohort(flat)  # (and a second warning: one ungraded knee)
    assert cohort.case("oaizib_999").split == "unlabelled"
