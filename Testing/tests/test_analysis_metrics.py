"""Evaluation metrics: hand-computable cases, and the vectorised resample kernels against scikit-learn."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from kneeoa.analysis.metrics import kl_metrics, oa_metrics
from kneeoa.analysis.resampling import (
    accuracy_counts,
    auc_counts,
    f1_counts,
    macro_auc_counts,
    macro_f1_counts,
    resample_counts,
)
from kneeoa.analysis.trapezoid_auc import (
    auc_trapezoid,
    auc_trapezoid_counts,
    macro_auc_trapezoid,
    macro_auc_trapezoid_counts,
)


def test_oa_metrics_on_a_hand_case():
    # pairs (pos, neg): 0.9 beats all 2 negatives, 0.4 ties 0.4 and beats 0.2 -> U = 2 + 1.5 = 3.5 of 4
    y = [1, 1, 0, 0]
    prob = [0.9, 0.4, 0.4, 0.2]
    m = oa_metrics(y, prob)
    assert m["oa_auc"] == pytest.approx(3.5 / 4)
    # predictions at 0.5: 1, 0, 0, 0 -> 3 of 4 correct; F1 = 2*1 / (2 + 1) with one false negative
    assert m["oa_acc"] == pytest.approx(0.75)
    assert m["oa_f1"] == pytest.approx(2 / 3)


def test_oa_auc_is_nan_with_one_class():
    m = oa_metrics([1, 1, 1], [0.2, 0.6, 0.9])
    assert np.isnan(m["oa_auc"])
    assert m["oa_acc"] == pytest.approx(2 / 3)


def test_kl_metrics_perfect_grader():
    y = np.array([0, 1, 2, 3, 4, 0, 2, 4])
    probs = np.eye(5)[y] * 0.9 + 0.02
    m = kl_metrics(y, probs)
    assert m == pytest.approx({"kl_acc": 1.0, "kl_macro_f1": 1.0, "kl_macro_auc": 1.0, "kl_qwk": 1.0,
                               "kl_bal_acc": 1.0, "kl_macro_precision": 1.0, "kl_macro_recall": 1.0})


def test_kl_macro_auc_is_nan_when_a_grade_is_missing():
    y = np.array([0, 1, 2, 3, 3])
    probs = np.full((5, 5), 0.2)
    assert np.isnan(kl_metrics(y, probs)["kl_macro_auc"])


def test_kl_metrics_match_sklearn_on_a_noisy_grader():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 6)
    probs = rng.dirichlet(np.ones(5), size=y.size)
    pred = probs.argmax(1)
    m = kl_metrics(y, probs)
    assert m["kl_acc"] == accuracy_score(y, pred)
    assert m["kl_macro_f1"] == f1_score(y, pred, average="macro")
    assert m["kl_macro_auc"] == roc_auc_score(y, probs, multi_class="ovr", average="macro")


def test_kl_metrics_reject_wrong_probability_shape():
    with pytest.raises(ValueError, match="shape"):
        kl_metrics([0, 1], np.ones((2, 3)))


def test_rank_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    score = np.round(rng.random(40), 1)  # about ten distinct values: many ties
    assert auc_counts(np.ones((1, 40)), y, score)[0] == pytest.approx(roc_auc_score(y, score), abs=1e-15)


def test_trapezoid_auc_is_bit_identical_to_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(5, 60))
        y = rng.integers(0, 2, n)
        if len(np.unique(y)) < 2:
            continue
        score = np.round(rng.random(n), int(rng.integers(1, 4)))
        assert auc_trapezoid(y, score) == roc_auc_score(y, score)


def test_trapezoid_macro_auc_is_bit_identical_to_sklearn():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(5), 7)
    probs = np.round(rng.dirichlet(np.ones(5), size=y.size), 2)
    probs /= probs.sum(1, keepdims=True)
    assert macro_auc_trapezoid(y, probs) == roc_auc_score(y, probs, multi_class="ovr", average="macro")


def test_batched_trapezoid_auc_is_bit_identical_to_sklearn_on_resamples():
    # bootstrap duplicates make tie groups of every size: the hard case for sklearn's dropped ROC points
    rng = np.random.default_rng(5)
    n = 30
    y_oa, y_kl = rng.integers(0, 2, n), np.arange(n) % 5
    score = np.round(rng.random(n), 1)
    probs = rng.dirichlet(np.ones(5), size=n)
    idx = rng.integers(0, n, size=(60, n))
    counts = resample_counts(idx, n)
    auc, macro = auc_trapezoid_counts(counts, y_oa, score), macro_auc_trapezoid_counts(counts, y_kl, probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row, i in enumerate(idx):
            expected = roc_auc_score(y_oa[i], score[i])
            assert np.isnan(auc[row]) if np.isnan(expected) else auc[row] == expected
            if len(np.unique(y_kl[i])) == 5:
                assert macro[row] == roc_auc_score(y_kl[i], probs[i], multi_class="ovr", average="macro")
            else:
                assert np.isnan(macro[row])


def test_count_matrix_counts_each_draw():
    counts = resample_counts(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    assert counts.tolist() == [[2, 0, 1], [0, 1, 2]]


def test_resampled_kernels_equal_sklearn_per_resample():
    rng = np.random.default_rng(4)
    n, b = 25, 30
    y_oa = rng.integers(0, 2, n)
    prob = np.round(rng.random(n), 1)
    pred_oa = (prob >= 0.5).astype(int)
    y_kl = np.repeat(np.arange(5), 5)
    kl_probs = rng.dirichlet(np.ones(5), size=n)
    pred_kl = kl_probs.argmax(1)
    idx = rng.integers(0, n, size=(b, n))
    counts = resample_counts(idx, n)
    got = {
        "acc": accuracy_counts(counts, y_oa, pred_oa), "f1": f1_counts(counts, y_oa, pred_oa),
        "auc": auc_counts(counts, y_oa, prob), "macro_f1": macro_f1_counts(counts, y_kl, pred_kl),
        "macro_auc": macro_auc_counts(counts, y_kl, kl_probs),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row, i in enumerate(idx):
            assert got["acc"][row] == accuracy_score(y_oa[i], pred_oa[i])
            assert got["f1"][row] == f1_score(y_oa[i], pred_oa[i])
            assert got["macro_f1"][row] == f1_score(y_kl[i], pred_kl[i], average="macro")
            auc = roc_auc_score(y_oa[i], prob[i])
            assert np.isnan(got["auc"][row]) if np.isnan(auc) else got["auc"][row] == pytest.approx(auc, abs=1e-15)
            if len(np.unique(y_kl[i])) == 5:
                expected = roc_auc_score(y_kl[i], kl_probs[i], multi_class="ovr", average="macro")
                assert got["macro_auc"][row] == pytest.approx(expected, abs=1e-15)
            else:  # sklearn refuses: a grade of the probability columns is absent
                assert np.isnan(got["macro_auc"][row])
