"""Both module self-tests on a Slicer without KneeOA's dependencies (the extension build farm, a fresh install):
they skip with a message naming what is missing instead of failing; with the dependencies they run (the full
KneeOAGrading self-test runs headless below, KneeOATraining's in test_slicer_training_module.py).

"Missing" is real: the requirement list names a distribution that is not installed, and the real metadata
check (kneeoa.slicer.deps) finds it absent. The Qt-based Slicer pieces are the stand-ins of slicer_helpers.
"""

from __future__ import annotations

import unittest
from pathlib import Path

import pytest
from slicer_helpers import fresh_scene, load_scripted_module, stand_in_file_loading

from kneeoa.slicer import deps

ROOT = Path(__file__).resolve().parents[2]
ABSENT = ("kneeoa-absent-dependency>=1.0",)
MODULES = [("KneeOAGrading", "test_GradePhantomCase"), ("KneeOATraining", "test_TrainAndExploreLatentSpace")]


def test_nothing_is_missing_in_the_test_environment():
    assert deps.missing_requirements() == []


def test_a_missing_distribution_is_reported_by_its_requirement():
    assert deps.missing_requirements(ABSENT) == list(ABSENT)


def _self_test_class(monkeypatch, name, requirements=None):
    """The module's <Name>Test class, its displayed messages collected in the returned list."""
    module = load_scripted_module(monkeypatch, ROOT / name / f"{name}.py")
    test_class = getattr(module, f"{name}Test")
    if requirements is not None:
        monkeypatch.setattr(test_class, "requirements", requirements)
    shown = []
    monkeypatch.setattr(test_class, "delayDisplay", lambda self, message, msec=0: shown.append(message))
    fresh_scene()
    return test_class, shown


@pytest.mark.parametrize(("name", "test_name"), MODULES)
def test_ctest_records_a_skip_naming_the_missing_package(monkeypatch, name, test_name):
    test_class, shown = _self_test_class(monkeypatch, name, ABSENT)
    result = unittest.TestResult()
    test_class(test_name).run(result)
    assert result.wasSuccessful() and len(result.skipped) == 1
    assert "kneeoa-absent-dependency" in result.skipped[0][1] and "skipped" in shown[0]


@pytest.mark.parametrize(("name", "test_name"), MODULES)
def test_reload_and_test_ends_with_the_message_not_an_error(monkeypatch, name, test_name):
    test_class, shown = _self_test_class(monkeypatch, name, ABSENT)
    ran = []
    monkeypatch.setattr(test_class, test_name, lambda self: ran.append(True))
    test_class("runTest").runTest()  # what Reload and Test calls: must not raise
    assert ran == [] and any("kneeoa-absent-dependency" in m for m in shown)


@pytest.mark.parametrize(("name", "test_name"), MODULES)
def test_with_the_dependencies_the_self_test_body_runs(monkeypatch, name, test_name):
    test_class, _shown = _self_test_class(monkeypatch, name)
    ran = []
    monkeypatch.setattr(test_class, test_name, lambda self: ran.append(True))
    test_class("runTest").runTest()
    assert ran == [True]


@pytest.mark.slow
def test_grading_self_test_grades_segments_and_grades_with_the_automatic_mask_headless(monkeypatch):
    """KneeOAGradingTest.runTest as ctest runs it: grade a phantom case with its labels, "Segment knee" a second
    one with the bundled demo segmenter (five named segments + thickness table), grade it with no cartilage
    node chosen (mask source automatic). The real `kneeoa grade` / `kneeoa segment` processes run."""
    test_class, shown = _self_test_class(monkeypatch, "KneeOAGrading")
    stand_in_file_loading(monkeypatch)  # slicer.util.loadVolume needs the Qt application
    result = unittest.TestResult()
    test_class("runTest").run(result)
    assert result.wasSuccessful() and not result.skipped, result.errors + result.failures
    assert "Segmenting with the bundled demo segmenter" in shown and "Grading without a cartilage node" in shown
    assert not any(m.startswith("Segment knee not tested") for m in shown)  # this checkout bundles the segmenter
    assert shown[-1] == "Test passed"
