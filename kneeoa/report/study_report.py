"""Assemble the study's report.html from its tables and figures (everything embedded in one page)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from kneeoa.contracts import schemas
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
    return Section("Cohort", text, [Table(rows), Figure(kl_counts_png(counts), "Knees per KL grade and split")])


def build_study_report(out: Path, cohort, analyses: dict[str, Any], preset: str, timings: dict[str, float]) -> Path:
    """Write STUDY/report.html; returns its path."""
    from kneeoa.report.figures import metric_bars_png, overlay_grid_png

    figures, tables = out / "figures", out / "tables"
    synthetic = any("TrueSeverity" in c.extra for c in cohort.cases)
    total_min = sum(timings.values()) / 60
    intro = (f"<p>Preset <b>{html.escape(preset)}</b>; {len(analyses['metrics'])} models; "
             f"total compute {total_min:.1f} min. Every table is also a CSV under <code>tables/</code>.</p>")
    if synthetic:
        intro += ('<p class="note">This cohort is the <b>synthetic knee phantom</b>: numbers show that the pipeline '
                  "works end to end, not how the models behave on real MRI. Not for clinical use.</p>")
    sections = [Section("Summary", intro), cohort_section(cohort)]
    metrics = _floatify(analyses["metrics"])
    sections.append(Section(
        "Model performance",
        "<p>Test-split metrics of the last epoch (the paper's protocol): OA at threshold 0.5; KL macro scores over "
        "the five grades. Single-OA models have no KL outputs.</p>",
        [Table(metrics, [c for c in METRIC_COLUMNS if any(c in r for r in metrics)]),
         Figure(metric_bars_png(metrics, ["oa_auc", "kl_macro_f1", "kl_macro_auc"]), "OA AUC and KL macro scores")]))
    stats = analyses["stats"]
    stats_text = ("<p>Dual vs Single-OA on OA metrics, Dual vs Single-KL on KL metrics: paired subject-level "
                  "bootstrap (95% percentile CI), McNemar for OA accuracy, Benjamini–Hochberg q over the family. "
                  "Shaded rows: q &lt; 0.05.</p>")
    if stats.skipped:
        stats_text += f"<p>Skipped: {html.escape('; '.join(stats.skipped))}.</p>"
    sections.append(Section("Dual vs single heads", stats_text,
                            [Table(_floatify(stats.rows), STATS_COLUMNS, highlight="sig_fdr_0.05"),
                             *_png(figures / "forest.png", "Delta (dual - single) with 95% CI"),
                             *_png(figures / "deltas.png", "Delta per metric and backbone")]))
    latent = _floatify(analyses["latent"])
    sections.append(Section(
        "Latent geometry",
        "<p>StandardScaler + 2-component PCA fitted on the training embeddings, test embeddings projected. "
        "|rho| is Spearman's between PC1 and the label (the sign of a PC is arbitrary); the probe is a 1-D logistic "
        "regression on train PC1. On the phantom, PC1 is also compared with the true (noise-free) severity.</p>",
        [Table(latent, [c for c in LATENT_COLUMNS if any(c in r for r in latent)]),
         *_png(figures / "pca_grid.png", "Test embeddings on the train-fitted PCA, coloured by KL grade")]))
    from kneeoa.report.paper_figures import paper_sections

    sections += paper_sections(out, analyses)  # the paper's per-model, per-task and manifold figures
    from kneeoa.contracts.vocab import model_name
    from kneeoa.report.trust import trust_section

    sections.append(trust_section(out, [model_name(r["backbone"], r["variant"]) for r in analyses["metrics"]]))
    sections.append(saliency_section(analyses["saliency"], figures, overlay_grid_png))
    from kneeoa.report.segmentation import segmentation_section

    sections += [s for s in [segmentation_section(analyses.get("segmentation"))] if s is not None]
    files = sorted(p.relative_to(out).as_posix() for p in tables.glob("*.csv"))
    sections.append(Section("Files", "<ul>" + "".join(f"<li><code>{html.escape(f)}</code></li>" for f in files)
                            + "</ul>"))
    title = "KneeOA study report"
    subtitle = f"{cohort.kind} cohort, preset {preset}"
    return write_report(out / "report.html", title, sections, subtitle)


def saliency_section(saliency: dict[str, Any], figures: Path, overlay_grid_png) -> Section:
    """Mean overlap per model and example overlays of the dual models."""
    from kneeoa.data.volume import read_volume

    rows = _floatify(saliency["rows"])
    keep = ["backbone", "variant", "n_cases"] + [k for k in (rows[0] if rows else {})
                                                   if k.startswith(("mass_roi", "top5", "dice5"))
                                                   or k.endswith("mass_roi")]
    examples = []
    for name, maps in saliency["maps"].items():
        if not name.endswith("_dual"):
            continue
        for case in saliency["cases"][:1]:
            if case.case_id in maps:
                examples.append({"title": f"{name} · {case.case_id} (KL {case.kl})",
                                 "image": read_volume(case.image).array,
                                 "saliency": read_volume(maps[case.case_id], allow_constant=True).array,
                                 "mask": read_volume(case.mask, is_label=True).array if case.mask else None})
    items: list[Table | Figure] = [Table(rows, keep)] if rows else []
    if examples:
        png = overlay_grid_png(examples)
        (figures / "overlays.png").write_bytes(png)
        items.append(Figure(png, "Saliency (SmoothGrad x input) over the MRI with the cartilage outline"))
    text = ("<p>Share of saliency on cartilage (labels 2, 4, 5): mass@ROI = sum of positive saliency inside the "
            "cartilage / total; top-k@ROI and Dice@k use the k% most salient voxels. Means over the explained test "
            "cases; per-case values in <code>saliency/&lt;model&gt;/saliency_overlap.csv</code>.</p>")
    return Section("Saliency vs cartilage", text, items)
