"""ROC AUC with scikit-learn's exact arithmetic, for many bootstrap resamples at once.

scikit-learn integrates the ROC curve (distinct thresholds, collinear points dropped) with the
trapezoid rule, so two AUCs that are equal as fractions can differ in the last bit. The published
protocol's p-value counts the sign of each resample's delta, so where the exact (rank) delta is 0
we need sklearn's bits. Everything up to the final sum is vectorised over resamples; the sum is
`numpy.sum` over each resample's own term array, exactly the call `scipy.integrate.trapezoid` makes
(numpy's pairwise summation depends on the array length, so it cannot be batched).
"""

from __future__ import annotations

import numpy as np


def auc_trapezoid_counts(counts: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """sklearn's roc_auc_score on each resample (rows of subject counts), bit for bit; NaN with one class."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape[0] == 0:
        return np.empty(0)
    is_pos = np.asarray(y) == 1
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(score, kind="mergesort")[::-1]  # descending, as sklearn
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    weights = counts[:, order]
    # per distinct threshold: positives / negatives drawn (integers, exact in float64)
    pos = np.add.reduceat(weights * is_pos[order], starts, axis=1)
    neg = np.add.reduceat(weights * ~is_pos[order], starts, axis=1)
    tps_all, fps_all = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    rows, cols = np.nonzero((pos + neg) > 0)  # thresholds present in each resample, row by row
    tps, fps = tps_all[rows, cols], fps_all[rows, cols]
    first = np.r_[True, rows[1:] != rows[:-1]]
    last = np.r_[rows[1:] != rows[:-1], True]
    # roc_curve(drop_intermediate=True): keep a point unless both second differences vanish
    d_tps, d_fps = np.diff(tps), np.diff(fps)
    bend = np.zeros(rows.size, dtype=bool)
    bend[1:-1] = (d_tps[1:] != d_tps[:-1]) | (d_fps[1:] != d_fps[:-1])
    keep = first | last | bend
    rows, tps, fps, first = rows[keep], tps[keep], fps[keep], first[keep]
    total_pos, total_neg = tps_all[:, -1], fps_all[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):  # one-class rows: NaN, left out below
        tpr, fpr = tps / total_pos[rows], fps / total_neg[rows]
    # the curve starts at (0, 0): the previous point of a row's first point is the origin
    prev_tpr, prev_fpr = np.r_[0.0, tpr[:-1]], np.r_[0.0, fpr[:-1]]
    prev_tpr[first], prev_fpr[first] = 0.0, 0.0
    terms = (fpr - prev_fpr) * (tpr + prev_tpr) / 2.0
    bounds = np.r_[np.flatnonzero(first), rows.size]
    out = np.full(counts.shape[0], np.nan)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        row = rows[start]
        if total_pos[row] > 0 and total_neg[row] > 0:
            out[row] = np.sum(terms[start:stop].copy(), dtype=np.float64)
    return out


def macro_auc_trapezoid_counts(counts: np.ndarray, y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """sklearn's macro one-vs-rest AUC per resample, bit for bit; NaN unless every class appears."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    total = np.zeros(np.shape(counts)[0])
    for k in range(probs.shape[1]):
        # np.average over the K class AUCs is this left-to-right sum for K < 8; NaN when class k is absent
        total = total + auc_trapezoid_counts(counts, (y == k).astype(int), probs[:, k])
    return total / probs.shape[1]


# One sample needs no batching: scikit-learn itself computes it. The batched kernels above are for the
# bootstrap, where they replace a per-resample scikit-learn loop (benchmarks/results.json, "stats: 18 tests,
# per resample": 1.6 s vs 799 s for all 18 tests at B = 10,000, identical numbers).


def auc_trapezoid(y: np.ndarray, score: np.ndarray) -> float:
    """sklearn's roc_auc_score for one sample (NaN instead of an error with one class)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    return float(roc_auc_score(y, np.asarray(score))) if len(np.unique(y)) == 2 else float("nan")


def macro_auc_trapezoid(y: np.ndarray, probs: np.ndarray) -> float:
    """sklearn's macro one-vs-rest AUC for one sample: the mean of the per-grade roc_auc_score (as sklearn
    averages them); NaN when a grade is absent (where sklearn refuses)."""
    y, probs = np.asarray(y), np.asarray(probs)
    total = 0.0
    for k in range(probs.shape[1]):
        total = total + auc_trapezoid((y == k).astype(int), probs[:, k])
    return total / probs.shape[1]
