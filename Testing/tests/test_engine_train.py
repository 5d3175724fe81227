"""`kneeoa train`: run directory, model card, every variant, clobber protection, progress lines."""

import json
from pathlib import Path

import pytest
from engine_helpers import TINY, run_main

from kneeoa.engine.train import train
from kneeoa.errors import ConfigError
from kneeoa.models.checkpoint import load_checkpoint, read_card


def _same(a: dict, b: dict) -> bool:
    """Metric dicts equal, NaN (undefined on a tiny split) equal to NaN or to null (how strict JSON writes it)."""
    def undefined(v) -> bool:
        return v is None or v != v

    return a.keys() == b.keys() and all(a[k] == b[k] or (undefined(a[k]) and undefined(b[k])) for k in a)


@pytest.fixture(scope="module")
def dual_run(phantom_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "resnet3d_dual"
    result = train(phantom_cohort, "resnet3d", "dual", out, preset="quick", overrides=TINY)
    return out, result


def test_run_dir_holds_config_checkpoint_state_metrics_and_log(dual_run):
    out, result = dual_run
    for name in ("config.yaml", "checkpoints/last.safetensors", "checkpoints/trainer_state.safetensors",
                 "metrics.jsonl", "train.log", "test_metrics.json"):
        assert (out / name).is_file(), name
    assert result["checkpoint"] == out / "checkpoints" / "last.safetensors"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == TINY["epochs"]
    row = json.loads(lines[0])
    assert {"epoch", "loss", "lr", "time_s", "loader_wait_s", "compute_s", "train_oa_acc", "train_kl_acc"} <= set(row)
    assert row["epoch"] == 1 and row["loss"] > 0


def test_no_temp_files_are_left_behind(dual_run):
    out, _ = dual_run
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_card_describes_training_data_and_final_test_metrics(dual_run):
    out, result = dual_run
    card = read_card(out / "checkpoints" / "last.safetensors")
    assert "graded training cases" in card["training_data"] and "quick" in card["training_data"]
    assert card["spec"]["variant"] == "dual" and card["preprocessing"]["input_shape"] == TINY["input_shape"]
    test = card["metrics"]["test"]
    assert {"oa_auc", "oa_acc", "oa_f1", "kl_acc", "kl_macro_f1", "kl_qwk"} <= set(test)
    assert _same(test, result["metrics"]["test"]) and _same(test, json.loads((out / "test_metrics.json").read_text()))


def test_checkpoint_loads_with_the_trained_weights(dual_run):
    import torch

    out, _ = dual_run
    model, card = load_checkpoint(out / "checkpoints" / "last.safetensors")
    out_ = model(torch.zeros(1, 1, *TINY["input_shape"]))
    assert out_.kl_logits.shape == (1, 5) and out_.oa_logits.shape == (1, 2)


@pytest.mark.parametrize("variant", ["single-oa", "single-kl"])
def test_single_variants_train_and_evaluate(phantom_cohort, tmp_path: Path, variant: str):
    result = train(phantom_cohort, "resnet3d", variant, tmp_path / "run", overrides=TINY)
    test = result["metrics"]["test"]
    assert "oa_auc" in test
    assert ("kl_acc" in test) == (variant == "single-kl")
    assert read_card(result["checkpoint"])["spec"]["variant"] == variant


def test_a_finished_run_is_not_clobbered(dual_run, phantom_cohort):
    out, _ = dual_run
    with pytest.raises(ConfigError, match="finished run.*--resume.*--overwrite"):
        train(phantom_cohort, "resnet3d", "dual", out, overrides=TINY)


def test_resuming_a_finished_run_changes_nothing(dual_run, phantom_cohort):
    out, first = dual_run
    before = (out / "checkpoints" / "last.safetensors").read_bytes()
    again = train(phantom_cohort, "resnet3d", "dual", out, resume=True)
    assert (out / "checkpoints" / "last.safetensors").read_bytes() == before
    assert _same(again["metrics"]["test"], first["metrics"]["test"])


def test_resume_may_not_change_the_model(dual_run):
    out, _ = dual_run
    with pytest.raises(ConfigError, match="width"):
        train(None, None, None, out, resume=True, overrides={"width": 8})


def test_overwrite_replaces_the_run_and_keeps_foreign_files(phantom_cohort, tmp_path: Path):
    out = tmp_path / "run"
    train(phantom_cohort, "resnet3d", "single-oa", out, overrides=TINY)
    (out / "notes.txt").write_text("mine")
    train(phantom_cohort, "resnet3d", "single-kl", out, overrides=TINY, overwrite=True)
    assert read_card(out / "checkpoints" / "last.safetensors")["spec"]["variant"] == "single-kl"
    assert (out / "notes.txt").read_text() == "mine"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_folder_that_is_not_a_run_is_refused(phantom_cohort, tmp_path: Path):
    (tmp_path / "thesis.docx").write_text("precious")
    with pytest.raises(ConfigError, match="not a KneeOA run"):
        train(phantom_cohort, "resnet3d", "dual", tmp_path, overrides=TINY)


def test_tensorboard_without_its_package_is_a_clear_error(phantom_cohort, tmp_path: Path):
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="tensorboard"):
        train(phantom_cohort, "resnet3d", "dual", tmp_path / "run", overrides=TINY, tensorboard=True)


def test_cli_prints_json_progress_with_epoch_loss_and_metric(phantom_cohort, tmp_path: Path, monkeypatch, capsys):
    rc = run_main(monkeypatch, "--progress", "json", "train", "--data", str(phantom_cohort), "--backbone",
                  "resnet3d", "--variant", "single-kl", "--out", str(tmp_path / "run"), "--epochs", "1",
                  "--input-size", "24", "--width", "4", "--batch-size", "4", "--device", "cpu")
    out, err = capsys.readouterr()
    assert rc == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "progress" and e["task"] == "train"]
    assert progress and {"epoch", "loss", "train_kl_acc", "done", "total"} <= set(progress[-1])
    assert progress[-1]["done"] == progress[-1]["total"] == 1


def test_cli_refuses_a_new_run_without_backbone(tmp_path: Path, phantom_cohort, monkeypatch, capsys):
    assert run_main(monkeypatch, "train", "--data", str(phantom_cohort), "--out", str(tmp_path / "run")) == 1
    assert "--backbone" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_training_image_stops_with_one_clear_message(phantom_cohort, tmp_path: Path, monkeypatch, capsys,
                                                               workers: int):
    import shutil

    cohort = tmp_path / "cohort"
    shutil.copytree(phantom_cohort, cohort)
    victim = sorted((cohort / "imagesTr").glob("*.nii.gz"))[2]
    victim.write_bytes(victim.read_bytes()[:300])
    rc = run_main(monkeypatch, "train", "--data", str(cohort), "--backbone", "resnet3d", "--variant", "dual",
                  "--out", str(tmp_path / "run"), "--epochs", "1", "--input-size", "24", "--width", "4",
                  "--workers", str(workers), "--device", "cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("kneeoa train: error:") and victim.name in err[-1]
    assert "Traceback" not in "\n".join(err)
