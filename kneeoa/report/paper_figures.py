"""The figures and tables the paper's evaluation scripts make, for the study report.

- per model, from `<name>_preds.csv` (eval_oaizib_aclr*.py): ROC curves (OA; KL one-vs-rest per grade with
  its AUC), confusion matrices (OA 2x2, KL 5x5) and scikit-learn's classification report;
- from the Dual-vs-Single rows (plot_forest_dual_vs_single.py, compute_dual_vs_single_stats.py): one forest
  plot per task annotated with p and q, the table without FDR columns (the paper's `stats_recomputed.csv`)
  and a protocol JSON (`stats_recomputed_protocol.json`) next to `stats.csv`;
- from the embeddings (the "neural manifold" of its eval script): t-SNE of the test embeddings
  (StandardScaler, perplexity min(30, (n-1)/3), PCA init, seed 0, as the paper's code) next to the
  train-fitted PCA, coloured by KL and by OA, in the PCA grid's layout (rows backbones, columns variants).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.analysis.plots import KL_COLOURS, finish_grid, model_grid, model_label, pyplot, save_figure
from kneeoa.contracts.catalog import backbone_label, display_order
from kneeoa.contracts.vocab import VARIANT_TAGS
from kneeoa.hierarchy import N_KL

OA_COLOURS = ("#4393c3", "#d6604d")  # non-OA, OA
REPORT_COLUMNS = ["backbone", "variant", "task", "class", "precision", "recall", "f1-score", "support"]
TSNE_PERPLEXITY = 30.0


# --- per-model classification figures -------------------------------------------------------------------
def read_preds(path: str | Path) -> dict[str, np.ndarray]:
    """The graded rows of a predictions CSV: label_oa, prob_oa, pred_oa and, when present, label_kl, KL probs."""
    from kneeoa.data.tables import read_table

    rows = [r for r in read_table(path) if str(r.get("label_kl", "")).strip() not in ("", "nan")]
    out = {"label_oa": np.array([int(float(r["label_oa"])) for r in rows]),
           "prob_oa": np.array([float(r["prob_oa"]) for r in rows]),
           "pred_oa": np.array([int(float(r["pred_oa"])) for r in rows]),
           "label_kl": np.array([int(float(r["label_kl"])) for r in rows])}
    if rows and "prob_kl_0" in rows[0]:
        out["kl_probs"] = np.array([[float(r[f"prob_kl_{k}"]) for k in range(N_KL)] for r in rows])
        out["pred_kl"] = out["kl_probs"].argmax(1)
    return out


def roc_confusion_figure(preds: dict[str, np.ndarray], title: str) -> Any:
    """OA ROC | KL one-vs-rest ROC | OA 2x2 confusion | KL 5x5 confusion (KL panels only with KL outputs)."""
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, roc_auc_score, roc_curve

    plt = pyplot()
    has_kl = "kl_probs" in preds
    fig, axes = plt.subplots(1, 4 if has_kl else 2, figsize=(13.2 if has_kl else 6.6, 3.2), squeeze=False)
    axes = list(axes[0])
    y, prob = preds["label_oa"], preds["prob_oa"]
    ax = axes[0]
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, prob)
        ax.plot(fpr, tpr, color="#b2182b", label=f"AUC={roc_auc_score(y, prob):.3f}")
    _roc_axes(ax, "OA vs non-OA (KL>=2)")
    if has_kl:
        ax = axes[1]
        for grade in range(N_KL):
            one = (preds["label_kl"] == grade).astype(int)
            if 0 < one.sum() < len(one):
                fpr, tpr, _ = roc_curve(one, preds["kl_probs"][:, grade])
                auc = roc_auc_score(one, preds["kl_probs"][:, grade])
                ax.plot(fpr, tpr, color=KL_COLOURS[grade], label=f"KL {grade} (AUC={auc:.3f})")
        _roc_axes(ax, "KL one-vs-rest")
    panels = [(axes[-2] if has_kl else axes[1], y, preds["pred_oa"], ["non-OA", "OA"], "OA confusion")]
    if has_kl:
        panels.append((axes[-1], preds["label_kl"], preds["pred_kl"], [str(g) for g in range(N_KL)], "KL confusion"))
    for ax, truth, pred, names, name in panels:
        cm = confusion_matrix(truth, pred, labels=list(range(len(names))))
        ConfusionMatrixDisplay(cm, display_labels=names).plot(ax=ax, cmap="Blues", colorbar=False)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _roc_axes(ax: Any, title: str) -> None:
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate", fontsize=8)
    ax.set_ylabel("true positive rate", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=6.5, frameon=False)
    ax.tick_params(labelsize=7)


def classification_report_rows(preds: dict[str, np.ndarray], backbone: str, variant: str) -> list[dict[str, Any]]:
    """scikit-learn's classification report (per class, macro and weighted averages) for OA and KL as rows."""
    from sklearn.metrics import classification_report

    rows = []
    tasks = [("OA", preds["label_oa"], preds["pred_oa"], ["non-OA", "OA"])]
    if "pred_kl" in preds:
        tasks.append(("KL", preds["label_kl"], preds["pred_kl"], [f"KL{g}" for g in range(N_KL)]))
    for task, truth, pred, names in tasks:
        report = classification_report(truth, pred, labels=list(range(len(names))), target_names=names,
                                       output_dict=True, zero_division=0)
        for name, values in report.items():
            if isinstance(values, dict):
                rows.append({"backbone": backbone, "variant": variant, "task": task, "class": name,
                             **{k: round(float(v), 4) for k, v in values.items()}})
    return rows


