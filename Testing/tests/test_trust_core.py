"""Trust core: temperature scaling, conformal sets (checked against MAPIE), OOD p-values, acquisition envelope."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from kneeoa.trust import calibration as cal
from kneeoa.trust import conformal as cf
from kneeoa.trust.envelope import acquisition_stats, check_envelope, fit_envelope
from kneeoa.trust.ood import fit_ood


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ordinal_cohort(n: int, seed: int, sharp: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """KL-like probabilities peaked around a latent severity; labels drawn from the *true* probabilities
    while the reported ones are `sharp` times sharper (sharp > 1 = overconfident)."""
    rng = np.random.default_rng(seed)
    severity = rng.uniform(-0.5, 4.5, n)
    logits = -1.2 * (np.arange(5)[None, :] - severity[:, None]) ** 2
    true = softmax(logits)
    y = np.array([rng.choice(5, p=row) for row in true])
    return softmax(sharp * logits), y


# --- temperature scaling -----------------------------------------------------------------------------------

def test_temperature_undoes_overconfidence_and_lowers_ece_and_nll_on_held_out_knees():
    probs, y = ordinal_cohort(600, seed=1, sharp=3.0)
    t = cal.fit_temperature(probs[:300], y[:300])
    assert 2.2 < t < 3.8  # the logits were 3x too sharp
    before = cal.calibration_metrics(probs[300:], y[300:])
    after = cal.calibration_metrics(cal.apply_temperature_kl(probs[300:], t), y[300:])
    assert after["ece"] < before["ece"] and after["nll"] < before["nll"] and after["brier"] < before["brier"]


def test_applied_temperature_matches_netcal_transform():
    from netcal.scaling import TemperatureScaling

    probs, y = ordinal_cohort(200, seed=2, sharp=2.0)
    scaler = TemperatureScaling(method="mle")
    scaler.fit(np.clip(probs, cal.EPS, 1 - cal.EPS), y)
    t = cal.fit_temperature(probs, y)
    ours = cal.apply_temperature_kl(probs, t)
    theirs = scaler.transform(np.clip(probs, cal.EPS, 1 - cal.EPS))
    assert np.allclose(ours, theirs, atol=1e-4)


def test_binary_temperature_and_a_one_class_set_is_left_alone():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, 400)
    y = (rng.uniform(size=400) < 1 / (1 + np.exp(-z))).astype(int)
    p_sharp = 1 / (1 + np.exp(-4 * z))
    assert 3.0 < cal.fit_temperature(p_sharp, y) < 5.5
    assert cal.fit_temperature(p_sharp, np.ones(400, int)) == 1.0


def test_ece_is_zero_for_perfect_confidence_and_reliability_bins_count_every_knee():
    p = np.array([[0.0, 1.0]] * 10)
    assert cal.ece(p, np.ones(10, int)) == pytest.approx(0.0)
    probs, y = ordinal_cohort(100, seed=4)
    bins = cal.reliability_bins(probs, y)
    assert bins["count"].sum() == 100


# --- conformal sets ----------------------------------------------------------------------------------------

def test_quantile_is_the_split_conformal_order_statistic():
    scores = np.arange(1, 20, dtype=float)  # n = 19
    assert cf.conformal_quantile(scores, 0.1) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert math.isinf(cf.conformal_quantile(scores[:5], 0.1))  # ceil(6 * 0.9) = 6 > 5 knees


def test_ordinal_sets_are_ranges_holding_the_argmax():
    probs = softmax(np.random.default_rng(5).normal(0, 2, (300, 5)))  # often bimodal on purpose
    y = np.random.default_rng(6).integers(0, 5, 300)
    for method, cc in [(m, cc) for m in ("ordinal", "ordinal-conservative") for cc in (False, True)]:
        member = cf.fit_sets(probs[:150], y[:150], 0.2, method, class_conditional=cc).sets(probs[150:])
        assert member[np.arange(150), probs[150:].argmax(1)].all()
        for row in member:
            idx = np.flatnonzero(row)
            assert list(idx) == list(range(idx[0], idx[-1] + 1))


def test_ordinal_score_equals_mapie_aps_cumulative_mass_on_unimodal_probabilities():
    from mapie.conformity_scores.sets.aps import APSConformityScore

    probs, y = ordinal_cohort(200, seed=7)
    ours = cf.ordinal_scores(probs)[np.arange(200), y]
    theirs, _ = APSConformityScore.get_true_label_cumsum_proba(y, probs, np.arange(5))
    assert np.allclose(ours, theirs.ravel())
    bimodal = np.array([[0.4, 0.05, 0.3, 0.05, 0.2]])  # APS jumps 0 -> 2; the ordinal range must pass 1
    assert cf.ordinal_scores(bimodal)[0, 2] == pytest.approx(0.75)
    assert cf.aps_scores(bimodal)[0, 2] == pytest.approx(0.7)


def _mapie_reference():
    """benchmarks/baselines/mapie_reference.py, the adapter bench_trust.py uses too (loaded by path)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks/baselines/mapie_reference.py"
    spec = importlib.util.spec_from_file_location("mapie_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lac_sets_equal_mapie_split_conformal_lac_sets():
    from mapie.classification import SplitConformalClassifier

    Probabilities = _mapie_reference().Probabilities
    probs, y = ordinal_cohort(400, seed=8, sharp=0.7)
    for alpha in (0.1, 0.2):
        mapie = SplitConformalClassifier(Probabilities().fit(probs, y), confidence_level=1 - alpha,
                                         conformity_score="lac", prefit=True)
        mapie.conformalize(probs[:200], y[:200])
        theirs = mapie.predict_set(probs[200:])[1][:, :, 0]
        ours = cf.fit_sets(probs[:200], y[:200], alpha, "lac").sets(probs[200:])
        nonempty = theirs.any(1)  # ours never returns an empty set (it keeps the argmax)
        assert nonempty.mean() > 0.9
        assert (ours[nonempty] == theirs[nonempty]).all()


def _coverage_ok(quantile, alpha: float) -> bool:
    """Mean coverage over 40 random calibration/test splits within 1 - alpha +- 0.03."""
    probs, y = ordinal_cohort(800, seed=9)
    res = cf.coverage_over_splits(probs, y, alpha, "ordinal", n_cal=300, n_splits=40, seed=1, quantile=quantile)
    return abs(res["coverage"].mean() - (1 - alpha)) <= 0.03


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_coverage_holds_and_the_check_fails_for_a_miscalibrated_quantile(alpha):
    assert _coverage_ok(cf.conformal_quantile, alpha)

    def naive(scores, a):  # the (1 - 2 alpha) quantile: sets too small, coverage about 1 - 2 alpha
        return cf.conformal_quantile(scores, 2 * a)

    def greedy(scores, a):  # the 1 - alpha/3 quantile: sets too large
        return cf.conformal_quantile(scores, a / 3)

    assert not _coverage_ok(naive, alpha)
    assert not _coverage_ok(greedy, alpha)


def collapsed_cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A model that learned little: every knee gets about the grade prior (what the phantom's quick nnMamba and
    M3T models give), labels drawn from that prior. The ordinal score then takes a few values only."""
    rng = np.random.default_rng(seed)
    prior = np.array([0.3, 0.1, 0.25, 0.2, 0.15])
    probs = softmax(np.log(prior)[None, :] + rng.normal(0, 0.05, (n, 5)))
    return probs, rng.choice(5, size=n, p=prior)


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_randomised_ordinal_sets_cover_1_minus_alpha_where_the_conservative_ones_over_cover(alpha):
    probs, y = collapsed_cohort(194, seed=13)  # the benchmark's size: 97 calibration, 97 test knees
    res = {m: cf.coverage_over_splits(probs, y, alpha, m, n_splits=40, seed=1)["coverage"].mean()
           for m in ("ordinal", "ordinal-conservative")}
    assert abs(res["ordinal"] - (1 - alpha)) <= 0.03  # the band of the coverage test above
    if alpha == 0.1:  # {0..3} holds 85 % of the mass: the conservative range must take grade 4 as well
        assert res["ordinal-conservative"] > 1 - alpha + 0.05


def test_the_randomisation_is_reproducible_and_uniform():
    from scipy.stats import kstest

    probs = np.random.default_rng(14).dirichlet(np.ones(5), 3000)
    u = cf.tie_breaks(probs)
    assert np.array_equal(u, cf.tie_breaks(probs.copy())) and kstest(u, "uniform").pvalue > 0.01
    rule = cf.fit_sets(*collapsed_cohort(200, seed=15), 0.1, "ordinal")
    assert np.array_equal(rule.sets(probs[:50]), rule.sets(probs[:50].copy()))  # the same knee, the same set
    assert np.array_equal(rule.sets(probs[:50])[7], rule.sets(probs[7:8])[0])  # whatever the batch around it


def test_class_conditional_sets_cover_a_rare_grade_that_marginal_sets_miss():
    rng = np.random.default_rng(10)
    probs, y = ordinal_cohort(3000, seed=11)
    rare = np.flatnonzero(y == 1)
    drop = rng.choice(rare, size=int(0.8 * len(rare)), replace=False)  # KL1 rare, as in OAI
    keep = np.setdiff1d(np.arange(len(y)), drop)
    probs, y = probs[keep], y[keep]
    probs = probs.copy()
    probs[y == 1] = np.roll(probs[y == 1], 1, axis=1)  # the model is bad on KL1: mass moved up a grade
    cal_i, test_i = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
    res = {}
    for cc in (False, True):
        member = cf.fit_sets(probs[cal_i], y[cal_i], 0.1, "ordinal", class_conditional=cc).sets(probs[test_i])
        res[cc] = cf.coverage_by_class(member, y[test_i])["coverage"][1]
    assert res[False] < 0.85 <= res[True]


def test_oa_sets_are_no_oa_oa_or_both():
    p = np.array([0.02, 0.5, 0.98])
    y = np.array([0, 1, 1, 0, 1, 0] * 20)
    pc = np.tile([0.1, 0.9, 0.7, 0.3, 0.45, 0.4], 20)  # scores 0.1 0.1 0.3 0.3 0.55 0.4: q = 0.55
    member = cf.fit_sets(cf.two_class(pc), y, 0.1, "lac").sets(cf.two_class(p))
    assert member[0].tolist() == [True, False] and member[2].tolist() == [False, True]
    assert member[1].all()


# --- out of distribution -----------------------------------------------------------------------------------

def test_mahalanobis_p_values_flag_few_in_distribution_and_most_shifted_embeddings():
    rng = np.random.default_rng(12)
    cov = np.diag(np.linspace(0.2, 3.0, 16))
    train = rng.multivariate_normal(np.zeros(16), cov, 300)
    held = rng.multivariate_normal(np.zeros(16), cov, 200)
    model = fit_ood(train, held)
    new_in = rng.multivariate_normal(np.zeros(16), cov, 2000)
    shifted = rng.multivariate_normal(np.full(16, 1.5), cov, 200)
    assert model.flag(model.distance(new_in), 0.05).mean() <= 0.05 + 0.015
    assert model.flag(model.distance(shifted), 0.05).mean() > 0.9
    assert model.p_value(np.array([0.0]))[0] == 1.0
    assert model.p_value(np.array([1e9]))[0] == pytest.approx(1 / 201)


# --- acquisition envelope ----------------------------------------------------------------------------------

def _knee(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    arr = rng.gamma(2.0, 50.0, (24, 24, 24))
    arr[8:16, 8:16, 8:16] += 400
    return arr, np.diag([0.6, 0.6, 0.6, 1.0])


def test_envelope_passes_training_like_knees_and_names_what_is_off():
    env = fit_envelope([acquisition_stats(*_knee(s)) for s in range(6)])
    arr, aff = _knee(99)
    assert check_envelope(acquisition_stats(arr, aff), env) == []
    big = np.diag([6.0, 6.0, 6.0, 1.0])
    assert any("field of view 10.0x" in m for m in check_envelope(acquisition_stats(arr, big), env))
    axial = np.array([[0, 0, 0.6, 0], [0.6, 0, 0, 0], [0, 0.6, 0, 0], [0, 0, 0, 1.0]])  # slices along x
    assert any(m.startswith("sagittal acquisition; the model was trained on axial")
               for m in check_envelope(acquisition_stats(arr, axial), env))
    inverted = arr.max() - arr
    assert any("intensity distribution unlike" in m for m in check_envelope(acquisition_stats(inverted, aff), env))
    assert check_envelope(acquisition_stats(arr, aff), {}) == []
