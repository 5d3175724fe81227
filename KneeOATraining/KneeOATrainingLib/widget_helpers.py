"""Widget-side parts of KneeOATraining, mixed into KneeOATrainingWidget: background jobs and the latent-space panel.

Both use the widget's `ui`, `logic`, `_parameterNode`, `_updateButtons()` and the state it sets up in `__init__`.
"""

import logging
from pathlib import Path

import qt
import slicer
from slicer.i18n import tr as _

from kneeoa.slicer import deps, latent_cases, latent_plot, module_widget, training


class JobRunner:
    """Runs one background job at a time (train, study, resume or latent), polled by `self._timer`: progress
    bar, status line, live loss plot, Cancel."""

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
            # the new run or study is what one explores next: Show / Compute take it from here (unless the user
            # cleared the output field meanwhile: path parameters refuse None)
            finished = training.given_path(self._parameterNode.outputFolder)
            if finished is not None:
                self._parameterNode.latentFolder = finished
        self._updateButtons()

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


class LatentPanel:
    """The latent-space scatter: show or compute a run's tables, pick the model, load a clicked case, export."""

    def onLatentButton(self, compute):
        p = self._parameterNode
        folder = p.latentFolder
        if training.given_path(p.latentCheckpoint) and not training.given_path(folder):
            folder = Path(slicer.util.tempDirectory("KneeOATrainingLatent"))  # where the checkpoint's tables go
        with module_widget.showing_errors(_("Cannot show the latent space.")):
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
        with module_widget.showing_errors(_("Cannot read the latent tables.")):
            deps.require(_("Showing the latent space"))
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
        with module_widget.showing_errors(_("Cannot draw the latent space.")):
            self._latentPlot = latent_plot.update_latent_plot(self._latentPoints, name, slicer.mrmlScene,
                                                              self._parameterNode.latentSplit, self._latentPlot)
            self.latentPlotView.mrmlPlotViewNode().SetPlotChartNodeID(self._latentPlot.chart_node.GetID())
            rows = latent_plot.summary_rows(self._latentSummary.get(name))
            self.ui.latentSummaryLabel.text = module_widget.html_table(rows)

    def onLatentPointsSelected(self, seriesIDs, selections):
        cases = latent_plot.cases_for_selection(slicer.mrmlScene, seriesIDs, selections)
        if not cases or self._latentSource is None:
            return
        case = cases[0]
        with module_widget.showing_errors(_("Cannot load the case.")):
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
            with module_widget.showing_errors(_("Export failed.")):
                deps.require(_("Exporting a PNG"))
                latent_plot.export_png(self._latentPlot, path, self._latentSummary.get(self._latentPlot.name))

    def onExportCsv(self):
        path = self._exportPath(_("Export latent table"), ".csv", "CSV table (*.csv)")
        if path is not None:
            with module_widget.showing_errors(_("Export failed.")):
                latent_plot.export_csv(self._latentPlot, path)
