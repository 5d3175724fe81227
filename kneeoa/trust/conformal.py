"""Split conformal prediction sets for KL (ordinal ranges, LAC, APS; marginal or class-conditional) and OA.

Split conformal (Vovk; Angelopoulos & Bates 2021): a score s(x, y) on n calibration knees, q = the
ceil((n+1)(1-alpha))-th smallest score, the set of a new knee = every label with s <= q. For exchangeable
knees P(true grade in set) >= 1 - alpha on average over knees (marginal), not for every knee.

Why hand-written: MAPIE has LAC and APS (its APS randomises the calibration scores) but no ordinal sets;
torchcp (which has more) pulls a different torch and torchvision. The ordinal score is ordinal APS (Lu,
Angelopoulos & Pomerantz 2022): grow a range from the argmax, each step adding the more likely neighbour;
a grade's score is the probability mass of the range when it joins. On a unimodal distribution that is the
non-randomised APS score (tested against MAPIE's), and the LAC sets here are tested equal to MAPIE's. The
thresholding runs at grade time from the stored calibration knees, so grading does not import MAPIE.
The set always keeps the argmax (never empty); that can only raise coverage.

Randomised ordinal score (the default "ordinal"): the scores above are discrete (a range's mass jumps by a
whole grade), so with nearly flat probabilities many knees tie at the quantile and the sets over-cover
(0.97-1.00 at 90 % on the phantom's nnMamba/M3T models). As for randomised APS (Romano et al. 2020), a
grade's score becomes the mass before it joins plus U times its own probability, U uniform on [0, 1), which
makes coverage 1 - alpha up to 1/(n+1) instead of merely at least that. U is not drawn from a generator
but read from a hash of the knee's probabilities, so a knee gets the same set on every run and machine;
two knees with identical probabilities share U (no label is involved, so exchangeability is kept).
Scores stay non-decreasing along the growth order, so the sets are still ranges.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kneeoa.contracts.trust import CONFORMAL_METHODS, DEFAULT_ALPHA, DEFAULT_METHOD, ORDINAL_METHODS
from kneeoa.errors import ConfigError

MIN_PER_CLASS = 1  # a grade with fewer calibration knees gets q = inf in the class-conditional variant


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ceil((n+1)(1-alpha))-th smallest score; +inf when n is too small for that level."""
    scores = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = len(scores)
    rank = math.ceil((n + 1) * (1.0 - float(alpha)))
    if n == 0 or rank > n:
        return math.inf
    return float(scores[max(rank, 1) - 1])


def ordinal_scores(probs: np.ndarray) -> np.ndarray:
    """(n, K) -> (n, K): the mass of the range grown from the argmax at the moment each grade joins it."""
    p = np.asarray(probs, dtype=np.float64)
    n, k = p.shape
    padded = np.pad(p, ((0, 0), (1, 1)), constant_values=-1.0)  # -1 beyond grades 0 and K-1: never chosen
    out = np.empty_like(p)
    rows = np.arange(n)
    lo = hi = p.argmax(1)
    mass = p[rows, lo].copy()
    out[rows, lo] = mass
    for _ in range(k - 1):
        left, right = padded[rows, lo], padded[rows, hi + 2]  # p[lo - 1], p[hi + 1] in padded columns
        go_left = left > right  # ties go up a grade: a deterministic rule, either is valid
        nxt = np.where(go_left, lo - 1, hi + 1)
        mass = mass + np.where(go_left, left, right)
        out[rows, nxt] = mass
        lo = np.where(go_left, nxt, lo)
        hi = np.where(go_left, hi, nxt)
    return out


def tie_breaks(probs: np.ndarray) -> np.ndarray:
    """(n, K) -> (n,) U in [0, 1) per knee: the first 8 bytes of BLAKE2b of its float64 probabilities."""
    rows = np.ascontiguousarray(np.asarray(probs, dtype=np.float64))
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") / 2.0 ** 64
                     for row in rows], dtype=np.float64)


def randomized_ordinal_scores(probs: np.ndarray) -> np.ndarray:
    """The ordinal score with the joining grade's own probability scaled by the knee's U (see the module)."""
    p = np.asarray(probs, dtype=np.float64)
    return ordinal_scores(p) - (1.0 - tie_breaks(p))[:, None] * p


def lac_scores(probs: np.ndarray) -> np.ndarray:
    """LAC (least ambiguous set-valued classifier): 1 - p_y."""
    return 1.0 - np.asarray(probs, dtype=np.float64)


def aps_scores(probs: np.ndarray) -> np.ndarray:
    """Non-randomised APS: the mass of every label at least as likely as y, y included."""
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-p, axis=1, kind="stable")
    cum = np.cumsum(np.take_along_axis(p, order, 1), 1)
    out = np.empty_like(p)
    np.put_along_axis(out, order, cum, 1)
    return out


