"""The whole protocol: train the 3 backbones x 3 variants, predict, then statistics, latent geometry and
saliency attribution, and one HTML report. Every step skips what a previous (interrupted) run finished.

    STUDY/models/<backbone>_<variant>/     training runs (resumable)
    STUDY/predictions/                     <name>_preds.csv, <name>_metrics.csv, <name>_embeddings.npz
    STUDY/tables/                          stats.csv, latent_summary.csv, latent_points.csv, saliency_overlap.csv,
                                           model_metrics.csv
    STUDY/figures/                         forest.png, deltas.png, pca_grid.png, overlays.png, ...
    STUDY/saliency/<name>/                 <case>_saliency.nii.gz on the original image grid
    STUDY/report.html                      one self-contained page
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from kneeoa.config import check_overrides, preset_segmenter
from kneeoa.contracts.catalog import backbone_names, study_backbones
from kneeoa.contracts.vocab import VARIANTS, model_name, split_model_name
from kneeoa.errors import ConfigError
from kneeoa.progress import Progress
from kneeoa.utils import strict_json


def run_study(data: str | Path, out: str | Path, preset: str = "quick", backbones=None, variants=VARIANTS,
              overrides: dict | None = None, saliency_cases: int = 5, resamples: int = 10_000,
              saliency_method: str = "smoothgrad", segmenter: str | Path | None = None) -> dict[str, Any]:
    """Run (or finish) a study; returns {'report': path, 'timings': {...}, ...}. With `segmenter`, test cases
    without masks get automatic ones for the saliency overlap, and the report gains a segmentation section."""
    from kneeoa.data.cohort import CohortWarning, load_cohort

    out = Path(out)
    backbones = study_backbones() if backbones is None else tuple(backbones)
    bad = [b for b in backbones if b not in backbone_names()] + [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"unknown backbone/variant {bad}; choose from {backbone_names()} and {VARIANTS}")
    if segmenter is None:
        segmenter = preset_segmenter(preset)  # a segmenter named in the preset file (the flag wins)
    cohort = load_cohort(data)  # warns once about ungraded knees; every later step reads the same cohort
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CohortWarning)
        return _run_study(cohort, data, out, preset, backbones, variants, overrides, saliency_cases, resamples,
                          saliency_method, segmenter)


def _run_study(cohort, data, out: Path, preset, backbones, variants, overrides, saliency_cases, resamples,
               saliency_method, segmenter=None) -> dict[str, Any]:
    if not cohort.split("train") or not cohort.split("test"):
        raise ConfigError("a study needs graded train and test cases (an OAI-ZIB-CM style cohort)", data)
    overrides = {"cache_dir": str(out / "cache"), **check_overrides(overrides)}  # before the first run trains
    if segmenter is not None:  # a bad segmenter fails now, not after nine trainings
        from kneeoa.segmentation.auto import MaskSource

        MaskSource(segmenter, "cpu").check()
    timings: dict[str, float] = {}
    previous = _previous_timings(out)
    grid = [(b, v) for b in backbones for v in variants]
    checkpoints: dict[str, Path] = {}
    with Progress("study", total=len(grid), unit="model", every_line=True) as progress:
        for backbone, variant in grid:
            t0 = time.perf_counter()
            name = model_name(backbone, variant)
            checkpoints[name] = train_unless_finished(data, out / "models" / name, backbone, variant, preset, overrides)
            _predict_one(checkpoints[name], data, out / "predictions", name, overrides["cache_dir"],
                         cohort.split("test"))
            timings[name] = _model_seconds(out / "models" / name, time.perf_counter() - t0, previous.get(name))
            progress.update(1, model=name, seconds=timings[name])
    t0 = time.perf_counter()
    analyses = run_analyses(cohort, out, checkpoints, saliency_cases, resamples, saliency_method, segmenter)
    from kneeoa.segmentation.evaluation import study_segmentation

    analyses["segmentation"] = study_segmentation(cohort, out, segmenter)
    timings["analyses"] = round(time.perf_counter() - t0, 1)
    from kneeoa.report.study_report import build_study_report

    report = build_study_report(out, cohort, analyses, preset, timings)
    from kneeoa.utils.atomic import atomic_write_text

    atomic_write_text(out / "study.json", strict_json.dumps({"preset": preset, "data": str(Path(data).resolve()),
                                                      "timings_s": timings, "report": str(report)}, indent=2))
    return {"report": report, "timings": timings, **analyses}


def _previous_timings(out: Path) -> dict[str, float]:
    """The timings an earlier run of this study recorded in study.json ({} when there is none)."""
    try:
        import json

        timings = json.loads((out / "study.json").read_text(encoding="utf-8")).get("timings_s") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))}


def _model_seconds(run_dir: Path, elapsed: float, previous: float | None) -> float:
    """A model's own compute time, kept across re-runs: a re-run that finds the model finished spends ~0 s on
    it, so the time an earlier run recorded (study.json) counts, and never less than the epochs its run log
    holds (an interrupted study has no study.json, but every finished epoch logged its time)."""
    from kneeoa.engine.rundir import RunDir

    logged = sum(float(row.get("time_s") or 0.0) for row in RunDir(run_dir).read_metrics())
    return round(max(elapsed, previous or 0.0, logged), 1)


def train_unless_finished(data, run_dir: Path, backbone: str, variant: str, preset: str, overrides: dict) -> Path:
    """Train unless a finished run is there; resume an interrupted one. Returns the checkpoint (the study's
    models and the cross-validation's fold tasks both train this way)."""
    from kneeoa.engine.rundir import RunDir
    from kneeoa.engine.train import train

    run = RunDir(run_dir)
    meta = run.state_meta() if run.is_run() else None
    if meta and meta.get("finished") and run.last.is_file():
        return run.last
    result = train(data, backbone, variant, out=run_dir, preset=preset, overrides=overrides, resume=run.is_run())
    return Path(result["checkpoint"])


def prediction_files(pred_dir: str | Path, name: str) -> list[Path]:
    """The files `kneeoa predict --embeddings` writes for model `name`: preds, metrics, embeddings (a study's
    model and a CV task are finished when all three are there)."""
    from kneeoa.contracts.schemas import preds_file_name

    return [Path(pred_dir) / f for f in (preds_file_name(name), f"{name}_metrics.csv", f"{name}_embeddings.npz")]


def _predict_one(checkpoint: Path, data, pred_dir: Path, name: str, cache_dir: str, test_cases: list) -> None:
    from kneeoa.engine.predict import predict

    done = prediction_files(pred_dir, name)
    if all(p.is_file() for p in done) and not _stale_predictions(done[0], test_cases):
        return
    predict(checkpoint, data, pred_dir, split="test", embeddings=True, cache_dir=cache_dir, overwrite=True)


def _stale_predictions(preds_csv: Path, test_cases: list) -> bool:
    """True (with a warning) when a re-run finds predictions made for other test images than the cohort's
    now (a case renamed, added or removed): reusing them would report results under stale ids."""
    from kneeoa.data.tables import read_table
    from kneeoa.errors import DataWarning, KneeOAError

    try:
        predicted = {str(row.get("img_path")) for row in read_table(preds_csv)}
    except KneeOAError:
        return True
    current = {str(case.image) for case in test_cases}
    if predicted == current:
        return False
    gone, new = sorted(predicted - current), sorted(current - predicted)
    warnings.warn(f"{preds_csv}: made for other test cases than the cohort holds now ({len(gone)} gone, e.g. "
                  f"{gone[:2]}; {len(new)} new, e.g. {new[:2]}); predicting again", DataWarning, stacklevel=2)
    return True


def run_analyses(cohort, out: Path, checkpoints: dict[str, Path], saliency_cases: int, resamples: int,
                 saliency_method: str, segmenter: str | Path | None = None) -> dict[str, Any]:
    """Statistics, latent geometry and saliency over whatever models the study holds."""
    from kneeoa.analysis.compare import compare_dual_vs_single, write_stats_csv
    from kneeoa.analysis.latent import analyse_files, write_latent_outputs
    from kneeoa.analysis.plots import delta_bar_chart, forest_plot, save_figure
    from kneeoa.data.tables import read_table, write_table
    from kneeoa.report.paper_figures import write_stats_extras

    tables, figures = out / "tables", out / "figures"
    pred_dir = out / "predictions"
    metric_rows = []
    for name in checkpoints:
        for row in read_table(pred_dir / f"{name}_metrics.csv"):
            metric_rows.append({**_split_model(name), **row})
    columns = list(dict.fromkeys(k for row in metric_rows for k in row))  # Single-OA rows have no KL metrics
    write_table(tables / "model_metrics.csv", metric_rows, columns)
    stats = compare_dual_vs_single(pred_dir, n_resamples=resamples)
    if stats.rows:
        from kneeoa.utils import locks

        # the lock `kneeoa stats` takes: a stats run into this table meanwhile cannot mix its files with ours
        with locks.exclusive(locks.lock_path_for(tables / "stats.csv"), tables / "stats.csv", "the statistics table"):
            write_stats_csv(tables / "stats.csv", stats.rows)
            write_stats_extras(tables / "stats.csv", stats.rows, resamples)  # no-FDR table + protocol JSON
        save_figure(forest_plot(stats.rows), figures / "forest.png")
        save_figure(delta_bar_chart(stats.rows), figures / "deltas.png")
    latent = analyse_files(sorted(pred_dir.glob("*_embeddings.npz")))
    latent_paths = write_latent_outputs(latent, tables)
    figures.mkdir(parents=True, exist_ok=True)
    latent_paths["figure"].replace(figures / "pca_grid.png")  # one figure folder for the report
    saliency = run_saliency(cohort, out, checkpoints, saliency_cases, saliency_method, segmenter)
    return {"metrics": metric_rows, "stats": stats, "latent": [r["row"] for r in latent], "saliency": saliency}


def _split_model(name: str) -> dict[str, str]:
    backbone, variant = split_model_name(name)  # 'resnet3d_monai_dual' -> resnet3d_monai, dual
    return {"backbone": backbone, "variant": variant}


def one_per_grade(cases: list, n: int) -> list:
    """Up to `n` cases, first one per KL grade (0..4, in cohort order), then the next ones in cohort order:
    the report then shows the maps of a healthy knee next to every stage of OA, not four KL-0 knees."""
    firsts = {}
    for case in cases:
        firsts.setdefault(case.kl, case)
    picked = [firsts[g] for g in sorted(k for k in firsts if k is not None)][:n]
    return picked + [c for c in cases if c not in picked][: max(0, n - len(picked))]


def run_saliency(cohort, out: Path, checkpoints: dict[str, Path], n_cases: int, method: str,
                 segmenter: str | Path | None = None) -> dict[str, Any]:
    """Saliency maps of `n_cases` masked test cases (one per KL grade first) for every model; mean overlap."""
    from kneeoa.analysis.saliency_job import SaliencyCase, run_saliency_cases
    from kneeoa.contracts.segmentation import MASK_SOURCE_COLUMN, MASK_SOURCES
    from kneeoa.data.tables import write_table
    from kneeoa.engine.devices import resolve_device
    from kneeoa.engine.inference import load_model

    cases = [SaliencyCase(c.case_id, c.image, c.mask, c.kl) for c in cohort.split("test") if c.mask or segmenter]
    cases = one_per_grade(cases, n_cases)
    summary, maps = [], {}
    if not cases:
        return {"rows": [], "maps": {}, "cases": []}
    device = resolve_device("auto", quiet=True)
    for name, checkpoint in checkpoints.items():
        target_dir = out / "saliency" / name
        model, _card = load_model(checkpoint, device)
        result = run_saliency_cases(model, cases, target_dir, method=method, segmenter=segmenter,
                                    overwrite=True)  # the study recomputes its maps on resume
        maps[name] = result["maps"]
        rows = result["rows"]
        if rows:
            numeric = [k for k in rows[0] if k not in ("case_id", "kl", "target", MASK_SOURCE_COLUMN)]
            mean = {k: sum(float(r[k]) for r in rows) / len(rows) for k in numeric}
            automatic = sum(r[MASK_SOURCE_COLUMN] == MASK_SOURCES[1] for r in rows)
            summary.append({**_split_model(name), "n_cases": len(rows), "n_automatic_masks": automatic, **mean})
    if summary:
        write_table(out / "tables" / "saliency_overlap.csv", summary, list(dict.fromkeys(k for r in summary for k in r)))
    return {"rows": summary, "maps": maps, "cases": cases}
