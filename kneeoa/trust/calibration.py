"""Temperature scaling per head (Guo et al. 2017) and the calibration metrics (ECE, Brier, NLL).

Temperature scaling divides a head's logits by one T > 0 fitted by maximum likelihood on labelled knees the
model did not train on. We work from the probabilities the engine already returns: log(softmax(z)) = z - c
with a per-knee constant c, so softmax(log p / T) == softmax(z / T) exactly, and for the OA head
logit(p) is the single logit (or the logit difference of a 2-logit head). The fit is netcal's
TemperatureScaling (MLE); applying T is one division, done here so grading never imports netcal (about 9 s).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np

from kneeoa.hierarchy import OA_THRESHOLD

EPS = 1e-12  # probabilities are float32 softmax outputs: keep log() finite
ECE_BINS = 15  # SPEC 8: 15 equal-width bins, top-label
T_MIN, T_MAX = 0.05, 20.0


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)


def apply_temperature_kl(kl_probs: np.ndarray, t: float) -> np.ndarray:
    """(n, 5) probabilities -> softmax(log p / T)."""
    z = np.log(_clip(kl_probs)) / float(t)
    z -= z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def apply_temperature_oa(oa_prob: np.ndarray, t: float) -> np.ndarray:
    """(n,) P(OA) -> sigmoid(logit(p) / T)."""
    p = _clip(oa_prob)
    return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p)) / float(t)))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """T of one head by maximum likelihood (netcal): probs (n, 5) with labels 0..4, or (n,) P(OA) with 0/1."""
    from netcal.scaling import TemperatureScaling

    probs = _clip(probs)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < 2 or len(np.unique(labels)) < 2:
        return 1.0  # one class only: the likelihood is maximised by T -> 0, which would be nonsense
    # netcal warns about its defaults on every fit and prints a note on stdout (kept clean for JSON progress)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        scaler = TemperatureScaling(method="mle")
        scaler.fit(probs, labels)
    inverse = float(np.ravel(scaler.temperature)[0])  # netcal multiplies the logits by this weight = 1/T
    if not np.isfinite(inverse):
        return 1.0
    # The NLL is convex in 1/T: when netcal's unconstrained optimum is <= 0 (the head ranks these knees the
    # wrong way round), the optimum over T > 0 is the largest T allowed (probabilities near uniform).
    return float(np.clip(1.0 / inverse, T_MIN, T_MAX)) if inverse > 0 else T_MAX


@dataclass(frozen=True)
class Temperatures:
    """One temperature per head; 1.0 leaves a head unchanged (no head, or not fitted)."""

    kl: float = 1.0
    oa: float = 1.0


def fit_temperatures(kl_probs: np.ndarray | None, oa_prob: np.ndarray, kl: np.ndarray,
                     has_oa_head: bool) -> Temperatures:
    """T for the KL head (when there is one) and the OA head (when the model has one) on graded knees."""
    kl = np.asarray(kl)
    graded = kl >= 0
    t_kl = fit_temperature(kl_probs[graded], kl[graded]) if kl_probs is not None else 1.0
    t_oa = fit_temperature(np.asarray(oa_prob)[graded], (kl[graded] >= OA_THRESHOLD).astype(int)) \
        if has_oa_head else 1.0
    return Temperatures(kl=t_kl, oa=t_oa)


def calibrated(kl_probs: np.ndarray | None, oa_prob: np.ndarray, temps: Temperatures,
               has_oa_head: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """(calibrated KL probabilities | None, calibrated P(OA)); without an OA head P(OA) = p2+p3+p4 of the KL."""
    kl_cal = None if kl_probs is None else apply_temperature_kl(kl_probs, temps.kl)
    if has_oa_head:
        oa_cal = apply_temperature_oa(oa_prob, temps.oa)
    else:
        oa_cal = kl_cal[:, OA_THRESHOLD:].sum(-1) if kl_cal is not None else np.asarray(oa_prob, float)
    return kl_cal, oa_cal


# --- metrics -----------------------------------------------------------------------------------------------

def _as_two_class(p: np.ndarray) -> np.ndarray:
    """(n,) P(positive) -> (n, 2); (n, K) rows renormalised (CSV round trips leave sums of 1 +- 1e-8)."""
    p = np.asarray(p, dtype=np.float64)
    return np.stack([1.0 - p, p], -1) if p.ndim == 1 else p / p.sum(-1, keepdims=True)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error (netcal ECE, equal-width bins); (n,) P(OA) or (n, K)."""
    from netcal.metrics import ECE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(ECE(bins=bins).measure(_as_two_class(probs), np.asarray(labels, dtype=np.int64)))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score (scikit-learn; multiclass = mean squared distance to the one-hot label, summed over classes)."""
    from sklearn.metrics import brier_score_loss

    p = _as_two_class(probs)
    return float(brier_score_loss(np.asarray(labels, dtype=np.int64), p, labels=list(range(p.shape[1]))))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood (scikit-learn log_loss)."""
    from sklearn.metrics import log_loss

    p = _as_two_class(probs)
    return float(log_loss(np.asarray(labels, dtype=np.int64), _clip(p), labels=list(range(p.shape[1]))))


def calibration_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{'ece', 'brier', 'nll'} of one head."""
    return {"ece": ece(probs, labels), "brier": brier(probs, labels), "nll": nll(probs, labels)}


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Top-label reliability diagram data: per bin mean confidence, accuracy and count (empty bins NaN)."""
    p = _as_two_class(probs)
    conf = p.max(-1)
    hit = (p.argmax(-1) == np.asarray(labels)).astype(float)
    idx = np.clip((conf * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, minlength=bins) / count
        acc = np.bincount(idx, hit, minlength=bins) / count
    return {"confidence": mean_conf, "accuracy": acc, "count": count, "edges": np.linspace(0, 1, bins + 1)}

