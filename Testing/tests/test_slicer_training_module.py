"""KneeOATrainingLogic and the module's self-test, run headless on real MRML nodes and real `kneeoa` jobs.

The module file imports Slicer's Qt-based pieces (qt, ScriptedLoadableModule, parameterNodeWrapper,
i18n), which the slicer-core wheel does not have; they are replaced by small stand-ins named as such.
"""

from __future__ import annotations

import ast
import unittest
from pathlib import Path

import pytest
from slicer_helpers import fresh_scene, load_scripted_module

from kneeoa.errors import ConfigError
from kneeoa.slicer import training

ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = ROOT / "KneeOATraining" / "KneeOATraining.py"


@pytest.fixture
def module(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs inherit it: one thread each on CI
    fresh_scene()
    return load_scripted_module(monkeypatch, MODULE_FILE)


def test_module_file_stays_a_thin_layer():
    """Only Slicer, the standard library and kneeoa's Slicer glue: no numpy/torch/model code in the module
    or in its helper package."""
    trees = [ast.parse(path.read_text()) for path in [MODULE_FILE, *MODULE_FILE.parent.glob("KneeOATrainingLib/*.py")]]
    assert len(trees) > 1
    imported = {alias.name.split(".")[0] for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    allowed = {"logging", "os", "sys", "contextlib", "pathlib", "typing", "qt", "slicer", "vtk", "tempfile",
               "importlib", "slicer.i18n", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule",
               "slicer.util", "kneeoa.errors", "kneeoa.slicer", "kneeoa.data.phantom", "KneeOATrainingLib",
                   "kneeoa.contracts.catalog", "kneeoa.contracts.vocab"}
    assert imported <= allowed, f"unexpected imports: {sorted(imported - allowed)}"


def test_logic_builds_training_options_from_parameter_values(module, tmp_path):
    logic = module.KneeOATrainingLogic()
    options = logic.trainingOptions(str(tmp_path / "c"), tmp_path / "r", "nnmamba", "single-oa", "chained", "quick",
                                    epochs=4.0, inputSize=32, learningRate=1e-3, seed=3, device="cpu")
    assert isinstance(options, training.TrainingOptions)
    assert (options.data, options.out, options.backbone, options.epochs, options.seed) == \
        (tmp_path / "c", tmp_path / "r", "nnmamba", 4, 3)
    with pytest.raises(ConfigError, match="dataset folder"):
        logic.trainingOptions(Path("."), tmp_path / "r")


def test_resume_needs_an_unfinished_run(module, tmp_path):
    logic = module.KneeOATrainingLogic()
    with pytest.raises(ConfigError, match="no unfinished run"):
        logic.startResume(tmp_path)
    (tmp_path / "study" / "models").mkdir(parents=True)
    with pytest.raises(ConfigError, match="dataset folder and the output folder"):
        logic.startResume(tmp_path / "study")  # a study is resumed by re-running it: it needs its data


def test_case_index_needs_the_cohort_folder(module, tmp_path):
    from kneeoa.slicer.latent_cases import LatentSource

    source = LatentSource(tmp_path / "p.csv", tmp_path / "s.csv")
    with pytest.raises(ConfigError, match="cohort folder"):
        module.KneeOATrainingLogic.caseIndex(source)


@pytest.mark.slow
def test_self_test_trains_and_explores_the_latent_space_headless(module):
    """KneeOATrainingTest.runTest, as Slicer's ctest runs it (phantom -> 1 epoch -> predict + latent -> case)."""
    result = unittest.TestResult()
    module.KneeOATrainingTest("runTest").run(result)
    assert result.wasSuccessful(), result.errors + result.failures


def test_ctest_finds_exactly_the_module_self_test(module):
    """slicer.testing.runUnitTest loads every TestCase of the module: the Lib's base class must not be one."""
    suite = unittest.TestLoader().loadTestsFromModule(module)
    found = [test.id() for tests in suite for test in tests]
    assert found == ["KneeOATraining.KneeOATrainingTest.test_TrainAndExploreLatentSpace"]
