"""Widget lifecycle of both modules, headless: scene close, cleanup, cleared paths, the volume selector.

The widgets need Slicer's Qt application, which slicer-core lacks: each test builds the widget object without
its Qt `setup()` and gives it small stand-ins (named as such) for the Qt pieces it touches (timer, plot view,
labels). The MRML scene, plot view nodes and volume nodes are the real slicer-core classes.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from slicer_helpers import fresh_scene, load_scripted_module

from kneeoa.slicer import grading, module_widget

ROOT = Path(__file__).resolve().parents[2]


class TimerStandIn:
    def __init__(self):
        self.active = False

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


class PlotViewStandIn:  # qMRMLPlotView: holds the view node it is given
    def __init__(self):
        self.node = None

    def setMRMLPlotViewNode(self, node):
        self.node = node

    def mrmlPlotViewNode(self):
        return self.node


class JobStandIn:
    def __init__(self, returncode=0):
        self.running, self.returncode, self.cancelled = False, returncode, False

    def poll(self):
        return []

    def cancel(self):
        self.cancelled = True

    def error_message(self):
        return "failed"


class ParameterNodeStandIn(types.SimpleNamespace):
    """Like the real @parameterNodeWrapper node: a Path parameter refuses None."""

    def __setattr__(self, name, value):
        if name.endswith("Folder") and value is None:
            raise ValueError(f"{name}: None is not a Path")
        super().__setattr__(name, value)


@pytest.fixture
def training_module(monkeypatch):
    return load_scripted_module(monkeypatch, ROOT / "KneeOATraining" / "KneeOATraining.py")


@pytest.fixture
def grading_module(monkeypatch):
    return load_scripted_module(monkeypatch, ROOT / "KneeOAGrading" / "KneeOAGrading.py")


def _training_widget(module):

    widget = object.__new__(module.KneeOATrainingWidget)
    widget.lossPlotView, widget.latentPlotView = PlotViewStandIn(), PlotViewStandIn()
    widget._timer, widget._cohortTimer = TimerStandIn(), TimerStandIn()
    widget._job, widget._jobKind, widget._monitor = None, None, None
    widget.parent = types.SimpleNamespace(isEntered=False)
    widget.removeObservers = lambda: None
    widget._updateButtons = lambda *a: None
    widget.ui = types.SimpleNamespace(progressBar=types.SimpleNamespace(visible=True, value=0),
                                      statusLabel=types.SimpleNamespace(text=""))
    return widget


def test_latent_clicks_select_points_again_after_a_scene_close(training_module):
    import slicer

    scene = fresh_scene()
    widget = _training_widget(training_module)
    widget._configurePlotViews()
    select = slicer.vtkMRMLPlotViewNode.InteractionModeSelectPoints
    assert widget.latentPlotView.mrmlPlotViewNode().GetInteractionMode() == select
    scene.Clear(0)  # File > Close Scene: the view nodes are reset to their defaults
    widget.onSceneEndClose(None, None)
    node = widget.latentPlotView.mrmlPlotViewNode()
    assert node.GetScene() is scene and node.GetInteractionMode() == select
    assert widget.lossPlotView.mrmlPlotViewNode().GetSingletonTag() == "KneeOATrainingLoss"


def test_cleanup_stops_the_timers_and_drops_the_job(training_module):
    fresh_scene()
    widget = _training_widget(training_module)
    job = JobStandIn()
    job.running = True
    widget._job, widget._jobKind = job, "train"
    widget._timer.start()
    widget.cleanup()
    assert job.cancelled and widget._job is None and not widget._timer.active and not widget._cohortTimer.active


def test_a_cleared_output_folder_does_not_raise_in_the_timer_callback(training_module):
    fresh_scene()
    widget = _training_widget(training_module)
    widget._parameterNode = ParameterNodeStandIn(outputFolder=Path("."), latentFolder=Path("/old"))
    monitor = types.SimpleNamespace(update=lambda e: False, fraction=1.0, status=lambda: "done")
    widget._job, widget._jobKind, widget._monitor = JobStandIn(), "train", monitor
    widget._pollJob()  # the user emptied "Output folder" while training ran
    assert widget._parameterNode.latentFolder == Path("/old") and widget._job is None
    widget._parameterNode.outputFolder = Path("/runs/new")
    widget._job, widget._jobKind = JobStandIn(), "train"
    widget._pollJob()
    assert widget._parameterNode.latentFolder == Path("/runs/new")


def test_the_cohort_summary_waits_for_typing_to_pause(training_module, tmp_path):
    fresh_scene()
    widget = _training_widget(training_module)
    widget._shown = {}
    widget.ui.headComboBox = types.SimpleNamespace(enabled=True)
    widget.ui.cohortSummaryLabel = types.SimpleNamespace(text="")
    widget._latentPoints = []
    widget._parameterNode = types.SimpleNamespace(dataFolder=tmp_path / "c", outputFolder=Path("."),
                                                  variant="dual", latentSplit="test")
    widget._onParameterModified()
    assert widget._cohortTimer.active and widget.ui.cohortSummaryLabel.text == ""  # not scanned per keystroke
    widget._showCohortSummary()  # the single-shot timer fired
    assert widget.ui.cohortSummaryLabel.text != ""


def test_the_knee_mri_selector_hides_the_modules_own_saliency_volumes(grading_module):
    scene = fresh_scene()
    knee = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "knee")
    saliency = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "knee saliency")
    saliency.SetAttribute(grading.OWNED_ATTRIBUTE, "1")
    proxy = types.SimpleNamespace(hiddenNodeIDs=[])
    widget = object.__new__(grading_module.KneeOAGradingWidget)
    widget.ui = types.SimpleNamespace(inputVolumeSelector=types.SimpleNamespace(sortFilterProxyModel=lambda: proxy))
    widget.onNodeAdded(None, None)
    assert proxy.hiddenNodeIDs == [saliency.GetID()] and knee.GetID() not in proxy.hiddenNodeIDs


def test_grading_cleanup_cancels_the_run_and_stops_polling(grading_module):
    widget = object.__new__(grading_module.KneeOAGradingWidget)
    widget._timer = TimerStandIn()
    widget._timer.start()
    cleaned = []
    widget._run = types.SimpleNamespace(job=JobStandIn(), cleanup=lambda: cleaned.append(1))
    widget._queue = ["vtkMRMLScalarVolumeNode1"]
    widget._segRun = None  # no "Segment knee" job running
    widget.removeObservers = lambda: None
    job = widget._run.job
    widget.cleanup()
    assert job.cancelled and cleaned == [1] and widget._run is None and widget._queue == []
    assert not widget._timer.active


def test_used_paths_go_to_the_path_history():
    added = []
    edit = types.SimpleNamespace(currentPath="/data/cohort", addCurrentPathToHistory=lambda: added.append(1))
    empty = types.SimpleNamespace(currentPath="", addCurrentPathToHistory=lambda: added.append(2))
    module_widget.remember_paths(edit, empty)
    assert added == [1]
