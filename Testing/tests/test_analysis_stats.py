"""McNemar, the vectorised paired bootstrap and Benjamini-Hochberg against hand numbers and explicit loops."""

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from kneeoa.analysis.stats import benjamini_hochberg, mcnemar, paired_bootstrap


def _correctness(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.r_[np.ones(both), np.ones(only_a), np.zeros(only_b), np.zeros(neither)].astype(bool)
    b = np.r_[np.ones(both), np.zeros(only_a), np.ones(only_b), np.zeros(neither)].astype(bool)
    return a, b


def test_mcnemar_exact_below_25_discordant_pairs():
    # the published ResNet3D table [[72, 8], [6, 12]]: b + c = 14 -> exact binomial
    p, table, test = mcnemar(*_correctness(72, 8, 6, 12))
    assert table == [[72, 8], [6, 12]]
    assert test == "exact"
    # by hand: 2 * P(X <= 6), X ~ Bin(14, 1/2) = 2 * (1+14+91+364+1001+2002+3003) / 2**14
    assert p == 2 * 6476 / 2**14 == 0.79052734375


def test_mcnemar_chi_square_with_continuity_from_25_pairs():
    p, table, test = mcnemar(*_correctness(50, 20, 10, 5))
    assert test == "chi2+continuity"
    statistic = (abs(20 - 10) - 1) ** 2 / (20 + 10)  # statsmodels mcnemar(exact=False, correction=True)
    assert p == pytest.approx(math.erfc(math.sqrt(statistic / 2)), rel=1e-12)  # chi2(1) survival by hand


def test_mcnemar_without_discordant_pairs_is_one():
    assert mcnemar(*_correctness(5, 0, 0, 3)).p_value == 1.0


def _loop_bootstrap(y, a, b, fn, n_resamples, seed):
    """The reference loop: one rng.integers(0, n, size=n) per resample, sklearn per resample; undefined -> NaN."""
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_resamples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n_resamples):
            idx = rng.integers(0, len(y), size=len(y))
            try:
                deltas[i] = fn(y[idx], a[idx]) - fn(y[idx], b[idx])
            except ValueError:
                deltas[i] = np.nan
    valid = deltas[~np.isnan(deltas)]
    lo, hi = np.percentile(valid, [2.5, 97.5])
    p = 2 * min((np.sum(valid <= 0) + 1) / (len(valid) + 1), (np.sum(valid >= 0) + 1) / (len(valid) + 1))
    return deltas, lo, hi, min(p, 1.0)


def _macro_auc(y, probs):
    return roc_auc_score(y, probs, multi_class="ovr", average="macro")


def _macro_f1(y, pred):
    return f1_score(y, pred, average="macro")


@pytest.mark.parametrize("metric", ["auc", "acc", "f1", "macro_auc", "macro_f1"])
def test_vectorised_bootstrap_equals_the_explicit_loop(metric):
    rng = np.random.default_rng(11)
    n = 40
    y_oa = (np.arange(n) % 3 > 0).astype(int)
    y_kl = np.arange(n) % 5
    prob_a, prob_b = np.round(rng.random(n), 2), np.round(rng.random(n), 2)
    probs_a, probs_b = rng.dirichlet(np.ones(5), size=n), rng.dirichlet(np.ones(5), size=n)
    cases = {
        "auc": (y_oa, prob_a, prob_b, roc_auc_score),
        "acc": (y_oa, (prob_a >= .5) * 1, (prob_b >= .5) * 1, accuracy_score),
        "f1": (y_oa, (prob_a >= .5) * 1, (prob_b >= .5) * 1, f1_score),
        "macro_auc": (y_kl, probs_a, probs_b, _macro_auc),
        "macro_f1": (y_kl, probs_a.argmax(1), probs_b.argmax(1), _macro_f1),
    }
    y, a, b, fn = cases[metric]
    ours = paired_bootstrap(y, a, b, metric, n_resamples=200, rng=np.random.default_rng(5), chunk_size=64)
    deltas, lo, hi, p = _loop_bootstrap(y, a, b, fn, 200, 5)
    np.testing.assert_allclose(ours.deltas, deltas, rtol=0, atol=1e-12)
    assert (ours.ci_lo, ours.ci_hi) == pytest.approx((lo, hi), abs=1e-12)
    assert ours.p_value == p


