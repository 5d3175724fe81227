"""From tissue fractions to a DESS-like image and an OAI-ZIB-CM label map.

Contrast follows a water-excitation DESS: fluid brightest, cartilage bright, muscle grey, bone marrow
and fat dark, cortex, menisci and tendons near black. Nuisance: per-case tissue contrast and gain,
smooth tissue texture, a smooth multiplicative bias field, Gaussian blur (scanner PSF on top of the
partial-volume fractions) and Rician noise (magnitude of complex Gaussian noise).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from kneeoa.contracts.vocab import LABEL_OF, LABELS
from kneeoa.data.phantom.anatomy import TISSUES
from kneeoa.data.phantom.findings import Findings
from kneeoa.data.phantom.sdf import F32, Grid, ramp

# Relative signal of each tissue (fluid = 1).
CONTRAST = {"femur": 0.20, "tibia": 0.20, "patella": 0.20, "femoral_cartilage": 0.55,
            "medial_tibial_cartilage": 0.52, "lateral_tibial_cartilage": 0.52, "patellar_cartilage": 0.55,
            "meniscus": 0.06, "tendon": 0.05, "fluid": 1.0, "fat_pad": 0.12, "muscle": 0.30,
            "subcutaneous_fat": 0.10}
CORTEX = 0.04
# Cartilage wins a voxel it shares with bone or fluid once it holds ~40 % of it: annotators delineate
# thin cartilage generously, and otherwise a 3 mm layer would vanish from the mask on a coarse grid.
CARTILAGE_WEIGHT = 1.6


def smooth_field(grid: Grid, rng: np.random.Generator, n_terms: int, wavelength_mm: tuple[float, float]
                 ) -> np.ndarray:
    """Sum of separable random cosines: a smooth zero-mean field of unit-ish amplitude, cheap to build."""
    axes = grid.axes()
    field = np.zeros(grid.shape_ijk, dtype=F32)
    for _ in range(n_terms):
        parts = []
        for ax in axes:
            k = 2.0 * np.pi / rng.uniform(*wavelength_mm)
            parts.append(np.cos(k * ax + rng.uniform(0.0, 2.0 * np.pi)).astype(F32))
        field += F32(rng.normal()) * parts[0][:, None, None] * parts[1][None, :, None] * parts[2][None, None, :]
    return field * F32(1.0 / np.sqrt(n_terms))


def bone_signal(fields: dict[str, np.ndarray], findings: Findings, marrow: float) -> dict[str, np.ndarray]:
    """Signal inside femur, tibia and patella: dark cortex rim, marrow, the subchondral sclerosis band."""
    out = []
    medial = ramp(fields["X"] - 6.0, 8.0)
    for bone in ("femur", "tibia", "patella"):
        d = fields[f"d_{bone}"]
        sig = CORTEX + (marrow - CORTEX) * ramp(-d - 1.2, 1.2)
        if bone == "patella":
            out.append(sig.astype(F32, copy=False))
            continue
        strength = findings.sclerosis_medial * medial + findings.sclerosis_lateral * (1.0 - medial)
        if findings.sclerosis_medial > 0:
            band = 2.0 + 4.0 * findings.sclerosis_medial
            near_joint = (ramp(fields["Z"] + 12.0, 6.0) if bone == "tibia"
                          else ramp(fields["contact_med"] + 14.0 - fields["Z"], 6.0))
            sig = sig * (1.0 - 0.8 * strength * ramp(band + d, 2.0) * near_joint)
        out.append(sig.astype(F32, copy=False))
    return dict(zip(("femur", "tibia", "patella"), out))


def render_image(grid: Grid, fractions: dict[str, np.ndarray], fields: dict[str, np.ndarray],
                 findings: Findings, rng: np.random.Generator) -> np.ndarray:
    """A float32 image (i, j, k) of integer-valued signal, fluid ~ 300-700 before bias."""
    contrast = {t: c * rng.uniform(0.88, 1.12) for t, c in CONTRAST.items()}
    texture = smooth_field(grid, rng, 6, (12.0, 40.0))
    bones = bone_signal(fields, findings, contrast["femur"])
    image = np.zeros(grid.shape_ijk, dtype=F32)
    for name in TISSUES:
        frac = fractions[name]
        if name in bones:
            image += frac * bones[name] * (1.0 + 0.10 * texture)
        elif name in ("muscle", "subcutaneous_fat"):
            image += frac * F32(contrast[name]) * (1.0 + 0.15 * texture)
        else:
            image += frac * F32(contrast[name])
    sigma = rng.uniform(0.3, 0.7)
    image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    bias = np.exp(F32(rng.uniform(0.1, 0.3)) * smooth_field(grid, rng, 3, (150.0, 400.0)))
    gain = rng.uniform(300.0, 700.0)
    image *= bias * F32(gain)
    noise = F32(gain * rng.uniform(0.03, 0.07))
    real = image + noise * rng.standard_normal(grid.shape_ijk, dtype=F32)
    imag = noise * rng.standard_normal(grid.shape_ijk, dtype=F32)
    return np.rint(np.sqrt(real * real + imag * imag)).astype(F32)


def label_map(fractions: dict[str, np.ndarray]) -> np.ndarray:
    """uint8 OAI-ZIB-CM mask: the labelled tissue with the largest (cartilage-weighted) fraction, else 0."""
    names = [name for value, name in LABELS.items() if value]  # the labelled tissues, in label order
    scores = [fractions[n] * (CARTILAGE_WEIGHT if "cartilage" in n else 1.0) for n in names]
    labelled = sum(fractions[n] for n in names)
    background = 1.0 - labelled
    stack = np.stack([background, *scores])
    codes = np.array([0, *(LABEL_OF[n] for n in names)], dtype=np.uint8)
    labels = codes[np.argmax(stack, axis=0)]
    # Every structure keeps at least its most-covered voxel(s), like a careful annotator.
    for n in names:
        code = LABEL_OF[n]
        if not (labels == code).any() and fractions[n].max() > 0.0:
            f = fractions[n]
            labels[f >= 0.8 * f.max()] = code
    return labels
