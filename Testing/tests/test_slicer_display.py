"""Saliency layer, cartilage outlines, result table, KL chart and per-volume results on real MRML nodes."""

from __future__ import annotations

import numpy as np
import pytest
from slicer_helpers import fresh_scene, knee_labels, oblique_affine

from kneeoa.slicer import display, nodes, results

RESULT = {
    "kl_probs": [0.05, 0.10, 0.15, 0.50, 0.20], "oa_prob": 0.83, "pred_kl": 3, "pred_oa": 1,
    "consistent_kl": 3, "heads_agree": True, "saliency_path": "/tmp/s.nii.gz",
    "overlap": {"mass_roi": 0.4123, "roi_voxels": 400, "top5_roi": 0.42, "dice5": 0.093,
                "femoral": {"mass_roi": 0.2, "roi_voxels": 200}, "medial_tibial": {"mass_roi": 0.15},
                "lateral_tibial": {"mass_roi": 0.0625}},
    "card": {"spec": {"backbone": "resnet3d", "variant": "dual"}, "training_data": "synthetic phantom"},
}


@pytest.fixture
def scene():
    return fresh_scene()


def test_saliency_node_lies_on_the_mri_grid_with_colour_map_window_and_threshold(scene, tmp_path):
    from kneeoa.data.volume import write_nifti

    affine = oblique_affine()
    mri = nodes.volume_node_from_array(np.random.default_rng(0).random((8, 6, 5)).astype(np.float32), affine,
                                       "mri", scene)
    path = write_nifti(tmp_path / "s.nii.gz", np.linspace(0, 1, 240).reshape(8, 6, 5), affine)
    saliency = nodes.load_volume_node(path, "mri saliency", scene, reference_node=mri)
    shown = display.show_saliency(saliency, threshold=0.2)
    assert nodes.same_grid(saliency, mri)
    assert shown.GetColorNodeID() == "vtkMRMLColorTableNodeFileInferno.txt"
    assert shown.GetApplyThreshold() and shown.GetLowerThreshold() == pytest.approx(0.2)
    assert not shown.GetAutoWindowLevel()
    assert (shown.GetWindow(), shown.GetLevel()) == pytest.approx((1.0, 0.5))


def test_saliency_threshold_outside_unit_range_is_refused(scene):
    node = nodes.volume_node_from_array(np.zeros((3, 3, 3)), np.eye(4), "s", scene)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        display.show_saliency(node, threshold=1.5)


def test_cartilage_is_outlined_without_fill_and_bones_are_hidden(scene):
    segmentation = nodes.segmentation_from_labelmap(knee_labels(), oblique_affine(), "knee", scene)
    shown = display.show_cartilage_outlines(segmentation)
    assert shown.GetVisibility2DOutline() and not shown.GetVisibility2DFill()
    seg = segmentation.GetSegmentation()
    visible = {seg.GetNthSegment(i).GetName(): shown.GetSegmentVisibility(seg.GetNthSegmentID(i))
               for i in range(seg.GetNumberOfSegments())}
    assert visible == {"Femur": False, "Femoral cartilage": True, "Tibia": False,
                       "Medial tibial cartilage": True, "Lateral tibial cartilage": True}


def test_viewers_get_mri_background_saliency_foreground_and_only_this_cartilage(scene):
    views = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    mri = nodes.volume_node_from_array(np.ones((4, 4, 4)), np.eye(4), "mri", scene)
    saliency = nodes.volume_node_from_array(np.ones((4, 4, 4)), np.eye(4), "sal", scene)
    other = nodes.segmentation_from_labelmap(knee_labels(), np.eye(4), "other", scene)
    display.show_cartilage_outlines(other)
    mine = nodes.segmentation_from_labelmap(knee_labels(), np.eye(4), "mine", scene)
    display.show_in_viewers(mri, saliency, mine, opacity=0.4)
    for view in views:
        assert view.GetBackgroundVolumeID() == mri.GetID()
        assert view.GetForegroundVolumeID() == saliency.GetID()
        assert view.GetForegroundOpacity() == pytest.approx(0.4)
    assert mine.GetDisplayNode().GetVisibility() and not other.GetDisplayNode().GetVisibility()


def test_result_rows_list_probabilities_agreement_and_per_compartment_mass():
    rows = dict(results.result_rows(RESULT))
    assert rows["Predicted KL grade"] == "3"
    assert rows["OA probability"] == "0.830"
    assert rows["OA (KL >= 2)"] == "yes"
    assert [rows[f"P(KL = {g})"] for g in range(5)] == ["0.050", "0.100", "0.150", "0.500", "0.200"]
    assert rows["Heads agree"] == "yes"
    assert rows["Saliency mass on cartilage"] == "0.412"
    assert rows["Top 5% saliency voxels on cartilage"] == "0.420"
    assert rows["Dice of top 5% with cartilage"] == "0.093"
    assert [rows[f"Saliency mass on {c} cartilage"] for c in ("femoral", "medial tibial", "lateral tibial")] == \
        ["0.200", "0.150", "0.062"]


