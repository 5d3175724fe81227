"""OA findings driven by the latent severity g in [0, 5) (true KL = floor(g)).

Each finding follows the KL definitions loosely, with case-to-case spread so no single finding gives
the grade away:
- cartilage thinning, medial-dominant, accelerating with g (joint-space narrowing follows from it,
  because the femur rests on the remaining cartilage);
- marginal osteophytes from about grade 2 (g > 1.7), growing with g, medial larger than lateral;
- subchondral sclerosis (a dark band under the medial plateau and condyle) from about grade 3;
- bone flattening of the medial condyle and depression of the medial plateau at grade 4;
- a mild increase of joint effusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Osteophyte sites: (bone, compartment, where on the margin); positions come from the anatomy.
OSTEOPHYTE_SITES = (
    ("tibia", "medial", "rim"), ("tibia", "lateral", "rim"), ("tibia", "medial", "posterior"),
    ("tibia", "medial", "anterior"), ("femur", "medial", "rim"), ("femur", "lateral", "rim"),
    ("femur", "medial", "posterior"), ("femur", "lateral", "posterior"), ("femur", "medial", "anterior"),
)


@dataclass(frozen=True)
class Osteophyte:
    """A bony spur: site plus size (mm) and a small jitter of its position (fraction of the margin)."""

    bone: str
    compartment: str
    where: str
    size_mm: float
    jitter: tuple[float, float]


@dataclass(frozen=True)
class Findings:
    """Severity-driven changes applied to a healthy knee."""

    cartilage_medial: float  # thickness factor (1 = healthy)
    cartilage_lateral: float
    osteophytes: tuple[Osteophyte, ...] = field(default_factory=tuple)
    sclerosis_medial: float = 0.0  # 0..1 strength of the dark subchondral band
    sclerosis_lateral: float = 0.0
    flattening_mm: float = 0.0  # cap removed from the medial femoral condyle
    plateau_depression_mm: float = 0.0  # medial tibial plateau attrition
    effusion: float = 1.0  # fluid amount factor


def _ramp01(x: float) -> float:
    return float(min(max(x, 0.0), 1.0))


def findings_for(severity: float, rng: np.random.Generator) -> Findings:
    """Sample the findings of a knee with latent severity `severity` (its own RNG stream)."""
    g = float(severity)
    # Thinning accelerates with g; spread keeps neighbouring grades overlapping.
    progress = (g / 5.0) ** 1.4
    medial = float(np.clip(1.0 - 0.72 * progress + rng.normal(0.0, 0.05), 0.22, 1.1))
    lateral = float(np.clip(1.0 - 0.25 * progress + rng.normal(0.0, 0.04), 0.5, 1.1))

    spurs = []
    base = 5.0 * _ramp01((g - 1.7) / 3.3) ** 0.8
    if base > 0:
        for bone, comp, where in OSTEOPHYTE_SITES:
            weight = 1.0 if comp == "medial" else 0.7
            # more sites are involved as g grows; each has its own size
            if rng.random() < 0.35 + 0.6 * _ramp01((g - 1.7) / 2.5):
                size = base * weight * rng.uniform(0.55, 1.3)
                if size >= 0.6:
                    spurs.append(Osteophyte(bone, comp, where, round(size, 3),
                                            (float(rng.uniform(-0.15, 0.15)), float(rng.uniform(-0.15, 0.15)))))
    scl = _ramp01((g - 2.6) / 2.2) * rng.uniform(0.7, 1.15)
    flat = 3.5 * _ramp01((g - 3.4) / 1.6) * rng.uniform(0.7, 1.2)
    return Findings(
        cartilage_medial=medial, cartilage_lateral=lateral, osteophytes=tuple(spurs),
        sclerosis_medial=float(min(scl, 1.0)), sclerosis_lateral=float(min(0.3 * scl, 1.0)),
        flattening_mm=float(flat), plateau_depression_mm=float(0.5 * flat),
        effusion=float(rng.lognormal(0.0, 0.35) * (1.0 + 0.12 * g)),
    )
