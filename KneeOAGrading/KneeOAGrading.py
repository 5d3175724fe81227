"""KneeOAGrading: OA probability, KL grade probabilities and a saliency map for a knee MRI, in 3D Slicer.

A thin module: node <-> file conversion, display, jobs and dependency checks live in `kneeoa.slicer`;
the model, saliency and overlap run in `kneeoa` inside a background process.
"""

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Installed extension: `kneeoa/` lies next to this file. Source checkout: one folder up.
for _root in (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent):
    if (_root / "kneeoa" / "__init__.py").is_file():
        if str(_root) not in sys.path:
            sys.path.insert(0, str(_root))
        break

from kneeoa.slicer import deps, display, grading, jobs, results  # noqa: E402  (needs the path above)


class KneeOAGrading(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("KneeOA Grading")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "KneeOA")]
        self.parent.dependencies = []
        self.parent.contributors = ["KneeOA developers"]
        self.parent.helpText = _(
            "Grade a knee MRI for osteoarthritis: OA probability, Kellgren-Lawrence grade probabilities and a "
            "saliency map over the cartilage, from a dual-head model. Research software, not for clinical use. "
            "The bundled demo model is trained on a synthetic phantom.")
        self.parent.acknowledgementText = _(
            "Implements the hierarchical OA/KL supervision of Zhang, arXiv 2605.00718 (2026).")


@parameterNodeWrapper
class KneeOAGradingParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    cartilage: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007 (wrapper needs Union)
    checkpoint: Path  # empty: the bundled demo model
    device: Annotated[str, Choice(list(grading.DEVICES))] = "auto"
    saliencyMethod: Annotated[str, Choice(list(grading.SALIENCY_METHODS))] = "smoothgrad"
    target: Annotated[str, Choice(list(grading.TARGETS))] = "auto"
    saliencyThreshold: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_SALIENCY_THRESHOLD
    saliencyOpacity: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_SALIENCY_OPACITY


class KneeOAGradingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    POLL_MS = 200

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # grading.GradingRun in the background
        self._queue = []  # volume node IDs still to grade
        self._options = None
        self._failures = []
        self._deviceNote = ""
        self._shownVolumeID = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/KneeOAGrading.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = KneeOAGradingLogic()

        self.klPlotView = slicer.qMRMLPlotView()
        self.klPlotView.setMRMLScene(slicer.mrmlScene)
        self.ui.klPlotFrame.layout().addWidget(self.klPlotView)
        self.ui.progressBar.visible = False
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._pollRun)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.gradeAllButton.connect("clicked(bool)", self.onGradeAllButton)
        self.ui.gradedTableView.connect("clicked(QModelIndex)", self.onGradedRowClicked)
        self.ui.gradedTableView.setMRMLTableNode(results.graded_table(slicer.mrmlScene, create=False))
        self.initializeParameterNode()

    def cleanup(self):
        if self._run is not None:
            self._run.job.cancel()
            self._run.cleanup()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def onReload(self):
        """Developer 'Reload': reload the kneeoa.slicer helpers first, then this module."""
        import importlib

        for name in ("nodes", "display", "results", "jobs", "deps", "grading"):  # dependencies first
            if f"kneeoa.slicer.{name}" in sys.modules:
                importlib.reload(sys.modules[f"kneeoa.slicer.{name}"])
        ScriptedLoadableModuleWidget.onReload(self)

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterModified)

    def onSceneStartClose(self, caller, event):
        self._cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volumes = grading.gradable_volumes(slicer.mrmlScene)
            if volumes:
                self._parameterNode.inputVolume = volumes[0]
        if not self.logic.checkpointPath(self._parameterNode.checkpoint):
            demo = self.logic.defaultCheckpoint()
            if demo is not None:
                self._parameterNode.checkpoint = demo

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # .ui widgets carry a "SlicerParameterName" property naming their parameter
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterModified)
            self._onParameterModified()

    def _onParameterModified(self, caller=None, event=None):
        p = self._parameterNode
        if p is None:
            return
        if self._run is None:
            self.ui.applyButton.enabled = p.inputVolume is not None
            self.ui.applyButton.toolTip = _("Grade the selected volume") if p.inputVolume else _("Select a volume")
        volumeID = p.inputVolume.GetID() if p.inputVolume else None
        if volumeID != self._shownVolumeID:
            self.showResults(p.inputVolume)
        else:
            saliency = results.result_node(p.inputVolume, results.ROLE_SALIENCY)
            if saliency is not None:
                display.show_saliency(saliency, p.saliencyThreshold)
                slicer.util.setSliceViewerLayers(foregroundOpacity=p.saliencyOpacity)

    # --- results of the selected volume -------------------------------------------------------------------

    def showResults(self, volumeNode):
        """Show the volume's stored result (no re-run) or say it is not graded yet."""
        self._shownVolumeID = volumeNode.GetID() if volumeNode else None
        stored = results.stored_result(volumeNode)
        if stored is None:
            self.ui.summaryLabel.text = _("Not graded yet.") if volumeNode else _("Select a volume.")
            self.ui.resultTableView.setMRMLTableNode(None)
            self._plotViewNode().SetPlotChartNodeID(None)
            self._showCard(self.logic.readCard(self._parameterNode.checkpoint if self._parameterNode else None))
            if volumeNode:
                display.show_in_viewers(volumeNode, None, None)
            return
        shown = results.ensure_result_nodes(volumeNode, slicer.mrmlScene)
        self.ui.summaryLabel.text = results.summary_text(stored)
        self.ui.resultTableView.setMRMLTableNode(shown[results.ROLE_RESULT_TABLE])
        chart = shown[results.ROLE_KL_CHART]
        self._plotViewNode().SetPlotChartNodeID(chart.GetID() if chart else None)
        self._showCard(stored.get("card"))
        display.show_in_viewers(volumeNode, shown[results.ROLE_SALIENCY], shown[results.ROLE_CARTILAGE],
                                self._parameterNode.saliencyOpacity)

    def _plotViewNode(self):
        node = slicer.mrmlScene.GetSingletonNode("KneeOAGrading", "vtkMRMLPlotViewNode")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotViewNode", "KneeOAGrading KL plot")
            node.SetSingletonTag("KneeOAGrading")
        self.klPlotView.setMRMLPlotViewNode(node)
        return node

    def _showCard(self, card):
        rows = results.card_rows(card) if card else []
        self.ui.modelCardLabel.text = "<table>" + "".join(
            f"<tr><td><b>{k}</b>&nbsp;</td><td>{v}</td></tr>" for k, v in rows) + "</table>" if rows \
            else _("No model card (choose a checkpoint, or install the dependencies to read it).")

    def onGradedRowClicked(self, index):
        volume = results.volume_for_row(results.graded_table(slicer.mrmlScene), index.row(), slicer.mrmlScene)
        if volume is not None:
            self._parameterNode.inputVolume = volume  # observers show its results, saliency and cartilage

    # --- running ------------------------------------------------------------------------------------------

    def onApplyButton(self):
        if self._run is not None:
            self._cancel()
            return
        p = self._parameterNode
        self._startQueue([p.inputVolume.GetID()])

    def onGradeAllButton(self):
        volumes = [v.GetID() for v in grading.gradable_volumes(slicer.mrmlScene) if results.stored_result(v) is None]
        if not volumes:
            self.ui.statusLabel.text = _("Every loaded volume is graded already.")
            return
        self._startQueue(volumes)

    def _startQueue(self, volumeIDs):
        p = self._parameterNode
        if not self._ensureDependencies():
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("Cannot start grading.")):
                self._options = self.logic.gradingOptions(p.checkpoint, p.device, p.saliencyMethod, p.target)
        except Exception:
            return
        self._deviceNote = deps.device_note(p.device) or ""
        self._queue = list(volumeIDs)
        self._failures = []
        self._startNext()

    def _startNext(self):
        while self._queue:
            volume = slicer.mrmlScene.GetNodeByID(self._queue.pop(0))
            if volume is None:
                continue
            p = self._parameterNode
            chosen = p.cartilage if p.inputVolume is volume else None
            mask = chosen or grading.find_cartilage(volume, slicer.mrmlScene)
            try:
                self._run = self.logic.startGrading(volume, mask, self._options)
            except Exception as err:  # bad input for this volume: note it and go on with the queue
                self._failures.append(f"{volume.GetName()}: {err}")
                continue
            self._setRunning(True, volume.GetName())
            self._timer.start()
            return
        self._setRunning(False)
        self.ui.statusLabel.text = _("Done.") if not self._failures else _("{n} volume(s) failed.").format(
            n=len(self._failures))
        if self._failures:
            slicer.util.errorDisplay(_("Some volumes could not be graded:") + "\n" + "\n".join(self._failures))

    def _pollRun(self):
        run = self._run
        for event in run.job.poll():
            if event["event"] == "progress" and event.get("stage"):
                self.ui.statusLabel.text = f"{run.volume_node.GetName()}: {event['stage']} {self._deviceNote}"
        self.ui.progressBar.value = int(1000 * run.job.fraction)
        if run.job.running:
            return
        self._timer.stop()
        self._run = None
        try:
            self.logic.finishGrading(run, self._parameterNode.saliencyThreshold)
        except Exception as err:
            self._failures.append(f"{run.volume_node.GetName()}: {err}")
        results.update_graded_table(results.graded_table(slicer.mrmlScene), slicer.mrmlScene)
        self.ui.gradedTableView.setMRMLTableNode(results.graded_table(slicer.mrmlScene))
        if run.volume_node is self._parameterNode.inputVolume:
            self.showResults(run.volume_node)
        self._startNext()

    def _cancel(self):
        self._queue = []
        if self._run is not None:
            self._timer.stop()
            self._run.job.cancel()
            self._run.cleanup()
            self._run = None
            self._setRunning(False)
            self.ui.statusLabel.text = _("Cancelled.")

    def _setRunning(self, running, name=""):
        self.ui.applyButton.text = _("Cancel") if running else _("Grade")
        self.ui.applyButton.enabled = running or bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.gradeAllButton.enabled = not running
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        if running:
            self.ui.statusLabel.text = _("Grading {name}...").format(name=name) + " " + self._deviceNote

    def _ensureDependencies(self):
        """Offer to install what is missing (torch via the PyTorch extension, the rest with pip)."""
        report = deps.check()
        if report.ok:
            return True
        plan = deps.install_plan(report)
        if not slicer.util.confirmOkCancelDisplay(plan.message + "\n\n" + _("Install now?"), windowTitle="KneeOA"):
            return False
        try:
            with slicer.util.tryWithErrorDisplay(_("Installing KneeOA dependencies failed."), waitCursor=True):
                self.logic.installDependencies(plan)
        except Exception:
            return False
        return deps.check().ok


