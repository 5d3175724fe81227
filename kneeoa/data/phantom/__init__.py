"""Synthetic knee phantom cohort in the OAI-ZIB-CM layout (SPEC section 7).

Modules: `severity` (latent severity, true/recorded KL, subject data), `findings` (severity -> OA
findings), `anatomy` (shape, pose, tissue fractions), `imaging` (contrast, bias, noise, mask),
`case` (one knee), `cohort` (`generate_cohort`, tables, layout), `preview` (PNG montage).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # lazy, so `kneeoa.data.phantom` can be named without importing numpy/scipy
    if name == "generate_cohort":
        from kneeoa.data.phantom.cohort import generate_cohort

        return generate_cohort
    raise AttributeError(f"module 'kneeoa.data.phantom' has no attribute {name!r}")
