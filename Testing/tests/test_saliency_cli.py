"""`kneeoa saliency`: maps per case on the image grid, overlap CSV with a mean row, errors per case."""

from __future__ import annotations

import json

import numpy as np
import pytest
from saliency_helpers import IMAGE_SHAPE, cartilage_mask, oblique_affine, tiny_model, write_image

from kneeoa.cli import main
from kneeoa.data.tables import read_table
from kneeoa.data.volume import read_volume, write_nifti
from kneeoa.models.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny dual-head ResNet3D checkpoint (random weights: saliency needs no training)."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", tiny_model())


@pytest.fixture()
def knee(tmp_path):
    """An oblique, non-square image and its cartilage mask on the same grid."""
    image = write_image(tmp_path / "knee_0000.nii.gz")
    mask = write_nifti(tmp_path / "knee_seg.nii.gz", cartilage_mask(), oblique_affine(), is_label=True)
    return image, mask


def test_one_image_gives_one_map_on_its_grid_and_an_overlap_row(tmp_path, checkpoint, knee):
    image, mask = knee
    out = tmp_path / "out"
    code = main(["saliency", "--checkpoint", str(checkpoint), "--image", str(image), "--mask", str(mask),
                 "--out", str(out)])
    assert code == 0
    saliency = read_volume(out / "knee_saliency.nii.gz")
    assert saliency.array.shape == IMAGE_SHAPE
    np.testing.assert_allclose(saliency.affine, read_volume(image).affine, atol=1e-5)
    assert 0.0 <= saliency.array.min() and saliency.array.max() <= 1.0
    rows = read_table(out / "saliency_overlap.csv")
    assert [r["case_id"] for r in rows] == ["knee", "mean"]
    for column in ("mass_roi", "top1_roi", "dice5", "dice10", "femoral_mass_roi", "lateral_tibial_dice1"):
        assert 0.0 <= float(rows[0][column]) <= 1.0
    assert rows[0]["target"].startswith("kl:")


def test_without_a_mask_there_is_no_overlap_table(tmp_path, checkpoint, knee):
    out = tmp_path / "out"
    assert main(["saliency", "--checkpoint", str(checkpoint), "--image", str(knee[0]), "--out", str(out),
                 "--target", "oa"]) == 0
    assert (out / "knee_saliency.nii.gz").is_file()
    assert not (out / "saliency_overlap.csv").exists()


def test_labels_choose_the_roi(tmp_path, checkpoint, knee):
    image, mask = knee
    out = tmp_path / "out"
    main(["saliency", "--checkpoint", str(checkpoint), "--image", str(image), "--mask", str(mask),
          "--out", str(out), "--labels", "2,4"])
    row = read_table(out / "saliency_overlap.csv")[0]
    assert int(float(row["roi_voxels"])) == int(np.isin(cartilage_mask(), (2, 4)).sum())
    assert "lateral_tibial_mass_roi" not in row


def test_a_cohort_split_gives_a_map_per_case_and_a_mean_row(tmp_path, checkpoint, phantom_cohort, capsys):
    out = tmp_path / "out"
    code = main(["--progress", "json", "saliency", "--checkpoint", str(checkpoint), "--data", str(phantom_cohort),
                 "--split", "test", "--limit", "2", "--out", str(out)])
    assert code == 0
    maps = sorted(p.name for p in out.glob("*_saliency.nii.gz"))
    assert len(maps) == 2
    images = sorted((phantom_cohort / "imagesTs").glob("*.nii.gz"))[:2]
    for image, name in zip(images, maps):
        assert name == image.name.replace("_0000.nii.gz", "_saliency.nii.gz")
        np.testing.assert_allclose(read_volume(out / name).affine, read_volume(image).affine, atol=1e-5)
    rows = read_table(out / "saliency_overlap.csv")
    assert len(rows) == 3 and rows[-1]["case_id"] == "mean"
    mean = np.mean([float(r["mass_roi"]) for r in rows[:2]])
    assert float(rows[-1]["mass_roi"]) == pytest.approx(mean)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # only JSON on stdout
    assert any(e["event"] == "progress" and e["task"] == "saliency" for e in events)
    assert any(e["event"] == "result" and len(e["maps"]) == 2 for e in events)


def test_a_mask_on_another_grid_fails_that_case_and_names_the_mask(tmp_path, checkpoint, knee, capsys):
    bad_mask = write_nifti(tmp_path / "bad_seg.nii.gz", np.zeros((8, 8, 8), np.uint8), np.eye(4), is_label=True)
    code = main(["saliency", "--checkpoint", str(checkpoint), "--image", str(knee[0]), "--mask", str(bad_mask),
                 "--out", str(tmp_path / "out")])
    assert code == 1
    assert "bad_seg.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "out" / "knee_saliency.nii.gz").exists()


@pytest.mark.parametrize("extra,message", [
    (["--labels", "two"], "labels"),
    (["--method", "occlusion", "--n-samples", "0"], "n_samples"),
    (["--target", "knee"], "target"),
    (["--limit", "0"], "limit"),
    (["--topk", "0,5"], "topk"),
])
def test_bad_options_are_one_clear_error(tmp_path, checkpoint, knee, capsys, extra, message):
    code = main(["saliency", "--checkpoint", str(checkpoint), "--image", str(knee[0]), "--out", str(tmp_path / "o"),
                 *extra])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("kneeoa saliency: error:") and message in err


def test_a_missing_image_or_checkpoint_is_an_error_naming_it(tmp_path, checkpoint, knee, capsys):
    assert main(["saliency", "--checkpoint", str(checkpoint), "--image", str(tmp_path / "nope.nii.gz"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "nope.nii.gz" in capsys.readouterr().err
    assert main(["saliency", "--checkpoint", str(tmp_path / "none.safetensors"), "--image", str(knee[0]),
                 "--out", str(tmp_path / "o")]) == 1
    assert "none.safetensors" in capsys.readouterr().err


def test_both_writes_the_kl_and_the_oa_map_of_a_dual_model_with_chosen_topk(tmp_path, checkpoint, knee):
    image, mask = knee
    out = tmp_path / "out"
    assert main(["saliency", "--checkpoint", str(checkpoint), "--image", str(image), "--mask", str(mask),
                 "--out", str(out), "--target", "both", "--topk", "2,20"]) == 0
    kl, oa = (read_volume(out / f"knee_saliency_{h}.nii.gz").array for h in ("kl", "oa"))
    assert kl.shape == oa.shape == IMAGE_SHAPE
    assert not np.allclose(kl, oa)  # two different logits explained
    rows = read_table(out / "saliency_overlap.csv")
    assert [r["target"].split(":")[0] for r in rows[:2]] == ["kl", "oa"]
    assert {"top2_roi", "dice20"} <= set(rows[0]) and "dice5" not in rows[0]


def test_both_needs_a_dual_model(tmp_path, knee, capsys):
    single = save_checkpoint(tmp_path / "kl.safetensors", tiny_model(variant="single-kl"))
    assert main(["saliency", "--checkpoint", str(single), "--image", str(knee[0]), "--out", str(tmp_path / "o"),
                 "--target", "both"]) == 1
    assert "needs a Dual model" in capsys.readouterr().err
