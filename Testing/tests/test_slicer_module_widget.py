"""What both modules share (kneeoa.slicer.module_widget, kneeoa.slicer.selftest), headless with the real MRML
and VTK classes.

@parameterNodeWrapper needs Slicer's Qt application, so the parameter node is a stand-in named as such around
a real vtkMRMLScriptedModuleNode; observation (VTKObservationMixin) and the node events are real.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap

from slicer_helpers import fresh_scene

from kneeoa.slicer import module_widget, selftest


class FakeParameterNodeWrapper:
    """Stand-in for a @parameterNodeWrapper instance: forwards observers to a real MRML node, records GUI links."""

    def __init__(self):
        import slicer

        self.node = slicer.vtkMRMLScriptedModuleNode()
        self.connected, self.disconnected = [], []

    def AddObserver(self, event, callback, priority=0.0):
        return self.node.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag):
        self.node.RemoveObserver(tag)

    def connectGui(self, ui):
        self.connected.append(ui)
        return f"tag{len(self.connected)}"

    def disconnectGui(self, tag):
        self.disconnected.append(tag)


def _widget():
    from slicer.util import VTKObservationMixin

    class Widget(VTKObservationMixin, module_widget.ModuleWidgetMixin):
        def __init__(self):
            VTKObservationMixin.__init__(self)
            self.ui, self.modified, self.initialized = "the ui", 0, 0

        def initializeParameterNode(self):
            self.initialized += 1

        def _onParameterModified(self, caller=None, event=None):
            self.modified += 1

    return Widget()


def test_a_set_parameter_node_is_connected_to_the_ui_and_observed():
    widget, node = _widget(), FakeParameterNodeWrapper()
    widget.setParameterNode(node)
    assert node.connected == ["the ui"] and widget.modified == 1  # shown once right away
    node.node.Modified()
    assert widget.modified == 2


def test_exit_disconnects_the_gui_and_stops_observing():
    widget, node = _widget(), FakeParameterNodeWrapper()
    widget.setParameterNode(node)
    widget.exit()
    node.node.Modified()
    assert node.disconnected == ["tag1"] and widget.modified == 1


def test_replacing_the_parameter_node_lets_go_of_the_old_one():
    widget, old, new = _widget(), FakeParameterNodeWrapper(), FakeParameterNodeWrapper()
    widget.setParameterNode(old)
    widget.setParameterNode(new)
    old.node.Modified()
    assert old.disconnected == ["tag1"] and widget.modified == 2
    new.node.Modified()
    assert widget.modified == 3


def test_enter_initializes_the_parameter_node():
    widget = _widget()
    widget.enter()
    assert widget.initialized == 1


def test_plot_view_node_is_one_per_tag_and_survives_repeated_calls():
    scene = fresh_scene()
    first = module_widget.plot_view_node(scene, "KneeOAGrading", "KneeOAGrading KL plot")
    again = module_widget.plot_view_node(scene, "KneeOAGrading", "ignored the second time")
    other = module_widget.plot_view_node(scene, "KneeOATrainingLoss")
    assert first is again and first.GetName() == "KneeOAGrading KL plot"
    assert other is not first and other.GetName() == "KneeOATrainingLoss"
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode") == 2


def test_html_table_has_one_row_per_pair_in_order():
    html = module_widget.html_table([("Backbone", "resnet3d"), ("AUC", 0.75)])
    assert html == ("<table><tr><td><b>Backbone</b>&nbsp;</td><td>resnet3d</td></tr>"
                    "<tr><td><b>AUC</b>&nbsp;</td><td>0.75</td></tr></table>")


def test_reload_helpers_picks_up_edited_helper_code_glue_first(tmp_path):
    """In a child process: reloading rebinds kneeoa.slicer classes, which other tests here still hold."""
    package = tmp_path / "KneeOAProbeLib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("VALUE = 1\n")
    code = textwrap.dedent(f"""\
        import pathlib, sys
        sys.dont_write_bytecode = True  # an edit within the same second must not meet a cached .pyc
        sys.path.insert(0, {str(tmp_path)!r})
        import KneeOAProbeLib.helpers as helpers
        from kneeoa.slicer import jobs, module_widget
        pathlib.Path(helpers.__file__).write_text("VALUE = 2\\n")
        reloaded = module_widget.reload_helpers("KneeOAProbeLib")
        print(helpers.VALUE, ",".join(reloaded))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    value, reloaded = out.stdout.split()
    assert value == "2"
    assert reloaded.split(",") == ["kneeoa.slicer.jobs", "kneeoa.slicer.module_widget", "KneeOAProbeLib.helpers"]


def test_self_test_mixin_starts_from_an_empty_scene_with_a_phantom_cohort(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp below tmp_path
    scene = fresh_scene()
    scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    probe = type("Probe", (selftest.ModuleSelfTestMixin,), {})()
    probe.setUp()
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
    folder = probe.phantomFolder("KneeOAProbe-", "cohort", n_train=1, n_test=0, shape=(16, 16, 16))
    assert folder.parent == tmp_path and folder.name.startswith("KneeOAProbe-")
    assert (folder / "cohort" / "imagesTr" / "oaizib_001_0000.nii.gz").is_file()


class _StagedJob:
    """Stand-in for jobs.Job's poll side: the events of one timer tick, a fraction, still running or not."""

    def __init__(self, events, fraction, running):
        self.events, self.fraction, self.running = events, fraction, running

    def poll(self):
        events, self.events = self.events, []
        return events


def test_a_job_tick_shows_the_last_stage_and_the_fraction_and_says_whether_it_still_runs():
    from types import SimpleNamespace

    ui = SimpleNamespace(statusLabel=SimpleNamespace(text="Grading knee..."), progressBar=SimpleNamespace(value=0))
    job = _StagedJob([{"event": "progress", "stage": "loading"}, {"event": "log", "message": "x"},
                      {"event": "progress", "stage": "saliency"}, {"event": "progress", "done": 1}], 0.25, True)
    assert module_widget.show_job_progress(ui, job, "knee", " (on the CPU)") is True
    assert ui.statusLabel.text == "knee: saliency (on the CPU)" and ui.progressBar.value == 250
    done = _StagedJob([{"event": "end", "ok": True}], 1.0, False)
    assert module_widget.show_job_progress(ui, done, "knee") is False
    assert ui.statusLabel.text == "knee: saliency (on the CPU)" and ui.progressBar.value == 1000
