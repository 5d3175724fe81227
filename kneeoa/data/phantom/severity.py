"""Labels of a phantom case without its image: latent severity, true KL, reader-noisy KL, subject data.

Severity `g` is continuous in [0, 5): the true KL grade is `floor(g)` and the fraction inside a grade
says how far the knee is towards the next one. Its distribution is piecewise uniform; the mass of each
grade (`TRUE_BALANCE`) is chosen so that, after reader noise, the *recorded* grades have the OAI-ZIB-CM
class balance (reader noise moves knees into the small KL1 class, so fewer knees are truly KL1). Cases
walk through the distribution on a Weyl (golden ratio) sequence, so any cohort of N cases is within
about one case per grade of the true balance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kneeoa.hierarchy import N_KL, oa_from_kl

# OAI-ZIB-CM KL balance of the paper's 481 graded knees (train 82/46/86/111/58 + test 21/12/22/28/15).
KL_BALANCE = (0.214, 0.121, 0.225, 0.289, 0.151)
# A reader moves the true grade by one step with this probability (towards the nearer grade
# boundary; never off the 0..4 scale), which gives unweighted Cohen's kappa about 0.62 vs the truth.
READER_FLIP_PROB = 0.35
UNGRADED_PROB = 0.045  # OAI-ZIB-CM: 26 of 507 knees (5 %) have no KL grade
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
BILATERAL_RHO = 0.7  # severity correlation of a subject's two knees (Gaussian copula)
_P_SUBJECT = 999_983  # prime: n -> (a n + b) mod p is a bijection, so IDs never collide


def reader_transition(flip_prob: float = READER_FLIP_PROB) -> np.ndarray:
    """T[recorded, true]: expected reader confusion (up/down equally likely; off-scale moves stay put)."""
    t = np.zeros((N_KL, N_KL))
    for k in range(N_KL):
        up = flip_prob / 2 if k < N_KL - 1 else 0.0
        down = flip_prob / 2 if k > 0 else 0.0
        t[k, k] = 1.0 - up - down
        if up:
            t[k + 1, k] = up
        if down:
            t[k - 1, k] = down
    return t


def true_balance(flip_prob: float = READER_FLIP_PROB) -> tuple[float, ...]:
    """True-grade masses whose reader-noisy grades have the OAI-ZIB-CM balance `KL_BALANCE`."""
    masses = np.linalg.solve(reader_transition(flip_prob), np.asarray(KL_BALANCE))
    masses = np.clip(masses, 0.01, None)
    return tuple(float(m) for m in masses / masses.sum())


TRUE_BALANCE = true_balance()


@dataclass(frozen=True)
class CaseLabels:
    """Everything the tables say about one phantom knee."""

    case_number: int
    severity: float  # latent g in [0, 5)
    true_kl: int
    recorded_kl: int | None  # None = ungraded (blank KLGrade)
    knee_side: str  # "right" | "left"
    gender: int  # 1 male, 2 female (OAI coding)
    age: int
    bmi: float
    subject_id: int
    mr_barcode: str
    path: str

    @property
    def oa(self) -> int | None:
        """OA from the recorded grade (what a study would use), None when ungraded."""
        return None if self.recorded_kl is None else oa_from_kl(self.recorded_kl)


def case_rng(seed: int, case_number: int, stream: int) -> np.random.Generator:
    """Independent RNG per (seed, case, stream): results never depend on worker count or order."""
    return np.random.default_rng([int(seed), int(case_number), int(stream)])


def _weyl_u(seed: int, case_number: int) -> float:
    """The case's point in [0, 1) on the cohort's Weyl sequence."""
    u0 = np.random.default_rng([int(seed), 0xC0FFEE]).random()
    return float((u0 + case_number * _GOLDEN) % 1.0)


def _severity_from_u(u: float) -> float:
    """Inverse piecewise-uniform CDF: u in [0, 1) -> severity g in [0, 5) with the `TRUE_BALANCE` masses."""
    edges = np.concatenate([[0.0], np.cumsum(TRUE_BALANCE)])
    edges[-1] = 1.0
    grade = int(min(np.searchsorted(edges, u, side="right") - 1, N_KL - 1))
    within = (u - edges[grade]) / (edges[grade + 1] - edges[grade])
    return float(min(grade + within, N_KL - 1e-6))


def severity_of(seed: int, case_number: int, partner: int | None = None) -> float:
    """Latent severity g in [0, 5) of a case: inverse piecewise-uniform CDF of a Weyl sequence point.

    With `partner` (the subject's other knee) the point is drawn through a Gaussian copula with
    correlation `BILATERAL_RHO` to the partner's point: the marginal balance stays `TRUE_BALANCE`
    while the two knees of one subject have correlated severity, as in OAI.
    """
    u = _weyl_u(seed, case_number)
    if partner is not None:
        from statistics import NormalDist

        unit, eps = NormalDist(), 1e-9
        z_partner = unit.inv_cdf(min(max(_weyl_u(seed, partner), eps), 1 - eps))
        # the own part must be independent of the partner's point: consecutive Weyl points are not
        z_own = unit.inv_cdf(min(max(float(case_rng(seed, case_number, 4).random()), eps), 1 - eps))
        u = unit.cdf(BILATERAL_RHO * z_partner + math.sqrt(1 - BILATERAL_RHO**2) * z_own)
    return _severity_from_u(u)


def bilateral_partner(seed: int, case_number: int, share: float, same_split: bool = True) -> int | None:
    """The case number of the subject's other knee, or None (a one-knee subject).

    Consecutive cases (2m-1, 2m) are one subject's left and right knee with probability `share`
    (drawn per pair from its own stream, so no other case changes); the second of the pair names the
    first. `same_split=False` (the pair straddles the official train/test boundary) never pairs them.
    """
    if share <= 0 or case_number % 2 or not same_split:
        return None
    pair = case_number // 2
    return case_number - 1 if np.random.default_rng([int(seed), 0xB11A7, pair]).random() < share else None


def true_kl_of(severity: float) -> int:
    """True KL grade = floor of the severity."""
    return int(min(max(math.floor(severity), 0), N_KL - 1))


def reader_kl(severity: float, rng: np.random.Generator, flip_prob: float = READER_FLIP_PROB) -> int:
    """A reader's grade: the true grade, moved one step with `flip_prob` towards the nearer boundary."""
    kl = true_kl_of(severity)
    flip, toss = rng.random(), rng.random()
    if flip >= flip_prob:
        return kl
    step = 1 if toss < severity - kl else -1  # near the top of a grade a reader tends to over-call it
    return int(min(max(kl + step, 0), N_KL - 1))


def case_labels(seed: int, case_number: int, partner: int | None = None) -> CaseLabels:
    """Severity, grades and plausible subject data of one case (stream 0 of its RNG).

    `partner` = case number of the same subject's other knee (see `bilateral_partner`): this knee then
    takes the partner's subject (ID, sex, age, BMI, visit), the other side, and a correlated severity.
    """
    rng = case_rng(seed, case_number, 0)
    g = min(round(severity_of(seed, case_number, partner), 4), N_KL - 1e-4)  # as stored in the table
    recorded = reader_kl(g, rng)
    ungraded = rng.random() < UNGRADED_PROB
    side = "right" if rng.random() < 0.55 else "left"
    gender = 2 if rng.random() < 0.58 else 1  # OAI is ~58 % women
    age = int(np.clip(round(rng.normal(58.0 + 2.2 * g, 8.5)), 45, 79))  # OAI enrolled ages 45-79
    bmi = float(np.clip(round(rng.normal(27.0 + 0.8 * g, 4.2), 1), 17.5, 48.0))
    salt = int(np.random.default_rng([int(seed), 0xBEEF]).integers(0, _P_SUBJECT))
    subject_id = 9_000_000 + (7919 * case_number + salt) % _P_SUBJECT
    barcode = f"0166{(104_729 * case_number + 3 * salt) % 99_999_989:08d}"
    visit = 20040000 + int(rng.integers(2, 13)) * 100 + int(rng.integers(1, 29)) + 10000 * int(rng.integers(0, 3))
    path = f"0.C.2/{subject_id}/{visit}/{barcode[-8:]}"
    if partner is not None:  # the same person at the same visit, the other knee
        first = case_labels(seed, partner)
        side = "left" if first.knee_side == "right" else "right"
        gender, age, bmi, subject_id = first.gender, first.age, first.bmi, first.subject_id
        path = f"{first.path.rsplit('/', 1)[0]}/{barcode[-8:]}"
    return CaseLabels(
        case_number=case_number, severity=g, true_kl=true_kl_of(g),
        recorded_kl=None if ungraded else recorded, knee_side=side, gender=gender, age=age, bmi=bmi,
        subject_id=subject_id, mr_barcode=barcode, path=path,
    )


def cohens_kappa(a: np.ndarray, b: np.ndarray, weights: str | None = None, n_classes: int = N_KL) -> float:
    """Cohen's kappa of two integer ratings (weights None, 'linear' or 'quadratic'); nan if undefined.
    scikit-learn's `cohen_kappa_score` over the grades 0..n_classes-1."""
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import cohen_kappa_score

    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    a, b = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if a.size == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # one grade only: kappa undefined, nan
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(cohen_kappa_score(a, b, labels=list(range(n_classes)), weights=weights))