def test_overlap_in_an_unknown_layout_is_still_shown():
    rows = dict(results.result_rows({**RESULT, "overlap": {"mass": {"cartilage": 0.3}}}))
    assert rows["Saliency mass / cartilage"] == "0.300"


def test_result_rows_of_a_single_oa_model_say_n_a_for_kl():
    rows = dict(results.result_rows({"kl_probs": None, "oa_prob": 0.2, "pred_kl": None, "pred_oa": 0,
                                     "heads_agree": None, "overlap": None}))
    assert rows["Predicted KL grade"] == "n/a" and rows["Heads agree"] == "n/a" and rows["OA (KL >= 2)"] == "no"
    assert not any(name.startswith("P(KL") for name in rows)


def test_result_table_node_holds_the_rows(scene):
    table = results.update_result_table(scene.AddNewNodeByClass("vtkMRMLTableNode"), RESULT)
    cells = results.table_rows(table)
    assert table.GetColumnName(0) == "Quantity" and table.GetColumnName(1) == "Value"
    assert cells[0] == ["Predicted KL grade", "3"] and ["OA probability", "0.830"] in cells
    assert len(cells) == len(results.result_rows(RESULT))


def test_kl_chart_is_a_bar_series_over_a_probability_table(scene):
    table, chart = results.update_kl_chart(RESULT["kl_probs"], "case1", scene)
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetPlotType() == series.PlotTypeBar
    assert series.GetTableNodeID() == table.GetID()
    assert (series.GetXColumnName(), series.GetYColumnName()) == ("KL grade", "Probability")
    column = table.GetTable().GetColumnByName("Probability")
    np.testing.assert_allclose([column.GetValue(i) for i in range(5)], RESULT["kl_probs"])
    # Updating reuses the nodes
    table2, chart2 = results.update_kl_chart([0.2] * 5, "case1", scene, table, chart)
    assert (table2, chart2) == (table, chart) and chart.GetNumberOfPlotSeriesNodes() == 1


def test_results_stay_with_each_volume_and_fill_the_graded_table(scene):
    a = nodes.volume_node_from_array(np.ones((3, 3, 3)), np.eye(4), "knee A", scene)
    b = nodes.volume_node_from_array(np.ones((3, 3, 3)), np.eye(4), "knee B", scene)
    nodes.volume_node_from_array(np.ones((3, 3, 3)), np.eye(4), "not graded", scene)
    saliency = nodes.volume_node_from_array(np.ones((3, 3, 3)), np.eye(4), "knee A saliency", scene)
    results.store_result(a, RESULT, {results.ROLE_SALIENCY: saliency})
    results.store_result(b, {**RESULT, "pred_kl": 0, "oa_prob": 0.1, "heads_agree": False}, {})
    assert results.stored_result(a)["pred_kl"] == 3 and results.stored_result(b)["pred_kl"] == 0
    assert results.result_node(a, results.ROLE_SALIENCY) is saliency
    assert results.result_node(b, results.ROLE_SALIENCY) is None
    table = results.update_graded_table(scene.AddNewNodeByClass("vtkMRMLTableNode"), scene)
    assert results.table_rows(table) == [["knee A", "3", "0.830", "yes", "0.412", a.GetID()],
                                         ["knee B", "0", "0.100", "no", "0.412", b.GetID()]]
    assert results.volume_for_row(table, 1, scene) is b
    assert results.volume_for_row(table, 2, scene) is None


def test_model_card_rows_name_backbone_variant_training_data_and_test_metrics():
    card = {"spec": {"backbone": "resnet3d", "variant": "dual", "head": "chained", "input_shape": [32, 32, 32]},
            "training_data": "synthetic phantom, not for clinical use",
            "metrics": {"train_last_epoch": {"loss": 1.25}, "test": {"n": 20, "oa_auc": 0.9167}},
            "kneeoa_version": "0.1.0"}
    rows = dict(results.card_rows(card))
    assert rows["Backbone"] == "resnet3d" and rows["Variant"] == "dual" and rows["Input (D, H, W)"] == "32 x 32 x 32"
    assert rows["Training data"] == "synthetic phantom, not for clinical use"
    assert rows["Metrics (test)"] == "n 20, oa_auc 0.917" and rows["Metrics (train_last_epoch)"] == "loss 1.250"
    assert "Metrics" not in rows and results.card_rows(None) == []
