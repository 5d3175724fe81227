"""KneeOATraining glue: command lines, what a run/study folder holds, progress folding, the loss plot (real MRML)."""

from __future__ import annotations

import json
import math

import pytest
from slicer_helpers import fresh_scene

from kneeoa.errors import ConfigError
from kneeoa.slicer import training


def _parse(argv):
    """The argv of a job parsed by the real `kneeoa` parser (after `python -m kneeoa`)."""
    from kneeoa.cli import build_parser

    assert argv[1:3] == ["-m", "kneeoa"]
    return build_parser().parse_args(argv[3:])


def test_every_preset_the_gui_offers_is_bundled():
    from kneeoa.config import preset_path
    from kneeoa.contracts.vocab import PRESETS

    assert all(preset_path(p).is_file() for p in PRESETS)


def test_train_command_passes_every_override_the_user_set(tmp_path):
    options = training.TrainingOptions(tmp_path / "cohort", tmp_path / "run", backbone="m3t", variant="dual",
                                       head="parallel", preset="quick", epochs=3, input_size=24, lr=2.5e-4, seed=7,
                                       device="cpu", width=4)
    args = _parse(training.train_command(options, python="py"))
    assert args.progress == "json" and args.command == "train"
    assert (args.data, args.out, args.backbone, args.variant, args.head, args.preset) == \
        (str(tmp_path / "cohort"), str(tmp_path / "run"), "m3t", "dual", "parallel", "quick")
    assert (args.epochs, args.input_size, args.lr, args.seed, args.device, args.width) == (3, [24], 2.5e-4, 7, "cpu", 4)
    assert not args.resume


def test_train_command_leaves_preset_values_to_the_preset(tmp_path):
    options = training.TrainingOptions(tmp_path / "c", tmp_path / "r", variant="single-kl", head="parallel")
    args = _parse(training.train_command(options, python="py"))
    assert (args.epochs, args.input_size, args.lr, args.seed, args.width, args.device) == (None,) * 6
    assert args.head is None  # the head topology belongs to the dual variant only


@pytest.mark.parametrize("change, message", [({"data": ""}, "dataset folder"), ({"out": "."}, "output run folder"),
                                             ({"backbone": "vgg"}, "unknown backbone"),
                                             ({"preset": "fast"}, "unknown preset"), ({"epochs": -1}, ">= 0")])
def test_training_options_refuse_what_the_engine_would_refuse(tmp_path, change, message):
    values = {"data": tmp_path / "c", "out": tmp_path / "r", **change}
    with pytest.raises(ConfigError, match=message):
        training.TrainingOptions(**values)


def test_resume_and_study_commands(tmp_path):
    resume = _parse(training.resume_command(tmp_path / "run", epochs=12, device="cuda", python="py"))
    assert (resume.command, resume.out, resume.resume, resume.epochs, resume.device, resume.backbone) == \
        ("train", str(tmp_path / "run"), True, 12, "cuda", None)
    study = _parse(training.study_command(tmp_path / "c", tmp_path / "s", preset="paper", epochs=2, python="py"))
    assert (study.command, study.data, study.out, study.preset, study.epochs, study.device) == \
        ("study", str(tmp_path / "c"), str(tmp_path / "s"), "paper", 2, None)
    assert study.backbones.split(",") == ["resnet3d", "m3t", "nnmamba"]
    assert study.variants.split(",") == ["single-oa", "single-kl", "dual"]


def test_predict_and_latent_commands(tmp_path):
    predict = _parse(training.predict_command(tmp_path / "m.safetensors", tmp_path / "c", tmp_path / "o", python="py"))
    assert (predict.command, predict.embeddings, predict.overwrite, predict.split) == ("predict", True, True, "test")
    latent = _parse(training.latent_command(tmp_path / "o", tmp_path / "o", python="py"))
    assert (latent.command, latent.inputs, latent.out) == ("latent", [str(tmp_path / "o")], str(tmp_path / "o"))


def _trainer_state(run, epochs_done):
    import torch

    from kneeoa.engine.state import save_trainer_state

    model = torch.nn.Linear(1, 1)
    (run / "checkpoints").mkdir(exist_ok=True)
    save_trainer_state(run / "checkpoints" / "trainer_state.safetensors", model, torch.optim.AdamW(model.parameters()),
                       None, epochs_done, finished=False)


