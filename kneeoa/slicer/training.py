"""KneeOATraining glue without Qt: command lines, run folders, training progress and the loss plot.

Training, the study and the latent analysis run as `kneeoa` commands in a background `jobs.Job`;
this module builds their argv, tells what a run or study folder holds (new, unfinished, finished),
folds the JSON progress lines into epochs, losses and a progress fraction, and draws the loss
curve as an MRML plot. Standard library at import (numpy/slicer only inside `update_loss_plot`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kneeoa.config import train_flag_argv  # the training flags as kneeoa train/study generate them
from kneeoa.contracts.catalog import DEFAULT_BACKBONE, backbone_names, study_backbones
from kneeoa.contracts.checkpoint_meta import read_trainer_meta
from kneeoa.contracts.studies import CV_META_FILE, TASK_DONE
from kneeoa.contracts.vocab import DEVICES, HEADS, PRESETS, VARIANTS, model_name
from kneeoa.errors import CheckpointError, ConfigError
from kneeoa.slicer import jobs

if TYPE_CHECKING:
    from kneeoa.config import TrainConfig

METRIC_KEYS = ("train_kl_acc", "train_oa_acc")  # per-epoch accuracy the engine reports, first found is shown
LOSS_COLUMNS = ("Epoch", "Loss", "Train accuracy")


def given_path(value: Any) -> Path | None:
    """A path parameter, or None when empty (ctkPathLineEdit and Path('') both give '.')."""
    text = str(value or "").strip()
    return None if text in ("", ".") else Path(text).expanduser()


@dataclass
class TrainingOptions:
    """One training run. Zero (seed: -1) means "the preset's value" and is left off the command line."""

    data: Path
    out: Path
    backbone: str = DEFAULT_BACKBONE
    variant: str = "dual"
    head: str = "chained"
    preset: str = "quick"
    epochs: int = 0
    input_size: int = 0
    lr: float = 0.0
    seed: int = -1
    device: str = "auto"
    width: int = 0  # not in the GUI: tests and self-tests train narrow models

    def __post_init__(self) -> None:
        self.data, self.out = given_path(self.data), given_path(self.out)
        if self.data is None:
            raise ConfigError("choose the dataset folder (OAI-ZIB-CM layout or a folder with a labels table)")
        if self.out is None:
            raise ConfigError("choose an output run folder")
        for name, value, allowed in (("backbone", self.backbone, backbone_names()), ("variant", self.variant, VARIANTS),
                                     ("head", self.head, HEADS), ("device", self.device, DEVICES)):
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if self.preset not in PRESETS and not str(self.preset).endswith((".yaml", ".yml")):
            raise ConfigError(f"unknown preset {self.preset!r}; choose {', '.join(PRESETS)} or a .yaml file")
        if min(self.epochs, self.input_size, self.width) < 0 or self.seed < -1 or not self.lr >= 0:
            raise ConfigError("epochs, input size, width and learning rate must be >= 0 (0: the preset's)")

    def args(self) -> list[str]:
        """Arguments of `kneeoa train` for a new run."""
        args = ["--data", str(self.data), "--backbone", self.backbone, "--variant", self.variant,
                "--preset", str(self.preset), "--out", str(self.out)]
        if self.variant == "dual":
            args += train_flag_argv("head", self.head)  # the head topology only exists for the dual variant
        for name, value, given in (("epochs", self.epochs, self.epochs > 0),
                                   ("input_shape", self.input_size, self.input_size > 0),
                                   ("lr", self.lr, self.lr > 0), ("seed", self.seed, self.seed >= 0),
                                   ("width", self.width, self.width > 0), ("device", self.device, self.device != "auto")):
            if given:
                args += train_flag_argv(name, value)
        return args


def train_command(options: TrainingOptions, python: str | None = None) -> list[str]:
    """argv of `kneeoa --progress json train ...` for a new run."""
    return jobs.kneeoa_command("train", options.args(), python)


def resume_command(out: str | Path, epochs: int = 0, device: str = "auto", python: str | None = None) -> list[str]:
    """argv that continues an interrupted run from its last complete epoch (only epochs/device may change)."""
    args = ["--out", str(out), "--resume"]
    if epochs > 0:
        args += train_flag_argv("epochs", epochs)
    if device != "auto":
        args += train_flag_argv("device", device)
    return jobs.kneeoa_command("train", args, python)


def study_command(data: str | Path, out: str | Path, preset: str = "quick", epochs: int = 0, device: str = "auto",
                  backbones: Sequence[str] | None = None, variants: Sequence[str] = VARIANTS,
                  python: str | None = None) -> list[str]:
    """argv of `kneeoa study` (the 3x3 grid); running the same command again resumes it."""
    backbones = study_backbones() if backbones is None else backbones
    args = ["--data", str(data), "--out", str(out), "--preset", str(preset),
            "--backbones", ",".join(backbones), "--variants", ",".join(variants)]
    if epochs > 0:  # kneeoa study's training flags are kneeoa train's
        args += train_flag_argv("epochs", epochs)
    if device != "auto":
        args += train_flag_argv("device", device)
    return jobs.kneeoa_command("study", args, python)


def cv_study_command(data: str | Path, out: str | Path, folds: int = 5, seeds: int = 3, jobs_at_once: int = 1,
                     preset: str = "quick", epochs: int = 0, device: str = "auto",
                     backbones: Sequence[str] | None = None, variants: Sequence[str] = VARIANTS, width: int = 0,
                     input_size: int = 0, python: str | None = None) -> list[str]:
    """argv of `kneeoa study --protocol cv` with the local executor (`jobs_at_once` runs in parallel);
    running the same command again resumes it."""
    if folds < 2 or seeds < 1 or jobs_at_once < 1:
        raise ConfigError("a CV study needs at least 2 folds, 1 seed and 1 job")
    argv = study_command(data, out, preset, epochs, device, backbones, variants, python)
    argv += ["--protocol", "cv", "--folds", str(folds), "--seeds", str(seeds), "--executor", "local",
             "--jobs", str(jobs_at_once)]
    if width > 0:
        argv += train_flag_argv("width", width)
    if input_size > 0:
        argv += train_flag_argv("input_shape", input_size)
    return argv


def cv_run_names(folds: int, seeds: int, backbones: Sequence[str] | None = None,
                 variants: Sequence[str] = VARIANTS) -> list[str]:
    """One label per run, in the order the CV plan lists them (kneeoa.crossval.plan: seed, fold, model)."""
    backbones = study_backbones() if backbones is None else backbones
    return [f"{model_name(b, v)} fold {f} seed {s}" for s in range(seeds) for f in range(folds)
            for b in backbones for v in variants]


def predict_command(checkpoint: str | Path, data: str | Path, out: str | Path, device: str = "auto",
                    labels: str | Path | None = None, python: str | None = None) -> list[str]:
    """argv of `kneeoa predict --embeddings` (train + test embeddings for the latent analysis)."""
    args = ["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out), "--embeddings", "--overwrite"]
    if labels:
        args += ["--labels", str(labels)]
    if device != "auto":
        args += ["--device", device]
    return jobs.kneeoa_command("predict", args, python)


def latent_command(inputs: str | Path, out: str | Path, python: str | None = None) -> list[str]:
    """argv of `kneeoa latent NPZ_OR_FOLDER --out DIR` (latent_points.csv, latent_summary.csv)."""
    return jobs.kneeoa_command("latent", [str(inputs), "--out", str(out)], python)


# --- what a folder holds ---------------------------------------------------------------------------------


@dataclass
class RunState:
    """What an output folder holds: kind 'empty' | 'run' | 'study' | 'other', and how far it got."""

    folder: Path
    kind: str
    epochs_done: int = 0
    epochs_total: int | None = None
    models_done: int = 0
    finished: bool = False

    @property
    def resumable(self) -> bool:
        return self.kind in ("run", "study") and not self.finished

    def describe(self) -> str:
        """One line for the module panel."""
        if self.kind == "empty":
            return "New folder: Train or Run study writes here."
        if self.kind == "other":
            return "This folder holds other files: choose an empty or new folder, or an existing run."
        if self.kind == "study":
            return (f"Study, {self.models_done} model(s) trained and predicted"
                    + (": finished (open the report)." if self.finished else ": unfinished, Resume continues it."))
        total = f" of {self.epochs_total}" if self.epochs_total else ""
        return (f"Training run, {self.epochs_done}{total} epoch(s) done"
                + (": finished." if self.finished else ": unfinished, Resume continues it."))


def run_state(folder: str | Path | None) -> RunState:
    """Read an output folder without loading torch: a training run, a study, nothing yet, or other files."""
    from kneeoa.engine.rundir import RunDir

    path = given_path(folder)
    if path is None or not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return RunState(Path(path or "."), "empty")
    if (path / CV_META_FILE).is_file():
        return _cv_state(path)
    if (path / "study.json").is_file() or (path / "models").is_dir():
        done = len(list((path / "predictions").glob("*_embeddings.npz"))) if (path / "predictions").is_dir() else 0
        return RunState(path, "study", models_done=done, finished=(path / "study.json").is_file())
    run = RunDir(path)
    if not run.is_run():
        return RunState(path, "other")
    return RunState(path, "run", epochs_done=len(run.completed_metrics()), epochs_total=_config_epochs(run.config),
                    finished=_run_finished(run))


def cv_settings(folder: str | Path | None) -> dict | None:
    """The settings a CV study folder was started with (for Resume), or None if it is not one."""
    path = given_path(folder)
    try:
        meta = json.loads((path / CV_META_FILE).read_text(encoding="utf-8")) if path is not None else None
    except (OSError, ValueError):
        return None
    if not meta:
        return None
    overrides = meta.get("overrides") or {}
    shape = overrides.get("input_shape") or [0]
    return {"data": meta["data"], "folds": int(meta["folds"]), "seeds": int(meta["seeds"]),
            "preset": meta["preset"], "backbones": meta["backbones"], "variants": meta["variants"],
            "epochs": int(overrides.get("epochs") or 0), "width": int(overrides.get("width") or 0),
            "input_size": int(shape[0]) if len(set(shape)) == 1 else 0}


def _cv_state(path: Path) -> RunState:
    """A CV study: runs done from the task states; finished when the last collect saw every run done."""
    done = 0
    for status in (path / "status").glob("task_*.json") if (path / "status").is_dir() else []:
        try:
            done += json.loads(status.read_text(encoding="utf-8")).get("state") == TASK_DONE
        except (OSError, ValueError):
            continue
    try:
        summary = json.loads((path / "study.json").read_text(encoding="utf-8"))
        finished = summary.get("unfinished") == 0 and summary.get("failed") == 0
    except (OSError, ValueError):
        finished = False
    return RunState(path, "study", models_done=done, finished=finished)


def _config_epochs(config: Path) -> int | None:
    match = re.search(r"(?m)^epochs:\s*(\d+)\s*$", config.read_text(encoding="utf-8"))
    return int(match.group(1)) if match else None


def _run_finished(run: Any) -> bool:
    """The trainer state's `finished` flag, read from the safetensors JSON header with the standard library:
    the panel refreshes this on every edit, and importing torch would stall Slicer's GUI for seconds."""
    try:
        meta = read_trainer_meta(run.state)
    except CheckpointError:
        return False  # no epoch finished yet, or a state cut short by a hard kill: not finished either way
    return bool(meta.get("finished"))


