"""KneeOATraining: train KneeOA models on a cohort folder and explore the cohort's latent space, in 3D Slicer.

A thin module: command lines, run folders, progress parsing and the loss plot live in
`kneeoa.slicer.training`, the latent tables and their plot in `kneeoa.slicer.latent_plot` and
`kneeoa.slicer.latent_cases`; training, embeddings and the PCA run in `kneeoa` in background processes.
"""

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
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

from kneeoa.errors import ConfigError, JobError  # noqa: E402  (needs the path above)
from kneeoa.slicer import deps, jobs, latent_cases, latent_plot, training  # noqa: E402


@contextmanager
def showingErrors(message):
    """Show an exception to the user and stop there (a Qt slot has nobody to re-raise to)."""
    try:
        with slicer.util.tryWithErrorDisplay(message, waitCursor=True):
            yield
    except Exception:
        logging.debug("shown to the user", exc_info=True)


class KneeOATraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("KneeOA Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "KneeOA")]
        self.parent.dependencies = []
        self.parent.contributors = ["KneeOA developers"]
        self.parent.helpText = _(
            "Train a knee OA model (ResNet3D, M3T or nnMamba; Single-OA, Single-KL or Dual supervision) on a cohort "
            "folder, or the whole 3x3 study, in the background with a live loss plot, Cancel and Resume. Explore "
            "a cohort's latent space: PC1 vs PC2 of the train-fitted PCA coloured by KL grade; click a point to "
            "load its case. Research software, not for clinical use.")
        self.parent.acknowledgementText = _(
            "Implements the hierarchical OA/KL supervision of Zhang, arXiv 2605.00718 (2026).")


@parameterNodeWrapper
class KneeOATrainingParameterNode:
    dataFolder: Path
    backbone: Annotated[str, Choice(list(training.BACKBONES))] = "resnet3d"
    variant: Annotated[str, Choice(list(training.VARIANTS))] = "dual"
    head: Annotated[str, Choice(list(training.HEADS))] = "chained"
    preset: Annotated[str, Choice(list(training.PRESETS))] = "quick"
    outputFolder: Path
    epochs: Annotated[int, WithinRange(0, 10000)] = 0  # 0: the preset's (the spin box shows "preset")
    inputSize: Annotated[int, WithinRange(0, 512)] = 0
    learningRate: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    seed: Annotated[int, WithinRange(-1, 1000000)] = -1
    device: Annotated[str, Choice(list(training.DEVICES))] = "auto"
    latentFolder: Path
    latentCheckpoint: Path
    latentCohort: Path
    latentSplit: Annotated[str, Choice(list(latent_plot.SPLITS))] = "test"


class KneeOATrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    POLL_MS = 300

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # jobs.Job (train, study) or latent_cases.JobChain (latent) running in the background
        self._jobKind = None
        self._monitor = None
        self._lossNodes = (None, None)
        self._latentSource = None
        self._latentPoints = []
        self._latentSummary = {}
        self._latentPlot = None
        self._caseIndex = None
        self._shown = {}  # what the panel last showed, to redo only what changed

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/KneeOATraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = KneeOATrainingLogic()

        self.lossPlotView = self._plotView(self.ui.lossPlotFrame, "KneeOATrainingLoss")
        self.latentPlotView = self._plotView(self.ui.latentPlotFrame, "KneeOATrainingLatent")
        # Left click selects points (default is pan): a picked point loads its case.
        self.latentPlotView.mrmlPlotViewNode().SetInteractionMode(slicer.vtkMRMLPlotViewNode.InteractionModeSelectPoints)
        self.latentPlotView.connect("dataSelected(vtkStringArray*,vtkCollection*)", self.onLatentPointsSelected)
        self.ui.progressBar.visible = False
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._pollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for button, slot in ((self.ui.trainButton, self.onTrainButton), (self.ui.studyButton, self.onStudyButton),
                             (self.ui.resumeButton, self.onResumeButton), (self.ui.cancelButton, self.onCancelButton),
                             (self.ui.openReportButton, self.onOpenReportButton),
                             (self.ui.loadLatentButton, lambda: self.onLatentButton(False)),
                             (self.ui.computeLatentButton, lambda: self.onLatentButton(True)),
                             (self.ui.exportPngButton, self.onExportPng), (self.ui.exportCsvButton, self.onExportCsv)):
            button.connect("clicked(bool)", slot)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", lambda index: self._showLatentModel())
        self.initializeParameterNode()

    def _plotView(self, frame, tag):
        view = slicer.qMRMLPlotView()
        view.setMRMLScene(slicer.mrmlScene)
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLPlotViewNode")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotViewNode", tag)
            node.SetSingletonTag(tag)
        view.setMRMLPlotViewNode(node)
        frame.layout().addWidget(view)
        return view

    def cleanup(self):
        if self._job is not None:
            self._job.cancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def onReload(self):
        """Developer 'Reload': reload the kneeoa.slicer helpers first, then this module."""
        import importlib

        for name in ("nodes", "display", "jobs", "deps", "training", "latent_plot", "latent_cases"):
            if f"kneeoa.slicer.{name}" in sys.modules:
                importlib.reload(sys.modules[f"kneeoa.slicer.{name}"])
        ScriptedLoadableModuleWidget.onReload(self)

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterModified)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        self._lossNodes, self._latentPlot = (None, None), None  # their nodes went with the scene
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

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
        data, out = training.given_path(p.dataFolder), training.given_path(p.outputFolder)
        if self._shown.get("data") != data:
            self._shown["data"] = data
            self.ui.cohortSummaryLabel.text = training.cohort_summary(data)
        self.ui.headComboBox.enabled = p.variant == "dual"
        if self._shown.get("split") != p.latentSplit and self._latentPoints:
            self._showLatentModel()
        self._shown["split"] = p.latentSplit
        self._updateButtons(data, out)

    def _updateButtons(self, data=None, out=None):
        p = self._parameterNode
        if p is not None and data is None and out is None:
            data, out = training.given_path(p.dataFolder), training.given_path(p.outputFolder)
        state = training.run_state(out)
        idle = self._job is None
        self.ui.runStateLabel.text = state.describe() if out else _("Choose an output run folder.")
        self.ui.trainButton.enabled = idle and data is not None and state.kind == "empty"
        self.ui.studyButton.enabled = idle and data is not None and state.kind == "empty"
        self.ui.resumeButton.enabled = idle and state.resumable and (state.kind == "run" or data is not None)
        self.ui.cancelButton.enabled = not idle
        self.ui.openReportButton.enabled = training.report_path(out) is not None
        self.ui.computeLatentButton.enabled = self.ui.loadLatentButton.enabled = idle

    # --- training -------------------------------------------------------------------------------------------

    def onTrainButton(self):
        p = self._parameterNode
        if not self._ensureDependencies():
            return
        with showingErrors(_("Cannot start training.")):
            options = self.logic.trainingOptions(p.dataFolder, p.outputFolder, p.backbone, p.variant, p.head,
                                                 p.preset, p.epochs, p.inputSize, p.learningRate, p.seed, p.device)
            self._start("train", self.logic.startTraining(options), training.TrainingMonitor())

    def onStudyButton(self):
        p = self._parameterNode
        if not self._ensureDependencies():
            return
        with showingErrors(_("Cannot start the study.")):
            job, monitor = self.logic.startStudy(p.dataFolder, p.outputFolder, p.preset, p.epochs, p.device)
            self._start("study", job, monitor)

    def onResumeButton(self):
        p = self._parameterNode
        if not self._ensureDependencies():
            return
        with showingErrors(_("Cannot resume.")):
            job, monitor = self.logic.startResume(p.outputFolder, p.dataFolder, p.preset, p.epochs, p.device)
            self._start("resume", job, monitor)

    def onCancelButton(self):
        if self._job is None:
            return
        self._timer.stop()
        self._job.cancel()
        kind, self._job, self._jobKind = self._jobKind, None, None
        self.ui.progressBar.visible = False
        self.ui.statusLabel.text = _("Cancelled. The run keeps its last complete epoch: Resume continues it.") \
            if kind != "latent" else _("Cancelled.")
        self._updateButtons()

    def _start(self, kind, job, monitor=None):
        self._job, self._jobKind, self._monitor = job, kind, monitor
        if monitor is not None and kind != "latent":
            self._drawLoss()
        self.ui.progressBar.visible = True
        self.ui.progressBar.maximum = 1000 if monitor is not None else 0  # 0: busy indicator (latent commands)
        self.ui.progressBar.value = 0
        device = self._parameterNode.device
        note = deps.device_note(device) if device in ("auto", "cpu", "cuda") else None
        self.ui.statusLabel.text = _("Starting...") + " " + (note or "")
        self._updateButtons()
        self._timer.start()

    def _drawLoss(self):
        table, chart = training.update_loss_plot(self._monitor.history, slicer.mrmlScene, *self._lossNodes,
                                                 title=self._monitor.current_model or "Training")
        self._lossNodes = (table, chart)
        self.lossPlotView.mrmlPlotViewNode().SetPlotChartNodeID(chart.GetID())

    def _pollJob(self):
        job, monitor = self._job, self._monitor
        if job is None:
            return
        for event in job.poll():
            if monitor is not None and monitor.update(event) and self._jobKind != "latent":
                self._drawLoss()
            elif event["event"] == "text" and event["message"].strip():
                logging.info(event["message"])
        if monitor is not None and self._jobKind != "latent":
            self.ui.progressBar.value = int(1000 * monitor.fraction)
            self.ui.statusLabel.text = monitor.status()
        if job.running:
            return
        self._timer.stop()
        kind, self._job, self._jobKind = self._jobKind, None, None
        self.ui.progressBar.visible = False
        if job.returncode != 0:
            self.ui.statusLabel.text = _("Failed: {error}").format(error=job.error_message())
            slicer.util.errorDisplay(_("The KneeOA job failed:") + "\n" + job.error_message())
        elif kind == "latent":
            self.ui.statusLabel.text = _("Latent space computed.")
            self._showLatentSource(self._latentSource)
        else:
            self.ui.statusLabel.text = _("Finished. ") + monitor.status()
            # the new run or study is what one explores next: Show / Compute take it from here
            self._parameterNode.latentFolder = training.given_path(self._parameterNode.outputFolder)
        self._updateButtons()

    def onOpenReportButton(self):
        report = training.report_path(self._parameterNode.outputFolder)
        if report is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(report)))

    # --- latent space ---------------------------------------------------------------------------------------

    def onLatentButton(self, compute):
        p = self._parameterNode
        folder = p.latentFolder
        if training.given_path(p.latentCheckpoint) and not training.given_path(folder):
            folder = Path(slicer.util.tempDirectory("KneeOATrainingLatent"))  # where the checkpoint's tables go
        with showingErrors(_("Cannot show the latent space.")):
            source = self.logic.latentSource(folder, p.latentCheckpoint, p.latentCohort, compute, p.device)
            self._latentSource, self._caseIndex = source, None
            if source.steps:
                if not self._ensureDependencies():
                    return
                self._start("latent", latent_cases.JobChain(source.steps, self.logic.jobEnvironment()).start())
                self.ui.statusLabel.text = _("Computing embeddings and the PCA...")
            else:
                self._showLatentSource(source)

    def _showLatentSource(self, source):
        with showingErrors(_("Cannot read the latent tables.")):
            self._latentPoints = latent_plot.read_points(source.points_csv)
            self._latentSummary = latent_plot.read_summary(source.summary_csv)
            names = latent_plot.model_names(self._latentPoints)
            was_blocked = self.ui.modelComboBox.blockSignals(True)
            self.ui.modelComboBox.clear()
            for name in names:
                self.ui.modelComboBox.addItem(name)
            self.ui.modelComboBox.blockSignals(was_blocked)
            self._showLatentModel()

    def _showLatentModel(self):
        name = self.ui.modelComboBox.currentText
        if not name or not self._latentPoints:
            return
        with showingErrors(_("Cannot draw the latent space.")):
            self._latentPlot = latent_plot.update_latent_plot(self._latentPoints, name, slicer.mrmlScene,
                                                              self._parameterNode.latentSplit, self._latentPlot)
            self.latentPlotView.mrmlPlotViewNode().SetPlotChartNodeID(self._latentPlot.chart_node.GetID())
            rows = latent_plot.summary_rows(self._latentSummary.get(name))
            self.ui.latentSummaryLabel.text = "<table>" + "".join(
                f"<tr><td><b>{k}</b>&nbsp;</td><td>{v}</td></tr>" for k, v in rows) + "</table>"

    def onLatentPointsSelected(self, seriesIDs, selections):
        cases = latent_plot.cases_for_selection(slicer.mrmlScene, seriesIDs, selections)
        if not cases or self._latentSource is None:
            return
        case = cases[0]
        with showingErrors(_("Cannot load the case.")):
            if self._caseIndex is None:
                self._caseIndex = self.logic.caseIndex(self._latentSource)
            loaded = self.logic.loadCase(self._latentSource, case["case_id"], self._latentPlot.name, self._caseIndex)
            kl = "ungraded" if case["kl"] is None else f"KL {case['kl']}"
            extra = _(" with its saliency map") if loaded["saliency"] is not None else ""
            self.ui.selectedCaseLabel.text = (f"{case['case_id']} ({case['split']}, {kl}, PC1 {case['pc1']:.2f}, "
                                              f"PC2 {case['pc2']:.2f}): loaded{extra}.")

    def _exportPath(self, title, suffix, fileFilter):
        if self._latentPlot is None:
            slicer.util.errorDisplay(_("Show a latent space first."))
            return None
        default = str(Path(training.given_path(self._parameterNode.latentFolder) or Path.home())
                      / f"{self._latentPlot.name}_{self._latentPlot.split}_latent{suffix}")
        path = qt.QFileDialog.getSaveFileName(None, title, default, fileFilter)
        return Path(path) if path else None

    def onExportPng(self):
        path = self._exportPath(_("Export latent plot"), ".png", "PNG image (*.png)")
        if path is not None:
            with showingErrors(_("Export failed.")):
                latent_plot.export_png(self._latentPlot, path, self._latentSummary.get(self._latentPlot.name))

    def onExportCsv(self):
        path = self._exportPath(_("Export latent table"), ".csv", "CSV table (*.csv)")
        if path is not None:
            with showingErrors(_("Export failed.")):
                latent_plot.export_csv(self._latentPlot, path)

    def _ensureDependencies(self):
        """Offer to install what is missing (torch via the PyTorch extension, the rest with pip)."""
        report = deps.check()
        if report.ok:
            return True
        plan = deps.install_plan(report)
        if not slicer.util.confirmOkCancelDisplay(plan.message + "\n\n" + _("Install now?"), windowTitle="KneeOA"):
            return False
        with showingErrors(_("Installing KneeOA dependencies failed.")):
            deps.install(plan)
        return deps.check().ok


