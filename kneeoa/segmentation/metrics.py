"""Dice and the 95th-percentile Hausdorff distance per label (MONAI's metrics, SPEC 9), in mm.

HD95 uses the image's voxel spacing. A label absent from both maps scores Dice 1 / HD95 0 (nothing to
find, nothing found); absent from one only: Dice 0 / HD95 inf (MONAI's convention is nan, which would
hide a total miss in a mean).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from kneeoa.contracts.segmentation import FOREGROUND_LABELS
from kneeoa.contracts.vocab import LABELS


def label_metrics(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float],
                  labels: Sequence[int] = FOREGROUND_LABELS) -> list[dict]:
    """One row per label: {'label', 'label_name', 'dice', 'hd95_mm', 'reference_voxels', 'predicted_voxels'}."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} and reference shape {ref.shape} differ")
    rows = []
    for value in labels:
        p, r = pred == value, ref == value
        n_p, n_r = int(p.sum()), int(r.sum())
        if n_p == 0 and n_r == 0:
            dice, hd95 = 1.0, 0.0
        elif n_p == 0 or n_r == 0:
            dice, hd95 = 0.0, float("inf")
        else:
            yp = torch.from_numpy(p)[None, None]
            yr = torch.from_numpy(r)[None, None]
            dice = float(compute_dice(yp, yr, include_background=True)[0, 0])
            with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                hd95 = float(compute_hausdorff_distance(yp, yr, include_background=True, percentile=95,
                                                        spacing=[float(s) for s in spacing_mm])[0, 0])
        rows.append({"label": int(value), "label_name": LABELS[int(value)], "dice": dice, "hd95_mm": hd95,
                     "reference_voxels": n_r, "predicted_voxels": n_p})
    return rows


def summarize(rows: list[dict]) -> dict:
    """Per label: mean, sd, min, max of Dice and median HD95 over cases (what tables and cards show)."""
    out = {}
    for value in sorted({r["label"] for r in rows}):
        dice = np.array([r["dice"] for r in rows if r["label"] == value], dtype=float)
        hd = np.array([r["hd95_mm"] for r in rows if r["label"] == value], dtype=float)
        out[LABELS[value]] = {"dice_mean": float(dice.mean()), "dice_sd": float(dice.std(ddof=1)) if dice.size > 1
                              else 0.0, "dice_min": float(dice.min()), "dice_max": float(dice.max()),
                              "hd95_median_mm": float(np.median(hd)), "n": int(dice.size)}
    return out
