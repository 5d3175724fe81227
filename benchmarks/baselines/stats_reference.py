"""Baseline for the statistics benchmark: the published protocol as its reference script runs it.

A straightforward per-resample loop calling scikit-learn twice per resample and test (Dual, Single),
the way the paper's `compute_dual_vs_single_stats.py` does; pandas and statsmodels are replaced by
the csv module and the statsmodels McNemar formulas written out with scipy. Independent of
`kneeoa.analysis` on purpose: it is what ours is checked against.

One documented rule differs from the reference script, which would crash or average NaNs: a
resample on which a metric is undefined (one OA class present: sklearn returns NaN; a KL grade
missing: sklearn raises) yields NaN and is left out of the CI and p. `kneeoa.analysis.stats`
applies the same rule. On the paper's 98 subjects this never triggers in practice.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

BACKBONES = ["resnet3d", "m3t", "mamba"]
KL_COLS = [f"prob_kl_{k}" for k in range(5)]


def load(preds_dir: Path, backbones: list[str]) -> dict:
    dfs = {}
    for bb in backbones:
        for variant in ("single_oa", "single_kl", "dual"):
            with open(preds_dir / f"{bb}_{variant}_preds.csv", newline="") as fh:
                rows = sorted(csv.DictReader(fh), key=lambda r: int(r["CMT_ID"]))
            cols = {c: np.array([float(r[c]) for r in rows]) for c in rows[0] if c != "CMT_ID"}
            cols["CMT_ID"] = np.array([int(r["CMT_ID"]) for r in rows])
            dfs[(bb, variant)] = cols
    return dfs


def oa_metric(df: dict, metric: str, idx=None) -> float:
    idx = slice(None) if idx is None else idx
    y, p, yhat = df["label_oa"][idx].astype(int), df["prob_oa"][idx], df["pred_oa"][idx].astype(int)
    if metric == "AUC":
        return roc_auc_score(y, p)
    if metric == "Acc":
        return accuracy_score(y, yhat)
    return f1_score(y, yhat)


def kl_metric(df: dict, metric: str, idx=None) -> float:
    idx = slice(None) if idx is None else idx
    y, yhat = df["label_kl"][idx].astype(int), df["pred_kl"][idx].astype(int)
    if metric == "M-AUC":
        probs = np.stack([df[c][idx] for c in KL_COLS], axis=1)
        return roc_auc_score(y, probs, multi_class="ovr", average="macro")
    if metric == "Acc":
        return accuracy_score(y, yhat)
    return f1_score(y, yhat, average="macro")


def bootstrap_delta(df_a: dict, df_b: dict, fn, metric: str, rng, n: int, n_resamples: int):
    deltas = np.empty(n_resamples)
    for b in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        try:
            deltas[b] = fn(df_a, metric, idx) - fn(df_b, metric, idx)
        except ValueError:  # sklearn: a class of y_score missing from y_true
            deltas[b] = np.nan
    valid = deltas[~np.isnan(deltas)]
    big_b = len(valid)
    if big_b == 0:
        return np.nan, np.nan, np.nan, deltas
    lo, hi = np.percentile(valid, [2.5, 97.5])
    p = 2 * min((np.sum(valid <= 0) + 1) / (big_b + 1), (np.sum(valid >= 0) + 1) / (big_b + 1))
    return float(lo), float(hi), float(min(p, 1.0)), deltas


def mcnemar_acc(df_a: dict, df_b: dict):
    ya = df_a["pred_oa"] == df_a["label_oa"]
    yb = df_b["pred_oa"] == df_b["label_oa"]
    table = [[int(np.sum(ya & yb)), int(np.sum(ya & ~yb))], [int(np.sum(~ya & yb)), int(np.sum(~ya & ~yb))]]
    n1, n2 = table[0][1], table[1][0]
    if n1 + n2 < 25:  # statsmodels mcnemar(exact=True)
        return float(min(stats.binom.cdf(min(n1, n2), n1 + n2, 0.5) * 2, 1.0)), "exact", table
    statistic = (abs(n1 - n2) - 1) ** 2 / (1.0 * (n1 + n2))  # statsmodels mcnemar(exact=False, correction=True)
    return float(stats.chi2.sf(statistic, 1)), "chi2+continuity", table


def run_reference(preds_dir: str | Path, n_resamples: int = 10_000, seed: int = 42,
                  backbones: list[str] | None = None) -> list[dict]:
    """The 18 rows (with `deltas`) exactly as the reference script computes them, at n_resamples."""
    backbones = backbones or BACKBONES
    dfs = load(Path(preds_dir), backbones)
    first = dfs[(backbones[0], "dual")]
    for df in dfs.values():
        assert np.array_equal(df["CMT_ID"], first["CMT_ID"]) and np.array_equal(df["label_oa"], first["label_oa"])
    n = len(first["CMT_ID"])
    rng = np.random.default_rng(seed)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's UndefinedMetricWarning on degenerate resamples
        for bb in backbones:
            for task, metrics, single, fn in [("OA", ["AUC", "Acc", "F1"], "single_oa", oa_metric),
                                              ("KL", ["M-AUC", "Acc", "M-F1"], "single_kl", kl_metric)]:
                df_d, df_s = dfs[(bb, "dual")], dfs[(bb, single)]
                for metric in metrics:
                    v_d, v_s = fn(df_d, metric), fn(df_s, metric)
                    lo, hi, p, deltas = bootstrap_delta(df_d, df_s, fn, metric, rng, n, n_resamples)
                    test, table = "paired_bootstrap", ""
                    if task == "OA" and metric == "Acc":
                        p, flavor, tab = mcnemar_acc(df_d, df_s)
                        test, table = f"mcnemar_{flavor}", json.dumps(tab)
                    rows.append(dict(backbone=bb, task=task, metric=metric, single=round(v_s, 6), dual=round(v_d, 6),
                                     delta=round(v_d - v_s, 6), ci_lo=round(lo, 6), ci_hi=round(hi, 6), p_value=p,
                                     test=test, mcnemar_table=table, n_subjects=n, deltas=deltas))
    m = len(rows)
    pv = np.array([r["p_value"] for r in rows])
    order = np.argsort(pv, kind="stable")
    q = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, pv[i] * m / rank)
        q[i] = running
    for row, qv in zip(rows, np.round(q, 6)):
        row["q_value_BH"] = float(qv)
        row["sig_fdr_0.05"] = bool(qv < 0.05)
    return rows
