"""One task of a CV study (what every executor slot runs): train or resume the run, predict its fold.

Safe to run again: a finished run is not retrained and finished predictions are not redone. The task's
state is STUDY/status/task_<index>.json (running | done | failed, with the error and the seconds spent),
which `kneeoa study --collect` reads to list failed tasks with their log.
"""

from __future__ import annotations

import json
import signal
import time
import traceback
from pathlib import Path

from kneeoa.contracts.studies import PLAN_FILE, TASK_DONE, TASK_FAILED, TASK_RUNNING


def status_path(study: Path, index: int) -> Path:
    return Path(study) / "status" / f"task_{index}.json"


def log_path(study: Path, index: int) -> Path:
    """Where the executors send a task's stdout and stderr."""
    return Path(study) / "logs" / f"task_{index}.log"


def read_status(study: Path, index: int) -> dict | None:
    try:
        return json.loads(status_path(study, index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_status(study: Path, index: int, **fields) -> None:
    from kneeoa.utils.atomic import atomic_write_text

    atomic_write_text(status_path(study, index), json.dumps({"index": index, **fields}, indent=2))


def run_task(study: str | Path, index: int) -> dict:
    """Run task `index` of STUDY/plan.json; returns its final status (raises after recording a failure)."""
    from kneeoa.crossval.plan import read_plan
    from kneeoa.errors import ConfigError

    study = Path(study)
    tasks, preset, overrides = read_plan(study)
    if not 0 <= index < len(tasks):
        raise ConfigError(f"task index {index} outside the plan's 0..{len(tasks) - 1}", study / PLAN_FILE)
    task = tasks[index]
    previous = read_status(study, index) or {}
    if task.is_done():
        status = {**previous, "state": TASK_DONE, "name": task.name, "fold": task.fold, "seed": task.seed}
        _write_status(study, index, **status)
        return status
    t0 = time.perf_counter()
    spent = float(previous.get("seconds", 0.0))  # compute of earlier, interrupted attempts is kept
    # the handler first: whoever sees 'running' may stop the task, and a SIGTERM must then record 'failed'
    previous_handler = signal.signal(signal.SIGTERM, _terminated) if _main_thread() else None
    try:
        _write_status(study, index, state=TASK_RUNNING, name=task.name, fold=task.fold, seed=task.seed,
                      seconds=spent)
        _train_and_predict(task, preset, overrides)
    except BaseException as err:  # Ctrl-C, and SIGTERM (SLURM's time limit, scancel) via _terminated, too
        _write_status(study, index, state=TASK_FAILED, name=task.name, fold=task.fold, seed=task.seed,
                      error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=8),
                      log=str(log_path(study, index)), seconds=round(spent + time.perf_counter() - t0, 1))
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    status = {"state": TASK_DONE, "name": task.name, "fold": task.fold, "seed": task.seed,
              "seconds": round(spent + time.perf_counter() - t0, 1)}
    _write_status(study, index, **status)
    return status


class Terminated(Exception):
    """The task got SIGTERM (SLURM's time limit or scancel, the local executor stopping)."""


def _terminated(signum, frame) -> None:
    raise Terminated("terminated by SIGTERM (time limit, scancel or the executor stopping); run again to resume")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _train_and_predict(task, preset: str, overrides: dict) -> None:
    from kneeoa.engine.predict import predict
    from kneeoa.study import train_unless_finished

    checkpoint = train_unless_finished(task.data, task.run_dir, task.backbone, task.variant, preset,
                                       {**overrides, "seed": task.seed})
    predict(checkpoint, task.data, task.pred_dir, split="test", embeddings=True,
            cache_dir=overrides.get("cache_dir"), overwrite=True, device=overrides.get("device", "auto"))
