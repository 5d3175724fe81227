"""Bad inputs through every CLI command: one clear message (file + problem), no traceback, exit 1 —
or, for `kneeoa score`, an error row for that case while the job goes on.

The corpus is generated here (reliability_helpers.bad_image_makers); reader-level checks of single
formats live in test_data_bad_input.py and are not repeated.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from engine_helpers import run_cli, run_main
from reliability_helpers import (
    SHAPE,
    assert_one_clear_error,
    bad_image_makers,
    good_array,
    tiny_checkpoint,
    write_bad_images,
    write_odd_but_valid_images,
)

from kneeoa.data.volume import Volume, volume_suffix, write_nifti

BAD_IMAGES = list(bad_image_makers())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SimpleNamespace:
    """The bad-image corpus, two odd-but-valid images, one good image and a tiny checkpoint."""
    root = tmp_path_factory.mktemp("corpus")
    image = write_nifti(root / "good" / "knee.nii.gz", good_array(), np.eye(4))
    return SimpleNamespace(root=root, bad=write_bad_images(root / "bad"), odd=write_odd_but_valid_images(root / "odd"),
                           image=image, checkpoint=tiny_checkpoint(root / "model.safetensors"))


def _grade(corpus, image, out: Path, *extra: str) -> list[str]:
    return ["grade", str(image), "--checkpoint", str(corpus.checkpoint), "--result-json", str(out / "r.json"),
            "--device", "cpu", *extra]


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_grade_answers_a_bad_image_with_one_message(corpus, name, tmp_path, monkeypatch, capsys):
    path, match = corpus.bad[name]
    rc = run_main(monkeypatch, *_grade(corpus, path, tmp_path))
    assert_one_clear_error(rc, capsys.readouterr().err, "grade", path, match)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_saliency_answers_a_bad_image_with_one_message(corpus, name, tmp_path, monkeypatch, capsys):
    path, match = corpus.bad[name]
    rc = run_main(monkeypatch, "saliency", "--checkpoint", str(corpus.checkpoint), "--image", str(path),
                  "--out", str(tmp_path / "maps"), "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "saliency", path, match)
    assert not list(tmp_path.glob("maps/*"))


@pytest.mark.parametrize("kind", ["int64", "uint8"])
def test_unusual_but_valid_voxel_types_are_graded(corpus, kind, tmp_path, monkeypatch):
    assert run_main(monkeypatch, *_grade(corpus, corpus.odd[kind], tmp_path)) == 0
    assert (tmp_path / "r.json").is_file()


def _mixed_dicom(folder: Path) -> Path:
    from test_data_helpers import write_dicom_series

    volume = Volume(good_array((8, 8, 6)), np.eye(4))
    write_dicom_series(folder, volume, "1.2.3.4.5.1")
    write_dicom_series(folder, Volume(volume.array * 2, volume.affine), "1.2.3.4.5.2")
    return folder


def test_score_records_each_bad_volume_and_goes_on(corpus, tmp_path, monkeypatch, capsys):
    from kneeoa.engine.score_io import read_scores

    batch = tmp_path / "batch"
    bad = {name: (path, match) for name, (path, match) in corpus.bad.items() if volume_suffix(path)}
    batch.mkdir()
    for path in [*(p for p, _ in bad.values()), corpus.image, *corpus.odd.values()]:
        shutil.copy(path, batch / path.name)
    _mixed_dicom(batch / "mixed_series")
    rc = run_main(monkeypatch, "score", str(batch), "--checkpoint", str(corpus.checkpoint), "--out",
                  str(tmp_path / "scores.csv"), "--workers", "1", "--device", "cpu")
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    rows = {r["case_id"]: r for r in read_scores(tmp_path / "scores.csv")}
    assert set(rows) == {p.name.split(".")[0] for p, _ in bad.values()} | {"knee", "int64", "uint8", "mixed_series"}
    for path, match in bad.values():
        row = rows[path.name.split(".")[0]]
        assert row["status"] == "error" and str(batch / path.name) in row["error"] and row["oa_prob"] == ""
        assert re.search(match, row["error"]), row["error"]
    assert rows["mixed_series"]["status"] == "error" and "2 DICOM series" in rows["mixed_series"]["error"]
    assert [rows[k]["status"] for k in ("knee", "int64", "uint8")] == ["ok"] * 3
    assert f"3 scored, {len(bad) + 1} failed" in err


def test_a_mixed_dicom_folder_is_one_message_naming_the_folder(corpus, tmp_path, monkeypatch, capsys):
    folder = _mixed_dicom(tmp_path / "dicom")
    rc = run_main(monkeypatch, *_grade(corpus, folder, tmp_path))
    assert_one_clear_error(rc, capsys.readouterr().err, "grade", folder, "2 DICOM series.*own folder")


def _bad_masks(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    unknown = np.zeros(SHAPE)
    unknown[2:6, 2:6, 2:6] = 9
    return {
        "other grid": (write_nifti(folder / "small.nii.gz", np.zeros((8, 8, 8)), np.eye(4), is_label=True),
                       r"mask grid \(8, 8, 8\) does not match"),
        "shifted affine": (write_nifti(folder / "shifted.nii.gz", np.zeros(SHAPE), np.diag([1.5, 1, 1, 1]),
                                       is_label=True), "affine differs"),
        "unknown labels": (write_nifti(folder / "labels9.nii.gz", unknown, np.eye(4), is_label=True),
                           r"unexpected label values \[9\]"),
        "image as mask": (write_nifti(folder / "image.nii.gz", good_array(), np.eye(4)), "non-integer values"),
    }


@pytest.mark.parametrize("command", ["grade", "saliency"])
@pytest.mark.parametrize("kind", ["other grid", "shifted affine", "unknown labels", "image as mask"])
def test_a_bad_mask_is_one_message_naming_the_mask(corpus, command, kind, tmp_path, monkeypatch, capsys):
    mask, match = _bad_masks(tmp_path / "masks")[kind]
    if command == "grade":
        args = _grade(corpus, corpus.image, tmp_path, "--mask", str(mask))
    else:
        args = ["saliency", "--checkpoint", str(corpus.checkpoint), "--image", str(corpus.image), "--mask", str(mask),
                "--out", str(tmp_path / "maps"), "--device", "cpu"]
    assert_one_clear_error(run_main(monkeypatch, *args), capsys.readouterr().err, command, mask, match)


# --- subject tables: through `train` and `predict` -------------------------------------------------------

@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A tiny phantom in the OAI-ZIB-CM layout (6 train + 3 test knees, 16^3); copied before any change."""
    from kneeoa.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("tables") / "cohort"
    generate_cohort(root, 6, 3, shape=SHAPE, seed=0, workers=1)
    return root


