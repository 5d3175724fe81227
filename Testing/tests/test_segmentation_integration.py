"""Where a mask is missing, `grade` and `saliency` segment the case and say the overlap is from an automatic mask."""

from __future__ import annotations

import csv
import json

import pytest
from engine_helpers import tiny_checkpoint
from seg_helpers import train_tiny_segmenter

from kneeoa.cli import main
from kneeoa.data.volume import read_volume


@pytest.fixture(scope="module")
def models(phantom_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return tiny_checkpoint(root / "grader.safetensors"), train_tiny_segmenter(phantom_cohort, root / "segrun")


def test_grade_without_a_mask_segments_the_image_and_labels_the_overlap_automatic(models, phantom_cohort, tmp_path):
    grader, segmenter = models
    image = phantom_cohort / "imagesTs" / "oaizib_013_0000.nii.gz"
    out, seg = tmp_path / "r.json", tmp_path / "seg.nii.gz"
    assert main(["grade", str(image), "--checkpoint", str(grader), "--segmenter", str(segmenter),
                 "--saliency-method", "saliency", "--segmentation-out", str(seg), "--result-json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mask_source"] == "automatic" and result["overlap"] is not None
    assert set(result["thickness"]) >= {"medial_tibial_thickness_mean_mm", "femoral_thickness_p5_mm"}
    assert read_volume(seg, is_label=True, allow_constant=True).shape == read_volume(image).shape
    # a given mask wins over the segmenter
    mask = phantom_cohort / "labelsTs" / "oaizib_013.nii.gz"
    assert main(["grade", str(image), "--checkpoint", str(grader), "--segmenter", str(segmenter), "--mask", str(mask),
                 "--saliency-method", "saliency", "--result-json", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["mask_source"] == "reference"


def test_saliency_over_a_folder_without_masks_uses_automatic_masks(models, phantom_cohort, tmp_path):
    grader, segmenter = models
    out = tmp_path / "sal"
    assert main(["saliency", "--checkpoint", str(grader), "--data", str(phantom_cohort / "imagesTs"), "--split",
                 "unlabelled", "--method", "saliency", "--limit", "2", "--segmenter", str(segmenter),
                 "--out", str(out)]) == 0
    rows = [r for r in csv.DictReader((out / "saliency_overlap.csv").open()) if r["case_id"] != "mean"]
    assert len(rows) == 2 and {r["mask_source"] for r in rows} == {"automatic"}
    assert all((out / f"{r['case_id']}_seg.nii.gz").is_file() for r in rows)


def test_the_report_section_holds_the_dice_table_the_outline_figure_and_the_severity_correlation(models,
                                                                                               phantom_cohort,
                                                                                               tmp_path):
    from kneeoa.data.cohort import load_cohort
    from kneeoa.report.html import Figure, Table
    from kneeoa.report.segmentation import segmentation_section
    from kneeoa.segmentation.evaluation import cohort_segmentation

    result = cohort_segmentation(load_cohort(phantom_cohort), tmp_path, models[1], n_cases=6)
    assert (tmp_path / "tables" / "segmentation_dice.csv").is_file()
    assert (tmp_path / "figures" / "segmentation_outlines.png").is_file()
    assert set(result["spearman"]) == {"automatic", "reference"} and result["spearman"]["reference"]["n"] == 6
    section = segmentation_section(result)
    table = next(i for i in section.items if isinstance(i, Table))
    assert [r["label"] for r in table.rows] == ["femur", "femoral_cartilage", "tibia", "medial_tibial_cartilage",
                                                "lateral_tibial_cartilage"]
    assert any(isinstance(i, Figure) for i in section.items) and "Spearman rho" in section.text
    assert segmentation_section(None) is None


def test_score_with_saliency_and_a_segmenter_appends_overlap_rows_with_their_mask_source(models, phantom_cohort,
                                                                                          tmp_path):
    grader, segmenter = models
    sal = tmp_path / "sal"
    assert main(["score", str(phantom_cohort / "imagesTs"), "--checkpoint", str(grader), "--out",
                 str(tmp_path / "s.csv"), "--saliency", str(sal), "--saliency-method", "saliency",
                 "--segmenter", str(segmenter), "--shard", "0/3"]) == 0
    rows = list(csv.DictReader((sal / "saliency_overlap.csv").open()))
    assert [r["case_id"] for r in rows] == ["oaizib_013", "oaizib_016"]  # every third case of six
    assert {r["mask_source"] for r in rows} == {"automatic"} and all(0 <= float(r["mass_roi"]) <= 1 for r in rows)
    assert (sal / "oaizib_013_seg.nii.gz").is_file()
