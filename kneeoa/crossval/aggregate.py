"""Aggregation of a CV study: pooled out-of-fold predictions, clustered Dual-vs-Single tests per seed and
across seeds, and the latent geometry per fold.

    STUDY/pooled/seed<s>/<model>_preds.csv    every knee once (its held-out fold), the published format:
                                              `kneeoa stats STUDY/pooled/seed0` runs on it unchanged
    STUDY/tables/cv_model_metrics.csv         pooled metrics per (model, seed)
    STUDY/tables/cv_stats.csv                 per seed and `combined`: delta, 95% CI, p, BH q (18-test family)
    STUDY/tables/cv_seed_summary.csv          per test: mean delta, SD, range, seeds significant, combined
    STUDY/tables/cv_latent_folds.csv          PCA per (model, seed, fold), fitted on that fold's training knees
    STUDY/tables/cv_latent_summary.csv        mean and SD across folds and seeds

Across seeds (SPEC section 10): mean and SD of the per-seed deltas, the number of seeds whose test has
q < 0.05 (BH within that seed's family), and a combined estimate: the seed-averaged delta with a
subject-clustered bootstrap CI and p in which each resample draws subjects once for all seeds
(`kneeoa.analysis.cluster`); its BH q is taken over the combined family.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.studies import CV_STATS_COLUMNS, SEED_COMBINED, SEED_SUMMARY_COLUMNS

LATENT_KEYS = ("evr_pc1", "abs_rho_pc1_kl", "abs_rho_pc1_oa", "probe_auroc_test", "centroid_monotone",
               "abs_rho_pc1_true_severity")


def write_aggregates(out: Path, tasks: list, fold_rows: list[dict], resamples: int) -> tuple:
    """Pool, test, summarise and write every table and the forest figure of what has finished.

    Returns (pooled folders, notes, pooled metric rows, stats dict, latent summary rows).
    """
    from kneeoa.analysis.plots import save_figure
    from kneeoa.data.tables import write_table
    from kneeoa.report.cv import seed_forest_plot

    folders, notes = pool_predictions(out, tasks)
    key = {True: "case_id", False: "CMT-ID"}
    knee_subject = {str(r[key[r["CMT-ID"] is None]]): str(r["subject"]) for r in fold_rows}
    knee_fold = {str(r[key[r["CMT-ID"] is None]]): int(r["fold"]) for r in fold_rows}
    tables, figures = out / "tables", out / "figures"
    metrics = pooled_metric_rows(folders)
    if metrics:
        write_table(tables / "cv_model_metrics.csv", metrics, list(dict.fromkeys(k for r in metrics for k in r)))
    stats = cv_statistics(folders, knee_subject, knee_fold, n_resamples=resamples) if folders else \
        {"rows": [], "summary": [], "skipped": []}
    if stats["rows"]:
        write_table(tables / "cv_stats.csv", stats["rows"], CV_STATS_COLUMNS)
        write_table(tables / "cv_seed_summary.csv", stats["summary"], SEED_SUMMARY_COLUMNS)
        save_figure(seed_forest_plot(stats["rows"]), figures / "cv_forest.png")
    latent_rows, latent_summary = latent_per_fold(tasks)
    if latent_rows:
        write_table(tables / "cv_latent_folds.csv", latent_rows, list(dict.fromkeys(k for r in latent_rows for k in r)))
        write_table(tables / "cv_latent_summary.csv", latent_summary,
                    list(dict.fromkeys(k for r in latent_summary for k in r)))
    return folders, notes, metrics, stats, latent_summary


def pool_predictions(study: Path, tasks: list) -> tuple[dict[int, Path], list[str]]:
    """Write STUDY/pooled/seed<s>/ for every (model, seed) whose folds all finished.

    Returns ({seed: folder}, notes on incomplete (model, seed) pairs).
    """
    from kneeoa.analysis.compare import subject_order
    from kneeoa.contracts.schemas import preds_file_name
    from kneeoa.data.tables import read_table, write_table
    from kneeoa.engine.predict import pred_columns

    groups: dict[tuple[str, int], list] = defaultdict(list)
    for task in tasks:
        groups[(task.name, task.seed)].append(task)
    folders: dict[int, Path] = {}
    notes = []
    for (name, seed), members in sorted(groups.items()):
        missing = [t.fold for t in members if not t.is_done()]
        folder = Path(study) / "pooled" / f"seed{seed}"
        if missing:
            notes.append(f"{name} seed {seed}: fold(s) {', '.join(map(str, missing))} not finished; not pooled")
            (folder / preds_file_name(name)).unlink(missing_ok=True)  # a fold rerun since: no stale pooled file
            continue
        rows = []
        for task in sorted(members, key=lambda t: t.fold):
            rows += read_table(Path(task.pred_dir) / preds_file_name(name))
        rows.sort(key=lambda r: subject_order(r["CMT_ID"]))
        write_table(folder / preds_file_name(name), rows, pred_columns(members[0].variant))
        folders[seed] = folder
    return folders, notes


def pooled_metric_rows(folders: dict[int, Path]) -> list[dict[str, Any]]:
    """Pooled out-of-fold metrics per (model, seed)."""
    from kneeoa.analysis.compare import find_prediction_files, read_predictions
    from kneeoa.analysis.metrics import kl_metrics, oa_metrics
    from kneeoa.contracts.vocab import has_kl_head, variant_from_tag

    rows = []
    for seed, folder in sorted(folders.items()):
        for (backbone, variant), path in sorted(find_prediction_files(folder).items()):
            table = read_predictions(path)
            row = {"backbone": backbone, "variant": variant, "seed": seed, "n_knees": len(table.ids),
                   **oa_metrics(table.get("label_oa").astype(int), table.get("prob_oa"))}
            if has_kl_head(variant_from_tag(variant)):
                row.update(kl_metrics(table.get("label_kl").astype(int),
                                      table.get(tuple(f"prob_kl_{k}" for k in range(5)))))
            rows.append(row)
    return rows


def cv_statistics(folders: dict[int, Path], knee_subject: dict[str, str], knee_fold: dict[str, int],
                  n_resamples: int = 10_000, seed: int = 42, chunk_size: int = 1_000) -> dict[str, list]:
    """{'rows': per-seed + combined test rows, 'summary': one row per test, 'skipped': notes}.

    `knee_subject` / `knee_fold` map a prediction file's subject id (CMT_ID) to subject and fold.
    """
    from kneeoa.analysis.cluster import PairedScores, clustered_deltas, point_delta, subject_index, summarise
    from kneeoa.analysis.compare import (
        PROTOCOL,
        _backbone_slots,
        add_q_values,
        find_prediction_files,
        read_predictions,
    )
    from kneeoa.errors import InputError

    seeds = sorted(folders)
    tables = {s: {k: read_predictions(p) for k, p in find_prediction_files(folders[s]).items()} for s in seeds}
    ids = next(iter(next(iter(tables.values())).values())).ids if seeds else []
    for s in seeds:
        for table in tables[s].values():
            if table.ids != ids:
                raise InputError("pooled predictions of different seeds hold different knees", table.path)
    missing = [i for i in ids if i not in knee_subject]
    if missing:
        raise InputError(f"knee(s) {missing[:5]} not in the fold table", folders[seeds[0]])
    groups, n_subjects = subject_index([knee_subject[i] for i in ids])
    folds = np.array([knee_fold[i] for i in ids])
    present = {b for s in seeds for b, _ in tables[s]}
    tests: dict[str, list[PairedScores]] = {}
    meta: dict[str, tuple] = {}
    skipped = []
    for _slot, backbone in _backbone_slots(present):
        if backbone is None:  # a paper backbone this study does not train
            continue
        for test in PROTOCOL:
            usable = [s for s in seeds if {(backbone, "dual"), (backbone, test.single)} <= set(tables[s])]
            if not usable:
                note = f"{backbone} {test.task}: no pooled dual and {test.single} predictions; tests skipped"
                if note not in skipped:
                    skipped.append(note)
                continue
            key = f"{backbone}:{test.task}:{test.metric}:{test.kind}"
            scores = []
            for s in usable:
                dual, single = tables[s][(backbone, "dual")], tables[s][(backbone, test.single)]
                a, b = dual.get(test.score), single.get(test.score)
                if test.kind not in ("auc", "macro_auc"):
                    a, b = a.astype(int), b.astype(int)
                scores.append(PairedScores(dual.get(test.label).astype(int), a, b))
            tests[key], meta[key] = scores, (backbone, test, usable)
    boot = clustered_deltas(tests, groups, n_resamples, seed, chunk_size) if tests else {}
    rows, combined, summary = [], [], []
    for key, scores in tests.items():
        backbone, test, usable = meta[key]
        base = {"backbone": backbone, "task": test.task, "metric": test.metric, "test": "cluster_bootstrap",
                "n_knees": len(ids), "n_subjects": n_subjects}
        points = [point_delta(test.kind, sc) for sc in scores]
        for i, s in enumerate(usable):
            result = summarise(points[i][2], boot[key][i])
            rows.append({"seed": s, **base, "single": points[i][0], "dual": points[i][1], **_ci(result)})
        seed_avg = boot[key].mean(axis=0)  # NaN where any seed's metric is undefined on the resample
        result = summarise(float(np.mean([p[2] for p in points])), seed_avg)
        combined.append({"seed": SEED_COMBINED, **base, "single": float(np.mean([p[0] for p in points])),
                         "dual": float(np.mean([p[1] for p in points])), **_ci(result)})
        summary.append({**{k: base[k] for k in ("backbone", "task", "metric")}, "n_seeds": len(usable),
                        **_fold_consistency(test.kind, scores, folds), "_deltas": [p[2] for p in points]})
    for s in seeds:  # BH within each seed's family, and over the combined family
        add_q_values([r for r in rows if r["seed"] == s])
    add_q_values(combined)
    for entry, comb in zip(summary, combined):
        deltas = np.array(entry.pop("_deltas"))
        per_seed = [r for r in rows if (r["backbone"], r["task"], r["metric"]) ==
                    (entry["backbone"], entry["task"], entry["metric"])]
        entry.update(mean_delta=float(deltas.mean()), sd_delta=float(deltas.std(ddof=1)) if deltas.size > 1 else np.nan,
                     min_delta=float(deltas.min()), max_delta=float(deltas.max()),
                     n_seeds_sig=sum(bool(r["sig_fdr_0.05"]) for r in per_seed),
                     combined_delta=comb["delta"], combined_ci_lo=comb["ci_lo"], combined_ci_hi=comb["ci_hi"],
                     combined_p=comb["p_value"], combined_q=comb["q_value_BH"], combined_sig=comb["sig_fdr_0.05"])
    return {"rows": rows + combined, "summary": summary, "skipped": skipped}


def _ci(result) -> dict[str, float]:
    return {"delta": result.delta, "ci_lo": result.ci_lo, "ci_hi": result.ci_hi, "p_value": result.p_value}


def _fold_consistency(kind: str, scores: list, folds: np.ndarray) -> dict[str, int]:
    """In how many (fold, seed) runs dual beats single on that fold's held-out knees."""
    from kneeoa.analysis.cluster import PairedScores, point_delta

    positive = total = 0
    for sc in scores:
        for fold in np.unique(folds):
            keep = folds == fold
            delta = point_delta(kind, PairedScores(sc.y[keep], sc.dual[keep], sc.single[keep]))[2]
            if np.isfinite(delta):
                total += 1
                positive += bool(delta > 0)
    return {"n_fold_runs_positive": positive, "n_fold_runs": total}


def latent_per_fold(tasks: list) -> tuple[list[dict], list[dict]]:
    """(rows per finished (model, seed, fold), mean/SD per model across folds and seeds)."""
    from kneeoa.analysis.latent import analyse_embeddings, read_embeddings

    rows = []
    for task in tasks:
        path = Path(task.pred_dir) / f"{task.name}_embeddings.npz"
        if not task.is_done():
            continue
        row = analyse_embeddings(read_embeddings(path))["row"]
        rows.append({"seed": task.seed, "fold": task.fold, **{k: v for k, v in row.items() if k != "centroids_pc1"}})
    summary = []
    by_model: dict[tuple, list] = defaultdict(list)
    for row in rows:
        by_model[(row["backbone"], row["variant"])].append(row)
    for (backbone, variant), members in by_model.items():
        entry: dict[str, Any] = {"backbone": backbone, "variant": variant, "n_fold_runs": len(members)}
        for key in LATENT_KEYS:
            values = np.array([float(m[key]) for m in members if m.get(key) is not None], dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                entry[f"{key}_mean"] = float(values.mean())
                entry[f"{key}_sd"] = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        summary.append(entry)
    return rows, summary
