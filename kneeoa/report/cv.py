"""The CV study's report: which Dual-vs-Single conclusions hold in how many seeds and folds.

`cv_section` is the section (forest plot with one line per seed plus the combined estimate, the
across-seeds table); `build_cv_report` assembles STUDY/report.html around it (folds, runs, pooled
metrics, latent geometry per fold, failed tasks).
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.studies import SEED_COMBINED, SEED_SUMMARY_COLUMNS
from kneeoa.report.html import Figure, Section, Table, write_report

SUMMARY_COLUMNS = [c for c in SEED_SUMMARY_COLUMNS if c != "combined_p"]  # q says it
SEED_COLOURS = ("#4575b4", "#91bfdb", "#fc8d59", "#d73027", "#7b3294", "#1a9850", "#8c510a", "#666666")


def seed_forest_plot(rows: list[dict[str, Any]], title: str = "Dual - Single per seed and combined (95% CI)"):
    """One block per test: a thin line per seed and a thick one for the combined estimate."""
    from kneeoa.analysis.plots import pyplot
    from kneeoa.contracts.catalog import backbone_label

    plt = pyplot()
    tests = list(dict.fromkeys((r["backbone"], r["task"], r["metric"]) for r in rows))
    seeds = sorted({r["seed"] for r in rows if r["seed"] != SEED_COMBINED})
    per_test = len(seeds) + 1
    fig, ax = plt.subplots(figsize=(7.2, 0.16 * per_test * max(len(tests), 1) + 1.4))
    ticks, labels = [], []
    for t, key in enumerate(tests):
        top = (len(tests) - t) * (per_test + 1)
        members = {r["seed"]: r for r in rows if (r["backbone"], r["task"], r["metric"]) == key}
        for j, seed in enumerate([*seeds, SEED_COMBINED]):
            row = members.get(seed)
            if row is None:
                continue
            y = top - j
            combined = seed == SEED_COMBINED
            colour = "#000000" if combined else SEED_COLOURS[j % len(SEED_COLOURS)]
            lo, hi, delta = float(row["ci_lo"]), float(row["ci_hi"]), float(row["delta"])
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [y, y], color=colour, lw=2.6 if combined else 1.1)
            filled = bool(row.get("sig_fdr_0.05"))
            ax.plot([delta], [y], "D" if combined else "o", color=colour, mfc=colour if filled else "white",
                    ms=6 if combined else 4)
        ticks.append(top - len(seeds) / 2)
        labels.append(f"{backbone_label(key[0])} {key[1]} {key[2]}")
    ax.axvline(0.0, color="#999999", lw=0.8, ls="--")
    ax.set_yticks(ticks, labels, fontsize=7)
    handles = [plt.Line2D([], [], color=SEED_COLOURS[j % len(SEED_COLOURS)], marker="o", lw=1.1, label=f"seed {s}")
               for j, s in enumerate(seeds)]
    handles.append(plt.Line2D([], [], color="#000000", marker="D", lw=2.6, label="combined"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel("delta = Dual - Single  (filled: q < 0.05 within its family)")
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def cv_section(stats: dict[str, Any], figures: Path) -> Section:
    """Conclusions across seeds and folds."""
    summary = stats["summary"]
    n_seeds = max((r["n_seeds"] for r in summary), default=0)
    text = ("<p>Paired Dual-vs-Single tests on the pooled out-of-fold predictions (every graded knee predicted once "
            "per seed by the model that did not train on it). The bootstrap resamples <b>subjects</b>: both knees of "
            "a drawn subject come together (a cluster bootstrap; McNemar is not used because it assumes independent "
            "knees). Benjamini–Hochberg q within each seed's family of tests. <b>Combined</b>: the seed-averaged "
            "delta, with a subject-clustered bootstrap in which each resample draws subjects once for all seeds; its "
            "q is over the combined family. <i>Seeds sig.</i> = seeds with q &lt; 0.05; <i>fold runs +</i> = "
            "(fold, seed) runs in which Dual beat Single on that fold's knees.</p>")
    robust = [r for r in summary if r["combined_sig"] and r["n_seeds_sig"] == r["n_seeds"]]
    if summary:
        text += (f"<p>{len(robust)} of {len(summary)} tests are significant in every one of the {n_seeds} seed(s) and "
                 "in the combined estimate" + (": " + ", ".join(html.escape(f"{r['backbone']} {r['task']} "
                                                                          f"{r['metric']}") for r in robust)
                                               if robust else "") + ".</p>")
    items: list[Table | Figure] = [Table(summary, SUMMARY_COLUMNS, highlight="combined_sig")] if summary else []
    forest = figures / "cv_forest.png"
    if forest.is_file():
        items.append(Figure(forest.read_bytes(), "Delta per seed (thin) and combined (thick) with 95% CI"))
    return Section("Conclusions across seeds and folds", text, items)


def folds_section(meta: dict[str, Any], fold_rows: list[dict[str, Any]]) -> Section:
    rows = []
    for fold in sorted({int(r["fold"]) for r in fold_rows}):
        members = [r for r in fold_rows if int(r["fold"]) == fold]
        kl = Counter(int(float(r["KLGrade"])) for r in members)
        subjects = Counter(str(r["subject"]) for r in members)
        rows.append({"fold": fold, "knees": len(members), "subjects": len(subjects),
                     "two-knee subjects": sum(n > 1 for n in subjects.values()), **{f"KL{g}": kl[g] for g in range(5)}})
    text = (f"<p>{meta['folds']} folds over all {len(fold_rows)} graded knees (scikit-learn StratifiedGroupKFold: "
            f"stratified by KL grade, grouped by subject, so a subject's knees never straddle folds), "
            f"{meta['seeds']} training seed(s), preset <b>{html.escape(str(meta['preset']))}</b>. "
            "The fold table is <code>folds.csv</code>.</p>")
    return Section("Folds", text, [Table(rows)])


def runs_section(states: dict[str, list[dict]], notes: list[str]) -> Section:
    done, failed, unfinished = states["done"], states["failed"], states["unfinished"]
    compute = sum(e["seconds"] or 0 for e in done) / 60
    text = (f"<p>{len(done)} run(s) finished ({compute:.1f} min of compute), {len(failed)} failed, "
            f"{len(unfinished)} not finished. Re-run the study or <code>kneeoa study --collect</code> to "
            "add runs as they finish.</p>")
    if notes:
        text += "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
    items = [Table(failed, ["index", "name", "fold", "seed", "error", "log"], caption="Failed tasks")] if failed else []
    return Section("Runs", text, items)


def build_cv_report(out: Path, result: dict[str, Any]) -> Path:
    """Write STUDY/report.html for a CV study; returns its path."""
    figures = out / "figures"
    meta = result["meta"]
    intro = (f"<p>Cross-validated study: {len(meta['backbones'])} backbone(s) x {len(meta['variants'])} variant(s) x "
             f"{meta['folds']} folds x {meta['seeds']} seed(s). Every table is also a CSV under <code>tables/</code>; "
             "pooled predictions per seed under <code>pooled/seed&lt;s&gt;/</code> "
             "(<code>kneeoa stats</code> reads them).</p>")
    if meta.get("synthetic"):
        intro += ('<p class="note">This cohort is the <b>synthetic knee phantom</b>: numbers show that the pipeline '
                  "works end to end, not how the models behave on real MRI. Not for clinical use.</p>")
    sections = [Section("Summary", intro), folds_section(meta, result["fold_rows"]),
                runs_section(result["states"], result["notes"])]
    if result["metrics"]:
        keep = ["backbone", "variant", "seed", "n_knees", "oa_auc", "oa_acc", "oa_f1", "kl_acc", "kl_macro_f1",
                "kl_macro_auc", "kl_qwk"]
        sections.append(Section("Pooled out-of-fold performance",
                                "<p>Metrics of the pooled held-out predictions, per model and seed.</p>",
                                [Table(result["metrics"], [k for k in keep if any(k in r for r in result["metrics"])])]))
    sections.append(cv_section(result["stats"], figures))
    if result["latent"]:
        cols = list(dict.fromkeys(k for r in result["latent"] for k in r))
        sections.append(Section(
            "Latent geometry across folds",
            "<p>Per run, StandardScaler + 2-component PCA fitted on that fold's training knees, held-out knees "
            "projected (as in the official study); mean and SD over folds and seeds. Per-run rows: "
            "<code>tables/cv_latent_folds.csv</code>.</p>", [Table(result["latent"], cols)]))
    return write_report(out / "report.html", "KneeOA cross-validated study", sections,
                        f"{meta['folds']}-fold x {meta['seeds']}-seed, preset {meta['preset']}")
