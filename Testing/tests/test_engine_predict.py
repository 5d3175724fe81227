"""`kneeoa predict`: the published per-subject CSV, the metrics CSV and the embeddings npz."""

import csv
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import run_main, tiny_checkpoint

from kneeoa.engine.predict import predict
from kneeoa.errors import ConfigError

DUAL_COLUMNS = ["CMT_ID", "img_path", "label_kl", "pred_kl", "label_oa", "prob_oa", "pred_oa", "prob_oa_from_kl",
                "prob_kl_0", "prob_kl_1", "prob_kl_2", "prob_kl_3", "prob_kl_4"]


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


@pytest.fixture(scope="module")
def dual_prediction(phantom_cohort, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    ckpt = tiny_checkpoint(tmp / "model.safetensors", "dual")
    return predict(ckpt, phantom_cohort, tmp / "out", embeddings=True, device="cpu")


def test_dual_predictions_have_the_published_columns(dual_prediction, phantom_cohort):
    from kneeoa.data.cohort import load_cohort

    path = dual_prediction["predictions"]
    assert path.name == "resnet3d_dual_preds.csv"
    header, rows = _read(path)
    assert header == DUAL_COLUMNS
    test = load_cohort(phantom_cohort).split("test")
    assert [int(r["CMT_ID"]) for r in rows] == [c.cmt_id for c in test]
    for row in rows:
        probs = [float(row[f"prob_kl_{g}"]) for g in range(5)]
        assert abs(sum(probs) - 1) < 1e-5
        assert int(row["pred_kl"]) == int(np.argmax(probs))
        assert int(row["label_oa"]) == int(int(row["label_kl"]) >= 2)
        assert int(row["pred_oa"]) == int(float(row["prob_oa"]) >= 0.5)
        assert abs(float(row["prob_oa_from_kl"]) - sum(probs[2:])) < 1e-5


def test_metrics_csv_holds_oa_and_kl_metrics(dual_prediction):
    header, rows = _read(dual_prediction["metrics_csv"])
    assert {"oa_auc", "oa_acc", "oa_f1", "kl_acc", "kl_macro_f1", "kl_macro_auc", "kl_qwk", "kl_bal_acc"} <= set(header)
    assert rows[0]["model"] == "resnet3d_dual" and int(rows[0]["n"]) == len(_read(dual_prediction["predictions"])[1])
    assert 0 <= float(rows[0]["oa_acc"]) <= 1


def test_embeddings_follow_the_latent_contract_without_pickle(dual_prediction, phantom_cohort):
    from kneeoa.data.cohort import load_cohort

    cohort = load_cohort(phantom_cohort)
    with np.load(dual_prediction["embeddings"], allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    assert str(data["name"]) == "resnet3d_dual"
    n_train, n_test = len(cohort.split("train")), len(cohort.split("test"))
    assert data["train_embedding"].shape[0] == n_train and data["test_embedding"].shape[0] == n_test
    assert data["train_embedding"].shape[1] == data["test_embedding"].shape[1] > 0
    assert list(data["test_case_id"]) == [c.case_id for c in cohort.split("test")]
    assert list(data["train_kl"]) == [c.kl for c in cohort.split("train")]
    expected = [float(c.extra["TrueSeverity"]) for c in cohort.split("test")]
    assert np.allclose(data["test_true_severity"], expected)


def test_single_oa_predictions_have_no_kl_columns(phantom_cohort, tmp_path: Path):
    ckpt = tiny_checkpoint(tmp_path / "oa.safetensors", "single-oa")
    result = predict(ckpt, phantom_cohort, tmp_path / "out", device="cpu")
    header, _ = _read(result["predictions"])
    assert result["predictions"].name == "resnet3d_single_oa_preds.csv"
    assert header == ["CMT_ID", "img_path", "label_kl", "label_oa", "prob_oa", "pred_oa"]
    assert "kl_acc" not in result["metrics"] and "oa_auc" in result["metrics"]


def test_existing_outputs_are_not_clobbered(dual_prediction, phantom_cohort):
    out = dual_prediction["predictions"].parent
    ckpt = out.parent / "model.safetensors"
    with pytest.raises(ConfigError, match="--overwrite"):
        predict(ckpt, phantom_cohort, out, device="cpu")


def test_cli_predict_writes_the_tables(phantom_cohort, tmp_path: Path, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "kl.safetensors", "single-kl")
    assert run_main(monkeypatch, "predict", "--checkpoint", str(ckpt), "--data", str(phantom_cohort),
                    "--out", str(tmp_path / "o"), "--device", "cpu") == 0
    assert (tmp_path / "o" / "resnet3d_single_kl_preds.csv").is_file()
    assert (tmp_path / "o" / "resnet3d_single_kl_metrics.csv").is_file()
