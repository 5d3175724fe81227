"""The training data's acquisition envelope, and a plain-words check of an input against it.

Recorded per training knee from the header and a subsample of the voxels: the acquisition plane (the
world axis of the slice direction), voxel spacing, field of view and scale-free intensity statistics
(skewness, the fraction of voxels brighter than the mean). The envelope is the range seen in training; an
input outside it gets one sentence per finding, checked before the network runs. No library has this (it
is bookkeeping over SimpleITK/nibabel headers we already read), hence hand-written.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PLANES = ("sagittal", "coronal", "axial")  # slice direction along world x (L-R), y (P-A), z (I-S)
SIZE_FACTOR = 1.5  # spacing / field of view within [min / 1.5, max * 1.5] of training
INTENSITY_MARGIN = 0.5  # skewness and bright fraction: range widened by half its width (at least 0.1 / 0.05)


SAMPLE_VOXELS = 4096  # about 16^3 voxels: both checks cost ~1 ms whatever the volume's size


def subsample(array: np.ndarray) -> np.ndarray:
    """A regular grid of about SAMPLE_VOXELS voxels (float32): every k-th voxel along each axis."""
    step = max(1, int(np.ceil((array.size / SAMPLE_VOXELS) ** (1 / 3))))
    return np.asarray(array[::step, ::step, ::step], dtype=np.float32)


def acquisition_plane(affine: np.ndarray, spacing: tuple[float, float, float]) -> str:
    """Plane of the slices: the coarsest voxel axis (the last one, k, when near-isotropic) -> world axis."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    s = np.asarray(spacing, dtype=np.float64)
    axis = int(np.argmax(s)) if s.max() > 1.05 * s.min() else 2
    return PLANES[int(np.argmax(np.abs(a[:, axis])))]


def acquisition_stats(array: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Header + intensity facts of one volume (array in i, j, k order)."""
    a = np.asarray(affine, dtype=np.float64)
    spacing = tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))
    shape = np.asarray(array.shape[:3], dtype=np.float64)
    fov = shape * np.asarray(spacing)
    sample = subsample(array).ravel()
    mean, std = float(sample.mean(dtype=np.float64)), float(sample.std(dtype=np.float64))
    d = sample - mean
    skew = float((d * d * d).mean() / std**3) if std > 0 else 0.0  # products: numpy's float32 `** 3` is powf, 20x slower
    return {"plane": acquisition_plane(a, spacing), "spacing_mm": [min(spacing), max(spacing)],
            "fov_mm": [float(fov.min()), float(fov.max())], "skewness": skew,
            "bright_fraction": float((sample > mean).mean())}


def fit_envelope(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The ranges over the training knees (JSON-ready, goes in the model card)."""
    if not stats:
        return {}
    planes = sorted({s["plane"] for s in stats})

    def span(key: str, idx: int | None = None) -> list[float]:
        vals = [s[key][idx] if idx is not None else s[key] for s in stats]
        return [float(min(vals)), float(max(vals))]

    return {"planes": planes, "spacing_mm": [span("spacing_mm", 0)[0], span("spacing_mm", 1)[1]],
            "fov_mm": [span("fov_mm", 0)[0], span("fov_mm", 1)[1]], "skewness": span("skewness"),
            "bright_fraction": span("bright_fraction"), "n": len(stats)}


def _widen(lo: float, hi: float, floor: float) -> tuple[float, float]:
    pad = max(INTENSITY_MARGIN * (hi - lo), floor)
    return lo - pad, hi + pad


def check_envelope(stats: dict[str, Any], envelope: dict[str, Any]) -> list[str]:
    """Plain-words findings where `stats` lies outside `envelope` (empty list = inside, or no envelope)."""
    if not envelope:
        return []
    found = []
    if stats["plane"] not in envelope["planes"]:
        found.append(f"{stats['plane']} acquisition; the model was trained on {' and '.join(envelope['planes'])}")
    lo, hi = envelope["fov_mm"]
    big, small = stats["fov_mm"][1], stats["fov_mm"][0]
    if big > hi * SIZE_FACTOR:
        found.append(f"field of view {big / hi:.1f}x the training data's ({big:.0f} mm vs at most {hi:.0f} mm)")
    elif small < lo / SIZE_FACTOR:
        found.append(f"field of view {small / lo:.2f}x the training data's ({small:.0f} mm vs at least {lo:.0f} mm)")
    lo, hi = envelope["spacing_mm"]
    coarse, fine = stats["spacing_mm"][1], stats["spacing_mm"][0]
    if coarse > hi * SIZE_FACTOR or fine < lo / SIZE_FACTOR:
        found.append(f"voxel spacing {fine:.2f}-{coarse:.2f} mm; the training data had {lo:.2f}-{hi:.2f} mm")
    skew_lo, skew_hi = _widen(*envelope["skewness"], 0.1)
    frac_lo, frac_hi = _widen(*envelope["bright_fraction"], 0.05)
    if not (skew_lo <= stats["skewness"] <= skew_hi and frac_lo <= stats["bright_fraction"] <= frac_hi):
        found.append(f"intensity distribution unlike the training data's (skewness {stats['skewness']:.2f}, "
                     f"training {envelope['skewness'][0]:.2f} to {envelope['skewness'][1]:.2f}; "
                     f"{100 * stats['bright_fraction']:.0f} % of voxels above the mean, training "
                     f"{100 * envelope['bright_fraction'][0]:.0f}-{100 * envelope['bright_fraction'][1]:.0f} %): "
                     f"inverted contrast, another sequence or not a knee?")
    return found


HIST_BINS = 12  # z-scored intensity histogram over [-4, 4]


def image_features(array: np.ndarray) -> np.ndarray:
    """A small description of the image itself for the second Mahalanobis detector (kneeoa.trust.ood): the
    z-scored intensity histogram, the share of high-frequency energy (noise), skewness and kurtosis."""
    from scipy.ndimage import uniform_filter

    x = subsample(array)
    std = x.std()
    z = (x - x.mean()) / std if std > 0 else np.zeros_like(x)
    hist = np.histogram(np.clip(z, -4, 4), bins=HIST_BINS, range=(-4, 4))[0] / z.size
    high = float((z - uniform_filter(z, 3)).std())
    z2 = z * z  # products, not `** 3` / `** 4` (powf per voxel: 0.4 of the 0.5 ms this function took)
    return np.array([*hist, high, float((z2 * z).mean()), float((z2 * z2).mean())])


def volume_facts(array: np.ndarray, affine: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """(acquisition stats, image features) of one decoded volume: the one rule for the trust facts, whether
    fitted (`kneeoa.trust.fit.read_facts`) or checked at grade time (`TrustPredictor.inspect`)."""
    return acquisition_stats(array, affine), image_features(array)