def cohort_summary(folder: str | Path | None) -> str:
    """One line about a cohort folder (cases and KL counts per split), or why it cannot be used."""
    path = given_path(folder)
    if path is None or not path.is_dir():
        return "Choose a dataset folder."
    try:
        from kneeoa.data.cohort import load_cohort

        summary = load_cohort(path).summary()
    except ImportError as err:  # Slicer before the dependencies are installed (Train offers to install them)
        return f"Cannot read the cohort yet: {err.name or err} is not installed."
    except Exception as err:  # not a cohort: the reader says why
        return f"Not usable: {err}"
    splits = [f"{name} {s['n_cases']} (KL 0-4: {'/'.join(str(n) for n in s['kl_counts'].values())})"
              for name, s in summary["splits"].items()]
    return f"{summary['kind']} cohort: " + ("; ".join(splits) or "no cases")


def run_config(folder: str | Path) -> TrainConfig:
    """The resolved config.yaml of a training run (data, labels, backbone, ...)."""
    from kneeoa.config import load_config

    return load_config(Path(folder) / "config.yaml")


def report_path(folder: str | Path | None) -> Path | None:
    """STUDY/report.html if the folder is a study that has written one."""
    path = given_path(folder)
    report = path / "report.html" if path is not None else None
    return report if report is not None and report.is_file() else None