TABLE_CASES = {
    "missing id": (lambda rows, cols: ([{**rows[0], "CMT-ID": None}, *rows[1:]], cols), "row 2: CMT-ID None"),
    "duplicate id": (lambda rows, cols: ([*rows, dict(rows[0])], cols), "CMT-ID 1 appears twice"),
    "non-numeric KL": (lambda rows, cols: ([{**rows[0], "KLGrade": "moderate"}, *rows[1:]], cols),
                       "KL grade 'moderate' is not a number"),
    "KL out of range": (lambda rows, cols: ([{**rows[0], "KLGrade": 7}, *rows[1:]], cols), "is not one of 0..4"),
    "no KL column": (lambda rows, cols: (rows, [c for c in cols if c != "KLGrade"]), "missing column.*KLGrade"),
}


def _broken_table_cohort(cohort: Path, dest: Path, case: str) -> Path:
    from kneeoa.data.tables import read_table, write_table

    shutil.copytree(cohort, dest)
    table = dest / "subInfo_train.xlsx"
    if case == "corrupt workbook":
        table.write_bytes(b"PK\x03\x04" + bytes(200))
        return table
    rows = read_table(table)
    rows, cols = TABLE_CASES[case][0](rows, list(rows[0]))
    table.unlink()
    return write_table(dest / "subInfo_train.csv", rows, cols)


