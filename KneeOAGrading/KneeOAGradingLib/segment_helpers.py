"""Widget side of "Segment knee", mixed into KneeOAGradingWidget: one background `kneeoa segment` job with
progress and Cancel (the same button), the result shown as the volume's Segmentation and thickness table.

Uses the widget's `ui`, `logic`, `_parameterNode`, and `_segRun` / `_segTimer` that it sets up.
"""

import slicer
from slicer.i18n import tr as _

from kneeoa.slicer import deps, display, module_widget


class SegmentationPanel:
    _segRun = None  # the widget's __init__ sets these; class defaults keep cleanup safe on a half-built widget
    _segTimer = None

    def onSegmentButton(self):
        if self._segRun is not None:
            self._cancelSegmentation()
            return
        if self._run is not None:  # one background job at a time: the progress bar is shared
            self.ui.statusLabel.text = _("Grading is running; segment when it is done (or cancel it).")
            return
        p = self._parameterNode
        if p is None or p.inputVolume is None or not self._ensureDependencies():
            return
        with module_widget.showing_errors(_("Cannot start segmentation."), wait_cursor=False):
            self._segRun = self.logic.startSegmentation(p.inputVolume, p.segmenter, p.device)
        if self._segRun is None:
            return
        self._setSegmenting(True)
        self.ui.statusLabel.text = _("Segmenting {name}...").format(name=p.inputVolume.GetName()) + " " + \
            (deps.device_note(p.device) or "")
        self._segTimer.start()

    def _pollSegmentation(self):
        run = self._segRun
        if module_widget.show_job_progress(self.ui, run.job, run.volume_node.GetName()):
            return
        self._segTimer.stop()
        self._segRun = None
        self._setSegmenting(False)
        try:
            result = run.finish()
        except Exception as err:
            self.ui.statusLabel.text = _("Segmentation failed.")
            slicer.util.errorDisplay(str(err))
            return
        display.show_cartilage_outlines(result.segmentation_node)
        self.ui.statusLabel.text = _("Segmented {name}; cartilage thickness in '{table}'.").format(
            name=run.volume_node.GetName(), table=result.thickness_table_node.GetName())
        if self._parameterNode.cartilage is None:
            self._parameterNode.cartilage = result.segmentation_node  # outlines and overlap use it

    def _cancelSegmentation(self):
        if self._segRun is not None:
            if self._segTimer is not None:
                self._segTimer.stop()
            self._segRun.job.cancel()
            self._segRun.cleanup()
            self._segRun = None
            self._setSegmenting(False)
            self.ui.statusLabel.text = _("Segmentation cancelled.")

    def _setSegmenting(self, running):
        self.ui.segmentButton.text = _("Cancel segmentation") if running else _("Segment knee")
        self.ui.applyButton.enabled = not running and bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.gradeAllButton.enabled = not running
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
