"""Classification metrics on many bootstrap resamples at once.

A block of resamples is a count matrix `counts[b, i]` = how often subject i was drawn in resample b
(shape (B, n)). Every metric below is a weighted sum over subjects, so all B resamples are evaluated
with a few array operations and no Python loop over resamples. All counts and sums are integers
held exactly in float64, so accuracy and F1 equal scikit-learn's values bit for bit. The rank form of
AUC is exact, whereas scikit-learn integrates the ROC curve with the trapezoid rule and can be off in
the last bit; `kneeoa.analysis.trapezoid_auc` repeats sklearn's arithmetic for the few places where that bit matters
(full-sample values, and resamples whose Dual-Single delta is zero up to rounding).

Undefined values follow scikit-learn as the published protocol calls it: AUC with one class present
is NaN; macro one-vs-rest AUC is NaN unless every class appears (sklearn raises there); F1 with no
true and no predicted positives is 0 (sklearn's zero_division default).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kneeoa.analysis.trapezoid_auc import (
    auc_trapezoid,
    auc_trapezoid_counts,
    macro_auc_trapezoid,
    macro_auc_trapezoid_counts,
)

# name -> function(counts (B,n), y (n,), score) -> (B,)
CountMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """Count matrix (B, n) float64 from bootstrap index rows (B, n) of draws in [0, n)."""
    indices = np.asarray(indices)
    b = indices.shape[0]
    flat = (indices + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def accuracy_counts(counts: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Accuracy of `pred` against `y` per resample."""
    correct = (np.asarray(y) == np.asarray(pred)).astype(np.float64)
    return (counts @ correct) / counts.sum(axis=1)


def f1_counts(counts: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Binary F1 of the positive class 1 per resample (0 when there are no true or predicted positives)."""
    y, pred = np.asarray(y) == 1, np.asarray(pred) == 1
    tp = counts @ (y & pred).astype(np.float64)
    denom = counts @ y.astype(np.float64) + counts @ pred.astype(np.float64)
    return _safe_ratio(2.0 * tp, denom)


def macro_f1_counts(counts: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Macro F1 per resample over the labels present in that resample's truth or predictions (as sklearn)."""
    y, pred = np.asarray(y), np.asarray(pred)
    labels = np.unique(np.concatenate([y, pred]))
    total = np.zeros(counts.shape[0])
    n_present = np.zeros(counts.shape[0])
    for label in labels:  # a handful of labels; the resamples stay vectorised
        is_true, is_pred = y == label, pred == label
        tp = counts @ (is_true & is_pred).astype(np.float64)
        denom = counts @ is_true.astype(np.float64) + counts @ is_pred.astype(np.float64)
        present = denom > 0
        # adding 0.0 for absent labels leaves the sum bit-identical to sklearn's mean over present labels
        total = total + np.where(present, _safe_ratio(2.0 * tp, denom), 0.0)
        n_present = n_present + present
    return _safe_ratio(total, n_present, empty=np.nan)


def auc_counts(counts: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC per resample, rank form (Mann-Whitney U with ties counted 1/2); NaN with one class present."""
    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    order = np.argsort(score, kind="stable")
    sorted_score, is_pos = score[order], y[order] == 1
    w = counts[:, order]
    # tie groups along the sorted scores: each subject's group start and the group's end (exclusive)
    new_group = np.r_[True, sorted_score[1:] != sorted_score[:-1]]
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(sorted_score)]
    group = np.cumsum(new_group) - 1
    neg_cum = np.zeros((w.shape[0], w.shape[1] + 1))
    np.cumsum(w * ~is_pos, axis=1, out=neg_cum[:, 1:])
    pos_group = group[is_pos]
    neg_below = neg_cum[:, starts[pos_group]]
    neg_tied = neg_cum[:, ends[pos_group]] - neg_below
    w_pos = w[:, is_pos]
    u = (w_pos * (neg_below + 0.5 * neg_tied)).sum(axis=1)
    n_pos, n_neg = w_pos.sum(axis=1), w[:, ~is_pos].sum(axis=1)
    return _safe_ratio(u, n_pos * n_neg, empty=np.nan)


def macro_auc_counts(counts: np.ndarray, y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest AUC over the columns of `probs` (class k = column k); NaN unless all classes appear."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"macro AUC needs class probabilities of shape (n, K), got {probs.shape}")
    total = np.zeros(counts.shape[0])
    for k in range(probs.shape[1]):
        # NaN (class k absent) propagates: sklearn refuses when a class of y_score is missing from y_true
        total = total + auc_counts(counts, (y == k).astype(int), probs[:, k])
    return total / probs.shape[1]


def _safe_ratio(num: np.ndarray, denom: np.ndarray, empty: float = 0.0) -> np.ndarray:
    out = np.full(np.shape(num), empty, dtype=np.float64)
    ok = denom > 0
    np.divide(num, denom, out=out, where=ok)
    return out


COUNT_METRICS: dict[str, CountMetric] = {
    "auc": auc_counts,
    "acc": accuracy_counts,
    "f1": f1_counts,
    "macro_auc": macro_auc_counts,
    "macro_f1": macro_f1_counts,
}


# metrics whose rank form may differ from sklearn's in the last bit: the same metric on count rows
# with sklearn's arithmetic (see module docstring)
SKLEARN_ARITHMETIC: dict[str, CountMetric] = {
    "auc": auc_trapezoid_counts,
    "macro_auc": macro_auc_trapezoid_counts,
}
SINGLE_SAMPLE_AUC = {"auc": auc_trapezoid, "macro_auc": macro_auc_trapezoid}  # scikit-learn itself


def metric_value(metric: str, y: np.ndarray, score: np.ndarray) -> float:
    """One metric on the full sample (all subjects once), equal to scikit-learn's value bit for bit."""
    if metric in SINGLE_SAMPLE_AUC:
        return float(SINGLE_SAMPLE_AUC[metric](np.asarray(y), np.asarray(score)))
    return float(COUNT_METRICS[metric](np.ones((1, len(y))), np.asarray(y), np.asarray(score))[0])
