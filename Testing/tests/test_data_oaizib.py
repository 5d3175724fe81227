"""OAI-ZIB-CM reader on a tiny cohort written here in the exact layout (independent of the phantom)."""

from __future__ import annotations

import numpy as np
import pytest

from kneeoa.data.cohort import CohortWarning, format_summary, load_cohort
from kneeoa.data.tables import read_table, write_table
from kneeoa.data.volume import write_nifti
from kneeoa.errors import InputError

COLUMNS = ["SubjectID", "CMT-ID", "Path", "MRBarCode", "KneeSide", "KLGrade", "Gender", "Age", "BMI", "TrueKL"]
SHAPE = (6, 7, 8)


def write_tiny_oaizib(root, train_kl=(0, 2, None, 4), test_kl=(1, 3), suffix=".xlsx", masks=True, sides=True):
    """Cases 1..n train, n+1.. test; KL None = ungraded (blank cell)."""
    rng = np.random.default_rng(0)
    cmt = 0
    side_rows = []
    for split, grades, img_dir, lbl_dir in (("train", train_kl, "imagesTr", "labelsTr"),
                                            ("test", test_kl, "imagesTs", "labelsTs")):
        rows = []
        for kl in grades:
            cmt += 1
            write_nifti(root / img_dir / f"oaizib_{cmt:03d}_0000.nii.gz", rng.normal(size=SHAPE), np.eye(4))
            if masks:
                write_nifti(root / lbl_dir / f"oaizib_{cmt:03d}.nii.gz", rng.integers(0, 6, SHAPE), np.eye(4),
                            is_label=True)
            rows.append({"SubjectID": 9000000 + cmt, "CMT-ID": cmt, "Path": f"p/{cmt}", "MRBarCode": f"B{cmt}",
                         "KneeSide": "right", "KLGrade": kl, "Gender": "F", "Age": 60 + cmt, "BMI": 25.5,
                         "TrueKL": kl if kl is not None else 2})
            side_rows.append(f"oaizib_{cmt:03d}.nii.gz,{'right' if cmt % 2 else 'left'}")
        write_table(root / f"subInfo_{split}{suffix}", rows, COLUMNS)
    if sides:
        (root / "kneeSideInfo.csv").write_text("\n".join(side_rows) + "\n")
    return root


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_reads_official_split_grades_masks_and_extras(tmp_path, suffix):
    root = write_tiny_oaizib(tmp_path / "oai", suffix=suffix)
    with pytest.warns(CohortWarning, match="oaizib_003"):
        cohort = load_cohort(root)
    assert cohort.kind == "oaizib"
    assert [c.case_id for c in cohort.split("train")] == ["oaizib_001", "oaizib_002", "oaizib_004"]
    assert [c.kl for c in cohort.split("test")] == [1, 3]
    assert [c.oa for c in cohort.split("train")] == [0, 1, 1]
    first = cohort.case("oaizib_001")
    assert first.cmt_id == 1 and first.split == "train"
    assert first.image.name == "oaizib_001_0000.nii.gz" and first.mask.name == "oaizib_001.nii.gz"
    assert str(first.extra["Age"]) == "61" and str(first.extra["TrueKL"]) == "0"
    assert first.extra["knee_side"] == "right" and cohort.case("oaizib_002").extra["knee_side"] == "left"
    assert cohort.case("oaizib_006").mask.parent.name == "labelsTs"


