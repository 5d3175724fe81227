"""KneeOAGradingLogic, the console API of the README, run headless on real MRML nodes.

The module file imports Slicer's Qt-based pieces (qt, ScriptedLoadableModule, parameterNodeWrapper,
i18n), which the slicer-core wheel does not have. They are replaced by small stand-ins named as such;
everything the logic does (nodes, files, the `kneeoa grade` process, score_folder) is real.
"""

from __future__ import annotations

import csv
import unittest
from pathlib import Path

import pytest
from slicer_helpers import fresh_scene, load_scripted_module

from kneeoa.slicer import nodes, results

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def module(monkeypatch):
    return load_scripted_module(monkeypatch, ROOT / "KneeOAGrading" / "KneeOAGrading.py")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from kneeoa.data.phantom import generate_cohort

    folder = tmp_path_factory.mktemp("phantom")
    generate_cohort(folder, n_train=2, n_test=0, shape=(24, 24, 24), seed=0, workers=1)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from kneeoa.models.checkpoint import save_checkpoint
    from kneeoa.models.registry import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="resnet3d", variant="dual", input_shape=(16, 16, 16), width=4))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model,
                           {"training_data": "synthetic phantom, not for clinical use"})


def test_empty_checkpoint_field_means_the_demo_model(module):
    logic = module.KneeOAGradingLogic()
    assert logic.checkpointPath(Path(".")) is None and logic.checkpointPath("") is None
    assert logic.checkpointPath("/m/x.safetensors") == Path("/m/x.safetensors")


def test_model_card_is_read_from_the_chosen_checkpoint(module, checkpoint):
    card = module.KneeOAGradingLogic().readCard(checkpoint)
    assert card["spec"]["variant"] == "dual"
    assert ("Training data", "synthetic phantom, not for clinical use") in results.card_rows(card)


@pytest.mark.slow
def test_process_grades_a_volume_node_and_lists_it_in_the_graded_table(module, phantom, checkpoint):
    scene = fresh_scene()
    views = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    volume = nodes.load_volume_node(phantom / "imagesTr" / "oaizib_001_0000.nii.gz", "oaizib_001_0000", scene)
    labels = nodes.load_volume_node(phantom / "labelsTr" / "oaizib_001.nii.gz", "oaizib_001", scene, is_label=True)
    result = module.KneeOAGradingLogic().process(volume, labels, checkpoint=checkpoint, device="cpu")
    assert len(result.kl_probs) == 5 and result.heads_agree in (True, False)
    assert result.overlap["mass_roi"] >= 0.0
    assert results.table_rows(results.graded_table(scene))[0][0] == "oaizib_001_0000"
    assert views.GetBackgroundVolumeID() == volume.GetID()
    assert views.GetForegroundVolumeID() == result.saliency_node.GetID()


def test_score_folder_writes_the_table_and_resumes(module, phantom, checkpoint, tmp_path):
    fresh_scene()
    logic = module.KneeOAGradingLogic()
    out = tmp_path / "scores.csv"
    first = logic.scoreFolder(str(phantom / "imagesTr"), str(out), checkpoint=checkpoint, device="cpu")
    assert (first["scored"], first["errors"]) == (2, 0)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["case_id"] for r in rows) == ["oaizib_001", "oaizib_002"]  # the one case-id rule
    again = logic.scoreFolder(str(phantom / "imagesTr"), str(out), checkpoint=checkpoint, device="cpu")
    assert (again["scored"], again["skipped"]) == (0, 2)


def test_ctest_finds_exactly_the_module_self_test(module):
    """slicer.testing.runUnitTest loads every TestCase of the module: the Lib's base class must not be one."""
    suite = unittest.TestLoader().loadTestsFromModule(module)
    found = [test.id() for tests in suite for test in tests]
    assert found == ["KneeOAGrading.KneeOAGradingTest.test_GradePhantomCase"]


def test_score_folder_runs_in_a_background_process_that_cancel_stops(module, phantom, checkpoint, tmp_path):
    """The GUI's path: start, poll, cancel; the table keeps what was scored and a rerun continues it."""
    fresh_scene()
    logic = module.KneeOAGradingLogic()
    out = tmp_path / "scores.csv"
    run = logic.startScoreFolder(str(phantom / "imagesTr"), str(out), checkpoint=checkpoint, device="cpu")
    assert run.job.argv[1:6] == ["-m", "kneeoa", "--progress", "json", "score"]
    run.job.cancel()
    from kneeoa.errors import JobError

    with pytest.raises(JobError, match="cancelled"):
        run.finish()
    summary = logic.scoreFolder(str(phantom / "imagesTr"), str(out), checkpoint=checkpoint, device="cpu")
    assert summary["scored"] + summary["skipped"] == 2 and summary["errors"] == 0


def test_grading_without_dependencies_is_one_clear_error(module, monkeypatch):
    from kneeoa.errors import DependencyError
    from kneeoa.slicer import deps

    monkeypatch.setattr(deps, "REQUIREMENTS", ("surely-not-a-kneeoa-dependency>=1.0",))
    scene = fresh_scene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(DependencyError, match="Grading needs surely-not-a-kneeoa-dependency"):
        module.KneeOAGradingLogic().process(volume)
    with pytest.raises(DependencyError, match="Scoring a folder needs"):
        module.KneeOAGradingLogic().scoreFolder("/nowhere", "/nowhere.csv")
