"""KneeOA Training launches a cross-validated study in the background (local executor) and opens its report;
headless, with the module's logic and a real `kneeoa study --protocol cv` job."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from slicer_helpers import fresh_scene, load_scripted_module

from kneeoa.errors import ConfigError
from kneeoa.slicer import training

MODULE_FILE = Path(__file__).resolve().parents[2] / "KneeOATraining" / "KneeOATraining.py"


def test_cv_command_is_the_study_command_with_the_cv_protocol(tmp_path):
    from kneeoa.cli import build_parser

    argv = training.cv_study_command(tmp_path / "c", tmp_path / "s", folds=4, seeds=2, jobs_at_once=3, epochs=2,
                                     width=4, input_size=16, python="py")
    args = build_parser().parse_args(argv[argv.index("study"):])
    assert isinstance(args, argparse.Namespace)
    assert (args.protocol, args.folds, args.seeds, args.executor, args.jobs) == ("cv", 4, 2, "local", 3)
    assert (args.epochs, args.width, args.input_size) == (2, 4, [16])
    with pytest.raises(ConfigError, match="at least 2 folds"):
        training.cv_study_command(tmp_path, tmp_path, folds=1)


def test_run_labels_follow_the_plan_order(tmp_path):
    from kneeoa.crossval.plan import build_tasks

    tasks = build_tasks(tmp_path, ("resnet3d", "m3t"), ("single-oa", "dual"), 3, 2)
    labels = training.cv_run_names(3, 2, ("resnet3d", "m3t"), ("single-oa", "dual"))
    assert labels == [f"{t.name} fold {t.fold} seed {t.seed}" for t in tasks]


@pytest.fixture
def module(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    fresh_scene()
    return load_scripted_module(monkeypatch, MODULE_FILE)


@pytest.mark.slow
def test_logic_runs_a_cv_study_in_the_background_and_finds_its_report(module, phantom_cohort, tmp_path):
    logic = module.KneeOATrainingLogic()
    out = tmp_path / "cv"
    job, monitor = logic.startCVStudy(phantom_cohort, out, folds=2, seeds=1, jobsAtOnce=2, epochs=1, device="cpu",
                                      backbones=["resnet3d"], variants=["single-oa", "dual"], width=4, inputSize=16)
    assert len(monitor.models) == 4
    logic.wait(job, monitor, onEvent=lambda event: None, timeoutS=900)
    assert monitor.models_done == 4
    assert training.report_path(out) == out / "report.html"
    state = training.run_state(out)
    assert (state.kind, state.models_done, state.finished, state.resumable) == ("study", 4, True, False)
    settings = training.cv_settings(out)
    assert (settings["folds"], settings["seeds"], settings["width"], settings["input_size"]) == (2, 1, 4, 16)
    assert training.cv_settings(tmp_path) is None