def test_ungraded_cases_are_listed_reported_and_excluded(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai")
    with pytest.warns(CohortWarning, match="1 case.*no KL grade.*oaizib_003"):
        cohort = load_cohort(root)
    assert cohort.ungraded == ["oaizib_003"]
    assert "oaizib_003" not in [c.case_id for c in cohort.split("train")]
    assert "oaizib_003" in [c.case_id for c in cohort.split("train", graded_only=False)]
    summary = cohort.summary()
    assert summary["ungraded"] == ["oaizib_003"]
    assert summary["splits"]["train"]["n_cases"] == 4 and summary["splits"]["train"]["n_graded"] == 3
    assert summary["splits"]["train"]["kl_counts"] == {0: 1, 1: 0, 2: 1, 3: 0, 4: 1}
    assert summary["splits"]["test"]["oa_counts"] == {0: 1, 1: 1}
    assert summary["image_shape"] == list(SHAPE)
    assert "oaizib_003" in format_summary(summary)


def test_missing_masks_and_side_file_are_fine(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai", train_kl=(0, 1), test_kl=(2,), masks=False, sides=False)
    cohort = load_cohort(root)
    assert all(c.mask is None for c in cohort.cases) and cohort.summary()["n_masks"] == 0


def rewrite_train_table(root, edit):
    """Read subInfo_train.xlsx, let `edit` change the rows/columns, write it back."""
    rows = read_table(root / "subInfo_train.xlsx")
    rows, columns = edit(rows, list(COLUMNS))
    write_table(root / "subInfo_train.xlsx", rows, columns)


def test_missing_columns_are_named(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai")
    rewrite_train_table(root, lambda rows, cols: (rows, [c for c in cols if c != "KLGrade"]))
    with pytest.raises(InputError, match=r"subInfo_train\.xlsx: missing column\(s\) KLGrade"):
        load_cohort(root)


def test_duplicate_ids_in_a_table(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai")
    rewrite_train_table(root, lambda rows, cols: (rows + [dict(rows[0])], cols))
    with pytest.raises(InputError, match="CMT-ID 1 appears twice"):
        load_cohort(root)


def test_duplicate_id_across_train_and_test(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai")
    rows = read_table(root / "subInfo_test.xlsx")
    rows[0]["CMT-ID"] = 1
    write_table(root / "subInfo_test.xlsx", rows, COLUMNS)
    with pytest.raises(InputError, match=r"subInfo_test\.xlsx: row 2: CMT-ID 1 appears twice"):
        load_cohort(root)


@pytest.mark.parametrize("bad", ["two", 7, 2.5])
def test_non_numeric_or_out_of_range_kl(tmp_path, bad):
    root = write_tiny_oaizib(tmp_path / "oai")

    def edit(rows, cols):
        rows[1]["KLGrade"] = bad
        return rows, cols

    rewrite_train_table(root, edit)
    with pytest.raises(InputError, match=r"row 3 \(CMT-ID 2\): KL grade"):
        load_cohort(root)


def test_table_row_without_image(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai")
    (root / "imagesTr" / "oaizib_002_0000.nii.gz").unlink()
    with pytest.raises(InputError, match=r"subInfo_train\.xlsx: 1 table row\(s\) have no image.*oaizib_002"):
        load_cohort(root)


@pytest.mark.filterwarnings("ignore:.*no KL grade:kneeoa.data.cohort.CohortWarning")
def test_image_without_table_row_is_warned_and_ungraded(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai")
    write_nifti(root / "imagesTr" / "oaizib_099_0000.nii.gz", np.random.default_rng(1).normal(size=SHAPE),
                np.eye(4))
    with pytest.warns(CohortWarning, match="oaizib_099_0000.nii.gz: image has no row"):
        cohort = load_cohort(root)
    assert cohort.case("oaizib_099").kl is None and "oaizib_099" in cohort.ungraded


def test_images_folder_without_table(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai")
    (root / "subInfo_test.xlsx").unlink()
    with pytest.raises(InputError, match=r"2 images in imagesTs/ but no subInfo_test\.xlsx"):
        load_cohort(root)


def test_extra_unnamed_column_in_csv_table(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai", suffix=".csv")
    path = root / "subInfo_test.csv"
    lines = path.read_text().splitlines()
    lines[1] += ",surprise"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"subInfo_test\.csv: row 2 has 11 values but the header names 10"):
        load_cohort(root)


def test_bad_knee_side_row(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai")
    with open(root / "kneeSideInfo.csv", "a") as fh:
        fh.write("oaizib_007.nii.gz,middle\n")
    with pytest.raises(InputError, match=r"kneeSideInfo\.csv: row 7"):
        load_cohort(root)


def test_corrupt_xlsx_table(tmp_path):
    root = write_tiny_oaizib(tmp_path / "oai")
    (root / "subInfo_train.xlsx").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match=r"subInfo_train\.xlsx: cannot read Excel workbook"):
        load_cohort(root)
