"""Subject-clustered paired bootstrap for cross-validated studies (SPEC section 10), over several seeds at once.

A subject's knees are correlated, so the resampling unit is the subject: a resample draws subjects with
replacement and every knee of a drawn subject comes along (a cluster bootstrap). As count matrices
(see `kneeoa.analysis.resampling`) that is `subject_counts[:, subject_of_knee]`: the knee weights of
the resample, on which every vectorised metric runs unchanged. No library offers a clustered,
vectorised paired bootstrap for these metrics (scipy.stats.bootstrap resamples observations), hence
this module.

One draw of subjects is shared by every test and every seed of a resample. That is what the combined
estimate needs: the seed-averaged delta, mean over seeds of metric(dual) - metric(single), is
evaluated on the same resampled subjects for all seeds, so its distribution holds both the subject
sampling and the seed-to-seed spread as they occur together. Each per-seed test on its own is an
ordinary cluster bootstrap of that seed's predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kneeoa.analysis.resampling import COUNT_METRICS, SKLEARN_ARITHMETIC, metric_value
from kneeoa.analysis.stats import TIE_BAND, percentile_ci_p


@dataclass
class PairedScores:
    """One test on one seed: labels and the two models' scores per knee (knees in a fixed order)."""

    y: np.ndarray
    dual: np.ndarray
    single: np.ndarray


@dataclass
class BootSummary:
    delta: float
    ci_lo: float
    ci_hi: float
    p_value: float
    n_valid: int


def summarise(delta: float, deltas: np.ndarray) -> BootSummary:
    """95% percentile CI and two-sided p of a bootstrap distribution (NaN resamples left out), by
    `kneeoa.analysis.stats.percentile_ci_p` as `paired_bootstrap` computes them."""
    lo, hi, p, n = percentile_ci_p(deltas)
    return BootSummary(float(delta), lo, hi, p, n)


def subject_index(subjects) -> tuple[np.ndarray, int]:
    """Per knee, the index of its subject (numbered in order of first appearance); and n_subjects."""
    numbers: dict[str, int] = {}
    index = np.array([numbers.setdefault(str(s), len(numbers)) for s in subjects], dtype=np.int64)
    return index, len(numbers)


def clustered_deltas(tests: dict[str, list[PairedScores]], groups: np.ndarray, n_resamples: int = 10_000,
                     rng: np.random.Generator | int | None = 42, chunk_size: int = 1_000) -> dict[str, np.ndarray]:
    """{test: (n_seeds, n_resamples) bootstrap deltas} with one shared subject draw per resample.

    `tests[name][s]` holds seed s's scores for that test; `groups[i]` is knee i's subject index.
    Each test's `.y/.dual/.single` are in the knee order of `groups`; the metric kernel comes from
    the test name's suffix after the last ':' (e.g. 'resnet3d:OA:AUC:auc').
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    groups = np.asarray(groups, dtype=np.int64)
    n_subjects = int(groups.max()) + 1
    out = {name: np.empty((len(seeds), n_resamples)) for name, seeds in tests.items()}
    for start in range(0, n_resamples, chunk_size):
        m = min(chunk_size, n_resamples - start)
        draws = rng.integers(0, n_subjects, size=(m, n_subjects))
        flat = (draws + n_subjects * np.arange(m)[:, None]).ravel()
        subject_counts = np.bincount(flat, minlength=m * n_subjects).reshape(m, n_subjects).astype(np.float64)
        counts = subject_counts[:, groups]  # (m, n_knees): a drawn subject brings all its knees
        for name, seeds in tests.items():
            kind = name.rsplit(":", 1)[-1]
            for s, scores in enumerate(seeds):
                out[name][s, start:start + m] = _delta(kind, counts, scores)
    return out


def _delta(kind: str, counts: np.ndarray, scores: PairedScores) -> np.ndarray:
    kernel = COUNT_METRICS[kind]
    deltas = kernel(counts, scores.y, scores.dual) - kernel(counts, scores.y, scores.single)
    exact = SKLEARN_ARITHMETIC.get(kind)
    if exact is not None:  # ties up to rounding: take the sign from sklearn's arithmetic (see stats.py)
        ties = np.flatnonzero(np.abs(deltas) < TIE_BAND)
        if ties.size:
            deltas[ties] = exact(counts[ties], scores.y, scores.dual) - exact(counts[ties], scores.y, scores.single)
    return deltas


def point_delta(kind: str, scores: PairedScores) -> tuple[float, float, float]:
    """(single, dual, dual - single) on every knee once, equal to scikit-learn's values."""
    single = metric_value(kind, scores.y, scores.single)
    dual = metric_value(kind, scores.y, scores.dual)
    return single, dual, dual - single
