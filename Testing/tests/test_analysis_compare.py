"""The 18-test protocol and `kneeoa stats` on small generated prediction CSVs."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from kneeoa.analysis.compare import STATS_COLUMNS, compare_dual_vs_single
from kneeoa.analysis.synthetic_preds import write_synthetic_predictions
from kneeoa.cli import main
from kneeoa.errors import InputError

REPO = Path(__file__).resolve().parents[2]
N_SUBJECTS = 30


@pytest.fixture
def preds_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "preds"
    write_synthetic_predictions(folder, n_subjects=N_SUBJECTS, seed=1)
    return folder


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_stats_cli_writes_the_18_tests_in_protocol_order(preds_dir, tmp_path, capsys):
    out = tmp_path / "stats.csv"
    assert main(["stats", str(preds_dir), "--out", str(out), "--resamples", "200",
                 "--plot", str(tmp_path / "forest.png"), "--bars", str(tmp_path / "bars.png")]) == 0
    rows = _read(out)
    with open(out, newline="") as fh:
        assert next(csv.reader(fh)) == STATS_COLUMNS
    assert [(r["backbone"], r["task"], r["metric"]) for r in rows[:6]] == [
        ("resnet3d", "OA", "AUC"), ("resnet3d", "OA", "Acc"), ("resnet3d", "OA", "F1"),
        ("resnet3d", "KL", "M-AUC"), ("resnet3d", "KL", "Acc"), ("resnet3d", "KL", "M-F1")]
    assert [r["backbone"] for r in rows[::6]] == ["resnet3d", "m3t", "mamba"]
    oa_acc = rows[1]
    assert oa_acc["test"].startswith("mcnemar_") and json.loads(oa_acc["mcnemar_table"])
    assert all(r["test"] == "paired_bootstrap" and r["mcnemar_table"] == "" for r in rows if r["metric"] != "Acc"
               or r["task"] == "KL")
    assert {r["n_subjects"] for r in rows} == {str(N_SUBJECTS)}
    for r in rows:
        assert float(r["ci_lo"]) <= float(r["ci_hi"])
        assert float(r["p_value"]) <= float(r["q_value_BH"]) <= 1.0
        assert r["sig_fdr_0.05"] == str(float(r["q_value_BH"]) < 0.05)
    for png in ("forest.png", "bars.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "18 tests" in capsys.readouterr().out


def test_protocol_equals_the_reference_loop(preds_dir):
    spec = importlib.util.spec_from_file_location("stats_reference", REPO / "benchmarks/baselines/stats_reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    ours = compare_dual_vs_single(preds_dir, n_resamples=25).rows
    theirs = reference.run_reference(preds_dir, n_resamples=25)
    for a, b in zip(ours, theirs, strict=True):
        assert {k: a[k] for k in STATS_COLUMNS} == {k: b[k] for k in STATS_COLUMNS}
        np.testing.assert_allclose(a["deltas"], b["deltas"], rtol=0, atol=1e-12)


def test_missing_backbone_is_skipped_and_other_rows_are_unchanged(preds_dir):
    full = compare_dual_vs_single(preds_dir, n_resamples=50).rows
    for variant in ("single_oa", "single_kl", "dual"):
        (preds_dir / f"resnet3d_{variant}_preds.csv").unlink()
    partial = compare_dual_vs_single(preds_dir, n_resamples=50)
    assert partial.skipped == ["resnet3d OA: no dual or single_oa predictions",
                               "resnet3d KL: no dual or single_kl predictions"]
    assert len(partial.rows) == 12
    for a, b in zip(partial.rows, full[6:]):
        assert (a["ci_lo"], a["ci_hi"], a["p_value"]) == (b["ci_lo"], b["ci_hi"], b["p_value"])


def test_nnmamba_file_names_are_accepted(preds_dir):
    for variant in ("single_oa", "single_kl", "dual"):
        (preds_dir / f"mamba_{variant}_preds.csv").rename(preds_dir / f"nnmamba_{variant}_preds.csv")
    rows = compare_dual_vs_single(preds_dir, n_resamples=20).rows
    assert [r["backbone"] for r in rows[::6]] == ["resnet3d", "m3t", "nnmamba"]


def _rewrite(path: Path, edit) -> None:
    rows = _read(path)
    edit(rows)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_subjects_that_do_not_pair_up_are_an_input_error(preds_dir):
    path = preds_dir / "m3t_dual_preds.csv"
    _rewrite(path, lambda rows: rows[0].update(CMT_ID="999"))
    with pytest.raises(InputError, match="do not pair up") as err:
        compare_dual_vs_single(preds_dir, n_resamples=10)
    assert "m3t_dual_preds.csv" in str(err.value) and "999" in str(err.value)


def test_labels_that_differ_between_files_are_an_input_error(preds_dir, tmp_path, capsys):
    path = preds_dir / "resnet3d_single_kl_preds.csv"
    _rewrite(path, lambda rows: rows[3].update(label_kl=str((int(rows[3]["label_kl"]) + 1) % 5)))
    assert main(["stats", str(preds_dir), "--out", str(tmp_path / "s.csv"), "--resamples", "10"]) == 1
    err = capsys.readouterr().err
    assert "label_kl differs" in err and "resnet3d_single_kl_preds.csv" in err
    assert not (tmp_path / "s.csv").exists()


def test_a_missing_column_names_the_file(preds_dir):
    path = preds_dir / "m3t_single_kl_preds.csv"
    _rewrite(path, lambda rows: [r.pop("prob_kl_3") for r in rows])
    with pytest.raises(InputError, match="prob_kl_3") as err:
        compare_dual_vs_single(preds_dir, n_resamples=10)
    assert err.value.path == path


def test_an_empty_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no <backbone>_<variant>_preds.csv"):
        compare_dual_vs_single(tmp_path, n_resamples=10)


@pytest.mark.parametrize("keep, says", [
    (["resnet3d_dual"], "resnet3d has dual but no single_oa or single_kl predictions"),
    (["m3t_single_oa", "m3t_single_kl"], "m3t has single_kl, single_oa but no dual predictions"),
])
def test_stats_on_a_folder_without_any_pair_is_an_error_naming_what_is_missing(preds_dir, tmp_path, capsys, keep,
                                                                                says):
    """One variant only: no test can run, so `kneeoa stats` must not exit 0 with '0 tests' and an empty CSV."""
    for path in preds_dir.glob("*_preds.csv"):
        if path.name.removesuffix("_preds.csv") not in keep:
            path.unlink()
    out = tmp_path / "stats.csv"
    assert main(["stats", str(preds_dir), "--out", str(out), "--resamples", "50"]) == 1
    err = capsys.readouterr().err
    assert "kneeoa stats: error:" in err and str(preds_dir) in err and says in err
    assert not out.exists()


def test_synthetic_prediction_csvs_are_written_like_every_other_table(preds_dir):
    """The shared table writer (atomic, OWASP formula quoting, "\\n" rows): read back and written again by
    `write_table`, each file is byte for byte the same, and numbers are never quoted."""
    from kneeoa.data.tables import read_table, write_table

    for path in sorted(preds_dir.glob("*_preds.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            columns = next(csv.reader(fh))
        again = write_table(path.with_suffix(".again.csv"), read_table(path), columns)
        assert again.read_bytes() == path.read_bytes()
        assert b"\r" not in path.read_bytes() and b"'" not in path.read_bytes()
