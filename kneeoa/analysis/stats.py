"""Paired comparisons (SPEC section 4): McNemar, the paired subject-level bootstrap, Benjamini-Hochberg.

Plain functions with explicit arguments, numpy in and out, like `sklearn.metrics`. The published
protocol's numbers are reproduced exactly: the bootstrap draws `rng.integers(0, n, size=n)` per
resample in order (drawn here in blocks, which yields the same stream) and evaluates all resamples
of a block at once (see `kneeoa.analysis.resampling`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from kneeoa.analysis.resampling import COUNT_METRICS, SKLEARN_ARITHMETIC, resample_counts

EXACT_BELOW = 25  # discordant pairs b + c below this: exact binomial test (statsmodels exact=b+c<25)
DEFAULT_SEED = 42
# |delta| below this is a tie up to rounding: the sign then comes from sklearn's arithmetic, as in the reference
TIE_BAND = 1e-9


class McNemarResult(NamedTuple):
    p_value: float
    table: list[list[int]]  # [[both correct, a correct b wrong], [a wrong b correct, both wrong]]
    test: str  # "exact" | "chi2+continuity"


class BootstrapResult(NamedTuple):
    delta: float  # metric(a) - metric(b) on all subjects
    ci_lo: float
    ci_hi: float
    p_value: float
    deltas: np.ndarray  # (n_resamples,) NaN where the metric is undefined on a resample
    n_valid: int  # resamples that entered the CI and p


def mcnemar(correct_a, correct_b) -> McNemarResult:
    """McNemar test of paired correctness: exact binomial if b+c < 25, else chi-square with continuity."""
    from scipy import stats

    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    b = np.asarray(correct_b, dtype=bool).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"correct_a has {a.size} subjects but correct_b has {b.size}")
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    n1, n2 = table[0][1], table[1][0]
    if n1 + n2 < EXACT_BELOW:
        # as statsmodels' mcnemar(exact=True): two-sided binomial, doubled lower tail, capped at 1
        p = min(float(stats.binom.cdf(min(n1, n2), n1 + n2, 0.5)) * 2, 1.0)
        return McNemarResult(p, table, "exact")
    statistic = (abs(n1 - n2) - 1) ** 2 / (1.0 * (n1 + n2))  # Edwards' continuity correction
    return McNemarResult(float(stats.chi2.sf(statistic, 1)), table, "chi2+continuity")


def paired_bootstrap(y, score_a, score_b, metric: str | Callable, n_resamples: int = 10_000,
                     rng: np.random.Generator | int | None = DEFAULT_SEED,
                     chunk_size: int = 2_000) -> BootstrapResult:
    """Paired subject-level bootstrap of metric(a) - metric(b) with a 95% percentile CI and two-sided p.

    `metric` is one of "auc", "acc", "f1", "macro_auc", "macro_f1" (scores are probabilities for the AUCs,
    predicted labels otherwise), evaluated on all resamples of a block at once; or a callable
    `metric(y, score) -> float`, evaluated resample by resample (slow). Resamples on which the metric
    is undefined (one class present for AUC, a missing class for macro AUC) give NaN and are left out
    of the CI and p: p = min(1, 2*min((#{d<=0}+1)/(B'+1), (#{d>=0}+1)/(B'+1))) over the B' valid ones.
    """
    y = np.asarray(y)
    score_a, score_b = np.asarray(score_a), np.asarray(score_b)
    n = len(y)
    if n == 0:
        raise ValueError("no subjects to resample")
    if len(score_a) != n or len(score_b) != n:
        raise ValueError(f"y has {n} subjects but score_a has {len(score_a)} and score_b {len(score_b)}")
    if n_resamples < 1 or chunk_size < 1:
        raise ValueError("n_resamples and chunk_size must be positive")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    paired_delta = _paired_delta(metric)
    delta = float(paired_delta(np.arange(n)[None, :], y, score_a, score_b)[0])
    deltas = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk_size):
        m = min(chunk_size, n_resamples - start)
        # one (m, n) draw = m successive rng.integers(0, n, size=n) draws (same bit stream)
        indices = rng.integers(0, n, size=(m, n))
        deltas[start:start + m] = paired_delta(indices, y, score_a, score_b)
    lo, hi, p, n_valid = percentile_ci_p(deltas)
    return BootstrapResult(delta, lo, hi, p, deltas, n_valid)


def percentile_ci_p(deltas: np.ndarray) -> tuple[float, float, float, int]:
    """(ci_lo, ci_hi, p, n_valid) of a bootstrap distribution of deltas: 95% percentile CI and two-sided p,
    NaN resamples left out (all NaN when none is valid). One rule for the plain and the clustered bootstrap."""
    valid = deltas[~np.isnan(deltas)]
    n_valid = int(valid.size)
    if n_valid == 0:
        return np.nan, np.nan, np.nan, 0
    lo, hi = np.percentile(valid, [2.5, 97.5])
    p = 2 * min((np.sum(valid <= 0) + 1) / (n_valid + 1), (np.sum(valid >= 0) + 1) / (n_valid + 1))
    return float(lo), float(hi), float(min(p, 1.0)), n_valid


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg q-values (monotone in p, capped at 1); NaN p-values are left out of the family."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return q
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


PairedDelta = Callable[..., np.ndarray]  # (indices (B,n), y, score_a, score_b) -> (B,) deltas


def _paired_delta(metric: str | Callable) -> PairedDelta:
    if callable(metric):
        def per_resample(indices: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.array([metric(y[i], a[i]) - metric(y[i], b[i]) for i in indices], dtype=np.float64)

        return per_resample
    if metric not in COUNT_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(COUNT_METRICS)} or pass a callable")
    count_metric = COUNT_METRICS[metric]

    exact = SKLEARN_ARITHMETIC.get(metric)

    def vectorised(indices: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        counts = resample_counts(indices, len(y))
        deltas = count_metric(counts, y, a) - count_metric(counts, y, b)
        if exact is not None:
            # a rank-exact tie (delta 0) can be +-1 ulp in the reference's trapezoid sum (even at AUC 1:
            # unequal tie groups leave fpr steps like 1/6 + 1/3 + 1/2), and that sign moves p by 1/(B+1):
            # redo these resamples with sklearn's arithmetic
            ties = np.flatnonzero(np.abs(deltas) < TIE_BAND)
            if ties.size:
                deltas[ties] = exact(counts[ties], y, a) - exact(counts[ties], y, b)
        return deltas

    return vectorised
