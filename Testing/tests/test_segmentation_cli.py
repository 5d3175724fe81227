"""Segmentation end to end through the CLI on a tiny phantom: train-seg, segment, evaluate-seg."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from kneeoa.cli import main
from kneeoa.contracts.segmentation import SEG_ARCHS, SEGMENT_COLUMNS, thickness_columns
from kneeoa.data.volume import read_volume

TINY = ["--epochs", "2", "--patch", "16", "--width", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def seg_run(phantom_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("segrun") / "run"
    assert main(["train-seg", "--data", str(phantom_cohort), "--out", str(out), *TINY]) == 0
    return out


def test_train_seg_writes_an_engine_run_with_a_segmenter_card(seg_run):
    from kneeoa.segmentation.checkpoint import load_segmenter

    assert (seg_run / "config.yaml").is_file() and (seg_run / "checkpoints" / "trainer_state.safetensors").is_file()
    rows = [json.loads(line) for line in (seg_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    model, card = load_segmenter(seg_run / "checkpoints" / "last.safetensors")
    assert card["kind"] == "segmenter" and card["spec"]["arch"] == "unet" and card["patch"] == [16, 16, 16]
    assert card["labels"]["4"] == "medial_tibial_cartilage"
    assert card["training_data"].startswith("SYNTHETIC")  # the phantom is marked as such
    test = card["metrics"]["test"]
    assert set(test) == {"femur", "femoral_cartilage", "tibia", "medial_tibial_cartilage", "lateral_tibial_cartilage"}
    assert all(0.0 <= v["dice_mean"] <= 1.0 and v["n"] == 6 for v in test.values())


def test_a_finished_run_is_not_clobbered_and_resume_continues_it(seg_run, capsys):
    assert main(["train-seg", "--data", "x", "--out", str(seg_run), *TINY]) == 1
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(["train-seg", "--resume", "--out", str(seg_run), "--epochs", "3"]) == 0
    rows = [json.loads(line) for line in (seg_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_resumed_training_gives_the_weights_of_an_uninterrupted_run(phantom_cohort, tmp_path):
    from safetensors.torch import load_file

    args = ["--data", str(phantom_cohort), "--patch", "16", "--width", "4", "--device", "cpu"]
    assert main(["train-seg", *args, "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    # stopped after its first epoch, then resumed to 2 (the learning rate of epoch 1 is the base rate either way)
    assert main(["train-seg", *args, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["train-seg", "--resume", "--epochs", "2", "--out", str(tmp_path / "b")]) == 0
    a = load_file(str(tmp_path / "a" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "last.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_segment_folder_writes_label_maps_on_each_image_grid_and_thickness_rows(seg_run, phantom_cohort, tmp_path):
    ckpt = seg_run / "checkpoints" / "last.safetensors"
    out = tmp_path / "segs"
    images = phantom_cohort / "imagesTs"
    assert main(["segment", str(images), "--checkpoint", str(ckpt), "--out", str(out), "--shard", "0/2"]) == 0
    assert main(["segment", str(images), "--checkpoint", str(ckpt), "--out", str(out), "--resume"]) == 0
    rows = list(csv.DictReader((out / "segmentations.csv").open()))
    assert list(rows[0]) == SEGMENT_COLUMNS
    assert sorted(r["case_id"] for r in rows) == [f"oaizib_{n:03d}" for n in range(13, 19)]  # no `_0000`
    assert all(r["status"] == "ok" for r in rows)
    for row in rows:
        image = read_volume(images / f"{row['case_id']}_0000.nii.gz")
        seg = read_volume(out / f"{row['case_id']}.nii.gz", is_label=True, allow_constant=True)
        assert seg.shape == image.shape and np.allclose(seg.affine, image.affine, atol=1e-5)
        assert set(np.unique(seg.array)) <= set(range(6))
    # a second plain run refuses to clobber the table
    assert main(["segment", str(images), "--checkpoint", str(ckpt), "--out", str(out)]) == 1


def test_evaluate_seg_scores_every_case_and_label_and_a_perfect_prediction_scores_one(phantom_cohort, tmp_path):
    out = tmp_path / "m.csv"
    labels = phantom_cohort / "labelsTs"
    # the reference masks against themselves: Dice 1, HD95 0 for every label
    assert main(["evaluate-seg", str(labels), "--reference", str(labels), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 * 5
    assert all(float(r["dice"]) == 1.0 and float(r["hd95_mm"]) == 0.0 for r in rows)
    # a summary left by an earlier run is an output too: not replaced without --overwrite
    out.unlink()
    summary = tmp_path / "m.summary.json"
    before = summary.read_bytes()
    assert main(["evaluate-seg", str(labels), "--reference", str(labels), "--out", str(out)]) != 0
    assert summary.read_bytes() == before and not out.exists()


def test_segment_one_image_writes_its_label_map_and_refuses_a_grading_checkpoint(seg_run, phantom_cohort,
                                                                                 tmp_path, capsys):
    image = phantom_cohort / "imagesTs" / "oaizib_013_0000.nii.gz"
    ckpt = seg_run / "checkpoints" / "last.safetensors"
    assert main(["segment", str(image), "--checkpoint", str(ckpt), "--out", str(tmp_path / "one.nii.gz")]) == 0
    err = capsys.readouterr().err
    assert all(c.removesuffix("_mm") in err for c in thickness_columns())
    grading_model = Path(__file__).resolve().parents[2] / "Resources" / "demo_model.safetensors"
    assert main(["segment", str(image), "--checkpoint", str(grading_model), "--out",
                 str(tmp_path / "two.nii.gz")]) == 1
    assert "not a segmenter" in capsys.readouterr().err
    # and the other way round: a segmenter is not a grading model
    assert main(["grade", str(image), "--checkpoint", str(ckpt), "--result-json", str(tmp_path / "r.json")]) == 1
    assert "this is a segmenter" in capsys.readouterr().err


@pytest.mark.parametrize("arch", SEG_ARCHS)
def test_every_network_maps_a_patch_to_six_label_logits_and_survives_its_checkpoint(arch, tmp_path):
    import torch

    from kneeoa.segmentation.checkpoint import load_segmenter, save_segmenter, segmenter_card
    from kneeoa.segmentation.model import build_segmenter
    from kneeoa.segmentation.presets import PRESETS

    torch.manual_seed(0)
    model = build_segmenter(arch, 4).eval()
    x = torch.randn(1, 1, 16, 16, 24)
    out = model(x)
    assert tuple(out.shape) == (1, 6, 16, 16, 24)
    card = segmenter_card({**PRESETS["quick"], "arch": arch, "width": 4, "preset": "quick"})
    back, _ = load_segmenter(save_segmenter(tmp_path / "s.safetensors", model, card))
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_a_segmentation_preset_file_is_read_like_a_training_preset(tmp_path):
    """The bounded YAML loader: duplicate keys (and aliases) are refused, naming the file."""
    from kneeoa.errors import ConfigError
    from kneeoa.segmentation.presets import load_seg_preset

    preset = tmp_path / "seg.yaml"
    preset.write_text("epochs: 2\nepochs: 3\n")
    with pytest.raises(ConfigError, match="duplicate key 'epochs'") as err:
        load_seg_preset(preset)
    assert str(preset) in str(err.value)
    preset.write_text("base: &a 2\nepochs: *a\n")
    with pytest.raises(ConfigError, match="seg.yaml"):
        load_seg_preset(preset)
