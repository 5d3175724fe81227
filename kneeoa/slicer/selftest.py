"""What the two module self-tests share (KneeOAGradingLib/selftest.py, KneeOATrainingLib/selftest.py).

Standard library only at import; slicer and the phantom generator are imported when a test runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ModuleSelfTestMixin:
    """Mixed into a ScriptedLoadableModuleTest: an empty scene before each test, the module's logic, and a
    phantom cohort to work on (real files, so the self-test runs without downloads)."""

    logicClass: Any = None  # the module's Logic class, set by the module file's <Module>Test

    def setUp(self) -> None:
        import slicer

        slicer.mrmlScene.Clear()

    def phantomFolder(self, prefix: str, cohort: str = "", **phantom: Any) -> Path:
        """A new temporary folder with a phantom OAI-ZIB-CM cohort in `folder / cohort` (seed 0, one worker)."""
        import tempfile

        from kneeoa.data.phantom import generate_cohort

        folder = Path(tempfile.mkdtemp(prefix=prefix))
        generate_cohort(folder / cohort, seed=0, workers=1, **phantom)
        return folder
