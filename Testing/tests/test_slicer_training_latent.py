"""Cohort latent space in Slicer: `kneeoa latent` tables -> MRML scatter (one series per KL grade), picking a
point -> its case in the viewers, PNG/CSV export, and where the tables come from (study, run, checkpoint)."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
from slicer_helpers import fresh_scene

from kneeoa.errors import ConfigError, InputError
from kneeoa.slicer import latent_cases, latent_plot

NAME = "resnet3d_dual"


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory, phantom_cohort):
    """latent_points.csv + latent_summary.csv written by the real `kneeoa latent` from numpy embeddings of the
    phantom cohort's cases (KL-driven first coordinate), one test case left ungraded."""
    from kneeoa.cli import main
    from kneeoa.data.cohort import load_cohort

    cohort = load_cohort(phantom_cohort)
    folder = tmp_path_factory.mktemp("latent")
    rng = np.random.default_rng(0)
    arrays = {"name": np.array(NAME)}
    for split in ("train", "test"):
        cases = cohort.split(split)
        kl = np.array([c.kl for c in cases])
        if split == "test":
            kl[-1] = -1
        emb = rng.normal(size=(len(cases), 8))
        emb[:, 0] += 2.0 * np.maximum(kl, 0)
        arrays.update({f"{split}_embedding": emb, f"{split}_kl": kl,
                       f"{split}_case_id": np.array([c.case_id for c in cases])})
    np.savez(folder / f"{NAME}_embeddings.npz", **arrays)
    assert main(["latent", str(folder / f"{NAME}_embeddings.npz"), "--out", str(folder)]) == 0
    return folder


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_points_are_read_typed_with_ungraded_kept(latent_dir):
    points = latent_plot.read_points(latent_dir / "latent_points.csv")
    assert len(points) == 18 and latent_plot.model_names(points) == [NAME]
    assert all(isinstance(p["pc1"], float) and isinstance(p["pc2"], float) for p in points)
    assert sum(p["kl"] is None for p in points) == 1
    assert len(latent_plot.select_points(points, NAME, "test")) == 6
    assert len(latent_plot.select_points(points, NAME, "all")) == 18


def test_scatter_has_one_series_per_kl_grade_with_the_right_point_counts(latent_dir):
    scene = fresh_scene()
    points = latent_plot.read_points(latent_dir / "latent_points.csv")
    plot = latent_plot.update_latent_plot(points, NAME, scene, split="all")
    expected = Counter(latent_plot.UNGRADED if p["kl"] is None else p["kl"] for p in points)
    assert {g: t.GetTable().GetNumberOfRows() for g, t in plot.tables.items()} == dict(expected)
    chart = plot.chart_node
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert len(series) == len(expected)
    for node in series:
        assert (node.GetXColumnName(), node.GetYColumnName(), node.GetLabelColumnName()) == ("pc1", "pc2", "case_id")
        assert node.GetPlotType() == node.PlotTypeScatter
    assert series[-1].GetName() == "KL ungraded"
    assert tuple(plot.series[0].GetColor()) == pytest.approx(latent_plot.grade_colour(0))


def test_switching_split_reuses_the_nodes_and_drops_absent_grades(latent_dir):
    scene = fresh_scene()
    points = latent_plot.read_points(latent_dir / "latent_points.csv")
    plot = latent_plot.update_latent_plot(points, NAME, scene, split="all")
    n_tables = scene.GetNumberOfNodesByClass("vtkMRMLTableNode")
    plot = latent_plot.update_latent_plot(points, NAME, scene, split="test", plot=plot)
    test_grades = {latent_plot.UNGRADED if p["kl"] is None else p["kl"] for p in points if p["split"] == "test"}
    assert set(plot.tables) == test_grades
    assert len(test_grades) < n_tables  # the phantom's test split lacks a grade the whole cohort has
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == len(test_grades)
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == len(test_grades)
    assert plot.chart_node.GetNumberOfPlotSeriesNodes() == len(test_grades)
    assert sum(len(latent_plot.table_points(t)) for t in plot.tables.values()) == 6


def test_picked_points_map_back_to_their_cases(latent_dir):
    import vtk

    scene = fresh_scene()
    points = latent_plot.read_points(latent_dir / "latent_points.csv")
    plot = latent_plot.update_latent_plot(points, NAME, scene, split="train")
    grade = max(plot.tables, key=lambda g: plot.tables[g].GetTable().GetNumberOfRows())
    series_ids, selections = vtk.vtkStringArray(), vtk.vtkCollection()
    series_ids.InsertNextValue(plot.series[grade].GetID())
    picked = vtk.vtkIdTypeArray()
    picked.InsertNextValue(1)
    selections.AddItem(picked)
    (case,) = latent_plot.cases_for_selection(scene, series_ids, selections)
    train_of_grade = [p for p in points if p["split"] == "train" and p["kl"] == grade]
    assert case["case_id"] == train_of_grade[1]["case_id"] and case["kl"] == grade
    assert case["pc1"] == pytest.approx(train_of_grade[1]["pc1"])
    assert latent_plot.case_for_point(plot.series[grade], 999) is None


