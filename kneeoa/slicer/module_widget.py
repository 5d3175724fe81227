"""What the KneeOAGrading and KneeOATraining module widgets share, so neither module file repeats it.

Standard library only at import: vtk, slicer and Slicer's dialogs are imported inside the functions,
so the parameter-node plumbing, plot-view nodes and HTML tables stay testable headless.
"""

from __future__ import annotations

import html
import importlib
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

# kneeoa.slicer submodules in dependency order: a module is reloaded after the ones it imports.
RELOAD_ORDER = ("nodes", "display", "results", "jobs", "deps", "grading", "training", "latent_plot",
                "latent_cases", "selftest", "module_widget")


def _modified_event() -> int:
    from vtk import vtkCommand

    return vtkCommand.ModifiedEvent


class ModuleWidgetMixin:
    """Mixed into a module widget (after ScriptedLoadableModuleWidget and VTKObservationMixin): keeps one
    @parameterNodeWrapper node connected to `self.ui`, calling `self._onParameterModified()` when it changes,
    and offers to install missing dependencies.

    The widget provides `ui`, `initializeParameterNode()` and `_onParameterModified(caller=None, event=None)`.
    """

    _parameterNode: Any = None
    _parameterNodeGuiTag: Any = None

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, _modified_event(), self._onParameterModified)

    def setParameterNode(self, inputParameterNode: Any) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, _modified_event(), self._onParameterModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # .ui widgets carry a "SlicerParameterName" property naming their parameter
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, _modified_event(), self._onParameterModified)
            self._onParameterModified()

    def _ensureDependencies(self) -> bool:
        """Offer to install what is missing (torch via the PyTorch extension, the rest with pip)."""
        return offer_dependencies()


def reload_helpers(*packages: str) -> list[str]:
    """Developer 'Reload': reload the loaded kneeoa.slicer submodules (dependencies first), then the loaded
    submodules of each helper package (e.g. "KneeOAGradingLib"), so the module file re-imports fresh code."""
    names = [f"kneeoa.slicer.{name}" for name in RELOAD_ORDER]
    names += sorted(name for name in sys.modules if name.startswith("kneeoa.slicer.") and name not in names)
    for package in packages:
        names += sorted(name for name in sys.modules if name.startswith(package + "."))
    reloaded = [name for name in names if name in sys.modules]
    for name in reloaded:
        importlib.reload(sys.modules[name])
    return reloaded


def remember_paths(*line_edits: Any) -> None:
    """Add each ctkPathLineEdit's current path to its history (saved under its `settingKey`) when one is set:
    called when a job starts, so the drop-down offers the folders and checkpoints used before."""
    for edit in line_edits:
        if str(getattr(edit, "currentPath", "") or "").strip() not in ("", "."):
            edit.addCurrentPathToHistory()


def html_table(rows: Iterable[tuple[Any, Any]]) -> str:
    """(name, value) rows as the small two-column HTML table the module panels show in a QLabel.

    Names and values are HTML-escaped: they come from model cards and tables (files), and a QLabel renders
    `<img src=...>` or `<a href=...>` in them as rich text."""
    return "<table>" + "".join(f"<tr><td><b>{html.escape(str(k))}</b>&nbsp;</td><td>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def show_job_progress(ui: Any, job: Any, name: str, note: str = "") -> bool:
    """One timer tick of a background job: its "progress" stages on `ui.statusLabel` ("NAME: STAGE" + `note`),
    its fraction on `ui.progressBar` (0-1000); True while it still runs."""
    for event in job.poll():
        if event["event"] == "progress" and event.get("stage"):
            ui.statusLabel.text = f"{name}: {event['stage']}{note}"
    ui.progressBar.value = int(1000 * job.fraction)
    return job.running


def plot_view_node(scene: Any, tag: str, name: str | None = None) -> Any:
    """The module's own vtkMRMLPlotViewNode (a singleton tagged `tag`), created on first use."""
    node = scene.GetSingletonNode(tag, "vtkMRMLPlotViewNode")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLPlotViewNode", name or tag)
        node.SetSingletonTag(tag)
    return node


@contextmanager
def showing_errors(message: str, wait_cursor: bool = True) -> Iterator[None]:
    """Show an exception to the user and stop there (a Qt slot has nobody to re-raise to)."""
    import slicer.util

    try:
        with slicer.util.tryWithErrorDisplay(message, waitCursor=wait_cursor):
            yield
    except Exception:
        logging.debug("shown to the user", exc_info=True)


def offer_dependencies() -> bool:
    """Ask (Slicer dialog) to install what is missing, install it showing any error; True when all is there."""
    import slicer.util
    from slicer.i18n import tr as _

    from kneeoa.slicer import deps

    def confirm(message: str) -> bool | str:
        """Install from the internet (True), from a wheelhouse folder (its path) or not at all (False)."""
        import qt

        from kneeoa.slicer import wheelhouse

        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle("KneeOA")
        box.setText(message + "\n\n" + _("Install now? Without internet, choose a folder made by "
                                         "`kneeoa wheelhouse` on a connected machine."))
        online = box.addButton(_("Install"), qt.QMessageBox.AcceptRole)
        offline = box.addButton(_("Install from a folder..."), qt.QMessageBox.ActionRole)
        box.addButton(qt.QMessageBox.Cancel)
        box.exec_()
        if box.clickedButton() == online:
            return True
        if box.clickedButton() != offline:
            return False
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("KneeOA wheelhouse folder"))
        problems = wheelhouse.verify(folder) if folder else ["no folder chosen"]
        if problems:
            slicer.util.errorDisplay(_("Not a usable wheelhouse:") + "\n" + "\n".join(problems[:5]))
            return False
        return folder

    def install(plan: deps.InstallPlan, find_links: str | None = None) -> None:  # wait cursor only while installing
        with showing_errors(_("Installing KneeOA dependencies failed.")):
            deps.install(plan, find_links=find_links)

    return deps.ensure(confirm, install)
