"""Assemble the study's report.html from its tables and figures (everything embedded in one page)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from kneeoa.contracts import schemas
from kneeoa.contracts.report import LEGENDS, in_model_order
from kneeoa.report.html import Figure, Section, Table, write_report

METRIC_COLUMNS = ["backbone", "variant", "oa_auc", "oa_acc", "oa_f1", "kl_acc", "kl_macro_f1", "kl_macro_auc",
                  "kl_qwk", "kl_bal_acc"]
# the stats table without its bookkeeping columns (the 2x2 McNemar table, n): what a reader compares
STATS_COLUMNS = [c for c in schemas.STATS_COLUMNS if c not in ("mcnemar_table", "n_subjects")]
LATENT_COLUMNS = ["backbone", "variant", "evr_pc1", "abs_rho_pc1_kl", "abs_rho_pc1_oa", "probe_auroc_test",
                  "centroid_order", "centroid_monotone", "abs_rho_pc1_true_severity"]


def _png(path: Path, caption: str) -> list[Figure]:
    return [Figure(path.read_bytes(), caption)] if path.is_file() else []


def _floatify(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        new = {}
        for key, value in row.items():
            try:
                new[key] = float(value) if isinstance(value, str) and value not in ("", "True", "False") \
                    and key not in ("backbone", "variant", "task", "metric", "test", "case_id", "name") else value
            except ValueError:
                new[key] = value
        out.append(new)
    return out


def cohort_section(cohort) -> Section:
    from kneeoa.report.figures import kl_counts_png

    counts = {}
    rows = []
    for split in ("train", "test"):
        cases = cohort.split(split)
        per = {g: sum(1 for c in cases if c.kl == g) for g in range(5)}
        counts[split] = per
        rows.append({"split": split, "knees": len(cases), **{f"KL{g}": per[g] for g in range(5)},
                     "OA (KL>=2)": sum(per[g] for g in (2, 3, 4))})
    text = (f"<p>Cohort <code>{html.escape(str(cohort.root))}</code> ({html.escape(cohort.kind)} layout). "
            f"{len(cohort.ungraded)} knee(s) without a KL grade were excluded from supervised splits.</p>")
    return Section("Cohort", text, [Table(rows, human=True, legend=LEGENDS["cohort"]),
                                    Figure(kl_counts_png(counts), "Knees per KL grade and split")])


def build_study_report(out: Path, cohort, analyses: dict[str, Any], preset: str, timings: dict[str, float]) -> Path:
    """Write STUDY/report.html; returns its path."""
    from kneeoa.report.figures import metric_bars_png

    figures, tables = out / "figures", out / "tables"
    synthetic = any("TrueSeverity" in c.extra for c in cohort.cases)
    total_min = sum(timings.values()) / 60
    intro = (f"<p>Preset <b>{html.escape(preset)}</b>; {len(analyses['metrics'])} models; "
             f"total compute {total_min:.1f} min. Every table is also a CSV under <code>tables/</code>.</p>")
    if synthetic:
        intro += ('<p class="note">This cohort is the <b>synthetic knee phantom</b>: numbers show that the pipeline '
                  "works end to end, not how the models behave on real MRI. Not for clinical use.</p>")
    sections = [Section("Summary", intro), cohort_section(cohort)]
    metrics = in_model_order(_floatify(analyses["metrics"]))
    sections.append(Section(
        "Model performance",
        "<p>Test-split metrics of the last epoch (the paper's protocol): OA at threshold 0.5; KL macro scores over "
        "the five grades. Single-OA models have no KL outputs.</p>" + _collapsed_note(metrics),
        [Table(metrics, [c for c in METRIC_COLUMNS if any(c in r for r in metrics)], human=True,
               legend=LEGENDS["metrics"]),
         Figure(metric_bars_png(metrics, ["oa_auc", "kl_macro_f1", "kl_macro_auc"]), "OA AUC and KL macro scores")]))
    stats = analyses["stats"]
    stats_text = ("<p>Dual vs Single-OA on OA metrics, Dual vs Single-KL on KL metrics: paired subject-level "
                  "bootstrap (95% percentile CI), McNemar for OA accuracy, Benjamini–Hochberg q over the family. "
                  "Shaded rows: q &lt; 0.05.</p>")
    if stats.skipped:
        stats_text += f"<p>Skipped: {html.escape('; '.join(stats.skipped))}.</p>"
    sections.append(Section("Dual vs single heads", stats_text,
                            [Table(_floatify(stats.rows), STATS_COLUMNS, highlight="sig_fdr_0.05", human=True,
                                   legend=LEGENDS["stats"]),
                             *_png(figures / "forest.png", "Delta (dual - single) with 95% CI"),
                             *_png(figures / "deltas.png", "Delta per metric and backbone")]))
    latent = in_model_order(_floatify(analyses["latent"]))
    sections.append(Section(
        "Latent geometry",
        "<p>StandardScaler + 2-component PCA fitted on the training embeddings, test embeddings projected. "
        "|rho| is Spearman's between PC1 and the label (the sign of a PC is arbitrary); the probe is a 1-D logistic "
        "regression on train PC1. On the phantom, PC1 is also compared with the true (noise-free) severity.</p>",
        [Table(latent, [c for c in LATENT_COLUMNS if any(c in r for r in latent)], human=True,
               legend=LEGENDS["latent"]),
         *_png(figures / "pca_grid.png", "Test embeddings on the train-fitted PCA, coloured by KL grade")]))
    from kneeoa.report.paper_figures import paper_sections

    sections += paper_sections(out, analyses)  # the paper's per-model, per-task and manifold figures
    from kneeoa.contracts.vocab import model_name
    from kneeoa.report.trust import trust_section

    sections.append(trust_section(out, [model_name(r["backbone"], r["variant"]) for r in analyses["metrics"]]))
    sections.append(saliency_section(analyses["saliency"], figures))
    from kneeoa.report.segmentation import segmentation_section

    sections += [s for s in [segmentation_section(analyses.get("segmentation"))] if s is not None]
    files = sorted(p.relative_to(out).as_posix() for p in tables.glob("*.csv"))
    # relative links: they work where the study folder is opened, copied or zipped
    sections.append(Section("Files", "<ul>" + "".join(f'<li><a href="{html.escape(f)}"><code>{html.escape(f)}'
                                                      f"</code></a></li>" for f in files) + "</ul>"))
    title = "KneeOA study report"
    subtitle = f"{cohort.kind} cohort, preset {preset}"
    return write_report(out / "report.html", title, sections, subtitle)


def _collapsed_note(metrics: list[dict[str, Any]]) -> str:
    """Say in words when a KL QWK of 0 or below means 'one grade for everyone / worse than chance'."""
    low = [f"{r['backbone']} {r['variant']} ({r['kl_qwk']:.3f})" for r in metrics
           if isinstance(r.get("kl_qwk"), float) and r["kl_qwk"] == r["kl_qwk"] and r["kl_qwk"] <= 0.0]
    if not low:
        return ""
    return (f'<p class="note">KL QWK at or below 0 for {html.escape(", ".join(low))}: these models grade no better '
            "than chance; 0.000 exactly means one KL grade predicted for every knee (a narrow model that collapsed "
            "to the class prior on few gradient steps). The computation did not fail.</p>")


def _case_rows(out: Path, name: str) -> dict[str, dict[str, Any]]:
    from kneeoa.analysis.saliency_job import OVERLAP_CSV
    from kneeoa.data.tables import read_table
    from kneeoa.errors import KneeOAError

    try:
        return {str(r["case_id"]): r for r in read_table(out / "saliency" / name / OVERLAP_CSV)}
    except KneeOAError:
        return {}


def saliency_section(saliency: dict[str, Any], figures: Path) -> Section:
    """Mean overlap per model next to its chance level, and the dual models' maps of one knee per KL grade."""
    import numpy as np

    from kneeoa.contracts.vocab import CARTILAGE_LABELS
    from kneeoa.data.volume import read_volume
    from kneeoa.report.figures import saliency_grid_png
    from kneeoa.utils.cells import number

    cases = saliency["cases"]
    masks = [read_volume(c.mask, is_label=True).array if c.mask is not None else None for c in cases]  # once each
    shares = [float(np.isin(m, CARTILAGE_LABELS).mean()) if m is not None else float("nan") for m in masks]
    # chance = the mass@ROI of a map spread evenly: the cartilage share of the voxels, mean over the masked knees
    masked = [share for mask, share in zip(masks, shares) if mask is not None]
    chance = float(np.mean(masked)) if masked else float("nan")
    rows = in_model_order(_floatify(saliency["rows"]))
    for row in rows:
        mass = row.get("mass_roi")
        row["mass_roi_chance"] = chance
        row["mass_roi_x_chance"] = mass / chance if isinstance(mass, float) and chance > 0 else float("nan")
    keep = ["backbone", "variant", "n_cases", "mass_roi", "mass_roi_chance", "mass_roi_x_chance"]
    if rows and rows[0].get("n_automatic_masks"):  # overlaps on automatic masks (`--segmenter`) are counted
        keep.insert(3, "n_automatic_masks")
    keep += [k for k in (rows[0] if rows else {}) if k not in keep and (k.startswith(("top5", "dice5"))
                                                                       or (k.endswith("mass_roi") and k != "mass_roi"))]
    models = [n for n in sorted(saliency["maps"], key=_order) if n.endswith("_dual")]
    per_case = {name: _case_rows(figures.parent, name) for name in models}  # each table read once
    grid_cases, grid_maps = [], {}
    for case, mask, share in zip(cases, masks, shares):
        row = len(grid_cases)
        added = False
        for name in models:
            path = saliency["maps"][name].get(case.case_id)
            if path is None:
                continue
            mass = number(per_case[name].get(case.case_id, {}).get("mass_roi"))
            note = (f"mass@ROI {mass:.2f} = {mass / share:.1f}x chance" if mass == mass and share > 0
                    else "")
            grid_maps[(row, name)] = {"saliency": read_volume(path, allow_constant=True).array, "note": note}
            added = True
        if added:
            grid_cases.append({"title": f"{case.case_id} · KL {case.kl}", "image": read_volume(case.image).array,
                               "mask": mask})
    items: list[Table | Figure] = [Table(rows, keep, human=True, legend=LEGENDS["saliency"])] if rows else []
    if grid_cases:
        png = saliency_grid_png(grid_cases, models, grid_maps)
        (figures / "overlays.png").write_bytes(png)
        items.append(Figure(png, "SmoothGrad maps of the Dual models on one test knee per KL grade (rows): the map "
                                 "over the MRI, more opaque where higher (colour bar), cartilage outlined in green; "
                                 "each panel gives that knee's mass@ROI and its multiple of chance"))
    text = ("<p>Share of saliency on cartilage (labels 2, 4, 5), next to the share a map spread evenly would get "
            "(chance = the cartilage share of the voxels), so that 0.07 reads as a multiple of chance. Per-case "
            "values in <code>saliency/&lt;model&gt;/saliency_overlap.csv</code>.</p>")
    return Section("Saliency vs cartilage", text, items)


def _order(name: str) -> tuple:
    from kneeoa.analysis.latent import split_name
    from kneeoa.contracts.report import model_sort_key

    backbone, variant = split_name(name)
    return model_sort_key({"backbone": backbone, "variant": variant})
