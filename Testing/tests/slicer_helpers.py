"""Helpers for the headless Slicer glue tests (real MRML classes from the `slicer-core` wheel)."""

from __future__ import annotations

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
