"""How much of a saliency map falls on cartilage (SPEC section 6), as the paper's overlap script computes it.

S+ = max(S, 0); M = union of the chosen mask labels (default {2, 4, 5}; the paper's script used {2, 4},
which leaves out lateral tibial cartilage).
  mass@ROI  = sum(S+ * M) / sum(S+)
  for k = 1 %, 5 %, 10 % of ALL voxels, T = the k voxels with the highest S+ (argpartition):
  top-k@ROI = |T and M| / k,   Dice@k = 2 |T and M| / (k + |M|)
Per compartment (our addition) the same numbers with M = one compartment; T stays the global top-k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kneeoa.contracts.vocab import CARTILAGE_LABELS, COMPARTMENTS

DEFAULT_KS = (0.01, 0.05, 0.10)


def top_k_count(fraction: float, n_voxels: int) -> int:
    """k = ceil(fraction * n_voxels), at least 1 (rounded first so 0.01 * 300 is 3, not 4)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"top-k fraction must be in (0, 1], got {fraction}")
    return max(1, math.ceil(round(fraction * n_voxels, 6)))


def k_name(fraction: float) -> str:
    """0.01 -> '1', 0.005 -> '0.5': the percentage used in the metric names."""
    return f"{fraction * 100:g}"


def saliency_overlap(saliency, mask, labels: Sequence[int] = CARTILAGE_LABELS,
                     ks: Sequence[float] = DEFAULT_KS, compartments: bool = True,
                     source: Any = None) -> dict[str, Any]:
    """mass@ROI, top-k@ROI and Dice@k of a saliency map against a label mask on the same grid.

    Returns {"mass_roi", "roi_voxels", "top{p}_roi", "dice{p}" for p in percent, and, with
    `compartments`, one nested dict of the same numbers per compartment whose label is in `labels`}.
    mass_roi is NaN when the map has no positive value. A mask without any of `labels` has no cartilage
    to overlap: every union number is NaN (not 0.0, which reads as "saliency missed the cartilage") and a
    DataWarning names `source` (the mask file).
    """
    if hasattr(saliency, "affine") and hasattr(mask, "affine") and \
            not np.allclose(np.asarray(saliency.affine), np.asarray(mask.affine), atol=1e-4):
        raise ValueError("saliency and mask are on different grids (affines differ): resample to one grid first")
    # `Volume`s (what read_volume and compute_saliency return) or plain arrays on the same grid
    s = np.asarray(getattr(saliency, "array", saliency), dtype=np.float64)
    m = np.asarray(getattr(mask, "array", mask))
    if s.shape != m.shape:
        raise ValueError(f"saliency shape {s.shape} and mask shape {m.shape} differ: resample to one grid first")
    if s.size == 0:
        raise ValueError("empty saliency map")
    if not np.isfinite(s).all():
        raise ValueError("saliency map holds NaN or infinite values")
    labels = tuple(int(v) for v in labels)
    s_pos = np.maximum(s, 0.0).ravel()
    flat_mask = m.ravel()
    total = float(s_pos.sum())
    # the top-k sets are shared by the union and every compartment
    top_sets = {}
    for fraction in ks:
        k = top_k_count(float(fraction), s_pos.size)
        top = np.zeros(s_pos.size, dtype=bool)
        top[np.argpartition(s_pos, -k)[-k:]] = True
        top_sets[k_name(float(fraction))] = (k, top)
    result = _region_metrics(s_pos, total, np.isin(flat_mask, labels), top_sets)
    if result["roi_voxels"] == 0:
        import warnings

        from kneeoa.errors import DataWarning

        warnings.warn(f"{source if source is not None else 'the mask'}: no cartilage voxels (labels "
                      f"{list(labels)}); the cartilage overlap is undefined (NaN), not 0", DataWarning, stacklevel=2)
        result.update({k: float("nan") for k in result if k != "roi_voxels"})
    if compartments:
        for name, comp_labels in COMPARTMENTS.items():
            if set(comp_labels) <= set(labels):
                result[name] = _region_metrics(s_pos, total, np.isin(flat_mask, comp_labels), top_sets)
    return result


def _region_metrics(s_pos: np.ndarray, total: float, region: np.ndarray,
                    top_sets: dict[str, tuple[int, np.ndarray]]) -> dict[str, Any]:
    roi_voxels = int(region.sum())
    out: dict[str, Any] = {
        "mass_roi": float(s_pos[region].sum() / total) if total > 0 else float("nan"),
        "roi_voxels": roi_voxels,
    }
    for name, (k, top) in top_sets.items():
        hits = int(np.count_nonzero(top & region))
        out[f"top{name}_roi"] = hits / k
        out[f"dice{name}"] = 2.0 * hits / (k + roi_voxels)
    return out
