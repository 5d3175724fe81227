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
from kneeoa.utils.cells import number


def fig_to_png(fig: Any, dpi: int = 110, bbox_inches: str | None = "tight") -> bytes:
    """Render and close a matplotlib figure (`bbox_inches=None`: the whole canvas, as laid out)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches=bbox_inches)
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


def _saliency_rgba(saliency_2d: np.ndarray, cmap: Any) -> np.ndarray:
    """The map itself over the MRI: colour from `cmap`, opacity rising with the value (0 transparent, >= 0.5
    opaque at 0.9), so a weak but spread map stays visible instead of being cut away by a threshold."""
    values = np.clip(np.nan_to_num(np.asarray(saliency_2d, dtype=float)), 0.0, 1.0)
    rgba = cmap(values)
    rgba[..., 3] = np.clip(values / 0.5, 0.0, 1.0) * 0.9
    return rgba


def _draw_panel(ax: Any, image: np.ndarray, saliency: np.ndarray | None, cart: np.ndarray | None, cmap: Any) -> None:
    ax.imshow(image, cmap="gray", interpolation="nearest")
    if saliency is not None:
        ax.imshow(_saliency_rgba(saliency, cmap), interpolation="nearest")
    if cart is not None and cart.any():
        ax.contour(cart, levels=[0.5], colors="#37d67a", linewidths=0.9)
    ax.set_axis_off()


def _colour_bar(fig: Any, axes: Any, cmap: Any) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes, fraction=0.025, pad=0.02)
    bar.set_label("saliency (0-1; transparent where low)", fontsize=7)
    bar.ax.tick_params(labelsize=6)


def overlay_grid_png(examples: list[dict[str, Any]], labels=CARTILAGE_LABELS) -> bytes:
    """One row per example: MRI, then MRI + saliency (inferno, opacity rising with the value) with the cartilage
    outline, and a colour bar. Each example: {"title", "image" array_ijk, "saliency" array_ijk in [0, 1],
    "mask" array_ijk | None, optional "note" (e.g. mass@ROI vs chance)}."""
    cases = [{"title": ex["title"], "image": ex["image"], "mask": ex.get("mask")} for ex in examples]
    maps = {(i, "saliency"): {"saliency": ex["saliency"], "note": ex.get("note", "")} for i, ex in enumerate(examples)}
    return saliency_grid_png(cases, ["saliency"], maps, labels)


def saliency_grid_png(cases: list[dict[str, Any]], models: list[str], maps: dict[tuple[int, str], dict[str, Any]],
                      labels=CARTILAGE_LABELS) -> bytes:
    """Rows = cases (e.g. one per KL grade), columns = the MRI, then one saliency panel per model.

    cases: [{"title", "image", "mask"}]; maps[(row, model)] = {"saliency": array_ijk, "note": str}. One sagittal
    slice per case (the one with most cartilage), the same in every column; one colour bar for the figure.
    """
    plt = pyplot()
    cmap = plt.get_cmap("inferno")
    n_rows, n_cols = max(len(cases), 1), 1 + len(models)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.5 * n_cols + 0.6, 2.6 * n_rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, case in enumerate(cases):
        idx = best_sagittal_index(case.get("mask"), case["image"].shape, labels)
        img = sagittal(case["image"], idx)
        cart = None if case.get("mask") is None else sagittal(np.isin(case["mask"], labels), idx).astype(float)
        _draw_panel(axes[r][0], img, None, cart, cmap)
        axes[r][0].set_title(f"{case['title']}\nMRI, sagittal {idx}", fontsize=7)
        for c, model in enumerate(models, start=1):
            entry = maps.get((r, model))
            if entry is None:
                continue
            _draw_panel(axes[r][c], img, sagittal(entry["saliency"], idx), cart, cmap)
            note = entry.get("note") or ""
            axes[r][c].set_title(model + (f"\n{note}" if note else ""), fontsize=7)
    _colour_bar(fig, axes, cmap)
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
            values = [next((number(r.get(metric)) for r in rows if r[group] == g and r[series] == kind),
                           np.nan) for g in groups]
            ax.bar(np.arange(len(groups)) + n * width, np.nan_to_num(values), width, label=kind)
        ax.set_xticks(np.arange(len(groups)) + width * (len(kinds) - 1) / 2, groups, fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.set_ylim(0, 1)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig_to_png(fig)
