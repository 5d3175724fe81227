"""Grading panel trust display (headless, real slicer-core MRML): the KL set, the OOD banner, calibrated chart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from slicer_helpers import fresh_scene

from kneeoa.contracts import trust as names
from kneeoa.slicer import grading, nodes, results, trust_view


@pytest.fixture(scope="module")
def calibrated(phantom_cohort, tmp_path_factory):
    """A tiny checkpoint calibrated on the phantom's training knees (real fit, real tensors)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from engine_helpers import tiny_checkpoint

    from kneeoa.data.cohort import load_cohort
    from kneeoa.engine.inference import load_model
    from kneeoa.trust.fit import fit_trust
    from kneeoa.trust.store import write_trusted_checkpoint

    folder = tmp_path_factory.mktemp("trust_ckpt")
    plain = tiny_checkpoint(folder / "plain.safetensors")
    model, card = load_model(plain, "cpu")
    cases = load_cohort(phantom_cohort).split("train")
    import torch

    stats = fit_trust(model, card, cases, (24, 24, 24), torch.device("cpu"), fit_cases=cases, calibrated_on="test")
    return write_trusted_checkpoint(plain, folder / "calibrated.safetensors", stats)


def _result(calibrated, image, tmp_path) -> dict:
    from kneeoa.engine.grade import grade_volume

    result = grade_volume(image, calibrated, device="cpu")
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    return path


def test_the_panel_shows_the_set_calibrated_chart_and_trust_rows(calibrated, phantom_cohort, tmp_path):
    scene = fresh_scene()
    image = sorted((phantom_cohort / "imagesTs").glob("*.nii.gz"))[0]
    volume = nodes.load_volume_node(image, "oaizib_013_0000", scene)
    files = grading.GradingFiles(tmp_path, image, None, None, _result(calibrated, image, tmp_path))
    out = grading.finish(files, volume, scene=scene)
    t = out.result[names.TRUST_KEY]
    chart_title = out.kl_chart_node.GetTitle()
    assert "calibrated KL grade probabilities" in chart_title
    charted = [float(r[1]) for r in results.table_rows(out.kl_table_node)]
    assert np.allclose(charted, [t[c] for c in names.KL_PROB_CAL_COLUMNS], atol=1e-6)
    rows = dict(results.table_rows(out.result_table_node))
    assert rows["KL set (90 %, ordinal)"] == t[names.KL_SET]
    assert rows["Out of distribution"] == ("yes" if t[names.OOD_FLAG] else "no")
    summary = trust_view.summary_html(results.summary_text(out.result), out.result)
    assert f"set: <b>{t[names.KL_SET_LABEL]}</b>" in summary and "at 90 %" in summary
    # the stored result rebuilds the same calibrated chart after the nodes were deleted
    scene.RemoveNode(out.kl_chart_node)
    shown = results.ensure_result_nodes(volume, scene)
    assert "calibrated" in shown[results.ROLE_KL_CHART].GetTitle()


def test_a_flagged_volume_gets_a_warning_banner_in_plain_words(calibrated, phantom_cohort, tmp_path):
    from kneeoa.data.volume import read_volume, write_nifti

    vol = read_volume(sorted((phantom_cohort / "imagesTs").glob("*.nii.gz"))[0])
    inverted = tmp_path / "inverted.nii.gz"
    write_nifti(inverted, vol.array.max() - vol.array, vol.affine)
    result = json.loads(_result(calibrated, inverted, tmp_path).read_text())
    banner = trust_view.ood_banner(result)
    assert banner.startswith("Unlike the training data: intensity distribution unlike the training data's")
    html = trust_view.summary_html(results.summary_text(result), result)
    assert html.startswith("<div") and "&#9888;" in html


def test_results_of_uncalibrated_checkpoints_look_as_before():
    result = {"kl_probs": [0.1, 0.2, 0.3, 0.2, 0.2], "oa_prob": 0.7, "pred_kl": 2, "pred_oa": 1, "trust": None}
    assert trust_view.ood_banner(result) is None and trust_view.trust_rows(result) == []
    assert trust_view.chart_probabilities(result) == (result["kl_probs"], False)
    assert trust_view.summary_html("KL grade 2", result) == "KL grade 2"


def test_the_console_result_object_exposes_the_trust_block(calibrated, phantom_cohort, tmp_path):
    scene = fresh_scene()
    image = sorted((phantom_cohort / "imagesTs").glob("*.nii.gz"))[0]
    volume = nodes.load_volume_node(image, "knee", scene)
    out = grading.finish(grading.GradingFiles(tmp_path, image, None, None, _result(calibrated, image, tmp_path)),
                         volume, scene=scene)
    assert out.trust[names.KL_SET_LABEL].startswith("KL ") and out.trust[names.OOD_FLAG] in (0, 1)


def test_a_chosen_set_level_reaches_the_grading_command(tmp_path):
    from kneeoa.cli import build_parser

    scene = fresh_scene()
    volume = nodes.volume_node_from_array(np.zeros((8, 8, 8), np.float32) + np.arange(8.0), np.eye(4), "v", scene)
    default, _ = grading.prepare(volume, grading.GradingOptions(tmp_path / "m.safetensors"), tmp_path / "a")
    assert "--alpha" not in default
    argv, _ = grading.prepare(volume, grading.GradingOptions(tmp_path / "m.safetensors", alpha=0.2), tmp_path / "b",
                              python="py")
    assert build_parser().parse_args(argv[3:]).alpha == 0.2
    assert grading.on_cpu(grading.GradingOptions(tmp_path / "m.safetensors", alpha=0.2)).alpha == 0.2
    with pytest.raises(ValueError, match="alpha"):
        grading.GradingOptions(tmp_path / "m.safetensors", alpha=1.5)


@pytest.mark.slow
def test_the_set_level_chosen_in_the_panel_reaches_the_grade_and_its_label(calibrated, phantom_cohort, monkeypatch):
    from pathlib import Path

    from slicer_helpers import load_scripted_module

    module = load_scripted_module(monkeypatch, Path(__file__).resolve().parents[2] / "KneeOAGrading" / "KneeOAGrading.py")
    logic = module.KneeOAGradingLogic()
    assert logic.gradingOptions(calibrated).alpha == pytest.approx(names.DEFAULT_ALPHA)
    assert logic.gradingOptions(calibrated, setLevel=0.8).alpha == pytest.approx(0.2)
    scene = fresh_scene()
    image = sorted((phantom_cohort / "imagesTs").glob("*.nii.gz"))[0]
    volume = nodes.load_volume_node(image, "oaizib_013_0000", scene)
    monkeypatch.setattr(module.slicer, "mrmlScene", scene, raising=False)
    out = logic.process(volume, checkpoint=calibrated, device="cpu", showResult=False, setLevel=0.8)
    assert out.trust[names.SET_LEVEL] == pytest.approx(0.8) and out.trust[names.KL_SET_LABEL].endswith("at 80 %")
    assert dict(results.table_rows(out.result_table_node))["KL set (80 %, ordinal)"] == out.trust[names.KL_SET]