SCORES = {"ordinal": randomized_ordinal_scores, "ordinal-conservative": ordinal_scores, "lac": lac_scores,
          "aps": aps_scores}


def label_scores(probs: np.ndarray, method: str) -> np.ndarray:
    if method not in SCORES:
        raise ConfigError(f"unknown conformal method {method!r}; choose one of {', '.join(CONFORMAL_METHODS)}")
    return SCORES[method](probs)


@dataclass(frozen=True)
class ConformalSets:
    """A fitted set rule: method, alpha and q (one q, or one per true label when class-conditional)."""

    method: str
    alpha: float
    q: tuple[float, ...]  # length 1 (marginal) or K (class-conditional)
    n: int

    @property
    def class_conditional(self) -> bool:
        return len(self.q) > 1

    @property
    def level(self) -> float:
        return 1.0 - self.alpha

    def sets(self, probs: np.ndarray) -> np.ndarray:
        """(n, K) bool membership; ordinal sets are ranges, every set holds its argmax."""
        p = np.asarray(probs, dtype=np.float64)
        member = label_scores(p, self.method) <= np.asarray(self.q)[None, :]
        member[np.arange(len(p)), p.argmax(1)] = True
        if self.method in ORDINAL_METHODS and self.class_conditional:
            # per-grade thresholds can leave gaps; the range spanning them keeps the guarantee (a superset)
            grades = np.arange(p.shape[1])
            low = np.where(member, grades, p.shape[1]).min(1)
            high = np.where(member, grades, -1).max(1)
            member = (grades[None, :] >= low[:, None]) & (grades[None, :] <= high[:, None])
        return member


def fit_sets(probs: np.ndarray, labels: np.ndarray, alpha: float = DEFAULT_ALPHA, method: str = DEFAULT_METHOD,
             class_conditional: bool = False, quantile: Callable[[np.ndarray, float], float] = conformal_quantile
             ) -> ConformalSets:
    """Calibrate a set rule on labelled knees (labels < 0 = ungraded, left out).

    `quantile` is replaceable so the tests can show that a wrong one fails the coverage check.
    """
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    keep = y >= 0
    p, y = p[keep], y[keep]
    own = label_scores(p, method)[np.arange(len(y)), y] if len(y) else np.zeros(0)
    if class_conditional:
        q = tuple(quantile(own[y == k], alpha) if (y == k).sum() >= MIN_PER_CLASS else math.inf
                  for k in range(p.shape[1]))
    else:
        q = (quantile(own, alpha),)
    return ConformalSets(method=method, alpha=float(alpha), q=q, n=int(len(y)))


def two_class(oa_prob: np.ndarray) -> np.ndarray:
    """(n,) P(OA) -> (n, 2) [P(no OA), P(OA)] for the OA sets (LAC)."""
    p = np.asarray(oa_prob, dtype=np.float64).ravel()
    return np.stack([1.0 - p, p], 1)


def coverage_by_class(member: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Empirical coverage and mean set size per true label (NaN for labels without knees)."""
    y = np.asarray(labels, dtype=np.int64)
    hit = member[np.arange(len(y)), y]
    size = member.sum(1)
    k = member.shape[1]
    cov = np.array([hit[y == c].mean() if (y == c).any() else np.nan for c in range(k)])
    mean_size = np.array([size[y == c].mean() if (y == c).any() else np.nan for c in range(k)])
    return {"coverage": cov, "size": mean_size, "n": np.bincount(y, minlength=k),
            "overall_coverage": float(hit.mean()) if len(y) else float("nan"),
            "overall_size": float(size.mean()) if len(y) else float("nan")}


def coverage_over_splits(probs: np.ndarray, labels: np.ndarray, alpha: float, method: str = DEFAULT_METHOD,
                         n_cal: int | None = None, n_splits: int = 20, seed: int = 0, class_conditional: bool = False,
                         quantile: Callable[[np.ndarray, float], float] = conformal_quantile) -> dict[str, np.ndarray]:
    """Coverage and mean set size on the test part of `n_splits` random calibration/test splits."""
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    n_cal = len(y) // 2 if n_cal is None else int(n_cal)
    rng = np.random.default_rng(seed)
    cov, size = [], []
    for _ in range(n_splits):
        order = rng.permutation(len(y))
        cal, test = order[:n_cal], order[n_cal:]
        rule = fit_sets(p[cal], y[cal], alpha, method, class_conditional, quantile)
        member = rule.sets(p[test])
        cov.append(member[np.arange(len(test)), y[test]].mean())
        size.append(member.sum(1).mean())
    return {"coverage": np.array(cov), "size": np.array(size)}
