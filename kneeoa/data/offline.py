"""Offline preprocessing as in the paper: N4 bias correction, resampling to a grid size, z-score; a cohort in,
a cohort in the same layout out (`kneeoa preprocess`).

Per image, in this order: N4 (SimpleITK `N4BiasFieldCorrectionImageFilter` fitted on a shrunk copy with an
Otsu foreground mask, the bias field then applied at full resolution), resampling of the voxel grid to
`size` (i, j, k) keeping the physical extent (trilinear, align_corners=False; masks nearest-exact, so each
new voxel takes the label under its centre), z-score (mean 0, std 1, std floor 1e-6). The paper's folder
was "resampled_standardlize" with 256x256x160 volumes (nibabel order); its resampling script is not
public, so the order of the steps is ours (N4 first, where the bias is estimated at native resolution).

Every output is written atomically and cases already written are skipped, so an interrupted job resumes;
`preprocess.json` records the settings and a resumed job must use the same ones. Cases run in parallel
worker processes (SimpleITK then gets one thread each); a case that fails is recorded and the others go on.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.data.volume import Volume
from kneeoa.errors import ConfigError, InputError, KneeOAError

SETTINGS_FILE = "preprocess.json"


@dataclass(frozen=True)
class OfflineSettings:
    """What `kneeoa preprocess` does to every image (masks are only resampled)."""

    n4: bool = False
    zscore: bool = False
    size: tuple[int, int, int] | None = None  # (i, j, k) voxels; None keeps the grid
    n4_shrink: int = 4  # N4 is fitted on the image shrunk by this factor per axis (ITK's usual speed-up)
    n4_iterations: tuple[int, ...] = (50, 50, 30)  # iterations per fitting level (one B-spline level each)
    n4_convergence: float = 0.001  # ITK's default convergence threshold
    n4_control_points: int = 4  # B-spline control points per axis at the first level (ITK's default)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def n4_correct(volume: Volume, settings: OfflineSettings = OfflineSettings()) -> np.ndarray:
    """The N4-corrected image array (i, j, k), float32, on the same grid."""
    import SimpleITK as sitk

    from kneeoa.data.volume import to_sitk

    array = np.asarray(volume.array, dtype=np.float32)
    if float(array.min()) <= 0:  # N4 fits a log-bias field: intensities must be positive
        array = array - float(array.min()) + 1.0
    image = sitk.Cast(to_sitk(Volume(array, volume.affine)), sitk.sitkFloat32)
    try:
        shrink = [max(1, min(int(settings.n4_shrink), s // 4)) for s in image.GetSize()]
        small = sitk.Shrink(image, shrink)
        mask = sitk.OtsuThreshold(small, 0, 1, 200)
        corrector = sitk.N4BiasFieldCorrectionImageFilter()
        corrector.SetMaximumNumberOfIterations([int(i) for i in settings.n4_iterations])
        corrector.SetConvergenceThreshold(float(settings.n4_convergence))
        corrector.SetNumberOfControlPoints([int(settings.n4_control_points)] * 3)
        corrector.Execute(small, mask)
        log_bias = corrector.GetLogBiasFieldAsImage(image)
        corrected = sitk.GetArrayFromImage(image / sitk.Exp(log_bias)).transpose(2, 1, 0)
    except RuntimeError as err:
        from kneeoa.data.headers import itk_error

        raise InputError(f"N4 bias correction failed: {itk_error(err)}", volume.path) from None
    return np.ascontiguousarray(corrected, dtype=np.float32)


def resample_to_size(array: np.ndarray, affine: np.ndarray, size: Sequence[int],
                     is_label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) on a grid of `size` voxels (i, j, k) covering the same physical extent.

    With align_corners=False new voxel u' sits at old index (u' + 0.5) * n/n' - 0.5, so the affine becomes
    A' = A @ [diag(r) | (r - 1)/2] with r = n/n' per axis: the voxel edges of both grids coincide.
    """
    import torch
    import torch.nn.functional as F

    size = tuple(int(s) for s in size)
    old = np.asarray(array.shape, dtype=np.float64)
    if tuple(array.shape) == size:
        return array, np.asarray(affine, dtype=np.float64)
    t = torch.as_tensor(np.asarray(array, dtype=np.float32))[None, None]
    if is_label:
        out = F.interpolate(t, size=size, mode="nearest-exact")[0, 0].numpy().round().astype(np.uint8)
    else:
        out = F.interpolate(t, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()
    r = old / np.asarray(size, dtype=np.float64)
    new_affine = np.asarray(affine, dtype=np.float64).copy()
    new_affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((r - 1.0) / 2.0)
    new_affine[:3, :3] = affine[:3, :3] * r[None, :]
    return out, new_affine


def preprocess_image(src: Path, dst: Path, settings: OfflineSettings) -> Path:
    """One image through N4 -> resample -> z-score (each step only when enabled), written as NIfTI."""
    from kneeoa.data.preprocess import STD_FLOOR
    from kneeoa.data.volume import read_volume, write_nifti

    volume = read_volume(src)
    array = n4_correct(volume, settings) if settings.n4 else np.asarray(volume.array, dtype=np.float32)
    affine = np.asarray(volume.affine, dtype=np.float64)
    if settings.size is not None:
        array, affine = resample_to_size(array, affine, settings.size)
    if settings.zscore:
        array = (array - array.mean()) / max(float(array.std()), STD_FLOOR)
    return write_nifti(dst, array.astype(np.float32), affine)


def preprocess_mask(src: Path, dst: Path, settings: OfflineSettings) -> Path:
    """A mask on the new grid (nearest-exact), or copied unchanged when the grid stays."""
    from kneeoa.data.volume import read_volume, write_nifti

    mask = read_volume(src, is_label=True)
    array, affine = np.asarray(mask.array), np.asarray(mask.affine, dtype=np.float64)
    if settings.size is not None:
        array, affine = resample_to_size(array, affine, settings.size, is_label=True)
    return write_nifti(dst, array, affine, is_label=True)


def _nifti_name(path: Path) -> str:
    from kneeoa.data.volume import volume_stem

    return f"{volume_stem(path)}.nii.gz"


def _job(args: tuple[Path, Path, Path | None, Path | None, OfflineSettings, bool]) -> tuple[str, str | None]:
    image, image_out, mask, mask_out, settings, single_thread = args
    if single_thread:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # the processes share the cores
    try:
        if not image_out.exists():
            preprocess_image(image, image_out, settings)
        if mask is not None and mask_out is not None and not mask_out.exists():
            preprocess_mask(mask, mask_out, settings)
        return str(image_out), None
    except KneeOAError as err:
        return str(image_out), str(err)


def preprocess_cohort(root: str | Path, out: str | Path, settings: OfflineSettings, workers: int = 1,
                      overwrite: bool = False) -> dict[str, Any]:
    """Every image (and mask) of the cohort at `root` -> the same relative path under `out` (as .nii.gz),
    tables and other top-level files copied; returns {"written", "skipped", "failures": {image: message}}."""
    from kneeoa.data.cohort import load_cohort
    from kneeoa.progress import Progress
    from kneeoa.utils.atomic import atomic_write_text

    root, out = Path(root).resolve(), Path(out).resolve()
    if out == root or root in out.parents:
        raise ConfigError("the output folder must lie outside the input cohort", out)
    cohort = load_cohort(root)
    record = out / SETTINGS_FILE
    if record.is_file():
        before = json.loads(record.read_text(encoding="utf-8")).get("settings")
        if overwrite:
            for p in out.rglob("*.nii.gz"):  # a folder this command wrote: start again
                p.unlink()
        elif before != settings.to_dict():
            raise ConfigError(f"preprocessed with other settings ({before}); use another folder or --overwrite",
                              record)
    elif out.is_dir() and any(out.iterdir()):
        raise ConfigError("output folder exists and was not written by `kneeoa preprocess`", out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps({"source": str(root), "settings": settings.to_dict()}, indent=2) + "\n")
    for item in root.iterdir():  # subject tables, knee sides, labels tables
        if item.is_file() and not item.name.startswith(".") and item.suffix.lower() in (".xlsx", ".csv", ".json"):
            shutil.copy2(item, out / item.name)
    jobs, skipped = [], 0
    for case in cohort.cases:
        image_out = out / Path(case.image).parent.relative_to(root) / _nifti_name(Path(case.image))
        mask_out = None
        if case.mask is not None:
            mask_out = out / Path(case.mask).parent.relative_to(root) / _nifti_name(Path(case.mask))
        if image_out.exists() and (mask_out is None or mask_out.exists()):
            skipped += 1
            continue
        image_out.parent.mkdir(parents=True, exist_ok=True)
        if mask_out is not None:
            mask_out.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((Path(case.image), image_out, case.mask and Path(case.mask), mask_out, settings, workers > 1))
    failures: dict[str, str] = {}
    with Progress("preprocess", total=len(jobs), unit="case") as progress:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=int(workers)) as pool:
                results = pool.map(_job, jobs)
                for image_out, error in results:
                    _record(progress, failures, image_out, error)
        else:
            for job in jobs:
                _record(progress, failures, *_job(job))
    return {"out": out, "written": len(jobs) - len(failures), "skipped": skipped, "failures": failures}


def _record(progress: Any, failures: dict[str, str], image_out: str, error: str | None) -> None:
    if error is not None:
        failures[image_out] = error
        progress.log(f"preprocess: {error}")
    progress.update(1, case=Path(image_out).name, failed=error is not None)


def n4_zscore(in_path: str | Path, out_path: str | Path, shrink: int = 4, iterations: Sequence[int] = (50, 50, 30),
              ) -> Path:
    """Offline step of the paper: N4 bias-field correction (Otsu foreground mask) then z-score, same affine."""
    settings = OfflineSettings(n4=True, zscore=True, n4_shrink=shrink, n4_iterations=tuple(iterations))
    return preprocess_image(Path(in_path), Path(out_path), settings)