class KneeOAGradingLogic(ScriptedLoadableModuleLogic):
    """Grading without the GUI: `process` for one volume node, `scoreFolder` for a cohort folder."""

    def getParameterNode(self):
        return KneeOAGradingParameterNode(super().getParameterNode())

    def defaultCheckpoint(self):
        """The bundled demo model, or None when this installation has none."""
        return next((p for p in grading.demo_checkpoint_candidates(__file__) if p.is_file()), None)

    @staticmethod
    def checkpointPath(checkpoint):
        """A chosen checkpoint path, or None for 'use the demo model' (empty path edits give '.')."""
        text = str(checkpoint or "").strip()
        return None if text in ("", ".") else Path(text)

    def gradingOptions(self, checkpoint=None, device="auto", saliencyMethod="smoothgrad", target="auto"):
        path = grading.resolve_checkpoint(self.checkpointPath(checkpoint), __file__)
        return grading.GradingOptions(path, saliency_method=saliencyMethod, target=target, device=device)

    def readCard(self, checkpoint=None):
        """The model card of a checkpoint (or of the demo model); None if it cannot be read yet."""
        try:
            return grading.read_card_header(self.gradingOptions(checkpoint).checkpoint)
        except Exception:  # no checkpoint chosen and no demo model, or not a KneeOA checkpoint
            return None

    def jobEnvironment(self):
        # Slicer's startup environment, as launchConsoleProcess uses; PythonSlicer sets up its own paths.
        base = slicer.util.startupEnvironment() if hasattr(slicer, "app") else dict(os.environ)
        return jobs.job_environment(base)

    def startGrading(self, volumeNode, maskNode, options):
        """Launch `kneeoa grade` for one volume in the background; returns a grading.GradingRun."""
        workDir = slicer.util.tempDirectory("KneeOAGrading") if hasattr(slicer, "app") else None
        return grading.start(volumeNode, options, maskNode, slicer.mrmlScene, self.jobEnvironment(),
                             jobs.slicer_python(), workDir)

    def finishGrading(self, run, saliencyThreshold=None):
        return run.finish(saliencyThreshold)

    def process(self, volumeNode, segmentationNode=None, checkpoint=None, device="auto", saliencyMethod="smoothgrad",
                target="auto", showResult=True):
        """Grade one volume node and wait (console/tests). Returns a grading.GradingResult whose nodes
        (saliency, cartilage outlines, result table, KL chart) are in the scene and kept on the volume.
        `segmentationNode` may be a segmentation or a label map with the OAI-ZIB-CM labels."""
        options = self.gradingOptions(checkpoint, device, saliencyMethod, target)
        note = deps.device_note(device)
        if note:
            print(note)

        def log(event):  # console use: print what the job reports
            if event["event"] == "progress" and event.get("stage"):
                print(f"KneeOA grading {volumeNode.GetName()}: {event['stage']}")
            elif event["event"] == "text" and event["message"].strip():
                logging.info(event["message"])

        result = grading.grade(volumeNode, options, segmentationNode, slicer.mrmlScene, log,
                               self.jobEnvironment(), jobs.slicer_python())
        results.update_graded_table(results.graded_table(slicer.mrmlScene), slicer.mrmlScene)
        if showResult:
            display.show_in_viewers(volumeNode, result.saliency_node, result.cartilage_node)
        return result

    def scoreFolder(self, folder, outCsv, checkpoint=None, saliencyDir=None, device="auto"):
        """Score every volume of a cohort folder into a CSV with `kneeoa.score_folder`, in this process.

        Resumable: an existing `outCsv` is continued, cases already in it are skipped. Progress is printed
        to the Python console. Blocks Slicer until done: for long cohorts run `kneeoa score` in a terminal."""
        import kneeoa

        options = self.gradingOptions(checkpoint, device)
        previous = os.environ.get("KNEEOA_PROGRESS")
        os.environ["KNEEOA_PROGRESS"] = "bar"  # tqdm lines in the console (no terminal here)
        try:
            summary = kneeoa.score_folder(folder, options.checkpoint, outCsv, saliency_dir=saliencyDir,
                                          resume=Path(outCsv).exists(), device=device)
        finally:
            if previous is None:
                os.environ.pop("KNEEOA_PROGRESS", None)
            else:
                os.environ["KNEEOA_PROGRESS"] = previous
        print(f"KneeOA: scored {summary['scored']}, errors {summary['errors']}, skipped {summary['skipped']} "
              f"of {summary['total']} -> {summary['out_csv']}")
        return summary

    def installDependencies(self, plan, askConfirmation=False):
        """Install what `deps.install_plan` lists: torch through PyTorchUtils, the rest with pip (torch pinned)."""
        deps.install(plan, askConfirmation)


