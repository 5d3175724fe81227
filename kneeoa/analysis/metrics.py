"""Per-subject evaluation metrics (SPEC section 4): OA at threshold 0.5, KL from the 5-class distribution.

Values are NaN where a metric is undefined (e.g. AUC with one class present), never an exception,
so a small phantom test split still gets a full table.
"""

from __future__ import annotations

import warnings

import numpy as np

from kneeoa.analysis.resampling import metric_value
from kneeoa.hierarchy import N_KL, OA_DECISION


def oa_metrics(y_oa, prob_oa) -> dict[str, float]:
    """OA AUC, accuracy, F1, precision and recall (prediction = prob >= 0.5), as the paper's metrics CSV."""
    y = _labels(y_oa, "y_oa")
    prob = np.asarray(prob_oa, dtype=np.float64).reshape(-1)
    _same_length(y, prob, "prob_oa")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_oa must hold 0/1 labels")
    pred = (prob >= OA_DECISION).astype(int)
    return {
        "oa_auc": metric_value("auc", y, prob),
        "oa_acc": metric_value("acc", y, pred),
        "oa_f1": metric_value("f1", y, pred),
        **_precision_recall("oa", y, pred, "binary"),
    }


def kl_metrics(y_kl, kl_probs) -> dict[str, float]:
    """KL accuracy, macro-F1, macro OvR AUC, quadratic-weighted kappa, balanced accuracy, macro precision and
    recall (pred = argmax)."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    y = _labels(y_kl, "y_kl")
    probs = np.asarray(kl_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != N_KL:
        raise ValueError(f"kl_probs must have shape (n, {N_KL}), got {probs.shape}")
    _same_length(y, probs, "kl_probs")
    if not np.isin(y, np.arange(N_KL)).all():
        raise ValueError("y_kl must hold KL grades 0..4")
    pred = probs.argmax(axis=1)
    with warnings.catch_warnings():
        # one-class inputs: sklearn warns and returns nan/0; we report nan below instead
        warnings.simplefilter("ignore")
        qwk = cohen_kappa_score(y, pred, weights="quadratic") if len(np.unique(np.r_[y, pred])) > 1 else np.nan
        bal = balanced_accuracy_score(y, pred) if len(y) else np.nan
    return {
        "kl_acc": metric_value("acc", y, pred),
        "kl_macro_f1": metric_value("macro_f1", y, pred),
        "kl_macro_auc": metric_value("macro_auc", y, probs),
        "kl_qwk": float(qwk),
        "kl_bal_acc": float(bal),
        **_precision_recall("kl_macro", y, pred, "macro"),
    }


def _precision_recall(prefix: str, y: np.ndarray, pred: np.ndarray, average: str) -> dict[str, float]:
    """sklearn precision/recall (the paper's `precision_score`/`recall_score`; 0 where undefined, as sklearn)."""
    from sklearn.metrics import precision_score, recall_score

    # macro over the grades present in y or pred: sklearn's default, as the paper's scripts call it
    return {f"{prefix}_precision": float(precision_score(y, pred, average=average, zero_division=0)),
            f"{prefix}_recall": float(recall_score(y, pred, average=average, zero_division=0))}


def _labels(values, name: str) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    as_float = arr.astype(np.float64)
    if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
        raise ValueError(f"{name} must hold integer labels")
    return as_float.astype(int)


def _same_length(y: np.ndarray, other: np.ndarray, name: str) -> None:
    if len(other) != len(y):
        raise ValueError(f"{name} has {len(other)} rows but the labels have {len(y)}")
