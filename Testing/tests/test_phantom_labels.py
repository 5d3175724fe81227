"""Phantom labels without images: severity distribution, reader noise, ungraded knees, subject data."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from kneeoa.data.phantom.severity import (
    KL_BALANCE,
    TRUE_BALANCE,
    case_labels,
    cohens_kappa,
    reader_kl,
    severity_of,
)


@pytest.fixture(scope="module")
def many_labels():
    return [case_labels(0, n) for n in range(1, 3001)]


def test_recorded_grades_have_the_oaizib_class_balance(many_labels):
    recorded = [lab.recorded_kl for lab in many_labels if lab.recorded_kl is not None]
    share = np.bincount(recorded, minlength=5) / len(recorded)
    assert np.abs(share - np.asarray(KL_BALANCE)).max() < 0.025


def test_true_grades_of_any_cohort_size_are_within_a_case_or_two_of_the_true_balance():
    for n in (40, 160, 300):
        true = np.bincount([case_labels(3, k).true_kl for k in range(1, n + 1)], minlength=5)
        assert np.abs(true - n * np.asarray(TRUE_BALANCE)).max() <= 2.0


def test_severity_is_continuous_and_its_floor_is_the_true_grade(many_labels):
    g = np.array([lab.severity for lab in many_labels])
    assert g.min() >= 0.0 and g.max() < 5.0
    assert len(np.unique(np.round(g, 3))) > 2000
    assert all(lab.true_kl == int(np.floor(lab.severity)) for lab in many_labels)


def test_reader_kappa_against_truth_is_moderate(many_labels):
    graded = [lab for lab in many_labels if lab.recorded_kl is not None]
    true = [lab.true_kl for lab in graded]
    rec = [lab.recorded_kl for lab in graded]
    assert 0.55 <= cohens_kappa(true, rec) <= 0.70
    assert 0.70 <= cohens_kappa(true, rec, "linear") <= 0.90


def test_reader_moves_a_grade_by_at_most_one_step(many_labels):
    moves = [abs(lab.recorded_kl - lab.true_kl) for lab in many_labels if lab.recorded_kl is not None]
    assert set(moves) == {0, 1}


def test_reader_never_leaves_the_scale():
    rng = np.random.default_rng(0)
    grades = {reader_kl(g, rng, flip_prob=1.0) for g in (0.01, 0.99, 4.01, 4.99) for _ in range(50)}
    assert grades <= {0, 1, 3, 4}


def test_about_five_percent_of_knees_have_no_grade(many_labels):
    ungraded = np.mean([lab.recorded_kl is None for lab in many_labels])
    assert 0.03 <= ungraded <= 0.07
    assert all(lab.oa is None for lab in many_labels if lab.recorded_kl is None)


def test_oa_follows_the_recorded_grade(many_labels):
    assert all(lab.oa == int(lab.recorded_kl >= 2) for lab in many_labels if lab.recorded_kl is not None)


def test_kappa_matches_scikit_learn():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    b[:120] = a[:120]
    for w in (None, "linear", "quadratic"):
        assert cohens_kappa(a, b, w) == pytest.approx(cohen_kappa_score(a, b, weights=w), abs=1e-9)


def test_subject_ids_and_barcodes_are_unique_and_plausible(many_labels):
    assert len({lab.subject_id for lab in many_labels}) == len(many_labels)
    assert len({lab.mr_barcode for lab in many_labels}) == len(many_labels)
    assert all(9_000_000 <= lab.subject_id < 10_000_000 for lab in many_labels)
    assert all(45 <= lab.age <= 79 and lab.gender in (1, 2) for lab in many_labels)


def test_the_seed_changes_the_cohort():
    assert [severity_of(0, n) for n in range(1, 20)] != [severity_of(1, n) for n in range(1, 20)]