# --- statistics: per-task forest plots, the table without FDR and the protocol ---------------------------
def forest_task_figure(rows: Sequence[dict[str, Any]], task: str) -> Any:
    """One task's Dual-vs-Single deltas with 95% CI, p and q (BH) in a column on the right; q < 0.05 in colour."""
    plt = pyplot()
    rows = [r for r in rows if r["task"] == task]
    single = "Single-OA" if task == "OA" else "Single-KL"
    fig, ax = plt.subplots(figsize=(7.0, 0.42 * max(len(rows), 1) + 1.3))
    for pos, row in enumerate(rows):
        y = len(rows) - 1 - pos
        delta, lo, hi = (float(row[k]) for k in ("delta", "ci_lo", "ci_hi"))
        sig = bool(row.get("sig_fdr_0.05"))
        colour = "#0072B2" if sig else "#999999"
        err = [[max(delta - lo, 0)], [max(hi - delta, 0)]] if np.isfinite(lo) and np.isfinite(hi) else None
        ax.errorbar(delta, y, xerr=err, fmt="o", ms=5, capsize=3, lw=1.3, color=colour)
        text = f"{_pq(row.get('p_value'))}  {_pq(row.get('q_value_BH'))}{'*' if sig else ''}"
        ax.text(1.04, y, text, transform=ax.get_yaxis_transform(), fontsize=8, va="center",
                family="monospace", color=colour if sig else "#404040")
    ax.text(1.04, len(rows) - 0.4, "p       q (BH)", transform=ax.get_yaxis_transform(), fontsize=8,
            fontweight="bold", va="bottom")
    ax.axvline(0, ls="--", lw=0.9, color="#595959")
    ax.set_yticks(range(len(rows)), [f"{backbone_label(r['backbone'])} | {r['metric']}" for r in rows][::-1],
                  fontsize=8)
    ax.set_xlabel(f"Dual - {single} (95% CI)", fontsize=8)
    ax.set_title(f"Dual vs single ({task})", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _pq(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "  -  "
    if not np.isfinite(v):  # a metric undefined on this split (e.g. a grade missing for macro AUC)
        return "  -  "
    return "<0.001" if v < 0.0005 else f"{v:.3f}"


def stats_extra_paths(stats_csv: str | Path) -> dict[str, Path]:
    """Next to `stats.csv`: `stats_no_fdr.csv` and `stats_protocol.json` (named after the stats file)."""
    stats_csv = Path(stats_csv)
    return {"no_fdr": stats_csv.with_name(f"{stats_csv.stem}_no_fdr.csv"),
            "protocol": stats_csv.with_name(f"{stats_csv.stem}_protocol.json")}


def write_stats_extras(stats_csv: str | Path, rows: list[dict[str, Any]], n_resamples: int, seed: int = 42,
                       ) -> dict[str, Path]:
    """The rows before Benjamini-Hochberg (the paper's stats_recomputed.csv) and the protocol JSON, atomically."""
    from kneeoa.analysis.compare import FDR_LEVEL, STATS_COLUMNS
    from kneeoa.data.tables import write_table
    from kneeoa.utils.atomic import atomic_write_text

    columns = [c for c in STATS_COLUMNS if c not in ("q_value_BH", "sig_fdr_0.05")]
    protocol = {
        "bootstrap": {"B": int(n_resamples), "seed": int(seed), "rng": "numpy.random.default_rng(seed), one "
                      "generator shared by all tests in order", "resampling": "paired subject-level, "
                      "rng.integers(0, n, size=n) per resample", "ci": "percentile 95% (numpy.percentile 2.5, 97.5)",
                      "p_value": "two-sided: min(1, 2*min((#{d<=0}+1)/(B+1), (#{d>=0}+1)/(B+1)))",
                      "ties": "d = 0 counts on both sides; resamples where a metric is undefined are dropped"},
        "test_order": "backbone (ResNet3D, M3T, nnMamba) -> task (OA: AUC, Acc, F1; KL: M-AUC, Acc, M-F1)",
        "mcnemar": "OA accuracy: exact binomial if discordant pairs b+c < 25, else chi-square with continuity "
                   "correction (|b-c|-1)^2/(b+c)",
        "fdr": f"Benjamini-Hochberg over the family of {len(rows)} Dual-vs-single tests, level {FDR_LEVEL}",
        "oa_eval": "Single-KL OA metrics use prob_oa = p(KL>=2); Dual OA metrics use the OA head; threshold 0.5",
        "n_subjects": int(rows[0]["n_subjects"]) if rows else 0,
    }
    paths = stats_extra_paths(stats_csv)
    write_table(paths["no_fdr"], rows, columns)
    atomic_write_text(paths["protocol"], json.dumps(protocol, indent=2) + "\n")
    return paths


# --- latent manifolds -------------------------------------------------------------------------------------
def tsne_2d(embedding: np.ndarray, seed: int = 0) -> np.ndarray:
    """The paper's t-SNE of one set of embeddings: standardised, perplexity min(30, (n-1)/3), PCA init."""
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    e = StandardScaler().fit_transform(np.asarray(embedding, dtype=np.float64))
    n = e.shape[0]
    if n <= 5 or e.shape[1] < 2:  # the paper's code falls back to PCA there
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(e) if min(e.shape) >= 2 else \
            np.c_[e[:, 0], np.zeros(n)]
    perplexity = min(TSNE_PERPLEXITY, max(2.0, (n - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed).fit_transform(e)


def manifold_grid(models: Sequence[dict[str, Any]], points: str, colour_by: str, title: str) -> Any:
    """Scatter per model of `points` ((n,2) test coordinates) coloured by 'kl' or 'oa'; rows backbones, columns variants."""
    from matplotlib.lines import Line2D

    fig, panels = model_grid(models, known_variants_only=True)
    colours = KL_COLOURS if colour_by == "kl" else OA_COLOURS
    names = [f"KL {k}" for k in range(N_KL)] if colour_by == "kl" else ["non-OA", "OA"]
    for model, ax in panels:
        xy, kl = np.asarray(model[points]), np.asarray(model["test_kl"])
        label = kl if colour_by == "kl" else (kl >= 2).astype(int)
        for value, colour in enumerate(colours):
            pick = (label == value) & (kl >= 0)
            ax.scatter(xy[pick, 0], xy[pick, 1], s=14, c=colour, edgecolors="#333333", linewidths=0.3)
        ax.set_title(model_label(model["backbone"], model["variant"]), fontsize=8)
        ax.tick_params(labelsize=6)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=n) for c, n in zip(colours, names)]
    return finish_grid(fig, handles, title)


def latent_manifold_figures(latent_results: list[dict[str, Any]], figures: str | Path) -> dict[str, Path]:
    """pca_grid_oa.png, tsne_grid_kl.png and tsne_grid_oa.png from `analysis.latent.analyse_files` results."""
    figures = Path(figures)
    models = [{"backbone": r["backbone"], "variant": r["variant"], "test_kl": r["test_kl"], "pca": r["test_pc"],
               "tsne": tsne_2d(r["embeddings"].test)} for r in latent_results]
    out = {}
    for points, colour_by, name, what in (("pca", "oa", "pca_grid_oa.png", "train-fitted PCA"),
                                          ("tsne", "kl", "tsne_grid_kl.png", "t-SNE"),
                                          ("tsne", "oa", "tsne_grid_oa.png", "t-SNE")):
        title = f"Test embeddings, {what}, coloured by {colour_by.upper()}"
        out[name] = save_figure(manifold_grid(models, points, colour_by, title), figures / name, dpi=100)
    return out


# --- the report sections ----------------------------------------------------------------------------------
PR_COLUMNS = ["backbone", "variant", "oa_precision", "oa_recall", "kl_macro_precision", "kl_macro_recall"]


def paper_sections(out: str | Path, analyses: dict[str, Any]) -> list[Any]:
    """Report sections with the paper's per-model, per-task and manifold figures; writes them under figures/."""
    from kneeoa.analysis.latent import analyse_files, split_name
    from kneeoa.data.tables import write_table
    from kneeoa.report.html import Figure, Section, Table

    out = Path(out)
    figures, tables, pred_dir = out / "figures", out / "tables", out / "predictions"
    figures.mkdir(parents=True, exist_ok=True)
    order = {b: i for i, b in enumerate(display_order())}
    files = sorted(pred_dir.glob("*_preds.csv"), key=lambda p: (order.get(split_name(p.name[:-10])[0], 99),
                                                                _variant_rank(split_name(p.name[:-10])[1])))
    items: list[Any] = []
    report_rows: list[dict[str, Any]] = []
    for path in files:
        name = path.name[: -len("_preds.csv")]
        backbone, variant = split_name(name)
        preds = read_preds(path)
        fig = roc_confusion_figure(preds, model_label(backbone, variant))
        png = save_figure(fig, figures / f"{name}_roc_confusion.png", dpi=100).read_bytes()
        items.append(Figure(png, f"{name}: ROC curves and confusion matrices (test split)"))
        report_rows += classification_report_rows(preds, backbone, variant)
    sections = []
    if files:
        write_table(tables / "classification_report.csv", report_rows, REPORT_COLUMNS)
        metrics = analyses.get("metrics") or []
        pr = [{k: r.get(k, "") for k in PR_COLUMNS} for r in metrics]
        sections.append(Section(
            "Per-model evaluation (the paper's figures)",
            "<p>ROC curves (OA; KL one-vs-rest per grade), confusion matrices (OA at threshold 0.5, KL argmax), "
            "precision and recall as the paper's metrics CSV (KL: macro over the grades present), and "
            "scikit-learn's classification report (<code>tables/classification_report.csv</code>).</p>",
            [Table(pr, PR_COLUMNS), *items, Table(report_rows, REPORT_COLUMNS)]))
    stats = analyses.get("stats")
    rows = getattr(stats, "rows", None) or []
    forest = []
    for task in ("OA", "KL"):
        if any(r["task"] == task for r in rows):
            path = save_figure(forest_task_figure(rows, task), figures / f"forest_{task.lower()}.png")
            forest.append(Figure(path.read_bytes(), f"Dual vs single, {task} metrics: delta, 95% CI, p and q"))
    if forest:
        sections.append(Section(
            "Dual vs single per task",
            "<p>The paper's forest plots: one per task, p (bootstrap or McNemar) and Benjamini–Hochberg q beside "
            "each row, q &lt; 0.05 in colour. <code>tables/stats_no_fdr.csv</code> is the table before the FDR "
            "step and <code>tables/stats_protocol.json</code> the protocol, as in the paper's results folder.</p>",
            forest))
    latent = analyse_files(sorted(pred_dir.glob("*_embeddings.npz"))) if pred_dir.is_dir() else []
    if latent:
        paths = latent_manifold_figures(latent, figures)
        captions = {"pca_grid_oa.png": "Train-fitted PCA of the test embeddings, coloured by OA",
                    "tsne_grid_kl.png": "t-SNE of the test embeddings, coloured by KL grade",
                    "tsne_grid_oa.png": "t-SNE of the test embeddings, coloured by OA"}
        sections.append(Section(
            "Latent manifolds",
            "<p>The paper's \"neural manifold\": t-SNE of each model's standardised test embeddings (perplexity "
            "min(30, (n-1)/3), PCA initialisation, seed 0), next to the train-fitted PCA, coloured by KL grade and by "
            "OA. t-SNE distances between clusters carry no meaning; use the PCA numbers above for the severity axis."
            "</p>", [Figure(p.read_bytes(), captions[n]) for n, p in paths.items()]))
    return sections


def _variant_rank(tag: str) -> int:
    return VARIANT_TAGS.index(tag) if tag in VARIANT_TAGS else 99