class KneeOATrainingLogic(ScriptedLoadableModuleLogic):
    """Training and the latent space without the GUI: start jobs, or run them and wait (console, self-test)."""

    def getParameterNode(self):
        return KneeOATrainingParameterNode(super().getParameterNode())

    def jobEnvironment(self):
        # Slicer's startup environment, as launchConsoleProcess uses; PythonSlicer sets up its own paths.
        base = slicer.util.startupEnvironment() if hasattr(slicer, "app") else dict(os.environ)
        return jobs.job_environment(base)

    def trainingOptions(self, dataFolder, outputFolder, backbone="resnet3d", variant="dual", head="chained",
                        preset="quick", epochs=0, inputSize=0, learningRate=0.0, seed=-1, device="auto", width=0):
        return training.TrainingOptions(dataFolder, outputFolder, backbone, variant, head, preset, int(epochs),
                                        int(inputSize), float(learningRate), int(seed), device, int(width))

    def startTraining(self, options):
        """Launch `kneeoa train` for a new run in the background; returns the jobs.Job."""
        return jobs.Job(training.train_command(options, jobs.slicer_python()), env=self.jobEnvironment()).start()

    def startStudy(self, dataFolder, outputFolder, preset="quick", epochs=0, device="auto"):
        """Launch `kneeoa study` (3x3 grid) in the background; returns (job, monitor)."""
        data, out = training.given_path(dataFolder), training.given_path(outputFolder)
        if data is None or out is None:
            raise ConfigError("choose the dataset folder and the output folder")
        argv = training.study_command(data, out, preset, int(epochs), device, python=jobs.slicer_python())
        models = [training.model_name(b, v) for b in training.STUDY_BACKBONES for v in training.STUDY_VARIANTS]
        return jobs.Job(argv, env=self.jobEnvironment()).start(), training.TrainingMonitor(models=models)

    def startResume(self, outputFolder, dataFolder=None, preset="quick", epochs=0, device="auto"):
        """Continue the unfinished run (or study) in `outputFolder`; returns (job, monitor)."""
        state = training.run_state(outputFolder)
        if state.kind == "study":
            return self.startStudy(dataFolder, outputFolder, preset, epochs, device)
        if not state.resumable:
            raise ConfigError("no unfinished run in this folder", state.folder)
        monitor = training.TrainingMonitor(epochs_total=state.epochs_total)
        monitor.load_history(state.folder)
        argv = training.resume_command(state.folder, int(epochs), device, jobs.slicer_python())
        return jobs.Job(argv, env=self.jobEnvironment()).start(), monitor

    def wait(self, job, monitor, onEvent=None, timeoutS=None):
        """Block until a started job ends, feeding the monitor (each epoch printed unless `onEvent` is given);
        JobError if it failed."""
        def note(event):
            if monitor.update(event) and onEvent is None:
                print(f"KneeOA: {monitor.status()}")  # console use: one line per epoch
            if onEvent is not None:
                onEvent(event)

        if job.wait(note, timeout_s=timeoutS) != 0:
            raise JobError(f"the job failed: {job.error_message()}")
        return monitor

    def train(self, dataFolder, outputFolder, onEvent=None, timeoutS=None, **options):
        """Train one model and wait (console, self-test); returns the TrainingMonitor with the epoch history."""
        job = self.startTraining(self.trainingOptions(dataFolder, outputFolder, **options))
        return self.wait(job, training.TrainingMonitor(), onEvent, timeoutS)

    def latentSource(self, folder=None, checkpoint=None, cohort=None, compute=False, device="auto"):
        return latent_cases.latent_source(folder, checkpoint, cohort, compute=compute, device=device,
                                          python=jobs.slicer_python())

    def computeLatent(self, folder=None, checkpoint=None, cohort=None, device="auto", timeoutS=None):
        """Embeddings + train-fitted PCA of a run (or checkpoint + cohort), waiting; returns the LatentSource."""
        source = self.latentSource(folder, checkpoint, cohort, compute=True, device=device)
        return latent_cases.run_source(source, self.jobEnvironment(), timeout_s=timeoutS)

    def showLatent(self, source, name=None, split="test", plot=None):
        """The latent scatter of one model (default: the first) as MRML nodes; returns a latent_plot.LatentPlot."""
        points = latent_plot.read_points(source.points_csv)
        return latent_plot.update_latent_plot(points, name or latent_plot.model_names(points)[0], slicer.mrmlScene,
                                              split, plot)

    @staticmethod
    def caseIndex(source):
        if source.cohort_root is None:
            raise ConfigError("choose the cohort folder the points come from ('Cohort folder')")
        return latent_cases.CaseIndex(source.cohort_root, source.labels)

    def loadCase(self, source, caseId, modelName, index=None):
        """Load a case of the latent plot (and the model's saliency map if the study wrote one) into the viewers."""
        saliency = latent_cases.saliency_file(source.saliency_dir, modelName, caseId)
        return latent_cases.load_case(caseId, index or self.caseIndex(source), slicer.mrmlScene, saliency,
                                      show=True)


