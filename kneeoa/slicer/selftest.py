"""What the two module self-tests share (KneeOAGradingLib/selftest.py, KneeOATrainingLib/selftest.py).

Standard library only at import; slicer and the phantom generator are imported when a test runs.

The extension build farm and a fresh install's *Reload and Test* run the self-tests in a Slicer that has
neither torch nor nibabel. Like SlicerMONAIAuto3DSeg, a self-test then *skips* with a message naming what
is missing (unittest's skip: the factory's ctest counts it as passed) instead of failing on an import;
with the dependencies installed it runs fully.
"""

from __future__ import annotations

import unittest
from pathlib import Path
from typing import Any


def skip_message(missing: list[str]) -> str:
    return ("KneeOA self-test skipped: dependencies are not installed (" + ", ".join(missing) + "). "
            "Open the module and accept the offer to install them (or see the README), then run the test again.")


class ModuleSelfTestMixin:
    """Mixed into a ScriptedLoadableModuleTest: an empty scene before each test, the module's logic, and a
    phantom cohort to work on (real files, so the self-test runs without downloads)."""

    logicClass: Any = None  # the module's Logic class, set by the module file's <Module>Test
    requirements: tuple[str, ...] | None = None  # None: everything KneeOA needs (deps.REQUIREMENTS)

    def setUp(self) -> None:
        import slicer

        from kneeoa.slicer.deps import missing_requirements

        missing = missing_requirements(self.requirements)
        if missing:
            message = skip_message(missing)
            self.delayDisplay(message)
            self.skipTest(message)
        slicer.mrmlScene.Clear()

    def runTests(self, *tests: Any) -> bool:
        """*Reload and Test*'s entry (`runTest`): setUp, then each test; False (after showing why) when the
        dependencies are missing. unittest's runner (ctest) calls setUp itself and records the skip."""
        try:
            self.setUp()
        except unittest.SkipTest:
            return False
        for test in tests:
            test()
        return True

    def phantomFolder(self, prefix: str, cohort: str = "", **phantom: Any) -> Path:
        """A new temporary folder with a phantom OAI-ZIB-CM cohort in `folder / cohort` (seed 0, one worker)."""
        import tempfile

        from kneeoa.data.phantom import generate_cohort

        folder = Path(tempfile.mkdtemp(prefix=prefix))
        generate_cohort(folder / cohort, seed=0, workers=1, **phantom)
        return folder