def test_degenerate_resamples_are_left_out_like_the_reference_rule():
    # 8 subjects, 2 positives: many resamples hold one class only, where AUC is undefined
    y = np.array([1, 0, 0, 0, 0, 0, 0, 1])
    a = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    b = np.array([0.2, 0.1, 0.8, 0.3, 0.4, 0.5, 0.6, 0.7])
    ours = paired_bootstrap(y, a, b, "auc", n_resamples=200, rng=3)
    deltas, lo, hi, p = _loop_bootstrap(y, a, b, roc_auc_score, 200, 3)
    assert 0 < ours.n_valid < 200
    assert np.array_equal(np.isnan(ours.deltas), np.isnan(deltas))
    assert (ours.ci_lo, ours.ci_hi, ours.p_value) == pytest.approx((lo, hi, p), abs=1e-12)


def test_a_rank_tie_takes_the_sign_of_sklearns_arithmetic():
    # equal Mann-Whitney U (AUC 17/35 both), but sklearn's trapezoid sums differ by -1.1e-16: the
    # reference counts that delta as < 0, so ours must too or p moves by 1/(B+1)
    y = np.array([1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0])
    a = np.array([0.4, 0.5, 0.8, 0.8, 0.8, 0.8, 0.9, 0.7, 0.6, 0.1, 0.6, 0.8])
    b = np.array([0.5, 0.5, 0.4, 0.1, 0.6, 0.6, 0.6, 0.6, 0.7, 1.0, 0.1, 0.8])
    assert roc_auc_score(y, a) - roc_auc_score(y, b) < 0
    result = paired_bootstrap(y, a, b, "auc", n_resamples=1)
    assert result.delta == roc_auc_score(y, a) - roc_auc_score(y, b)
    ours = paired_bootstrap(y, a, b, "auc", n_resamples=300, rng=9)
    deltas, lo, hi, p = _loop_bootstrap(y, a, b, roc_auc_score, 300, 9)
    assert np.array_equal(ours.deltas <= 0, deltas <= 0) and np.array_equal(ours.deltas >= 0, deltas >= 0)
    assert ours.p_value == p


def test_one_shared_generator_continues_across_tests():
    y, a, b = np.array([0, 1, 0, 1, 1]), np.array([0, 1, 1, 1, 0]), np.array([0, 0, 1, 1, 1])
    shared = np.random.default_rng(42)
    paired_bootstrap(y, a, b, "acc", n_resamples=30, rng=shared)
    second = paired_bootstrap(y, a, b, "acc", n_resamples=30, rng=shared)
    fresh = np.random.default_rng(42)
    fresh.integers(0, 5, size=(30, 5))  # the first test's draws
    assert np.array_equal(second.deltas, paired_bootstrap(y, a, b, "acc", n_resamples=30, rng=fresh).deltas)


def test_bootstrap_accepts_a_callable_metric():
    y, a, b = np.array([0, 1, 0, 1, 1, 0]), np.array([0, 1, 1, 1, 0, 0]), np.array([0, 0, 1, 1, 1, 1])
    by_name = paired_bootstrap(y, a, b, "acc", n_resamples=50, rng=1)
    by_function = paired_bootstrap(y, a, b, accuracy_score, n_resamples=50, rng=1)
    np.testing.assert_allclose(by_function.deltas, by_name.deltas, atol=1e-15)


def test_bootstrap_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="subjects"):
        paired_bootstrap([0, 1, 1], [0, 1], [0, 1, 1], "acc", n_resamples=10)


def test_benjamini_hochberg_hand_example():
    # sorted p 0.01, 0.03, 0.04, 0.20 -> p*m/rank 0.04, 0.06, 0.0533, 0.20 -> running min from the top
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    np.testing.assert_allclose(q, [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20])


def test_benjamini_hochberg_is_monotone_and_capped():
    p = np.random.default_rng(0).random(18) ** 0.3
    q = benjamini_hochberg(p)
    order = np.argsort(p)
    assert np.all(np.diff(q[order]) >= 0)
    assert np.all(q <= 1.0) and np.all(q >= p)


def test_benjamini_hochberg_leaves_nan_out_of_the_family():
    q = benjamini_hochberg([0.01, np.nan, 0.04])
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2]], [0.02, 0.04])
