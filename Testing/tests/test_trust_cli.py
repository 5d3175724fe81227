"""Trust end to end: `train --calibration-fraction`, `kneeoa calibrate`, and the trust fields of grade/score/predict."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import TINY, run_main

from kneeoa.contracts import trust as names
from kneeoa.contracts.schemas import PRED_COLUMNS, SCORE_COLUMNS
from kneeoa.engine.train import train
from kneeoa.models.checkpoint import load_checkpoint, read_card
from kneeoa.trust.store import read_trust


@pytest.fixture(scope="module")
def calibrated_run(phantom_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dual_cal"
    train(phantom_cohort, "resnet3d", "dual", out, preset="quick",
          overrides={**TINY, "calibration_fraction": 0.34})
    return out / "checkpoints" / "last.safetensors"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_with_a_calibration_fraction_stores_trust_tensors_and_says_what_they_were_fitted_on(calibrated_run):
    card = read_card(calibrated_run)
    block = card[names.TRUST_KEY]
    assert "held out from training" in block["calibrated_on"]
    assert block["ood"]["fit_on"] == "training knees"
    held = block["n_conformal"]
    assert f"{12 - held} graded training cases" in card["training_data"]  # the held-out knees did not train
    stats = read_trust(calibrated_run)
    assert stats.cal_kl_probs.shape == (held, 5) and stats.ood.precision.shape == (32, 32)
    assert stats.ood.precision.dtype == np.float64  # tensors, not JSON
    model, _ = load_checkpoint(calibrated_run)  # the weights still load strictly
    assert model.spec.variant == "dual"


def test_calibrate_writes_a_new_checkpoint_and_never_touches_the_input(calibrated_run, phantom_cohort, tmp_path,
                                                                        monkeypatch):
    before = _digest(calibrated_run)
    out = tmp_path / "recal.safetensors"
    assert run_main(monkeypatch, "calibrate", "--checkpoint", str(calibrated_run), "--data", str(phantom_cohort),
                    "--split", "test", "--ood-split", "train", "--out", str(out)) == 0
    assert _digest(calibrated_run) == before
    block = read_card(out)[names.TRUST_KEY]
    assert "split test: 6 graded knees" in block["calibrated_on"]
    assert block["source_checkpoint"] == {"file": "last.safetensors", "sha256": before}
    assert run_main(monkeypatch, "calibrate", "--checkpoint", str(out), "--data", str(phantom_cohort),
                    "--out", str(out), "--overwrite") == 1  # "--out is the input checkpoint"
    assert read_card(out)[names.TRUST_KEY] == block


def test_grade_json_reports_calibrated_probabilities_a_set_and_an_ood_verdict(calibrated_run, phantom_cohort,
                                                                              tmp_path, monkeypatch):
    image = sorted((phantom_cohort / "imagesTs").glob("*.nii.gz"))[0]
    res = tmp_path / "g.json"
    assert run_main(monkeypatch, "grade", str(image), "--checkpoint", str(calibrated_run), "--result-json", str(res),
                    "--alpha", "0.2") == 0
    t = json.loads(res.read_text())[names.TRUST_KEY]
    assert sum(t[c] for c in names.KL_PROB_CAL_COLUMNS) == pytest.approx(1.0)
    assert t[names.KL_SET_LABEL].endswith("at 80 %") and t[names.SET_LEVEL] == pytest.approx(0.8)
    assert t[names.KL_SET_LOW] <= t[names.PRED_KL_CAL] <= t[names.KL_SET_HIGH]
    assert 0 < t[names.OOD_P] <= 1 and t[names.OOD_FLAG] in (0, 1)


def test_a_volume_with_ten_times_the_field_of_view_is_flagged_before_grading_in_plain_words(
        calibrated_run, phantom_cohort, tmp_path, monkeypatch):
    from kneeoa.data.volume import read_volume, write_nifti

    vol = read_volume(sorted((phantom_cohort / "imagesTs").glob("*.nii.gz"))[0])
    big = tmp_path / "big.nii.gz"
    write_nifti(big, vol.array, np.diag([*(10 * np.asarray(vol.spacing_mm)), 1.0]))
    res = tmp_path / "g.json"
    assert run_main(monkeypatch, "grade", str(big), "--checkpoint", str(calibrated_run), "--result-json", str(res)) == 0
    t = json.loads(res.read_text())[names.TRUST_KEY]
    assert t[names.OOD_FLAG] == 1 and "field of view 10.0x the training data's" in t[names.ENVELOPE_WARNINGS]


def test_score_table_gets_trust_columns_and_the_published_predictions_keep_their_format(
        calibrated_run, phantom_cohort, tmp_path, monkeypatch):
    table = tmp_path / "scores.csv"
    assert run_main(monkeypatch, "score", str(phantom_cohort / "imagesTs"), "--checkpoint", str(calibrated_run),
                    "--out", str(table)) == 0
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0]) == SCORE_COLUMNS and set(names.TRUST_COLUMNS) <= set(SCORE_COLUMNS)
    row = rows[0]
    assert row[names.SET_METHOD] == "ordinal" and row[names.OOD_P] != ""
    out = tmp_path / "preds"
    assert run_main(monkeypatch, "predict", "--checkpoint", str(calibrated_run), "--data", str(phantom_cohort),
                    "--out", str(out)) == 0
    assert (out / "resnet3d_dual_preds.csv").read_text().splitlines()[0] == ",".join(PRED_COLUMNS)
    trust_lines = (out / names.trust_file_name("resnet3d_dual")).read_text().splitlines()
    assert trust_lines[0] == ",".join(names.TRUST_FILE_COLUMNS) and len(trust_lines) == 7


def test_an_uncalibrated_checkpoint_grades_as_before_with_trust_null(phantom_cohort, tmp_path, monkeypatch):
    from engine_helpers import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "plain.safetensors")
    image = sorted((phantom_cohort / "imagesTs").glob("*.nii.gz"))[0]
    res = tmp_path / "g.json"
    assert run_main(monkeypatch, "grade", str(image), "--checkpoint", str(ckpt), "--result-json", str(res)) == 0
    assert json.loads(res.read_text())[names.TRUST_KEY] is None


def test_study_report_trust_section_from_the_predictions_folder(calibrated_run, phantom_cohort, tmp_path,
                                                                 monkeypatch):
    from kneeoa.report.html import Figure, Table, render_report
    from kneeoa.report.trust import trust_section

    assert run_main(monkeypatch, "predict", "--checkpoint", str(calibrated_run), "--data", str(phantom_cohort),
                    "--out", str(tmp_path / "predictions")) == 0
    first = sorted((phantom_cohort / "imagesTs").glob("*.nii.gz"))[0].name.split(".")[0].removesuffix("_0000")
    saliency = tmp_path / "saliency" / "resnet3d_dual" / f"{first} saliency.nii.gz"  # a space: the href is encoded
    saliency.parent.mkdir(parents=True)
    saliency.write_bytes(b"")
    section = trust_section(tmp_path, ["resnet3d_dual", "resnet3d_single_oa"])
    assert "Not calibrated (no trust file): resnet3d_single_oa" in section.text
    tables = [i for i in section.items if isinstance(i, Table)]
    calib, coverage, triage = tables
    assert {(r["model"], r["head"]) for r in calib.rows} == {("resnet3d_dual", "OA"), ("resnet3d_dual", "KL")}
    assert all(r["ece_raw"] >= 0 and r["nll_cal"] > 0 for r in calib.rows)
    overall = [r for r in coverage.rows if r["true KL"] == "all"][0]
    assert overall["n"] == 6 and 0 <= overall["coverage"] <= 1 and 1 <= overall["mean set size"] <= 5
    assert sum(r["n"] for r in coverage.rows if r["true KL"] != "all") == 6
    assert len(triage.rows) == 6 and [r["flag"] for r in triage.rows] == sorted((r["flag"] for r in triage.rows),
                                                                               reverse=True)
    assert sum(isinstance(i, Figure) for i in section.items) == 2  # reliability of the one model + OOD histogram
    page = render_report("r", [section])
    assert "Trust: calibration, sets, out-of-distribution" in page
    assert f'<a href="saliency/resnet3d_dual/{first}%20saliency.nii.gz">' in page  # the triage links the map


def _trust_file_as_before(checkpoint: Path, data: Path, out: Path) -> Path:
    """The trust file as `predict` wrote it before it took the facts from its one read: the predictions
    first, then every image decoded again by `read_facts` for its acquisition stats and image features."""
    from kneeoa.data.cohort import load_cohort
    from kneeoa.data.tables import write_table
    from kneeoa.engine.inference import input_shape_of, load_model, predict_cases
    from kneeoa.trust.envelope import check_envelope
    from kneeoa.trust.fit import read_facts
    from kneeoa.trust.predict import load_trust_predictor

    model, card = load_model(checkpoint, "cpu")
    trusted = load_trust_predictor(checkpoint, card)
    cases = load_cohort(data).split("test")
    result = predict_cases(model, cases, input_shape_of(model, card), "cpu")
    by_id = {c.case_id: c for c in cases}
    stats, feats = read_facts([by_id[i] for i in result["case_id"]])
    warned = [check_envelope(st, trusted.stats.envelope) for st in stats]
    extra = trusted(result["kl_probs"], result["oa_prob"], result["embedding"], warned, feats)
    rows = [{"CMT_ID": by_id[i].cmt_id if by_id[i].cmt_id is not None else i, "label_kl": by_id[i].kl, **t}
            for i, t in zip(result["case_id"], extra)]
    return write_table(out, rows, names.TRUST_FILE_COLUMNS)


def test_predict_reads_each_test_image_once_and_writes_the_same_trust_file(calibrated_run, phantom_cohort,
                                                                            tmp_path, monkeypatch):
    import kneeoa.data.volume as volume

    expected = _trust_file_as_before(calibrated_run, phantom_cohort, tmp_path / "expected.csv")
    real, reads = volume.read_volume, []

    def counting_read_volume(path, *args, **kwargs):  # the real reader, each call counted
        reads.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(volume, "read_volume", counting_read_volume)
    out = tmp_path / "preds"
    assert run_main(monkeypatch, "predict", "--checkpoint", str(calibrated_run), "--data", str(phantom_cohort),
                    "--out", str(out), "--workers", "0") == 0
    images = sorted(p.name for p in (phantom_cohort / "imagesTs").glob("*.nii.gz"))
    assert sorted(reads) == images  # one decode per test image: the trust facts come from the feed's read
    assert (out / names.trust_file_name("resnet3d_dual")).read_bytes() == expected.read_bytes()
    # the cached path (preprocessed tensors, raw images not decoded by the feed) reads them for the facts
    cached = tmp_path / "preds_cached"
    assert run_main(monkeypatch, "predict", "--checkpoint", str(calibrated_run), "--data", str(phantom_cohort),
                    "--out", str(cached), "--cache-dir", str(tmp_path / "cache")) == 0
    assert (cached / names.trust_file_name("resnet3d_dual")).read_bytes() == expected.read_bytes()