def test_run_state_tells_new_other_run_and_study_folders(tmp_path):
    assert training.run_state(None).kind == "empty"
    assert training.run_state(tmp_path / "missing").kind == "empty"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    assert training.run_state(other).kind == "other" and not training.run_state(other).resumable

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("# resolved\nepochs: 5\nlr: 0.001\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "loss": 1.0}) + "\n" for e in (1, 2)))
    (run / "train.log").write_text("2026-01-01 00:00:00 epoch=2 loss=1\n")
    assert training.run_state(run).epochs_done == 0  # log lines without a trainer state: no epoch is resumable
    _trainer_state(run, epochs_done=2)
    state = training.run_state(run)
    assert (state.kind, state.epochs_done, state.epochs_total, state.finished, state.resumable) == \
        ("run", 2, 5, False, True)
    assert "2 of 5 epoch(s)" in state.describe() and "Resume" in state.describe()

    study = tmp_path / "study"
    (study / "models" / "resnet3d_dual").mkdir(parents=True)
    (study / "predictions").mkdir()
    (study / "predictions" / "resnet3d_dual_embeddings.npz").write_bytes(b"")
    state = training.run_state(study)
    assert (state.kind, state.models_done, state.finished, state.resumable) == ("study", 1, False, True)
    (study / "study.json").write_text("{}")
    assert training.run_state(study).finished and not training.run_state(study).resumable


def test_report_path_only_when_the_study_wrote_it(tmp_path):
    assert training.report_path(tmp_path) is None and training.report_path("") is None
    (tmp_path / "report.html").write_text("<html></html>")
    assert training.report_path(tmp_path) == tmp_path / "report.html"


def _train_events(losses, total):
    events = [{"event": "start", "task": "train", "total": total}]
    for epoch, loss in enumerate(losses, start=1):
        events.append({"event": "progress", "task": "train", "done": epoch, "total": total, "elapsed_s": 1.0,
                       "epoch": epoch, "loss": loss, "train_oa_acc": 0.5, "train_kl_acc": 0.25})
    return events


def test_monitor_folds_training_events_into_epochs_fraction_and_status():
    monitor = training.TrainingMonitor()
    new_epoch = [monitor.update(e) for e in _train_events([0.9, 0.7], total=4)]
    assert new_epoch == [False, True, True]
    assert [(r["epoch"], r["loss"], r["metric_name"], r["metric"]) for r in monitor.history] == \
        [(1, 0.9, "train_kl_acc", 0.25), (2, 0.7, "train_kl_acc", 0.25)]
    assert monitor.fraction == 0.5
    assert monitor.status() == "epoch 2/4, loss 0.7000 | train kl acc 0.250"
    monitor.update({"event": "text", "message": "UserWarning: something"})
    assert monitor.messages == ["UserWarning: something"]


def test_monitor_of_a_study_restarts_the_curve_per_model_and_counts_models():
    monitor = training.TrainingMonitor(models=["a", "b"])
    for event in _train_events([1.0, 0.8], total=2):
        monitor.update(event)
    assert monitor.fraction == 0.5 and monitor.status().startswith("model 1/2 a | epoch 2/2")
    monitor.update({"event": "progress", "task": "study", "done": 1, "total": 2, "model": "a", "seconds": 3.0})
    assert monitor.history == [] and monitor.current_model == "b" and monitor.fraction == 0.5
    monitor.update({"event": "progress", "task": "study", "done": 2, "total": 2, "model": "b", "seconds": 3.0})
    monitor.update({"event": "start", "task": "saliency", "total": 4})
    assert monitor.fraction == 0.99 and monitor.status() == "model 2/2: analyses and report | saliency"
    monitor.update({"event": "end", "task": "study", "done": 2, "ok": True})
    assert monitor.finished and monitor.fraction == 1.0


def test_resumed_monitor_keeps_the_epochs_already_done(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "loss": 2.0 - e, "train_oa_acc": 0.5})
                                                    + "\n" for e in (1, 2)))
    _trainer_state(tmp_path, epochs_done=2)
    monitor = training.TrainingMonitor(epochs_total=3)
    monitor.load_history(tmp_path)
    monitor.update({"event": "start", "task": "train", "total": 3})
    monitor.update({"event": "progress", "task": "train", "done": 2, "total": 3})  # resume fast-forward: no loss
    monitor.update({"event": "progress", "task": "train", "done": 3, "total": 3, "epoch": 3, "loss": 0.5})
    assert [r["epoch"] for r in monitor.history] == [1, 2, 3]
    assert monitor.history[0]["metric_name"] == "train_oa_acc" and math.isnan(monitor.history[2]["metric"])
    assert monitor.fraction == 1.0


def test_loss_plot_is_a_table_and_a_chart_updated_in_place():
    scene = fresh_scene()
    history = [{"epoch": 1, "loss": 0.9, "metric_name": "train_oa_acc", "metric": 0.5}]
    table, chart = training.update_loss_plot(history, scene)
    history.append({"epoch": 2, "loss": 0.6, "metric_name": "train_oa_acc", "metric": 0.75})
    table2, chart2 = training.update_loss_plot(history, scene, table, chart)
    assert (table2, chart2) == (table, chart)
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 2
    vtk_table = table.GetTable()
    assert vtk_table.GetNumberOfRows() == 2
    assert [vtk_table.GetValueByName(1, c).ToDouble() for c in training.LOSS_COLUMNS] == [2.0, 0.6, 0.75]
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [s.GetYColumnName() for s in series] == list(training.LOSS_COLUMNS[1:])
    assert all(s.GetTableNodeID() == table.GetID() and s.GetXColumnName() == "Epoch" for s in series)


def test_cohort_summary_counts_cases_per_split(phantom_cohort, tmp_path):
    text = training.cohort_summary(phantom_cohort)
    assert text.startswith("oaizib cohort: train 12 (KL 0-4: ") and "; test 6 (KL 0-4: " in text
    assert training.cohort_summary(tmp_path / "missing") == "Choose a dataset folder."
    (tmp_path / "notes.txt").write_text("x")
    assert training.cohort_summary(tmp_path).startswith("Not usable: ")