class KneeOAGradingTest(ScriptedLoadableModuleTest):
    """Self-test for Slicer: grade a phantom case end to end with the logic (a few seconds on a CPU)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_GradePhantomCase()

    def test_GradePhantomCase(self):
        import tempfile

        from kneeoa.data.phantom import generate_cohort

        self.delayDisplay("Generating a phantom knee")
        folder = Path(tempfile.mkdtemp(prefix="KneeOAGradingTest-"))
        generate_cohort(folder, n_train=1, n_test=0, shape=(32, 32, 32), seed=0, workers=1)
        # Slicer's own readers, as a user would load the files
        volume = slicer.util.loadVolume(str(folder / "imagesTr" / "oaizib_001_0000.nii.gz"))
        labels = slicer.util.loadLabelVolume(str(folder / "labelsTr" / "oaizib_001.nii.gz"))
        logic = KneeOAGradingLogic()
        checkpoint = logic.defaultCheckpoint() or self._untrainedCheckpoint(folder)

        self.delayDisplay("Grading")
        result = logic.process(volume, labels, checkpoint=checkpoint, device="cpu")
        self.assertEqual(len(result.kl_probs), 5)
        self.assertAlmostEqual(sum(result.kl_probs), 1.0, places=4)
        self.assertTrue(0.0 <= result.oa_prob <= 1.0)
        self.assertIsNotNone(result.saliency_node)
        self.assertIsNotNone(result.overlap)
        self.assertEqual(results.stored_result(volume)["pred_kl"], result.pred_kl)
        self.assertEqual(results.graded_volume_nodes(slicer.mrmlScene), [volume])
        self.delayDisplay("Test passed")

    def _untrainedCheckpoint(self, folder):
        """Without the bundled demo model, a tiny untrained one still exercises the whole path."""
        from kneeoa.models.checkpoint import save_checkpoint
        from kneeoa.models.registry import ModelSpec, build_model

        model = build_model(ModelSpec(backbone="resnet3d", variant="dual", input_shape=(32, 32, 32), width=4))
        return save_checkpoint(folder / "untrained.safetensors", model, {"training_data": "untrained (self-test)"})