# --- progress ----------------------------------------------------------------------------------------------


@dataclass
class TrainingMonitor:
    """Folds `kneeoa train` / `kneeoa study` JSON events into epochs, losses, a status line and a fraction.

    `history` holds one row per completed epoch of the model being trained (epoch, loss, metric);
    in a study it restarts with each model of `models` (the grid order kneeoa.study trains in).
    """

    models: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    epochs_total: int | None = None
    models_done: int = 0
    stage: str = "starting"
    messages: list[str] = field(default_factory=list)
    finished: bool = False

    @property
    def current_model(self) -> str | None:
        return self.models[self.models_done] if self.models_done < len(self.models) else None

    def load_history(self, run_folder: str | Path) -> None:
        """Start from the epochs a run already completed (resume: the plot keeps its earlier points)."""
        from kneeoa.engine.rundir import RunDir

        self.history = [self._row(r) for r in RunDir(run_folder).completed_metrics() if "loss" in r]

    @staticmethod
    def _row(values: dict) -> dict:
        metric = next((k for k in METRIC_KEYS if isinstance(values.get(k), (int, float))), None)
        return {"epoch": int(values["epoch"]), "loss": float(values["loss"]), "metric_name": metric,
                "metric": float(values[metric]) if metric else math.nan}

    def update(self, event: dict) -> bool:
        """Take one event; True when a new epoch arrived (redraw the loss plot)."""
        kind, task = event.get("event"), event.get("task")
        if kind in ("log", "text") and str(event.get("message", "")).strip():
            self.messages.append(str(event["message"]))
        if task == "train":
            if kind == "start":
                self.epochs_total = event.get("total")
                self.stage = "training"
            elif kind == "progress" and "loss" in event and "epoch" in event:
                row = self._row(event)
                self.history = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]
                return True
        elif task == "study" and kind == "progress":
            self.models_done = int(event.get("done", self.models_done))
            self.history = []  # the next model's curve starts empty
        elif task == "study" and kind == "end":
            self.finished = bool(event.get("ok", True))
        elif kind == "start" and task:
            self.stage = str(task)  # predict, stats, saliency, ...
        return False

    @property
    def fraction(self) -> float:
        """Share of the whole job done, in [0, 1]."""
        epochs = (len(self.history) / self.epochs_total) if self.epochs_total else 0.0
        if not self.models:
            return min(1.0, epochs)
        if self.models_done >= len(self.models):
            return 0.99 if not self.finished else 1.0  # analyses and the report after the last model
        return min(1.0, (self.models_done + min(1.0, epochs)) / len(self.models))

    def status(self) -> str:
        """Where the job is: model, epoch, loss and accuracy of the last epoch."""
        parts = []
        if self.models:
            name = self.current_model
            parts.append(f"model {min(self.models_done + 1, len(self.models))}/{len(self.models)}"
                         + (f" {name}" if name else ": analyses and report"))
        if self.history and (not self.models or self.current_model):
            last = self.history[-1]
            total = f"/{self.epochs_total}" if self.epochs_total else ""
            parts.append(f"epoch {last['epoch']}{total}, loss {last['loss']:.4f}")
            if last["metric_name"]:
                parts.append(f"{last['metric_name'].replace('_', ' ')} {last['metric']:.3f}")
        elif self.stage not in ("training",):
            parts.append(self.stage)
        return " | ".join(parts)


