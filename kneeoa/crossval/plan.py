"""The run list of a CV study: one task per (backbone, variant, fold, seed), written to STUDY/plan.json.

A task is a `kneeoa train` run directory (STUDY/runs/<model>/fold<k>_seed<s>/) on the fold's cohort view,
followed by `kneeoa predict` of its held-out knees (STUDY/predictions/fold<k>_seed<s>/). Every executor
runs the same task command, `kneeoa study --run-task STUDY --index I`; the plain train/predict command
lines are listed too, for engines that would rather run those.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from kneeoa.config import train_flag_argv
from kneeoa.contracts.studies import PLAN_FILE, fold_dir, run_tag
from kneeoa.contracts.vocab import model_name


@dataclass(frozen=True)
class Task:
    index: int
    backbone: str
    variant: str
    fold: int
    seed: int
    data: str  # the fold's cohort view
    run_dir: str
    pred_dir: str

    @property
    def name(self) -> str:
        return model_name(self.backbone, self.variant)

    def prediction_files(self) -> list[Path]:
        from kneeoa.study import prediction_files

        return prediction_files(self.pred_dir, self.name)

    def is_done(self) -> bool:
        return all(p.is_file() for p in self.prediction_files())


def build_tasks(study: Path, backbones, variants, folds: int, seeds: int) -> list[Task]:
    """Tasks in a fixed order (seed, fold, backbone, variant): early array tasks finish whole seeds first."""
    study = Path(study).resolve()
    tasks = []
    for seed in range(seeds):
        for fold in range(folds):
            for backbone in backbones:
                for variant in variants:
                    tag = run_tag(fold, seed)
                    tasks.append(Task(len(tasks), backbone, variant, fold, seed,
                                      str(study / "folds" / fold_dir(fold)),
                                      str(study / "runs" / model_name(backbone, variant) / tag),
                                      str(study / "predictions" / tag)))
    return tasks


def task_command(study: Path, index: int | str, python: str | None = None) -> list[str]:
    """The command one executor slot runs (index may be a shell variable such as $SLURM_ARRAY_TASK_ID)."""
    return [python or sys.executable, "-m", "kneeoa", "study", "--run-task", str(Path(study).resolve()),
            "--index", str(index)]


def plain_commands(task: Task, preset: str, overrides: dict, python: str | None = None) -> list[list[str]]:
    """`kneeoa train` + `kneeoa predict` command lines equivalent to the task (for other engines)."""
    exe = [python or sys.executable, "-m", "kneeoa"]
    train = [*exe, "train", "--data", task.data, "--backbone", task.backbone, "--variant", task.variant,
             "--preset", preset, "--seed", str(task.seed), "--out", task.run_dir]
    for key, value in overrides.items():
        if key != "seed" and value is not None:
            train += train_flag_argv(key, value)  # the flags `kneeoa train` generates from TrainConfig
    predict = [*exe, "predict", "--checkpoint", str(Path(task.run_dir) / "checkpoints" / "last.safetensors"),
               "--data", task.data, "--split", "test", "--out", task.pred_dir, "--embeddings", "--overwrite"]
    for key in ("cache_dir", "device"):  # `kneeoa predict` spells these two as `kneeoa train` does
        if overrides.get(key):
            predict += train_flag_argv(key, overrides[key])
    return [train, predict]


def write_plan(study: Path, tasks: list[Task], preset: str, overrides: dict) -> Path:
    """STUDY/plan.json: settings + every task with its run directory and commands."""
    from kneeoa.utils.atomic import atomic_write_text

    entries = []
    for task in tasks:
        entries.append({**asdict(task), "name": task.name, "command": shlex.join(task_command(study, task.index)),
                        "plain_commands": [shlex.join(c) for c in plain_commands(task, preset, overrides)]})
    path = Path(study) / PLAN_FILE
    atomic_write_text(path, json.dumps({"preset": preset, "overrides": overrides, "tasks": entries}, indent=2))
    return path


def read_plan(study: Path) -> tuple[list[Task], str, dict]:
    """(tasks, preset, overrides) from STUDY/plan.json."""
    from kneeoa.errors import InputError

    path = Path(study) / PLAN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no plan.json: not a CV study folder (run kneeoa study --protocol cv first)", path) from None
    except (OSError, ValueError) as err:
        raise InputError(f"unreadable plan: {err}", path) from None
    fields = Task.__dataclass_fields__
    tasks = [Task(**{k: v for k, v in entry.items() if k in fields}) for entry in data["tasks"]]
    return tasks, data["preset"], data["overrides"]
