"""KneeOATraining: train KneeOA models on a cohort folder and explore the cohort's latent space, in 3D Slicer.

A thin module: command lines, run folders, progress parsing and the loss plot live in
`kneeoa.slicer.training`, the latent tables and their plot in `kneeoa.slicer.latent_plot` and
`kneeoa.slicer.latent_cases`, the widget's job polling, latent panel and the self-test body in
`KneeOATrainingLib`; training, embeddings and the PCA run in `kneeoa` in background processes.
"""

import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
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
# (with KneeOATrainingLib/) on sys.path; loading the file by path, as the pytest suite does, needs it added.
_here = Path(__file__).resolve().parent
for _root in (_here.parent, _here):
    if str(_root) not in sys.path and (_root == _here or (_root / "kneeoa" / "__init__.py").is_file()):
        sys.path.insert(0, str(_root))

from KneeOATrainingLib import selftest, widget_helpers  # noqa: E402  (needs the path above)

from kneeoa.contracts.catalog import DEFAULT_BACKBONE, backbone_names, study_backbones  # noqa: E402
from kneeoa.contracts.vocab import DEVICES, HEADS, PRESETS, VARIANTS, model_name  # noqa: E402
from kneeoa.errors import ConfigError, JobError  # noqa: E402
from kneeoa.slicer import deps, jobs, latent_cases, latent_plot, module_widget, training  # noqa: E402


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
    backbone: Annotated[str, Choice(list(backbone_names()))] = DEFAULT_BACKBONE
    variant: Annotated[str, Choice(list(VARIANTS))] = "dual"
    head: Annotated[str, Choice(list(HEADS))] = "chained"
    preset: Annotated[str, Choice(list(PRESETS))] = "quick"
    outputFolder: Path
    epochs: Annotated[int, WithinRange(0, 10000)] = 0  # 0: the preset's (the spin box shows "preset")
    inputSize: Annotated[int, WithinRange(0, 512)] = 0
    learningRate: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    seed: Annotated[int, WithinRange(-1, 1000000)] = -1
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    latentFolder: Path
    latentCheckpoint: Path
    latentCohort: Path
    latentSplit: Annotated[str, Choice(list(latent_plot.SPLITS))] = "test"
    cvFolds: Annotated[int, WithinRange(2, 20)] = 5
    cvSeeds: Annotated[int, WithinRange(1, 20)] = 3
    cvJobs: Annotated[int, WithinRange(1, 64)] = 1


class KneeOATrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, module_widget.ModuleWidgetMixin,
                           widget_helpers.JobRunner, widget_helpers.LatentPanel):
    """The training panel; job polling and the latent-space panel live in KneeOATrainingLib.widget_helpers."""

    POLL_MS = 300
    COHORT_SCAN_DELAY_MS = 600

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
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
        self._configurePlotViews()
        self.latentPlotView.connect("dataSelected(vtkStringArray*,vtkCollection*)", self.onLatentPointsSelected)
        self.ui.progressBar.visible = False
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._pollJob)
        # The cohort summary scans the folder: once typing pauses, not on every keystroke of the path.
        self._cohortTimer = qt.QTimer()
        self._cohortTimer.setSingleShot(True)
        self._cohortTimer.setInterval(self.COHORT_SCAN_DELAY_MS)
        self._cohortTimer.connect("timeout()", self._showCohortSummary)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for button, slot in ((self.ui.trainButton, self.onTrainButton), (self.ui.studyButton, self.onStudyButton),
                             (self.ui.cvStudyButton, self.onCVStudyButton),
                             (self.ui.resumeButton, self.onResumeButton), (self.ui.cancelButton, self.onCancelButton),
                             (self.ui.openReportButton, self.onOpenReportButton),
                             (self.ui.loadLatentButton, lambda: self.onLatentButton(False)),
                             (self.ui.computeLatentButton, lambda: self.onLatentButton(True)),
                             (self.ui.exportPngButton, self.onExportPng), (self.ui.exportCsvButton, self.onExportCsv)):
            button.connect("clicked(bool)", slot)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", lambda index: self._showLatentModel())
        self.initializeParameterNode()

    def _configurePlotViews(self):
        """Our plot view nodes, left click selecting points (default is pan) so a picked point loads its case.
        Again after a scene close: `Clear` resets the view nodes to their defaults."""
        for view, tag in ((self.lossPlotView, "KneeOATrainingLoss"), (self.latentPlotView, "KneeOATrainingLatent")):
            view.setMRMLPlotViewNode(module_widget.plot_view_node(slicer.mrmlScene, tag))
        self.latentPlotView.mrmlPlotViewNode().SetInteractionMode(slicer.vtkMRMLPlotViewNode.InteractionModeSelectPoints)

    def _plotView(self, frame, tag):
        view = slicer.qMRMLPlotView()
        view.setMRMLScene(slicer.mrmlScene)
        view.setMRMLPlotViewNode(module_widget.plot_view_node(slicer.mrmlScene, tag))
        frame.layout().addWidget(view)
        return view

    def cleanup(self):
        self._timer.stop()  # no callback into a widget that is going away
        self._cohortTimer.stop()
        if self._job is not None:
            self._job.cancel()
            self._job, self._jobKind, self._monitor = None, None, None
        self.removeObservers()

    def onReload(self):
        """Developer 'Reload': reload the kneeoa.slicer helpers and KneeOATrainingLib first, then this module."""
        module_widget.reload_helpers("KneeOATrainingLib")
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        self._lossNodes, self._latentPlot = (None, None), None  # their nodes went with the scene
        self._configurePlotViews()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def _onParameterModified(self, caller=None, event=None):
        p = self._parameterNode
        if p is None:
            return
        data, out = training.given_path(p.dataFolder), training.given_path(p.outputFolder)
        if self._shown.get("data") != data:
            self._shown["data"] = data
            self._cohortTimer.start()  # restarts while the user types
        self.ui.headComboBox.enabled = p.variant == "dual"
        if self._shown.get("split") != p.latentSplit and self._latentPoints:
            self._showLatentModel()
        self._shown["split"] = p.latentSplit
        self._updateButtons(data, out)

    def _showCohortSummary(self):
        self.ui.cohortSummaryLabel.text = training.cohort_summary(self._shown.get("data"))

    def _updateButtons(self, data=None, out=None):
        p = self._parameterNode
        if p is not None and data is None and out is None:
            data, out = training.given_path(p.dataFolder), training.given_path(p.outputFolder)
        state = training.run_state(out)
        idle = self._job is None
        self.ui.runStateLabel.text = state.describe() if out else _("Choose an output run folder.")
        self.ui.trainButton.enabled = idle and data is not None and state.kind == "empty"
        self.ui.studyButton.enabled = idle and data is not None and state.kind == "empty"
        self.ui.cvStudyButton.enabled = self.ui.studyButton.enabled
        self.ui.resumeButton.enabled = idle and state.resumable and (state.kind == "run" or data is not None)
        self.ui.cancelButton.enabled = not idle
        self.ui.openReportButton.enabled = training.report_path(out) is not None
        self.ui.computeLatentButton.enabled = self.ui.loadLatentButton.enabled = idle

    # --- training -------------------------------------------------------------------------------------------

    def _launch(self, failure, kind, start):
        """The Train / Study / CV study / Resume buttons: dependencies first, the folders remembered, one clear
        error (`failure`) if the job cannot start; `start()` returns (job, monitor)."""
        if not self._ensureDependencies():
            return
        module_widget.remember_paths(self.ui.dataFolderPathLineEdit, self.ui.outputFolderPathLineEdit)
        with module_widget.showing_errors(failure):
            self._start(kind, *start())

    def onTrainButton(self):
        p = self._parameterNode

        def start():
            options = self.logic.trainingOptions(p.dataFolder, p.outputFolder, p.backbone, p.variant, p.head,
                                                 p.preset, p.epochs, p.inputSize, p.learningRate, p.seed, p.device)
            return self.logic.startTraining(options), training.TrainingMonitor()

        self._launch(_("Cannot start training."), "train", start)

    def onStudyButton(self):
        p = self._parameterNode
        self._launch(_("Cannot start the study."), "study", lambda: self.logic.startStudy(
            p.dataFolder, p.outputFolder, p.preset, p.epochs, p.device))

    def onCVStudyButton(self):
        p = self._parameterNode
        self._launch(_("Cannot start the cross-validated study."), "study", lambda: self.logic.startCVStudy(
            p.dataFolder, p.outputFolder, p.cvFolds, p.cvSeeds, p.cvJobs, p.preset, p.epochs, p.device))

    def onResumeButton(self):
        p = self._parameterNode
        self._launch(_("Cannot resume."), "resume", lambda: self.logic.startResume(
            p.outputFolder, p.dataFolder, p.preset, p.epochs, p.device, p.cvJobs))

    def onOpenReportButton(self):
        report = training.report_path(self._parameterNode.outputFolder)
        if report is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(report)))


