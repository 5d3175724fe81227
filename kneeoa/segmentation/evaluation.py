"""Segmentation on a cohort's test split, for the study report: Dice/HD95 per label, thickness vs severity.

`cohort_segmentation` segments the first `n_cases` test knees that have reference masks (knee sides from the
cohort), scores them, measures medial tibial cartilage thickness on the automatic and on the reference mask of
every one of them, and, on the phantom (which keeps the true severity), reports Spearman's rho of thickness vs
true severity. Writes OUT/tables/segmentation_dice.csv, segmentation_thickness.csv and
OUT/figures/segmentation_outlines.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.segmentation import MASK_SOURCES
from kneeoa.contracts.vocab import LABEL_OF

MEDIAL_COLUMN = "medial_tibial_thickness_mean_mm"


def spearman(x: list[float], y: list[float]) -> dict[str, float]:
    """Spearman's rho and its p-value (scipy) over the pairs where both are finite."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if np.isfinite(a) and np.isfinite(b)]
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return {"rho": float("nan"), "p": float("nan"), "n": len(pairs)}  # undefined for a constant input
    result = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": len(pairs)}


def cohort_segmentation(cohort: Any, out: str | Path, segmenter: str | Path, n_cases: int = 12,
                        device: str = "cpu") -> dict[str, Any]:
    """See the module doc. Returns {'summary', 'rows', 'thickness', 'spearman', 'figure', 'segmenter'}."""
    from kneeoa.data.tables import write_table
    from kneeoa.data.volume import read_volume
    from kneeoa.segmentation.checkpoint import load_segmenter
    from kneeoa.segmentation.infer import segment_volume
    from kneeoa.segmentation.metrics import label_metrics, summarize
    from kneeoa.segmentation.thickness import compartment_thickness

    out = Path(out)
    model, card = load_segmenter(segmenter, device)
    cases = [c for c in cohort.split("test", graded_only=False) if c.mask is not None][:n_cases]
    rows, thickness, shown = [], [], []
    for case in cases:
        image = read_volume(case.image)
        ref = read_volume(case.mask, is_label=True)
        pred = segment_volume(model, card, image, device, knee_side=case.extra.get("knee_side"))
        rows += [{"case_id": case.case_id, **r} for r in label_metrics(pred, ref.array, ref.spacing_mm)]
        auto_t = compartment_thickness(pred, image.spacing_mm)[MEDIAL_COLUMN]
        ref_t = compartment_thickness(ref.array, ref.spacing_mm)[MEDIAL_COLUMN]
        severity = case.extra.get("TrueSeverity")
        thickness.append({"case_id": case.case_id, "true_severity": float(severity) if severity is not None else "",
                          "medial_thickness_automatic_mm": auto_t, "medial_thickness_reference_mm": ref_t})
        if len(shown) < 4:
            shown.append((case.case_id, image.array, ref.array, pred))
    if not cases:
        return {"summary": {}, "rows": [], "thickness": [], "spearman": {}, "figure": None, "segmenter": str(segmenter)}
    write_table(out / "tables" / "segmentation_dice.csv", rows, list(rows[0]))
    write_table(out / "tables" / "segmentation_thickness.csv", thickness, list(thickness[0]))
    rho = {}
    if all(t["true_severity"] != "" for t in thickness):
        severity = [t["true_severity"] for t in thickness]
        rho = {source: spearman([t[f"medial_thickness_{source}_mm"] for t in thickness], severity)
               for source in reversed(MASK_SOURCES)}  # automatic first, as the report reads
    figure = outlines_png(shown, out / "figures" / "segmentation_outlines.png")
    return {"summary": summarize(rows), "rows": rows, "thickness": thickness, "spearman": rho, "figure": figure,
            "segmenter": str(segmenter), "card": card}


def outlines_png(shown: list[tuple], path: Path) -> Path | None:
    """One coronal slice per case through the medial plate: image, reference (solid) and automatic (dashed)."""
    from kneeoa.analysis.plots import pyplot, save_figure
    from kneeoa.contracts.segmentation import SEGMENT_COLORS

    if not shown:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4), squeeze=False)
    for ax, (case_id, image, ref, pred) in zip(axes[0], shown):
        plate = (ref == LABEL_OF["medial_tibial_cartilage"]) | (ref == LABEL_OF["lateral_tibial_cartilage"])
        j = int(np.argmax(plate.sum(axis=(0, 2)))) if plate.any() else image.shape[1] // 2
        ax.imshow(image[:, j, :].T, cmap="gray", origin="lower")
        for value, colour in SEGMENT_COLORS.items():
            for labels, style in ((ref, "solid"), (pred, "dashed")):
                mask = (labels[:, j, :] == value).T.astype(float)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=[colour], linestyles=style, linewidths=1.0)
        ax.set_title(case_id, fontsize=9)
        ax.set_axis_off()
    fig.suptitle("reference (solid) vs automatic (dashed) outlines", fontsize=10)
    return save_figure(fig, path)


def bundled_segmenter() -> Path | None:
    """Resources/demo_seg_model.safetensors of this checkout / installation, or None."""
    import kneeoa
    from kneeoa.slicer.segmentation import DEMO_SEGMENTER

    path = Path(kneeoa.__file__).resolve().parents[1] / "Resources" / DEMO_SEGMENTER
    return path if path.is_file() else None


def study_segmentation(cohort: Any, out: str | Path, segmenter: str | Path | None,
                       n_cases: int = 12) -> dict[str, Any] | None:
    """The study's segmentation analysis (None without a segmenter)."""
    if segmenter is None:
        return None
    from kneeoa.progress import Progress

    with Progress("segmentation", total=1, unit="analysis") as bar:
        result = cohort_segmentation(cohort, out, segmenter, n_cases)
        bar.update(1)
    return result