def test_summary_rows_give_the_papers_numbers(latent_dir):
    summary = latent_plot.read_summary(latent_dir / "latent_summary.csv")[NAME]
    rows = dict(latent_plot.summary_rows(summary))
    assert rows["|rho(PC1, KL)| (test)"] == f"{float(summary['abs_rho_pc1_kl']):.3f}"
    assert rows["OA probe AUROC (test, PC1)"] == f"{float(summary['probe_auroc_test']):.3f}"
    assert rows["Explained variance PC1 / PC2"].startswith(f"{float(summary['evr_pc1']):.1%} / ")
    assert rows["KL centroid order along PC1"].startswith(summary["centroid_order"])
    assert rows["Cases train / test"] == "12 / 6"
    assert latent_plot.summary_rows(None) == []


def test_exports_write_the_shown_points_as_csv_and_png(latent_dir, tmp_path):
    scene = fresh_scene()
    points = latent_plot.read_points(latent_dir / "latent_points.csv")
    plot = latent_plot.update_latent_plot(points, NAME, scene, split="test")
    rows = _csv_rows(latent_plot.export_csv(plot, tmp_path / "shown.csv"))
    assert list(rows[0]) == ["name", "split", "case_id", "kl", "pc1", "pc2"]
    assert sorted(r["case_id"] for r in rows) == sorted(p["case_id"] for p in points if p["split"] == "test")
    png = latent_plot.export_png(plot, tmp_path / "shown.png", latent_plot.read_summary(latent_dir /
                                                                                         "latent_summary.csv")[NAME])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_latent_source_of_a_latent_folder_a_study_and_a_checkpoint(latent_dir, phantom_cohort, tmp_path):
    direct = latent_cases.latent_source(latent_dir, cohort=phantom_cohort)
    assert direct.ready and not direct.steps and direct.cohort_root == phantom_cohort

    study = tmp_path / "study"
    (study / "tables").mkdir(parents=True)
    (study / "saliency" / NAME).mkdir(parents=True)
    for name in ("latent_points.csv", "latent_summary.csv"):
        (study / "tables" / name).write_bytes((latent_dir / name).read_bytes())
    (study / "study.json").write_text(f'{{"data": "{phantom_cohort}"}}')
    source = latent_cases.latent_source(study)
    assert (source.ready, source.cohort_root, source.saliency_dir) == (True, phantom_cohort, study / "saliency")

    (tmp_path / "m.safetensors").write_bytes(b"x")
    computed = latent_cases.latent_source(tmp_path / "out", tmp_path / "m.safetensors", phantom_cohort)
    assert [step[5] for step in computed.steps] == ["predict", "latent"] and not computed.ready
    assert computed.points_csv == tmp_path / "out" / "latent_points.csv"
    with pytest.raises(ConfigError, match="cohort folder"):
        latent_cases.latent_source(tmp_path / "out", tmp_path / "m.safetensors")
    with pytest.raises(InputError, match="no latent tables"):
        latent_cases.latent_source(tmp_path)


def test_a_picked_case_is_loaded_with_cartilage_and_saliency_once(latent_dir, phantom_cohort, tmp_path):
    from kneeoa.data.volume import read_volume, write_nifti
    from kneeoa.slicer import display, nodes

    scene = fresh_scene()
    index = latent_cases.CaseIndex(phantom_cohort)
    image, mask = index.paths("oaizib_013")
    volume = read_volume(image)
    saliency_path = write_nifti(tmp_path / NAME / "oaizib_013_saliency.nii.gz",
                                np.linspace(0, 1, volume.array.size).reshape(volume.shape), volume.affine)
    assert latent_cases.saliency_file(tmp_path, NAME, "oaizib_013") == saliency_path
    assert latent_cases.saliency_file(tmp_path, NAME, "oaizib_014") is None

    loaded = latent_cases.load_case("oaizib_013", index, scene, saliency_path)
    array, _ = nodes.array_from_volume_node(loaded["volume"])
    np.testing.assert_allclose(array, volume.array, rtol=1e-6)
    assert np.allclose(nodes.ijk_to_ras(loaded["volume"]), volume.affine, atol=1e-4)
    assert loaded["cartilage"].GetSegmentation().GetNumberOfSegments() == 5
    assert loaded["saliency"].GetDisplayNode().GetApplyThreshold()
    assert loaded["saliency"].GetDisplayNode().GetColorNodeID() == display.SALIENCY_COLOR_NODE_ID
    again = latent_cases.load_case("oaizib_013", index, scene, saliency_path)
    assert all(again[k] is loaded[k] for k in loaded)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 2
    with pytest.raises(InputError, match="not in this cohort"):
        index.paths("nobody")
