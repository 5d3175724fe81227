"""Helpers for the headless Slicer glue tests (real MRML classes from the `slicer-core` wheel)."""

from __future__ import annotations

import importlib.util
import sys
import types
import unittest
from pathlib import Path

import numpy as np


def fresh_scene():
    """A new, empty MRML scene installed as `slicer.mrmlScene` (what slicer.util functions use)."""
    import slicer
    from slicer import vtkMRMLScene

    slicer.mrmlScene = vtkMRMLScene()
    return slicer.mrmlScene


def oblique_affine(spacing=(0.4, 0.55, 0.9), degrees=(25.0, -10.0, 40.0), origin=(-12.0, 30.0, 7.5)) -> np.ndarray:
    """ijk->RAS with non-unit, anisotropic spacing and a rotation about all three axes (no shear)."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def knee_labels(shape=(12, 10, 8)) -> np.ndarray:
    """A small label map with all five OAI-ZIB-CM labels in known, distinct voxel counts."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[1:5, 1:4, 1:3] = 1    # femur: 4*3*2 = 24
    labels[5:7, 1:4, 1:3] = 2    # femoral cartilage: 2*3*2 = 12
    labels[1:4, 5:9, 4:7] = 3    # tibia: 3*4*3 = 36
    labels[4:6, 5:7, 4:6] = 4    # medial tibial cartilage: 2*2*2 = 8
    labels[8:11, 5:6, 4:7] = 5   # lateral tibial cartilage: 3*1*3 = 9
    return labels


def stand_in_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for the parts of Slicer that need its Qt application (not in slicer-core)."""
    qt = types.ModuleType("qt")
    qt.QTimer = type("QTimer", (), {})
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = lambda choices: ("Choice", tuple(choices))
    wrapper.WithinRange = lambda lo, hi: ("WithinRange", lo, hi)
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleLogic:
        def __init__(self, *args):
            pass

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            pass

    scripted.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {})
    scripted.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    scripted.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    return {"qt": qt, "slicer.i18n": i18n, "slicer.parameterNodeWrapper": wrapper,
            "slicer.ScriptedLoadableModule": scripted}


def stand_in_file_loading(monkeypatch) -> None:
    """Stand-ins for slicer.util.loadVolume / loadLabelVolume, which go through the Qt application's IO
    manager (`slicer.app`, not in slicer-core): the same Slicer storage node (ITK reader) reads the file
    into a node named like the file, as Slicer names it (oaizib_001_0000.nii.gz -> oaizib_001_0000)."""
    import slicer.util

    def load(path, node_class):
        scene = slicer.mrmlScene
        node = scene.AddNewNodeByClass(node_class, Path(path).name.split(".")[0])
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        if storage.ReadData(node) != 1:
            raise RuntimeError(f"Slicer's reader could not read {path}")
        node.SetAndObserveStorageNodeID(storage.GetID())
        return node

    monkeypatch.setattr(slicer.util, "loadVolume", lambda path, *a, **k: load(path, "vtkMRMLScalarVolumeNode"))
    monkeypatch.setattr(slicer.util, "loadLabelVolume",
                        lambda path, *a, **k: load(path, "vtkMRMLLabelMapVolumeNode"))


def load_scripted_module(monkeypatch, module_file: Path) -> types.ModuleType:
    """Import a scripted module file (e.g. KneeOAGrading.py) against the stand-ins, undone after the test."""
    name = module_file.stem
    for stand_in_name, stand_in in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, stand_in_name, stand_in)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the module file adds its folder (for <name>Lib)
    for loaded_name in [n for n in sys.modules if n.partition(".")[0] == f"{name}Lib"]:
        monkeypatch.delitem(sys.modules, loaded_name)  # imported again below, against these stand-ins
    spec = importlib.util.spec_from_file_location(name, module_file)
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, loaded)
    spec.loader.exec_module(loaded)
    return loaded