class KneeOATrainingLogic(ScriptedLoadableModuleLogic):
    """Training and the latent space without the GUI: start jobs, or run them and wait (console, self-test)."""

    def getParameterNode(self):
        return KneeOATrainingParameterNode(super().getParameterNode())

    def jobEnvironment(self):
        return jobs.slicer_job_environment()

    def trainingOptions(self, dataFolder, outputFolder, backbone="resnet3d", variant="dual", head="chained",
                        preset="quick", epochs=0, inputSize=0, learningRate=0.0, seed=-1, device="auto", width=0):
        return training.TrainingOptions(dataFolder, outputFolder, backbone, variant, head, preset, int(epochs),
                                        int(inputSize), float(learningRate), int(seed), device, int(width))

    def _startJob(self, argv):
        return jobs.Job(argv, env=self.jobEnvironment()).start()

    @staticmethod
    def _studyFolders(dataFolder, outputFolder):
        """A study's dataset and output folders (ConfigError if either is unset), once its dependencies are there."""
        data, out = training.given_path(dataFolder), training.given_path(outputFolder)
        if data is None or out is None:
            raise ConfigError("choose the dataset folder and the output folder")
        deps.require(_("A study"))
        return data, out

    def startTraining(self, options):
        """Launch `kneeoa train` for a new run in the background; returns the jobs.Job."""
        deps.require(_("Training"))
        return self._startJob(training.train_command(options, jobs.slicer_python()))

    def startStudy(self, dataFolder, outputFolder, preset="quick", epochs=0, device="auto"):
        """Launch `kneeoa study` (3x3 grid) in the background; returns (job, monitor)."""
        data, out = self._studyFolders(dataFolder, outputFolder)
        argv = training.study_command(data, out, preset, int(epochs), device, python=jobs.slicer_python())
        models = [model_name(b, v) for b in study_backbones() for v in VARIANTS]
        return self._startJob(argv), training.TrainingMonitor(models=models)

    def startCVStudy(self, dataFolder, outputFolder, folds=5, seeds=3, jobsAtOnce=1, preset="quick", epochs=0,
                     device="auto", backbones=None, variants=VARIANTS, width=0, inputSize=0):
        """Launch `kneeoa study --protocol cv` (local executor) in the background; returns (job, monitor).
        The report (STUDY/report.html) opens with Open report when it is done."""
        data, out = self._studyFolders(dataFolder, outputFolder)
        argv = training.cv_study_command(data, out, int(folds), int(seeds), int(jobsAtOnce), preset, int(epochs),
                                         device, backbones, variants, int(width), int(inputSize),
                                         python=jobs.slicer_python())
        monitor = training.TrainingMonitor(models=training.cv_run_names(int(folds), int(seeds), backbones, variants))
        return self._startJob(argv), monitor

    def startResume(self, outputFolder, dataFolder=None, preset="quick", epochs=0, device="auto", jobsAtOnce=1):
        """Continue the unfinished run (or study) in `outputFolder`; returns (job, monitor)."""
        state = training.run_state(outputFolder)
        cv = training.cv_settings(outputFolder)
        if cv is not None:  # a CV study resumes with its own folds, seeds and grid
            return self.startCVStudy(cv["data"], outputFolder, cv["folds"], cv["seeds"], jobsAtOnce, cv["preset"],
                                     epochs or cv["epochs"], device, cv["backbones"], cv["variants"], cv["width"],
                                     cv["input_size"])
        if state.kind == "study":
            return self.startStudy(dataFolder, outputFolder, preset, epochs, device)
        if not state.resumable:
            raise ConfigError("no unfinished run in this folder", state.folder)
        monitor = training.TrainingMonitor(epochs_total=state.epochs_total)
        monitor.load_history(state.folder)
        argv = training.resume_command(state.folder, int(epochs), device, jobs.slicer_python())
        return self._startJob(argv), monitor

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
        deps.require(_("Computing the latent space"))
        source = self.latentSource(folder, checkpoint, cohort, compute=True, device=device)
        return latent_cases.run_source(source, self.jobEnvironment(), timeout_s=timeoutS)

    def showLatent(self, source, name=None, split="test", plot=None):
        """The latent scatter of one model (default: the first) as MRML nodes; returns a latent_plot.LatentPlot."""
        deps.require(_("Showing the latent space"))
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
        deps.require(_("Loading a case"))
        saliency = latent_cases.saliency_file(source.saliency_dir, modelName, caseId)
        return latent_cases.load_case(caseId, index or self.caseIndex(source), slicer.mrmlScene, saliency,
                                      show=True)


class KneeOATrainingTest(selftest.TrainingSelfTest):
    """The self-test (KneeOATrainingLib/selftest.py) under the name Reload and Test and ctest look for."""

    logicClass = KneeOATrainingLogic

    def runTest(self):
        self.runTests(self.test_TrainAndExploreLatentSpace)  # skips with a message when torch & co. are not installed yet
