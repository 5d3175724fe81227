"""Generic cohort folders: volumes of any format, masks matched by name, an optional labels table."""

from __future__ import annotations

import numpy as np
import pytest

from kneeoa.data.cohort import CohortWarning, load_cohort
from kneeoa.data.tables import write_table
from kneeoa.data.volume import Volume, write_nifti, write_volume
from kneeoa.errors import InputError

SHAPE = (6, 7, 8)


def image(seed=0) -> Volume:
    return Volume(np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32), np.eye(4))


def mask() -> np.ndarray:
    return np.random.default_rng(9).integers(0, 6, SHAPE)


def make_folder(root):
    """knee_a.nii.gz (mask in masks/), knee_b.nrrd (sibling _seg), knee_c.mha (no mask)."""
    write_volume(root / "knee_a.nii.gz", image(0))
    write_nifti(root / "masks" / "knee_a.nii.gz", mask(), np.eye(4), is_label=True)
    write_volume(root / "knee_b.nrrd", image(1))
    write_nifti(root / "knee_b_seg.nii.gz", mask(), np.eye(4), is_label=True)
    write_volume(root / "knee_c.mha", image(2))
    return root


def test_folder_without_labels_lists_every_volume_with_matched_masks(tmp_path):
    cohort = load_cohort(make_folder(tmp_path / "f"))
    assert cohort.kind == "folder"
    assert [c.case_id for c in cohort.cases] == ["knee_a", "knee_b", "knee_c"]
    masks = {c.case_id: (c.mask.relative_to(tmp_path / "f").as_posix() if c.mask else None) for c in cohort.cases}
    assert masks == {"knee_a": "masks/knee_a.nii.gz", "knee_b": "knee_b_seg.nii.gz", "knee_c": None}
    assert all(c.split == "unlabelled" and c.kl is None for c in cohort.cases)
    assert cohort.split("train") == [] and len(cohort.split("unlabelled", graded_only=False)) == 3


def test_labels_table_gives_grades_splits_and_extras(tmp_path):
    root = make_folder(tmp_path / "f")
    table = tmp_path / "grades.csv"
    write_table(table, [{"case": "knee_a.nii.gz", "KL": 3, "split": "test", "Age": 70},
                        {"case": "knee_b", "KL": 0, "split": "", "Age": 55},
                        {"case": "knee_c", "KL": None, "split": "", "Age": 61}], ["case", "KL", "split", "Age"])
    with pytest.warns(CohortWarning, match="knee_c"):
        cohort = load_cohort(root, labels=table)
    assert [(c.case_id, c.kl, c.split) for c in cohort.cases] == [
        ("knee_a", 3, "test"), ("knee_b", 0, "train"), ("knee_c", None, "unlabelled")]
    assert cohort.ungraded == ["knee_c"] and cohort.case("knee_a").extra == {"Age": "70"}
    assert cohort.summary()["splits"]["test"]["kl_counts"][3] == 1


def test_labels_csv_inside_the_folder_is_found(tmp_path):
    root = make_folder(tmp_path / "f")
    write_table(root / "labels.csv", [{"id": n, "kl_grade": g} for n, g in
                                      (("knee_a", 1), ("knee_b", 2), ("knee_c", 4))], ["id", "kl_grade"])
    assert [c.kl for c in load_cohort(root).cases] == [1, 2, 4]


def test_dicom_subfolder_is_a_case(tmp_path):
    from test_data_helpers import write_dicom_series

    root = make_folder(tmp_path / "f")
    write_dicom_series(root / "knee_d", image(3), "1.2.3.9")
    assert load_cohort(root).case("knee_d").image == root / "knee_d"


def test_nnunet_style_names_match_masks(tmp_path):
    root = tmp_path / "f"
    write_volume(root / "case7_0000.nii.gz", image())
    write_nifti(root / "labels" / "case7.nii.gz", mask(), np.eye(4), is_label=True)
    # the one case-id rule: the nnU-Net channel tag is not part of the case id
    assert load_cohort(root).case("case7").mask == root / "labels" / "case7.nii.gz"


def test_empty_folder(tmp_path):
    (tmp_path / "f").mkdir()
    with pytest.raises(InputError, match="no volumes found"):
        load_cohort(tmp_path / "f")


def test_not_a_folder(tmp_path):
    with pytest.raises(InputError, match="cohort folder not found"):
        load_cohort(tmp_path / "missing")


def test_same_id_in_two_formats(tmp_path):
    root = make_folder(tmp_path / "f")
    write_volume(root / "knee_a.nrrd", image())
    with pytest.raises(InputError, match="duplicate case id 'knee_a'"):
        load_cohort(root)


def test_labels_table_without_kl_column(tmp_path):
    root = make_folder(tmp_path / "f")
    write_table(tmp_path / "t.csv", [{"case": "knee_a", "grade": 1}], ["case", "grade"])
    with pytest.raises(InputError, match=r"t\.csv: missing KL grade column"):
        load_cohort(root, labels=tmp_path / "t.csv")


def test_labels_table_row_without_image(tmp_path):
    root = make_folder(tmp_path / "f")
    write_table(tmp_path / "t.csv", [{"case": "knee_zz", "KL": 1}], ["case", "KL"])
    with pytest.raises(InputError, match="have no image in the folder: knee_zz"):
        load_cohort(root, labels=tmp_path / "t.csv")


def test_labels_table_with_duplicate_ids(tmp_path):
    root = make_folder(tmp_path / "f")
    write_table(tmp_path / "t.csv", [{"case": "knee_a", "KL": 1}, {"case": "knee_a", "KL": 2}], ["case", "KL"])
    with pytest.raises(InputError, match="'knee_a' appears twice"):
        load_cohort(root, labels=tmp_path / "t.csv")


def test_labels_table_with_bad_split(tmp_path):
    root = make_folder(tmp_path / "f")
    write_table(tmp_path / "t.csv", [{"case": "knee_a", "KL": 1, "split": "val"}], ["case", "KL", "split"])
    with pytest.raises(InputError, match="split 'val' is not train or test"):
        load_cohort(root, labels=tmp_path / "t.csv")
