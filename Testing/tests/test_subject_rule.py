"""One subject rule (`kneeoa.contracts.case_ids.subject_of`) for the two places that keep a subject's knees
together: the cross-validation folds and the calibration hold-out of `train --calibration-fraction`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from kneeoa.contracts.case_ids import SUBJECT_COLUMN, subject_of
from kneeoa.data.case import Case


def _case(case_id: str, subject=None, kl: int = 0) -> Case:
    extra = {} if subject is None else {SUBJECT_COLUMN: subject}
    return Case(case_id, Path(f"{case_id}.nii.gz"), kl=kl, split="train", extra=extra)


@pytest.mark.parametrize("subject, expected", [
    (9000099, "9000099"),            # an xlsx integer cell
    (9000099.0, "9000099"),          # the same id as an xlsx float cell
    (" 9000099 ", "9000099"),        # ... and as CSV text
    ("9000099.0", "9000099"),
    ("0042", "42"),                  # a number, however it is padded
    (12345678901234567890, "12345678901234567890"),  # exact beyond float precision
    ("S-17", "S-17"), (" S-17\t", "S-17"),           # a text id, trimmed
    (12.5, "12.5"), ("nan", "nan"), ("inf", "inf"),   # not whole numbers: as written (inf does not crash)
    (None, "knee_7"), ("", "knee_7"), ("  ", "knee_7"),  # no subject: the knee is its own subject
])
def test_the_rule(subject, expected):
    assert subject_of(_case("knee_7", subject)) == expected


def test_a_case_without_extra_is_its_own_subject():
    class Bare:  # what a caller outside the cohort readers may pass: an id and nothing else
        case_id = "knee_3"
    assert subject_of(Bare()) == "knee_3"


def _mixed_pairs(n_subjects: int = 40) -> list[Case]:
    """Each subject's left knee stored as an integer, its right as padded float text (xlsx + CSV tables)."""
    cases = []
    for s in range(n_subjects):
        sid = 9_000_000 + s
        kl = s % 5
        cases.append(_case(f"oaizib_{2 * s + 1:03d}", sid, kl))
        cases.append(_case(f"oaizib_{2 * s + 2:03d}", f" {sid}.0 ", min(4, kl + s % 2)))
    return cases


def test_folds_and_the_calibration_holdout_keep_the_same_subjects_together():
    from kneeoa.crossval.folds import assign_folds, fold_rows
    from kneeoa.trust.fit import grouped_holdout

    cases = _mixed_pairs()
    folds = assign_folds(cases, 4, seed=0)
    kept, held = grouped_holdout(cases, 0.25, seed=0)
    fold_sets, side_sets = defaultdict(set), defaultdict(set)
    for case in cases:
        fold_sets[subject_of(case)].add(folds[case.case_id])
    for side, members in (("kept", kept), ("held", held)):
        for case in members:
            side_sets[subject_of(case)].add(side)
    assert len(fold_sets) == len(side_sets) == 40  # 80 knees, 40 subjects for both callers
    assert all(len(f) == 1 for f in fold_sets.values()), "a subject straddles two folds"
    assert all(len(s) == 1 for s in side_sets.values()), "a subject straddles the calibration hold-out"
    assert {r["subject"] for r in fold_rows(cases, folds)} == set(side_sets)  # folds.csv names the same subjects


def test_both_callers_use_the_contract():
    import kneeoa.crossval.folds as folds
    import kneeoa.trust.fit as fit

    assert folds.subject_of is fit.subject_of is subject_of