@pytest.mark.parametrize("command", ["train", "predict"])
@pytest.mark.parametrize("case", [*TABLE_CASES, "corrupt workbook"])
def test_a_broken_subject_table_is_one_message_naming_it(cohort, corpus, command, case, tmp_path, monkeypatch,
                                                         capsys):
    data = tmp_path / "cohort"
    table = _broken_table_cohort(cohort, data, case)
    match = TABLE_CASES[case][1] if case in TABLE_CASES else "cannot read Excel workbook"
    if command == "train":
        args = ["train", "--data", str(data), "--backbone", "resnet3d", "--variant", "dual", "--out",
                str(tmp_path / "run"), "--epochs", "1", "--input-size", "16", "--width", "4", "--device", "cpu"]
    else:
        args = ["predict", "--checkpoint", str(corpus.checkpoint), "--data", str(data), "--out", str(tmp_path / "p"),
                "--device", "cpu"]
    assert_one_clear_error(run_main(monkeypatch, *args), capsys.readouterr().err, command, table, match)
    assert not (tmp_path / "p").exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_corrupt_image_in_a_training_cohort_is_one_message_with_loader_workers(cohort, tmp_path, workers,
                                                                                 monkeypatch, capsys):
    data = tmp_path / "cohort"
    shutil.copytree(cohort, data)
    bad = sorted((data / "imagesTr").iterdir())[2]
    bad.write_bytes(bad.read_bytes()[:300])
    rc = run_main(monkeypatch, "train", "--data", str(data), "--backbone", "resnet3d", "--variant", "dual", "--out",
                  str(tmp_path / "run"), "--epochs", "1", "--input-size", "16", "--width", "4", "--device", "cpu",
                  "--workers", workers, "--batch-size", "2")
    # a DataLoader worker used to re-raise the error with its whole traceback as the message
    assert_one_clear_error(rc, capsys.readouterr().err, "train", bad, "truncated or corrupt")


def test_predict_with_loader_workers_names_the_corrupt_image(cohort, corpus, tmp_path, monkeypatch, capsys):
    data = tmp_path / "cohort"
    shutil.copytree(cohort, data)
    bad = sorted((data / "imagesTs").iterdir())[0]
    bad.write_bytes(b"\x1f\x8b" + bytes(100))
    rc = run_main(monkeypatch, "predict", "--checkpoint", str(corpus.checkpoint), "--data", str(data), "--out",
                  str(tmp_path / "p"), "--workers", "1", "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "predict", bad)
    assert not list(tmp_path.glob("p/*"))


# --- analysis inputs ------------------------------------------------------------------------------------

def test_stats_names_a_prediction_csv_without_its_columns(tmp_path, monkeypatch, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "resnet3d_dual_preds.csv").write_text("CMT_ID,label_kl,prob_oa\n1,2,abc\n")
    (preds / "resnet3d_single_oa_preds.csv").write_text("CMT_ID,label_kl,label_oa,prob_oa\n1,2,1,0.3\n")
    rc = run_main(monkeypatch, "stats", str(preds), "--out", str(tmp_path / "s.csv"), "--resamples", "10")
    assert_one_clear_error(rc, capsys.readouterr().err, "stats", preds / "resnet3d_dual_preds.csv", "missing column")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("content, match", [
    (b"PK\x03\x04" + bytes(100), "cannot read embeddings"),  # a truncated zip: used to escape as BadZipFile
    (bytes(range(256)), "cannot read embeddings"),
])
def test_latent_names_a_broken_embeddings_file(tmp_path, content, match, monkeypatch, capsys):
    npz = tmp_path / "m_embeddings.npz"
    npz.write_bytes(content)
    rc = run_main(monkeypatch, "latent", str(npz), "--out", str(tmp_path / "out"))
    assert_one_clear_error(rc, capsys.readouterr().err, "latent", npz, match)


def test_merge_names_a_table_that_is_not_a_scores_table(tmp_path, monkeypatch, capsys):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    rc = run_main(monkeypatch, "merge", str(tmp_path / "m.csv"), str(tmp_path / "other.csv"))
    assert_one_clear_error(rc, capsys.readouterr().err, "merge", tmp_path / "other.csv", "not a KneeOA scores table")
    assert not (tmp_path / "m.csv").exists()


def test_phantom_refuses_an_output_path_that_is_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("keep me")
    rc = run_main(monkeypatch, "phantom", str(tmp_path / "afile"), "--train", "2", "--test", "1", "--shape", "16",
                  "16", "16")
    assert_one_clear_error(rc, capsys.readouterr().err, "phantom", tmp_path / "afile", "not a folder")
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.slow
def test_a_real_process_prints_one_line_and_no_traceback(corpus, tmp_path):
    """The same promise outside pytest: nothing else (warnings, library noise) reaches stderr."""
    path, match = corpus.bad["truncated gzip"]
    proc = run_cli(*_grade(corpus, path, tmp_path), env={"KNEEOA_PROGRESS": "none"})
    assert_one_clear_error(proc.returncode, proc.stderr, "grade", path, match)
    assert proc.stderr.count("\n") == 1
