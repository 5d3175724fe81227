"""Phantom cohort on disk: OAI-ZIB-CM layout and tables, read back by the real reader, byte determinism, CLI."""

import warnings

import numpy as np
import pytest

from kneeoa.cli import main
from kneeoa.data.cohort import load_cohort
from kneeoa.data.phantom.cohort import TABLE_COLUMNS, generate_cohort
from kneeoa.data.tables import read_table
from kneeoa.data.volume import read_volume
from kneeoa.errors import ConfigError

N_TRAIN, N_TEST, SHAPE = 10, 4, (24, 24, 24)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "cohort"
    summary = generate_cohort(out, N_TRAIN, N_TEST, shape=SHAPE, seed=7, workers=1)
    return out, summary


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_writes_exactly_the_oaizib_layout(cohort):
    out, _ = cohort
    expected = {f"imagesTr/oaizib_{n:03d}_0000.nii.gz" for n in range(1, 11)}
    expected |= {f"labelsTr/oaizib_{n:03d}.nii.gz" for n in range(1, 11)}
    expected |= {f"imagesTs/oaizib_{n:03d}_0000.nii.gz" for n in range(11, 15)}
    expected |= {f"labelsTs/oaizib_{n:03d}.nii.gz" for n in range(11, 15)}
    expected |= {"subInfo_train.xlsx", "subInfo_test.xlsx", "kneeSideInfo.csv"}
    assert set(_files(out)) == expected


def test_tables_have_the_oaizib_columns_plus_truth(cohort):
    out, _ = cohort
    train, test = read_table(out / "subInfo_train.xlsx"), read_table(out / "subInfo_test.xlsx")
    assert list(train[0]) == TABLE_COLUMNS
    assert [r["CMT-ID"] for r in train] == list(range(1, 11))
    assert [r["CMT-ID"] for r in test] == list(range(11, 15))  # test numbers continue after train
    for row in train + test:
        assert row["KneeSide"] in (1, 2) and row["TrueKL"] == int(row["TrueSeverity"])
        assert row["KLGrade"] is None or abs(row["KLGrade"] - row["TrueKL"]) <= 1


def test_knee_side_file_has_no_header_and_matches_the_tables(cohort):
    out, _ = cohort
    lines = (out / "kneeSideInfo.csv").read_text().splitlines()
    assert lines[0] == f"oaizib_001.nii.gz,{'right' if read_table(out / 'subInfo_train.xlsx')[0]['KneeSide'] == 1 else 'left'}"
    assert len(lines) == N_TRAIN + N_TEST and all(line.split(",")[1] in ("right", "left") for line in lines)


def test_the_oaizib_reader_reads_the_phantom(cohort):
    out, summary = cohort
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_cohort(out)
    assert loaded.kind == "oaizib"
    assert len(loaded.cases) == N_TRAIN + N_TEST
    assert sorted(loaded.ungraded) == sorted(summary["ungraded"])
    assert len(loaded.split("train", graded_only=False)) == N_TRAIN
    first = loaded.split("train", graded_only=False)[0]
    assert "TrueSeverity" in first.extra and "TrueKL" in first.extra
    image, mask = read_volume(first.image), read_volume(first.mask, is_label=True)
    assert image.array.shape == mask.array.shape == (SHAPE[1], SHAPE[2], SHAPE[0])
    assert np.allclose(image.affine, mask.affine)
    assert set(np.unique(mask.array)) == {0, 1, 2, 3, 4, 5}


def test_summary_counts_agree_with_the_tables(cohort):
    out, summary = cohort
    rows = read_table(out / "subInfo_train.xlsx")
    counts = np.bincount([r["KLGrade"] for r in rows if r["KLGrade"] is not None], minlength=5).tolist()
    assert summary["kl_counts"]["train"] == counts
    assert summary["n_train"] == N_TRAIN and summary["n_test"] == N_TEST
    assert -1.0 <= summary["kappa_unweighted"] <= 1.0


def test_same_arguments_give_byte_identical_files_whatever_the_worker_count(cohort, tmp_path):
    out, _ = cohort
    again = tmp_path / "again"
    generate_cohort(again, N_TRAIN, N_TEST, shape=SHAPE, seed=7, workers=2)
    assert _files(again) == _files(out)


def test_rerun_into_the_same_folder_is_allowed_but_a_folder_with_other_cases_is_refused(tmp_path):
    out = tmp_path / "c"
    generate_cohort(out, 2, 1, shape=(16, 16, 16), workers=1)
    generate_cohort(out, 2, 1, shape=(16, 16, 16), workers=1)
    with pytest.raises(ConfigError, match="oaizib_003"):
        generate_cohort(out, 1, 1, shape=(16, 16, 16), workers=1)


@pytest.mark.parametrize("kwargs", [dict(n_train=0, n_test=0), dict(n_train=2, n_test=1, shape=(4, 16, 16)),
                                    dict(n_train=2, n_test=1, workers=0)])
def test_bad_arguments_are_config_errors(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        generate_cohort(tmp_path / "bad", **kwargs)


def test_an_output_path_that_is_a_file_is_a_config_error(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("not a folder")
    with pytest.raises(ConfigError, match="not a folder"):
        generate_cohort(target, 1, 1, shape=(16, 16, 16), workers=1)


def test_cli_writes_cohort_preview_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["phantom", str(out), "--train", "8", "--test", "2", "--shape", "16", "16", "16", "--seed", "1",
               "--workers", "1", "--preview"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "recorded KL 0-4" in printed and "kappa" in printed
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "imagesTs" / "oaizib_010_0000.nii.gz").exists()


def test_cli_reports_bad_input_as_one_error_line(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "x"), "--train", "0", "--test", "0"]) == 1
    assert "kneeoa phantom: error:" in capsys.readouterr().err
