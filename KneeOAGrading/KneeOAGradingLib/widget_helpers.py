"""Widget-side parts of KneeOAGrading, mixed into KneeOAGradingWidget: the grading queue, the results panel and
the model manager.

Both use the widget's `ui`, `logic`, `_parameterNode` and the queue state it sets up in `__init__`.
"""

from pathlib import Path

import slicer
from slicer.i18n import tr as _

from kneeoa.slicer import deps, display, grading, module_widget, results, trust_view


class GradingQueue:
    """Grades volume nodes one after another, each in a background `kneeoa grade` job polled by `self._timer`."""

    def _startQueue(self, volumeIDs):
        p = self._parameterNode
        if not self._ensureDependencies():
            return
        options = None
        with module_widget.showing_errors(_("Cannot start grading."), wait_cursor=False):
            options = self.logic.gradingOptions(p.checkpoint, p.device, p.saliencyMethod, p.target, p.segmenter,
                                                p.segmentMissing, p.setLevel)
        if options is None:
            return
        self._options = options
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
        if module_widget.show_job_progress(self.ui, run.job, run.volume_node.GetName(), " " + self._deviceNote):
            return
        self._timer.stop()
        self._run = None
        try:
            self.logic.finishGrading(run, self._parameterNode.saliencyThreshold)
        except Exception as err:
            if grading.needs_cpu(err) and self._options.device != "cpu" and slicer.util.confirmYesNoDisplay(
                    str(err) + "\n\n" + _("Grade this volume on the CPU instead (slower)?"), windowTitle="KneeOA"):
                self._options = grading.on_cpu(self._options)  # this volume and the rest of the queue
                self._queue.insert(0, run.volume_node.GetID())
                self._startNext()
                return
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


class ResultsPanel:
    """Shows the selected volume's stored result (summary, table, KL chart, model card, viewers); no re-run."""

    def showResults(self, volumeNode):
        """Show the volume's stored result or say it is not graded yet."""
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
        self.ui.summaryLabel.text = trust_view.summary_html(results.summary_text(stored), stored)  # set + OOD banner
        self.ui.resultTableView.setMRMLTableNode(shown[results.ROLE_RESULT_TABLE])
        chart = shown[results.ROLE_KL_CHART]
        self._plotViewNode().SetPlotChartNodeID(chart.GetID() if chart else None)
        self._showCard(stored.get("card"))
        display.show_in_viewers(volumeNode, shown[results.ROLE_SALIENCY], shown[results.ROLE_CARTILAGE],
                                self._parameterNode.saliencyOpacity)

    def _plotViewNode(self):
        node = module_widget.plot_view_node(slicer.mrmlScene, "KneeOAGrading", "KneeOAGrading KL plot")
        self.klPlotView.setMRMLPlotViewNode(node)
        return node

    def _showCard(self, card):
        rows = results.card_rows(card) if card else []
        self.ui.modelCardLabel.text = module_widget.html_table(rows) if rows \
            else _("No model card (choose a checkpoint, or install the dependencies to read it).")

    def onGradedRowClicked(self, index):
        volume = results.volume_for_row(results.graded_table(slicer.mrmlScene), index.row(), slicer.mrmlScene)
        if volume is not None:
            self._parameterNode.inputVolume = volume  # observers show its results, saliency and cartilage


class ModelsPanel:
    """The model manager row: the per-user models and the bundled demo model; import (with checksum), remove."""

    def _fillModels(self, select=None):
        import qt

        self._models = self.logic.listModels()
        was_blocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        for entry in self._models:
            self.ui.modelComboBox.addItem(entry.label())
            self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, entry.trained_on, qt.Qt.ToolTipRole)
        chosen = select or (self._parameterNode and self.logic.checkpointPath(self._parameterNode.checkpoint))
        paths = [str(e.path) for e in self._models]
        if chosen is not None and str(chosen) in paths:
            self.ui.modelComboBox.currentIndex = paths.index(str(chosen))
        self.ui.modelComboBox.blockSignals(was_blocked)
        self._updateModelButtons()

    def _updateModelButtons(self):
        index = self.ui.modelComboBox.currentIndex
        entry = self._models[index] if 0 <= index < len(self._models) else None
        self.ui.removeModelButton.enabled = entry is not None and not entry.bundled

    def onModelChosen(self, index):
        if 0 <= index < len(self._models) and self._parameterNode is not None:
            self._parameterNode.checkpoint = self._models[index].path
        self._updateModelButtons()

    def onImportModel(self):
        import qt

        path = qt.QFileDialog.getOpenFileName(None, _("Import a KneeOA model"), "",
                                              _("KneeOA models (*.safetensors *.zip)"))
        if not path:
            return
        checksum = qt.QInputDialog.getText(None, _("Import a KneeOA model"),
                                           _("SHA-256 checksum (optional; a .sha256 file is read too):"))
        with module_widget.showing_errors(_("Cannot import the model.")):
            entry = self.logic.importModel(path, checksum.strip() or None)
            self._fillModels(select=entry.path)
            self._parameterNode.checkpoint = entry.path
            self.ui.statusLabel.text = _("Imported {name}.").format(name=entry.name)

    def onRemoveModel(self):
        index = self.ui.modelComboBox.currentIndex
        if not 0 <= index < len(self._models):
            return
        entry = self._models[index]
        if not slicer.util.confirmYesNoDisplay(_("Delete {path}?").format(path=entry.path), windowTitle="KneeOA"):
            return
        with module_widget.showing_errors(_("Cannot remove the model.")):
            self.logic.removeModel(entry)
            if self.logic.checkpointPath(self._parameterNode.checkpoint) == entry.path:
                self._parameterNode.checkpoint = self.logic.defaultCheckpoint() or Path("")
            self._fillModels()
