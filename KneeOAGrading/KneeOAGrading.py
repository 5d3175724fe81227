"""KneeOAGrading: OA probability, KL grade probabilities and a saliency map for a knee MRI, in 3D Slicer.

A thin module: node <-> file conversion, display, jobs and dependency checks live in `kneeoa.slicer`,
the widget's grading queue, results panel and the self-test body in `KneeOAGradingLib`; the model,
saliency and overlap run in `kneeoa` inside a background process.
"""

import logging
import sys
from pathlib import Path
from typing import Annotated, Union

import qt
import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# `kneeoa/` lies next to this file when installed, one folder up in a source checkout. Slicer puts this folder
# (with KneeOAGradingLib/) on sys.path; loading the file by path, as the pytest suite does, needs it added.
_here = Path(__file__).resolve().parent
for _root in (_here.parent, _here):
    if str(_root) not in sys.path and (_root == _here or (_root / "kneeoa" / "__init__.py").is_file()):
        sys.path.insert(0, str(_root))

from KneeOAGradingLib import segment_helpers, selftest, widget_helpers  # noqa: E402  (needs the path above)

from kneeoa.contracts.trust import DEFAULT_ALPHA  # noqa: E402
from kneeoa.contracts.vocab import DEVICES, SALIENCY_METHODS, SALIENCY_TARGETS  # noqa: E402
from kneeoa.slicer import deps, display, grading, jobs, model_store, module_widget, results, scoring  # noqa: E402
from kneeoa.slicer import segmentation as seg_glue  # noqa: E402


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
            "The bundled demo model is trained on a synthetic phantom. 'Segment knee' segments femur, tibia and "
            "cartilage (Segmentation node + cartilage thickness) when a scan has no mask; the bundled demo "
            "segmenter is synthetic too.")
        self.parent.acknowledgementText = _(
            "Implements the hierarchical OA/KL supervision of Zhang, arXiv 2605.00718 (2026).")


@parameterNodeWrapper
class KneeOAGradingParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    cartilage: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007 (wrapper needs Union)
    checkpoint: Path  # empty: the bundled demo model
    segmenter: Path  # empty: the bundled demo segmenter
    segmentMissing: bool = True  # grading segments volumes without a cartilage mask
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    saliencyMethod: Annotated[str, Choice(list(grading.SALIENCY_CHOICES))] = SALIENCY_METHODS[0]
    target: Annotated[str, Choice(list(SALIENCY_TARGETS))] = "auto"
    saliencyThreshold: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_SALIENCY_THRESHOLD
    saliencyOpacity: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_SALIENCY_OPACITY
    setLevel: Annotated[float, WithinRange(0.5, 0.99)] = 1.0 - DEFAULT_ALPHA  # KL/OA sets of calibrated models


class KneeOAGradingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, module_widget.ModuleWidgetMixin,
                          widget_helpers.GradingQueue, widget_helpers.ResultsPanel, widget_helpers.ModelsPanel,
                          segment_helpers.SegmentationPanel):
    """The grading panel; queue handling and the results display live in KneeOAGradingLib.widget_helpers."""

    POLL_MS = 200

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._run = None  # grading.GradingRun in the background
        self._queue = []  # volume node IDs still to grade
        self._options = None
        self._failures = []
        self._deviceNote = ""
        self._shownVolumeID = None
        self._models = []  # model_store.ModelEntry list behind the Models combo box
        self._segRun = None  # seg_glue.SegmentationRun in the background

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
        self._segTimer = qt.QTimer()
        self._segTimer.setInterval(self.POLL_MS)
        self._segTimer.connect("timeout()", self._pollSegmentation)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.gradeAllButton.connect("clicked(bool)", self.onGradeAllButton)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.gradedTableView.connect("clicked(QModelIndex)", self.onGradedRowClicked)
        self.ui.gradedTableView.setMRMLTableNode(results.graded_table(slicer.mrmlScene, create=False))
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChosen)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.removeModelButton.connect("clicked(bool)", self.onRemoveModel)
        self.initializeParameterNode()
        self._fillModels()

    def cleanup(self):
        self._timer.stop()  # no callback into a widget that is going away
        if self._run is not None:
            self._run.job.cancel()
            self._run.cleanup()
            self._run = None
        self._queue = []
        self._cancelSegmentation()
        self.removeObservers()

    def onNodeAdded(self, caller, event):
        # the module's own saliency maps are volumes too: keep them out of the "Knee MRI" list
        self.ui.inputVolumeSelector.sortFilterProxyModel().hiddenNodeIDs = grading.owned_volume_ids(slicer.mrmlScene)

    def onReload(self):
        """Developer 'Reload': reload the kneeoa.slicer helpers and KneeOAGradingLib first, then this module."""
        module_widget.reload_helpers("KneeOAGradingLib")
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneStartClose(self, caller, event):
        self._cancel()
        self._cancelSegmentation()
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

    def onApplyButton(self):
        if self._run is not None:
            self._cancel()
            return
        p = self._parameterNode
        module_widget.remember_paths(self.ui.checkpointPathLineEdit)
        self._startQueue([p.inputVolume.GetID()])

    def onGradeAllButton(self):
        volumes = [v.GetID() for v in grading.gradable_volumes(slicer.mrmlScene) if results.stored_result(v) is None]
        if not volumes:
            self.ui.statusLabel.text = _("Every loaded volume is graded already.")
            return
        self._startQueue(volumes)


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

    def gradingOptions(self, checkpoint=None, device="auto", saliencyMethod="smoothgrad", target="auto",
                       segmenter=None, segmentMissing=False, setLevel=1.0 - DEFAULT_ALPHA):
        """`segmentMissing`: volumes without a cartilage mask are segmented as they are graded (the chosen
        `segmenter` or the bundled one; skipped quietly when neither exists). `setLevel`: the KL/OA sets of a
        calibrated model hold the true grade for about this share of knees (0.9: "KL 2-3 at 90 %")."""
        path = grading.resolve_checkpoint(self.checkpointPath(checkpoint), __file__)
        seg = None
        if segmentMissing:
            try:
                seg = self.segmenterPath(segmenter)
            except Exception:  # no segmenter chosen and none bundled: grade without automatic masks
                seg = None
        return grading.GradingOptions(path, saliency_method=saliencyMethod, target=target, device=device,
                                      segmenter=seg, alpha=round(1.0 - float(setLevel), 6))

    def readCard(self, checkpoint=None):
        """The model card of a checkpoint (or of the demo model); None if it cannot be read yet."""
        try:
            return grading.read_card_header(self.gradingOptions(checkpoint).checkpoint)
        except Exception:  # no checkpoint chosen and no demo model, or not a KneeOA checkpoint
            return None

    def jobEnvironment(self):
        return jobs.slicer_job_environment()

    def listModels(self, folder=None):
        """The bundled demo model (first, marked synthetic) and the imported models (model_store.ModelEntry)."""
        demo = self.defaultCheckpoint()
        return model_store.list_models(folder, [demo] if demo is not None else [])

    def importModel(self, path, sha256=None, folder=None):
        """Copy a checkpoint or a zip holding one into the per-user models folder (card and checksum checked)."""
        return model_store.import_model(path, folder, sha256)

    def removeModel(self, entry):
        """Delete an imported model (the bundled demo model cannot be removed)."""
        model_store.remove_model(entry)

    def requireDependencies(self, purpose):
        """Offer to install what is missing (inside Slicer), else a DependencyError naming it."""
        deps.require(purpose)

    def startGrading(self, volumeNode, maskNode, options):
        """Launch `kneeoa grade` for one volume in the background; returns a grading.GradingRun."""
        self.requireDependencies(_("Grading"))
        workDir = slicer.util.tempDirectory("KneeOAGrading") if hasattr(slicer, "app") else None
        return grading.start(volumeNode, options, maskNode, slicer.mrmlScene, self.jobEnvironment(),
                             jobs.slicer_python(), workDir)

    def finishGrading(self, run, saliencyThreshold=None):
        return run.finish(saliencyThreshold)

    def segmenterPath(self, segmenter=None):
        """The chosen segmenter, or the bundled demo segmenter (CheckpointError when neither exists)."""
        return seg_glue.resolve_segmenter(self.checkpointPath(segmenter), __file__)

    def startSegmentation(self, volumeNode, segmenter=None, device="auto"):
        """Launch `kneeoa segment` for one volume in the background; returns a segmentation.SegmentationRun."""
        workDir = slicer.util.tempDirectory("KneeOASegment") if hasattr(slicer, "app") else None
        return seg_glue.start(volumeNode, self.segmenterPath(segmenter), slicer.mrmlScene, device,
                              self.jobEnvironment(), jobs.slicer_python(), workDir)

    def segmentKnee(self, volumeNode, segmenter=None, device="auto"):
        """Segment one volume node and wait (console/tests): a Segmentation node with the five knee segments
        and a cartilage thickness table, kept on the volume (grading then uses it when no cartilage is given)."""
        return seg_glue.segment(volumeNode, self.segmenterPath(segmenter), slicer.mrmlScene, device,
                                env=self.jobEnvironment(), python=jobs.slicer_python())

    def process(self, volumeNode, segmentationNode=None, checkpoint=None, device="auto", saliencyMethod="smoothgrad",
                target="auto", showResult=True, setLevel=1.0 - DEFAULT_ALPHA):
        """Grade one volume node and wait (console/tests). Returns a grading.GradingResult whose nodes
        (saliency, cartilage outlines, result table, KL chart) are in the scene and kept on the volume.
        `segmentationNode` may be a segmentation or a label map with the OAI-ZIB-CM labels."""
        self.requireDependencies(_("Grading"))
        options = self.gradingOptions(checkpoint, device, saliencyMethod, target, setLevel=setLevel)
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

    def startScoreFolder(self, folder, outCsv, checkpoint=None, saliencyDir=None, device="auto"):
        """Start `kneeoa score` on a cohort folder in the background; returns a scoring.ScoringRun
        (`run.job.poll()` / `run.job.cancel()`, then `run.finish()` for the summary). An existing `outCsv`
        is continued: cases already in it are skipped."""
        self.requireDependencies(_("Scoring a folder"))
        options = self.gradingOptions(checkpoint, device)
        return scoring.start(folder, options.checkpoint, outCsv, saliencyDir, device, self.jobEnvironment(),
                             jobs.slicer_python())

    def scoreFolder(self, folder, outCsv, checkpoint=None, saliencyDir=None, device="auto", timeoutS=None):
        """Score every volume of a cohort folder into a CSV and wait (console): the work runs in a background
        `kneeoa score` process, Slicer keeps repainting, progress is printed every tenth of the cohort and
        Ctrl+C / a timeout cancels the whole process tree. Returns {'scored', 'errors', 'skipped', 'total',
        'out_csv'}; resumable like `kneeoa score --resume`."""
        run = self.startScoreFolder(folder, outCsv, checkpoint, saliencyDir, device)
        try:
            run.job.wait(scoring.console_printer(Path(folder).name), timeout_s=timeoutS)
        except BaseException:
            run.job.cancel()
            raise
        summary = run.finish()
        print(f"KneeOA: scored {summary['scored']}, errors {summary['errors']}, skipped {summary['skipped']} "
              f"of {summary['total']} -> {summary['out_csv']}")
        return summary

    def installDependencies(self, plan, askConfirmation=False):
        """Install what `deps.install_plan` lists: torch through PyTorchUtils, the rest with pip (torch pinned)."""
        deps.install(plan, askConfirmation)


class KneeOAGradingTest(selftest.GradingSelfTest):
    """The self-test (KneeOAGradingLib/selftest.py) under the name Reload and Test and ctest look for."""

    logicClass = KneeOAGradingLogic

    def runTest(self):
        self.runTests(self.test_GradePhantomCase)  # skips with a message when torch & co. are not installed yet
