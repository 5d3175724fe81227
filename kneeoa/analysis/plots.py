"""Figures of the analyses (matplotlib, Agg backend): forest plot, delta bar chart, PCA grid.

Each builder returns a matplotlib Figure; `save_figure` writes it atomically and closes it. The
report embeds the same Figure objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kneeoa.contracts.catalog import backbone_label, display_order
from kneeoa.contracts.vocab import VARIANT_LABELS, VARIANT_TAGS, variant_from_tag
from kneeoa.plotting import KL_COLOURS, pyplot, save_figure  # noqa: F401  (re-exported for the report)


def forest_plot(rows: Sequence[dict[str, Any]], title: str = "Dual vs Single: delta with 95% CI") -> Any:
    """Forest plot of the stats rows: one line per backbone x metric, delta and CI, filled if FDR-significant."""
    plt = pyplot()
    rows = list(rows)
    fig, ax = plt.subplots(figsize=(6.8, 0.34 * max(len(rows), 1) + 1.2))
    labels = []
    for pos, row in enumerate(rows):
        y = len(rows) - 1 - pos
        delta, lo, hi = (float(row[k]) for k in ("delta", "ci_lo", "ci_hi"))
        significant = bool(row.get("sig_fdr_0.05"))
        colour = "#b2182b" if significant else "#404040"
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [y, y], color=colour, lw=1.6)
        ax.plot([delta], [y], "o", color=colour, mfc=colour if significant else "white", ms=6)
        q = row.get("q_value_BH")
        ax.text(1.02, y, _q_label(q), transform=ax.get_yaxis_transform(),
                va="center", fontsize=7, color=colour)
        labels.append(f"{backbone_label(row['backbone'])}  {row['task']} {row['metric']}")
    ax.axvline(0.0, color="#999999", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), labels[::-1], fontsize=8)
    ax.set_xlabel("delta = Dual - Single  (filled: q < 0.05)")
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def delta_bar_chart(rows: Sequence[dict[str, Any]], title: str = "Dual - Single per metric") -> Any:
    """Grouped bars of delta with CI whiskers: metrics on x, one bar per backbone; * marks q < 0.05."""
    plt = pyplot()
    rows = list(rows)
    metrics = list(dict.fromkeys(f"{r['task']} {r['metric']}" for r in rows))
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.2 * max(len(metrics), 1) + 2.0, 3.4))
    width = 0.8 / max(len(backbones), 1)
    colours = plt.get_cmap("tab10").colors
    for b_index, backbone in enumerate(backbones):
        label = backbone_label(backbone)  # one legend entry per backbone
        for row in (r for r in rows if r["backbone"] == backbone):
            x = metrics.index(f"{row['task']} {row['metric']}") + (b_index - (len(backbones) - 1) / 2) * width
            delta, lo, hi = (float(row[k]) for k in ("delta", "ci_lo", "ci_hi"))
            err = None if not (np.isfinite(lo) and np.isfinite(hi)) else [[max(delta - lo, 0)], [max(hi - delta, 0)]]
            ax.bar(x, delta, width=width, color=colours[b_index % 10], yerr=err, capsize=2, ecolor="#333333",
                   label=label)
            label = None
            if row.get("sig_fdr_0.05"):
                top = hi if np.isfinite(hi) and delta >= 0 else (lo if np.isfinite(lo) else delta)
                ax.text(x, top, "*", ha="center", va="bottom" if delta >= 0 else "top", fontsize=11)
    ax.axhline(0.0, color="#666666", lw=0.8)
    ax.set_xticks(range(len(metrics)), metrics, fontsize=8)
    ax.set_ylabel("delta (Dual - Single)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def pca_grid(models: Sequence[dict[str, Any]], title: str = "Test embeddings on the train-fitted PCA") -> Any:
    """PC1 vs PC2 of the test subjects, coloured by KL: rows = backbones, columns = variants.

    Each model: {"backbone", "variant", "test_pc" (n,2), "test_kl" (n,), optional "train_pc" (m,2),
    "abs_rho_pc1_kl"}. Training points are drawn faintly behind.
    """
    from matplotlib.lines import Line2D

    fig, panels = model_grid(models)
    for model, ax in panels:
        train = model.get("train_pc")
        if train is not None and len(train):
            ax.scatter(train[:, 0], train[:, 1], s=5, c="#d0d0d0", lw=0)
        test_pc, test_kl = np.asarray(model["test_pc"]), np.asarray(model["test_kl"])
        for grade, colour in enumerate(KL_COLOURS):
            pick = test_kl == grade
            ax.scatter(test_pc[pick, 0], test_pc[pick, 1], s=14, c=colour, edgecolors="#333333", linewidths=0.3)
        rho = model.get("abs_rho_pc1_kl")
        subtitle = model_label(model["backbone"], model["variant"])
        ax.set_title(subtitle + ("" if rho is None or not np.isfinite(rho) else f"\n|rho(PC1,KL)|={rho:.2f}"), fontsize=8)
        ax.set_xlabel("PC1", fontsize=7)
        ax.set_ylabel("PC2", fontsize=7)
        ax.tick_params(labelsize=6)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=f"KL {k}") for k, c in enumerate(KL_COLOURS)]
    handles.append(Line2D([], [], marker="o", ls="", color="#d0d0d0", label="train"))
    return finish_grid(fig, handles, title)


def model_grid(models: Sequence[dict[str, Any]], known_variants_only: bool = False) -> tuple[Any, list]:
    """(figure, [(model, its axes)]): one panel per model, rows = backbones (catalog order, then others by
    name), columns = variants (VARIANT_TAGS order, then others unless `known_variants_only`, whose models are
    left out); panels without a model stay hidden. The layout of the PCA grid and the paper's manifold grids."""
    plt = pyplot()
    models = list(models)
    backbones = _ordered({m["backbone"] for m in models}, display_order())
    present = {m["variant"] for m in models}
    variants = [v for v in VARIANT_TAGS if v in present] if known_variants_only else _ordered(present, VARIANT_TAGS)
    fig, axes = plt.subplots(max(len(backbones), 1), max(len(variants), 1), squeeze=False,
                             figsize=(3.0 * max(len(variants), 1), 2.8 * max(len(backbones), 1) + 0.6))
    for ax in axes.ravel():
        ax.set_axis_off()
    panels = []
    for model in models:
        if model["variant"] not in variants:
            continue
        ax = axes[backbones.index(model["backbone"]), variants.index(model["variant"])]
        ax.set_axis_on()
        panels.append((model, ax))
    return fig, panels


def finish_grid(fig: Any, handles: list, title: str) -> Any:
    """A model grid's legend along the bottom and its title."""
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return fig


def _q_label(q: Any) -> str:
    if q is None or q == "" or not np.isfinite(float(q)):
        return ""
    return "q<0.001" if float(q) < 0.001 else f"q={float(q):.3f}"


def model_label(backbone: str, tag: str) -> str:
    """'resnet3d', 'single_oa' -> 'ResNet3D Single-OA' (an unknown variant tag shown as given)."""
    try:
        variant = VARIANT_LABELS[variant_from_tag(tag)]
    except ValueError:
        variant = tag
    return f"{backbone_label(backbone)} {variant}"


def _ordered(names: set[str], order: Sequence[str]) -> list[str]:
    return [n for n in order if n in names] + sorted(names - set(order))
