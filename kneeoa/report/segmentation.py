"""The report's segmentation section: Dice/HD95 per label, predicted vs reference outlines, thickness vs severity."""

from __future__ import annotations

import html
from typing import Any

from kneeoa.report.html import Figure, Section, Table


def segmentation_section(seg: dict[str, Any] | None) -> Section | None:
    """A Section from `kneeoa.segmentation.evaluation.cohort_segmentation`'s result (None: no segmenter ran)."""
    if not seg or not seg.get("summary"):
        return None
    rows = [{"label": name, "n": s["n"], "Dice mean": s["dice_mean"], "Dice SD": s["dice_sd"],
             "Dice min": s["dice_min"], "HD95 median (mm)": s["hd95_median_mm"]} for name, s in seg["summary"].items()]
    synthetic = "SYNTHETIC" in str((seg.get("card") or {}).get("training_data", ""))
    text = (f"<p>Segmenter <code>{html.escape(seg['segmenter'])}</code>"
            f"{' (trained on the phantom: synthetic)' if synthetic else ''}, applied to {rows[0]['n']} test knees "
            "that have reference masks; medial/lateral tibial plates assigned by the knee side. Dice and the "
            "95th-percentile Hausdorff distance per label (MONAI).</p>")
    items: list[Table | Figure] = [Table(rows, caption="Automatic vs reference masks, per label")]
    rho = seg.get("spearman") or {}
    if rho:
        text += ("<p>Medial tibial cartilage thickness (mean over the bone interface, distance transform in mm) vs "
                 "the phantom's true severity: Spearman rho "
                 + ", ".join(f"{k} masks {v['rho']:.2f} (p={v['p']:.2g}, n={v['n']})" for k, v in rho.items())
                 + ".</p>")
    if seg.get("figure"):
        items.append(Figure(open(seg["figure"], "rb").read(), "Reference (solid) vs automatic (dashed) outlines"))
    return Section("Segmentation", text, items)
