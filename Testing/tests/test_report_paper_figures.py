"""The paper's evaluation figures and tables: per-model ROC/confusion/report, per-task forest, no-FDR table and
protocol, t-SNE manifolds; on generated prediction CSVs and embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kneeoa.analysis.compare import compare_dual_vs_single
from kneeoa.analysis.synthetic_preds import write_synthetic_predictions
from kneeoa.cli import main
from kneeoa.data.tables import read_table
from kneeoa.report import paper_figures as pf

N = 30


@pytest.fixture
def preds_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "predictions"
    write_synthetic_predictions(folder, n_subjects=N, seed=1, backbones=("resnet3d", "m3t", "nnmamba"))
    return folder


def test_stats_cli_writes_the_table_without_fdr_and_the_protocol_next_to_it(preds_dir, tmp_path):
    out = tmp_path / "stats.csv"
    assert main(["stats", str(preds_dir), "--out", str(out), "--resamples", "50", "--seed", "7"]) == 0
    with_fdr, no_fdr = read_table(out), read_table(tmp_path / "stats_no_fdr.csv")
    assert "q_value_BH" not in no_fdr[0] and "sig_fdr_0.05" not in no_fdr[0]
    assert [{k: r[k] for k in no_fdr[0]} for r in with_fdr] == no_fdr
    protocol = json.loads((tmp_path / "stats_protocol.json").read_text(encoding="utf-8"))
    assert (protocol["bootstrap"]["B"], protocol["bootstrap"]["seed"], protocol["n_subjects"]) == (50, 7, N)
    assert "18 Dual-vs-single tests" in protocol["fdr"]
    # the extra files obey the same no-clobber rule as stats.csv
    assert main(["stats", str(preds_dir), "--out", str(tmp_path / "other.csv"), "--resamples", "5"]) == 0
    (tmp_path / "other.csv").unlink()
    assert main(["stats", str(preds_dir), "--out", str(tmp_path / "other.csv"), "--resamples", "5"]) == 1


def test_classification_report_rows_are_sklearns_and_cover_every_subject(preds_dir):
    from sklearn.metrics import precision_score, recall_score

    preds = pf.read_preds(preds_dir / "resnet3d_dual_preds.csv")
    rows = pf.classification_report_rows(preds, "resnet3d", "dual")
    kl = {r["class"]: r for r in rows if r["task"] == "KL"}
    assert sum(kl[f"KL{g}"]["support"] for g in range(5)) == N
    assert kl["macro avg"]["precision"] == pytest.approx(
        precision_score(preds["label_kl"], preds["pred_kl"], average="macro", labels=range(5), zero_division=0),
        abs=1e-4)
    oa = {r["class"]: r for r in rows if r["task"] == "OA"}
    assert oa["OA"]["recall"] == pytest.approx(recall_score(preds["label_oa"], preds["pred_oa"]), abs=1e-4)
    single_oa = pf.read_preds(preds_dir / "resnet3d_single_oa_preds.csv")
    assert {r["task"] for r in pf.classification_report_rows(single_oa, "resnet3d", "single_oa")} == {"OA"}


def test_roc_confusion_figure_has_kl_panels_only_with_kl_outputs(preds_dir):
    dual = pf.roc_confusion_figure(pf.read_preds(preds_dir / "m3t_dual_preds.csv"), "M3T dual")
    single = pf.roc_confusion_figure(pf.read_preds(preds_dir / "m3t_single_oa_preds.csv"), "M3T single_oa")
    assert len(dual.axes) == 4 and len(single.axes) == 2
    kl_roc = dual.axes[1]
    assert sum("AUC=" in t.get_text() for t in kl_roc.get_legend().get_texts()) == 5  # one curve per grade
    cells = [int(t.get_text()) for t in dual.axes[3].texts]  # the KL confusion matrix counts
    assert len(cells) == 25 and sum(cells) == N


def test_forest_per_task_shows_p_and_q_for_each_row(preds_dir):
    rows = compare_dual_vs_single(preds_dir, n_resamples=50).rows
    fig = pf.forest_task_figure(rows, "KL")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[-1].startswith("p") and "q (BH)" in texts[-1]
    assert len(texts) == 1 + sum(r["task"] == "KL" for r in rows) == 10
    first = next(r for r in rows if r["task"] == "KL")
    assert texts[0].split()[0] == pf._pq(first["p_value"])


def test_tsne_is_seeded_and_keeps_separated_groups_apart():
    rng = np.random.default_rng(0)
    e = np.r_[rng.normal(0, 1, (20, 16)), rng.normal(6, 1, (20, 16))]
    a, b = pf.tsne_2d(e), pf.tsne_2d(e)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (40, 2)
    # every point's nearest neighbour in the 2-D map is in its own group
    d = np.linalg.norm(a[:, None] - a[None], axis=-1) + np.eye(40) * 1e9
    group = np.r_[np.zeros(20), np.ones(20)]
    assert (group[d.argmin(1)] == group).all()


def test_paper_sections_write_the_figures_of_a_study_folder(preds_dir, tmp_path):
    from kneeoa.analysis.synthetic_preds import kl_labels

    rng = np.random.default_rng(0)
    for name in ("resnet3d_dual", "m3t_single_kl"):
        kl = kl_labels(N)
        np.savez(preds_dir / f"{name}_embeddings.npz", train_embedding=rng.normal(size=(N, 8)) + kl[:, None],
                 train_kl=kl, test_embedding=rng.normal(size=(N, 8)) + kl[:, None], test_kl=kl)
    stats = compare_dual_vs_single(preds_dir, n_resamples=20)
    sections = pf.paper_sections(tmp_path, {"metrics": [], "stats": stats})
    assert [s.title for s in sections] == ["Per-model evaluation (the paper's figures)", "Dual vs single per task",
                                           "Latent manifolds"]
    figures = tmp_path / "figures"
    for png in ("resnet3d_dual_roc_confusion.png", "forest_oa.png", "forest_kl.png", "tsne_grid_kl.png",
                "tsne_grid_oa.png", "pca_grid_oa.png"):
        assert (figures / png).read_bytes()[:4] == b"\x89PNG"
    assert len(list(figures.glob("*_roc_confusion.png"))) == 9
    assert read_table(tmp_path / "tables" / "classification_report.csv")


def test_undefined_p_values_show_as_a_dash():
    assert pf._pq(float("nan")) == pf._pq("") == pf._pq(None) == "  -  "
    assert (pf._pq(0.0001), pf._pq(0.0312)) == ("<0.001", "0.031")
