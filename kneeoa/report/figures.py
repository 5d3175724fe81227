"""Report figures that are not analyses of their own: saliency overlays, cohort bars, model metric bars.

Arrays follow the Volume convention (i, j, k) = (R, A, S) for RAS images: a sagittal slice fixes i and shows
anterior-posterior across and superior-inferior upwards.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from kneeoa.analysis.plots import pyplot
from kneeoa.contracts.vocab import CARTILAGE_LABELS


def fig_to_png(fig: Any, dpi: int = 110) -> bytes:
    """Render and close a matplotlib figure."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def sagittal(array_ijk: np.ndarray, index: int) -> np.ndarray:
    """The sagittal slice at i=index, oriented for display (superior up, anterior right)."""
    return np.flipud(np.asarray(array_ijk)[index].T)


def best_sagittal_index(mask_ijk: np.ndarray | None, fallback_shape: tuple[int, ...], labels=CARTILAGE_LABELS) -> int:
    """The sagittal index holding most cartilage voxels (the middle one without a mask)."""
    if mask_ijk is None:
        return fallback_shape[0] // 2
    counts = np.isin(mask_ijk, labels).sum(axis=(1, 2))
    return int(counts.argmax()) if counts.any() else fallback_shape[0] // 2


def overlay_grid_png(examples: list[dict[str, Any]], threshold: float = 0.2, labels=CARTILAGE_LABELS) -> bytes:
    """One row per example: MRI, MRI + saliency (inferno, values < threshold hidden), cartilage outline on both.

    Each example: {"title": str, "image": array_ijk, "saliency": array_ijk in [0,1], "mask": array_ijk | None}.
    """
    plt = pyplot()
    n = max(len(examples), 1)
    fig, axes = plt.subplots(n, 2, figsize=(6.4, 3.1 * n), squeeze=False)
    for row, ex in zip(axes, examples):
        idx = best_sagittal_index(ex.get("mask"), ex["image"].shape, labels)
        img = sagittal(ex["image"], idx)
        sal = np.ma.masked_less(sagittal(ex["saliency"], idx), threshold)
        for ax in row:
            ax.imshow(img, cmap="gray", interpolation="nearest")
            ax.set_axis_off()
        row[1].imshow(sal, cmap="inferno", vmin=0, vmax=1, alpha=0.75, interpolation="nearest")
        if ex.get("mask") is not None:
            cart = sagittal(np.isin(ex["mask"], labels), idx).astype(float)
            for ax in row:
                ax.contour(cart, levels=[0.5], colors="#37d67a", linewidths=0.9)
        row[0].set_title(f"{ex['title']} — MRI (sagittal {idx})", fontsize=8)
        row[1].set_title(f"saliency ≥ {threshold:.1f} + cartilage outline", fontsize=8)
    fig.tight_layout()
    return fig_to_png(fig)


def kl_counts_png(counts: dict[str, dict[int, int]]) -> bytes:
    """Grouped bars: number of knees per KL grade for each split."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    width = 0.8 / max(len(counts), 1)
    for n, (split, per_grade) in enumerate(counts.items()):
        grades = np.arange(5)
        ax.bar(grades + n * width, [per_grade.get(g, 0) for g in grades], width, label=split)
    ax.set_xticks(np.arange(5) + width * (len(counts) - 1) / 2, [f"KL{g}" for g in range(5)])
    ax.set_ylabel("knees")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig_to_png(fig)


def _number(value: Any) -> float:
    """Table cells to float; blanks (a metric undefined for that model) are NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def metric_bars_png(rows: list[dict[str, Any]], metrics: list[str], group: str = "backbone",
                    series: str = "variant") -> bytes:
    """One panel per metric: bars per backbone, one colour per variant."""
    plt = pyplot()
    groups = list(dict.fromkeys(r[group] for r in rows))
    kinds = list(dict.fromkeys(r[series] for r in rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 2.9), squeeze=False)
    width = 0.8 / max(len(kinds), 1)
    for ax, metric in zip(axes[0], metrics):
        for n, kind in enumerate(kinds):
            values = [next((_number(r.get(metric)) for r in rows if r[group] == g and r[series] == kind),
                           np.nan) for g in groups]
            ax.bar(np.arange(len(groups)) + n * width, np.nan_to_num(values), width, label=kind)
        ax.set_xticks(np.arange(len(groups)) + width * (len(kinds) - 1) / 2, groups, fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.set_ylim(0, 1)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig_to_png(fig)
