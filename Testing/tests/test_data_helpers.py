"""Helpers shared by the data-layer tests (not a test module: no test_ functions)."""

from __future__ import annotations

import numpy as np

from kneeoa.data.volume import Volume, to_sitk


def oblique_affine(angle: float = 0.3, spacing=(0.5, 0.7, 1.2), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    """A proper rotation about two axes times anisotropic spacing: no axis is aligned with RAS."""
    c, s = np.cos(angle), np.sin(angle)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def ramp(shape=(6, 7, 8)) -> np.ndarray:
    """Every voxel distinct, so any axis swap or flip changes the array."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def write_dicom_series(folder, volume: Volume, series_uid: str) -> None:
    """Write a Volume as a CT-like DICOM series, one file per k slice, with SimpleITK."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(to_sitk(volume), sitk.sitkInt16)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in origin),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0::3], *direction[1::3])),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0008|0018": f"{series_uid}.{k + 1}",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{series_uid[-1]}_{k:03d}.dcm"))
        writer.Execute(sl)