class KneeOATrainingTest(ScriptedLoadableModuleTest):
    """Self-test for Slicer: a tiny training on a phantom cohort, then its latent space (about a minute on a CPU)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TrainAndExploreLatentSpace()

    def test_TrainAndExploreLatentSpace(self):
        import tempfile

        from kneeoa.data.phantom import generate_cohort

        self.delayDisplay("Generating a phantom cohort")
        folder = Path(tempfile.mkdtemp(prefix="KneeOATrainingTest-"))
        generate_cohort(folder / "cohort", n_train=8, n_test=4, shape=(24, 24, 24), seed=0, workers=1)
        logic = KneeOATrainingLogic()

        self.delayDisplay("Training one epoch")
        monitor = logic.train(folder / "cohort", folder / "run", epochs=1, inputSize=24, width=4, device="cpu")
        self.assertEqual([row["epoch"] for row in monitor.history], [1])
        self.assertTrue(training.run_state(folder / "run").finished)
        table, chart = training.update_loss_plot(monitor.history, slicer.mrmlScene)
        self.assertEqual(table.GetTable().GetNumberOfRows(), 1)

        self.delayDisplay("Latent space of the trained model")
        source = logic.computeLatent(folder / "run", device="cpu")
        plot = logic.showLatent(source, split="all")
        self.assertEqual(sum(t.GetTable().GetNumberOfRows() for t in plot.tables.values()), 12)
        case = latent_plot.table_points(next(iter(plot.tables.values())))[0]
        loaded = logic.loadCase(source, case["case_id"], plot.name)
        self.assertEqual(loaded["volume"].GetName(), case["case_id"])
        self.delayDisplay("Test passed")
