"""The cross-validated, multi-seed study (`kneeoa study --protocol cv`): prepare, execute, collect.

    STUDY/cv_study.json            settings (data, folds, seeds, grid, preset), checked on resume
    STUDY/folds.csv                the fold of every graded knee (made once, reused)
    STUDY/folds/fold<k>/           cohort view of fold k (imagesTs = fold k, imagesTr = the others)
    STUDY/plan.json                every task: (backbone, variant, fold, seed), run dir, commands
    STUDY/runs/<model>/fold<k>_seed<s>/       `kneeoa train` run directories
    STUDY/predictions/fold<k>_seed<s>/        held-out predictions + embeddings of each run
    STUDY/status/task_<i>.json  STUDY/logs/task_<i>.log     per task state and log (every executor)
    STUDY/pooled/ STUDY/tables/ STUDY/figures/ STUDY/report.html     from `collect_cv_study`
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from kneeoa.config import check_overrides
from kneeoa.contracts.catalog import study_backbones
from kneeoa.contracts.studies import CV_META_FILE, FOLD_TABLE, PLAN_FILE, TASK_FAILED, TASK_RUNNING
from kneeoa.contracts.vocab import VARIANTS
from kneeoa.errors import ConfigError


def prepare_cv_study(data: str | Path, out: str | Path, folds: int = 5, seeds: int = 3, preset: str = "quick",
                     backbones=None, variants=VARIANTS, overrides: dict | None = None, fold_seed: int = 0) -> list:
    """Fold table, fold views and plan.json; returns the tasks. Safe to call again (resume)."""
    from kneeoa.crossval.folds import load_or_make_folds, write_fold_views
    from kneeoa.crossval.plan import build_tasks, write_plan
    from kneeoa.data.cohort import CohortWarning, load_cohort
    from kneeoa.utils.atomic import atomic_write_text

    out = Path(out).resolve()
    backbones = tuple(backbones or study_backbones())
    bad = [b for b in backbones if b not in study_backbones()] + [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"unknown backbone/variant {bad}; choose from {study_backbones()} and {VARIANTS}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    overrides = {"cache_dir": str(out / "cache"), **check_overrides(overrides)}  # before any run is planned
    meta = {"protocol": "cv", "data": str(Path(data).resolve()), "folds": int(folds), "seeds": int(seeds),
            "fold_seed": int(fold_seed), "preset": str(preset), "backbones": list(backbones),
            "variants": list(variants)}
    meta_path = out / CV_META_FILE
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        # task indices (status files, logs, array ids) follow the grid: only the number of seeds may change
        for key in ("data", "folds", "fold_seed", "preset", "backbones", "variants"):
            if old.get(key) != meta[key]:
                raise ConfigError(f"this study was started with {key}={old.get(key)!r}, not {meta[key]!r}; "
                                  "use a new --out", meta_path)
    cohort = load_cohort(data)  # warns once about ungraded knees
    meta["synthetic"] = any("TrueSeverity" in c.extra for c in cohort.cases)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CohortWarning)
        fold_of = load_or_make_folds(out, cohort, folds, fold_seed)
        write_fold_views(out, cohort, fold_of)
    tasks = build_tasks(out, backbones, variants, folds, seeds)
    write_plan(out, tasks, str(preset), overrides)
    atomic_write_text(meta_path, json.dumps({**meta, "overrides": overrides}, indent=2))
    return tasks


def pending(tasks: list) -> list[int]:
    """Indices of tasks whose predictions are not all written yet."""
    return [t.index for t in tasks if not t.is_done()]


def run_cv_study(data: str | Path, out: str | Path, folds: int = 5, seeds: int = 3, preset: str = "quick",
                 backbones=None, variants=VARIANTS, overrides: dict | None = None, executor: str = "local",
                 jobs: int = 1, devices=None, slurm=None, plan_only: bool = False, submit: bool = True,
                 resamples: int = 10_000) -> dict[str, Any]:
    """Prepare, then run the pending tasks (local: here and now, then collect; slurm: write + submit the
    array; plan_only: stop after plan.json). Returns what happened."""
    from kneeoa.crossval.plan import read_plan

    out = Path(out).resolve()
    tasks = prepare_cv_study(data, out, folds, seeds, preset, backbones, variants, overrides)
    todo = pending(tasks)
    result: dict[str, Any] = {"study": out, "plan": out / PLAN_FILE, "n_tasks": len(tasks), "pending": todo}
    if plan_only:
        return result
    if executor == "local":
        from kneeoa.progress import Progress
        from kneeoa.studyexec.local import run_local

        t0 = time.perf_counter()
        with Progress("study", total=len(todo), unit="run") as progress:
            codes = run_local(out, todo, jobs=jobs, devices=devices,
                              on_done=lambda i, rc: progress.update(1, run=i, ok=rc == 0))
        result["codes"] = codes
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result.update(collect_cv_study(out, resamples=resamples))
        return result
    if executor == "slurm":
        from kneeoa.studyexec.slurm import SlurmOptions, sbatch_available, write_script
        from kneeoa.studyexec.slurm import submit as sbatch_submit

        read_plan(out)  # the array tasks read it
        if not todo:
            result.update(collect_cv_study(out, resamples=resamples))
            return result
        script = write_script(out, todo, slurm or SlurmOptions())
        result["script"] = script
        if submit and sbatch_available():
            result["job_id"] = sbatch_submit(script)
        return result
    raise ConfigError(f"unknown executor {executor!r}; choose local or slurm (or --plan for any other engine)")


def task_states(out: Path, tasks: list) -> dict[str, list[dict]]:
    """{'done': [...], 'failed': [...], 'unfinished': [...]} with each task's index, name, fold, seed and log."""
    from kneeoa.crossval.task import log_path, read_status

    states: dict[str, list[dict]] = {"done": [], "failed": [], "unfinished": []}
    queued = _slurm_queue(out)
    for task in tasks:
        status = read_status(out, task.index) or {}
        entry = {"index": task.index, "name": task.name, "fold": task.fold, "seed": task.seed,
                 "log": str(log_path(out, task.index)), "seconds": status.get("seconds")}
        if task.is_done():
            states["done"].append(entry)
        elif status.get("state") == TASK_FAILED:
            states["failed"].append({**entry, "error": status.get("error", "")})
        else:
            entry["state"] = next((f"slurm {state.lower()}" for key, state in queued.items()
                                   if key.endswith(f"_{task.index}")), None) \
                or ("started, not finished" if status.get("state") == TASK_RUNNING else "not started")
            states["unfinished"].append(entry)
    return states