def update_loss_plot(history: list[dict], scene: Any, table_node: Any = None, chart_node: Any = None,
                     title: str = "Training") -> tuple[Any, Any]:
    """Loss (and training accuracy) per epoch as a line chart: (table node, chart node), reusing given nodes."""
    import numpy as np
    import slicer.util

    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{title} loss")
    columns = [np.array([r["epoch"] for r in history], dtype=np.float64),
               np.array([r["loss"] for r in history], dtype=np.float64),
               np.array([r["metric"] for r in history], dtype=np.float64)]
    slicer.util.updateTableFromArray(table_node, columns, list(LOSS_COLUMNS))
    if chart_node is None:
        chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{title} loss chart")
    for index, (column, colour) in enumerate(((LOSS_COLUMNS[1], (0.70, 0.10, 0.17)),
                                              (LOSS_COLUMNS[2], (0.13, 0.40, 0.67)))):
        series = chart_node.GetNthPlotSeriesNode(index)
        if series is None:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", column)
            chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName(LOSS_COLUMNS[0])
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)  # Slicer's scatter type draws line + markers with a line style
        series.SetLineStyle(series.LineStyleSolid)
        series.SetMarkerStyle(series.MarkerStyleCircle)
        series.SetColor(*colour)
    chart_node.SetTitle(f"{title}: loss per epoch")
    chart_node.SetXAxisTitle("Epoch")
    chart_node.SetYAxisTitle("Loss / accuracy")
    chart_node.SetLegendVisibility(True)
    return table_node, chart_node


def result_summary(events: list[dict]) -> dict:
    """The payload of the job's last "result" event (e.g. `kneeoa latent` writes its file paths there)."""
    found = [e for e in events if e.get("event") == "result"]
    return dict(found[-1]) if found else {}
