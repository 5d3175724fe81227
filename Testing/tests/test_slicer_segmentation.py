""""Segment knee" glue, headless with slicer-core: the real `kneeoa segment` job, its output as a Segmentation node."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import vtk
from seg_helpers import train_tiny_segmenter
from slicer_helpers import fresh_scene, knee_labels, oblique_affine

from kneeoa.contracts.segmentation import SEGMENT_COLORS, SEGMENT_TITLES, terminology_entry
from kneeoa.data.volume import read_volume
from kneeoa.errors import CheckpointError, JobError
from kneeoa.slicer import grading, jobs, nodes
from kneeoa.slicer import segmentation as seg_glue


@pytest.fixture(scope="module")
def segmenter(phantom_cohort, tmp_path_factory):
    return train_tiny_segmenter(phantom_cohort, tmp_path_factory.mktemp("seg") / "run")


@pytest.fixture
def scene():
    return fresh_scene()


def _tag(segment, name=seg_glue.TERMINOLOGY_TAG):
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def test_glue_imports_only_the_standard_library():
    code = "import sys, kneeoa.slicer.segmentation; print(sorted(m for m in sys.modules if m in ('torch', 'numpy')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "[]"


def test_five_labels_become_five_named_coloured_segments_with_terminology(scene):
    seg = nodes.segmentation_from_labelmap(knee_labels(), oblique_affine(), "knee", scene)
    seg_glue.apply_terminology(seg)
    segmentation = seg.GetSegmentation()
    found = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        found[segment.GetName()] = (tuple(round(c, 3) for c in segment.GetColor()), _tag(segment))
    assert found == {SEGMENT_TITLES[v]: (SEGMENT_COLORS[v], terminology_entry(v)) for v in range(1, 6)}
    assert "SCT^71341001^Bone structure of femur" in found["Femur"][1]


@pytest.mark.slow
def test_segment_knee_runs_the_real_job_and_leaves_a_segmentation_grading_uses(scene, segmenter, phantom_cohort):
    image = read_volume(phantom_cohort / "imagesTs" / "oaizib_013_0000.nii.gz")
    volume = nodes.volume_node_from_array(image.array, image.affine, "oaizib_013_0000", scene)
    events = []
    out = seg_glue.segment(volume, segmenter, scene, device="cpu", on_event=events.append, timeout_s=120)
    assert any(e.get("stage") == "segment" for e in events)  # progress came through as JSON lines
    node = out.segmentation_node
    assert node.IsA("vtkMRMLSegmentationNode") and seg_glue.is_automatic(node)
    names = {node.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(node.GetSegmentation().GetNumberOfSegments())}
    assert names and names <= set(SEGMENT_TITLES.values())
    # the label map on the volume's grid equals what `kneeoa segment` wrote, and grading finds it
    labels = nodes.mask_array_for_volume(node, volume, scene)
    assert labels.shape == image.shape and set(np.unique(labels)) <= set(range(6))
    assert grading.find_cartilage(volume, scene) is node
    rows = out.thickness_table_node.GetTable()
    assert rows.GetNumberOfRows() == 6 and rows.GetColumnName(1) == "mm"
    # a second run refills the same nodes instead of adding new ones
    again = seg_glue.segment(volume, segmenter, scene, device="cpu", timeout_s=120)
    assert again.segmentation_node is node and again.thickness_table_node is out.thickness_table_node
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1


def test_cancel_stops_the_job_and_leaves_the_scene_unchanged(scene, segmenter, phantom_cohort):
    image = read_volume(phantom_cohort / "imagesTs" / "oaizib_014_0000.nii.gz")
    volume = nodes.volume_node_from_array(image.array, image.affine, "v", scene)
    run = seg_glue.start(volume, segmenter, scene, device="cpu")
    run.job.cancel()
    jobs.wait_until_done(run.job, None, 30, 0.05, "cancelled job did not stop")
    with pytest.raises(JobError, match="cancelled"):
        run.finish()
    assert not run.work_dir.exists()
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_the_segmenter_is_the_chosen_file_or_the_bundled_demo(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        seg_glue.resolve_segmenter(tmp_path / "missing.safetensors", tmp_path / "Module.py")
    with pytest.raises(CheckpointError, match="demo segmenter is missing"):
        seg_glue.resolve_segmenter(None, tmp_path / "Module.py")


@pytest.mark.slow
def test_grading_a_volume_without_cartilage_segments_it_in_the_same_job(scene, segmenter, phantom_cohort, tmp_path):
    from engine_helpers import tiny_checkpoint

    image = read_volume(phantom_cohort / "imagesTs" / "oaizib_015_0000.nii.gz")
    volume = nodes.volume_node_from_array(image.array, image.affine, "oaizib_015_0000", scene)
    options = grading.GradingOptions(tiny_checkpoint(tmp_path / "g.safetensors"), saliency_method="saliency",
                                     device="cpu", segmenter=segmenter)
    out = grading.grade(volume, options, None, scene, timeout_s=180)
    assert out.result["mask_source"] == "automatic" and out.overlap is not None
    assert seg_glue.is_automatic(out.cartilage_node)
    assert volume.GetNodeReference(seg_glue.ROLE_SEGMENTATION) is out.cartilage_node


@pytest.fixture
def module(monkeypatch):
    from pathlib import Path

    from slicer_helpers import load_scripted_module

    return load_scripted_module(monkeypatch, Path(__file__).resolve().parents[2] / "KneeOAGrading" / "KneeOAGrading.py")


@pytest.mark.slow
def test_module_logic_segments_from_the_console_and_grading_options_take_the_bundled_segmenter(module, scene,
                                                                                                segmenter,
                                                                                                phantom_cohort):
    logic = module.KneeOAGradingLogic()
    bundled = logic.segmenterPath(None)  # empty field: the bundled demo segmenter of this checkout
    assert bundled.name == seg_glue.DEMO_SEGMENTER and bundled.is_file()
    options = logic.gradingOptions(None, segmenter=None, segmentMissing=True)
    assert options.segmenter == bundled
    assert logic.gradingOptions(None, segmentMissing=False).segmenter is None
    image = read_volume(phantom_cohort / "imagesTs" / "oaizib_016_0000.nii.gz")
    volume = nodes.volume_node_from_array(image.array, image.affine, "oaizib_016_0000", scene)
    out = logic.segmentKnee(volume, segmenter=str(segmenter), device="cpu")
    assert seg_glue.is_automatic(out.segmentation_node) and out.thickness_table_node is not None


class _TimerStandIn:  # stand-in for qt.QTimer (no Qt in slicer-core)
    active = True

    def stop(self):
        self.active = False


def test_widget_cleanup_cancels_a_running_segmentation(module):
    import types

    widget = object.__new__(module.KneeOAGradingWidget)
    widget._timer, widget._segTimer = _TimerStandIn(), _TimerStandIn()
    job = types.SimpleNamespace(cancelled=False)
    job.cancel = lambda: setattr(job, "cancelled", True)
    cleaned = []
    widget._segRun = types.SimpleNamespace(job=job, cleanup=lambda: cleaned.append(1))
    widget._run, widget._queue = None, []
    widget.removeObservers = lambda: None
    widget.ui = types.SimpleNamespace(segmentButton=types.SimpleNamespace(), applyButton=types.SimpleNamespace(),
                                      gradeAllButton=types.SimpleNamespace(), progressBar=types.SimpleNamespace(),
                                      statusLabel=types.SimpleNamespace())
    widget._parameterNode = None
    widget.cleanup()
    assert job.cancelled and cleaned == [1] and widget._segRun is None and not widget._segTimer.active