def _slurm_queue(out: Path) -> dict[str, str]:
    """{'<job>_<index>': state} of this study's array tasks still in the SLURM queue (empty without SLURM)."""
    from kneeoa.studyexec.slurm import queue_state

    record = out / "slurm" / "submitted.json"
    if not record.is_file():
        return {}
    try:
        return queue_state([str(entry["job_id"]) for entry in json.loads(record.read_text(encoding="utf-8"))])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def collect_cv_study(out: str | Path, resamples: int = 10_000) -> dict[str, Any]:
    """Aggregate whatever has finished (re-running is safe) and write the report; lists failed tasks."""
    from kneeoa.crossval.aggregate import write_aggregates
    from kneeoa.crossval.plan import read_plan
    from kneeoa.data.tables import read_table
    from kneeoa.report.cv import build_cv_report

    out = Path(out).resolve()
    tasks, _preset, _overrides = read_plan(out)
    meta = json.loads((out / CV_META_FILE).read_text(encoding="utf-8"))
    states = task_states(out, tasks)
    fold_rows = read_table(out / FOLD_TABLE)
    folders, notes, metrics, stats, latent_summary = write_aggregates(out, tasks, fold_rows, resamples)
    result = {"states": states, "notes": notes + stats["skipped"], "metrics": metrics, "stats": stats,
              "latent": latent_summary, "pooled": folders, "meta": meta, "fold_rows": fold_rows}
    report = build_cv_report(out, result)
    from kneeoa.utils.atomic import atomic_write_text

    atomic_write_text(out / "study.json", json.dumps({
        "protocol": "cv", "report": str(report), "n_tasks": len(tasks),
        **{k: len(v) for k, v in states.items()},
        "failed_tasks": states["failed"], "compute_s": round(sum(e["seconds"] or 0 for e in states["done"]), 1)},
        indent=2))
    return {**result, "report": report}
