"""The study report's trust section: calibration before/after, conformal coverage per grade, OOD scores, triage.

It reads what `kneeoa predict` wrote for each calibrated model: `predictions/<model>_preds.csv` (raw
probabilities, the published format) and `predictions/<model>_trust.csv` (calibrated probabilities, sets,
OOD score and flag; kneeoa.contracts.trust). Models without a trust file (uncalibrated) are listed as such.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts import trust as names
from kneeoa.contracts.case_ids import case_id_from_name
from kneeoa.contracts.schemas import PRED_KL_PROB_COLUMNS, preds_file_name
from kneeoa.hierarchy import OA_THRESHOLD
from kneeoa.report.figures import fig_to_png
from kneeoa.report.html import Figure, Section, Table
from kneeoa.utils.cells import number  # table cells to float, blanks NaN

TRIAGE_ROWS = 12


def load_model_trust(pred_dir: Path, name: str) -> dict[str, Any] | None:
    """Joined raw + calibrated arrays of one model's graded test knees, None without a trust file."""
    from kneeoa.data.tables import read_table

    trust_path, preds_path = pred_dir / names.trust_file_name(name), pred_dir / preds_file_name(name)
    if not trust_path.is_file() or not preds_path.is_file():
        return None
    preds = read_table(preds_path)
    trust = read_table(trust_path)
    rows = [(p, t) for p, t in zip(preds, trust) if p.get("label_kl") not in (None, "")]
    if not rows:
        return None
    y = np.array([int(number(p["label_kl"])) for p, _ in rows])
    has_kl = all(c in rows[0][0] and rows[0][0][c] is not None for c in PRED_KL_PROB_COLUMNS)
    return {
        "name": name, "y": y, "ids": [str(p["CMT_ID"]) for p, _ in rows],
        "images": [str(p.get("img_path") or "") for p, _ in rows],
        "oa_raw": np.array([number(p["prob_oa"]) for p, _ in rows]),
        "oa_cal": np.array([number(t[names.OA_PROB_CAL]) for _, t in rows]),
        "kl_raw": np.array([[number(p[c]) for c in PRED_KL_PROB_COLUMNS] for p, _ in rows]) if has_kl else None,
        "kl_cal": np.array([[number(t[c]) for c in names.KL_PROB_CAL_COLUMNS] for _, t in rows]) if has_kl else None,
        "low": np.array([number(t.get(names.KL_SET_LOW)) for _, t in rows]),
        "high": np.array([number(t.get(names.KL_SET_HIGH)) for _, t in rows]),
        "set": [str(t.get(names.KL_SET) or "") for _, t in rows],
        "oa_set": [str(t.get(names.OA_SET) or "") for _, t in rows],
        "level": number(rows[0][1].get(names.SET_LEVEL)),
        "ood": np.array([number(t.get(names.OOD_SCORE)) for _, t in rows]),
        "ood_p": np.array([number(t.get(names.OOD_P)) for _, t in rows]),
        "flag": np.array([int(number(t.get(names.OOD_FLAG)) == 1) for _, t in rows]),
        "warnings": [str(t.get(names.ENVELOPE_WARNINGS) or "") for _, t in rows],
    }


def calibration_table(models: list[dict]) -> list[dict]:
    from kneeoa.trust.calibration import calibration_metrics

    out = []
    for m in models:
        heads = [("OA", m["oa_raw"], m["oa_cal"], (m["y"] >= OA_THRESHOLD).astype(int))]
        if m["kl_raw"] is not None:
            heads.append(("KL", m["kl_raw"], m["kl_cal"], m["y"]))
        for head, raw, cal, y in heads:
            before, after = calibration_metrics(raw, y), calibration_metrics(cal, y)
            out.append({"model": m["name"], "head": head, "n": len(y),
                        **{f"{k}_raw": v for k, v in before.items()}, **{f"{k}_cal": v for k, v in after.items()}})
    return out


def coverage_table(models: list[dict]) -> list[dict]:
    rows = []
    for m in models:
        if m["kl_raw"] is None:
            continue
        hit = (m["low"] <= m["y"]) & (m["y"] <= m["high"])
        size = m["high"] - m["low"] + 1
        for grade in [*range(5), "all"]:
            sel = np.ones(len(m["y"]), bool) if grade == "all" else m["y"] == grade
            if sel.any():
                rows.append({"model": m["name"], "true KL": grade, "n": int(sel.sum()),
                             "coverage": float(hit[sel].mean()), "mean set size": float(size[sel].mean()),
                             "target": m["level"]})
    return rows


def reliability_png(m: dict) -> bytes:
    """OA and KL top-label reliability before/after, and the calibrated KL per class (one-vs-rest)."""
    from kneeoa.analysis.plots import pyplot
    from kneeoa.trust.calibration import reliability_bins

    plt = pyplot()
    panels = 3 if m["kl_raw"] is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8), squeeze=False)
    oa_y = (m["y"] >= OA_THRESHOLD).astype(int)
    todo = [("OA", m["oa_raw"], m["oa_cal"], oa_y)]
    if m["kl_raw"] is not None:
        todo.append(("KL top-label", m["kl_raw"], m["kl_cal"], m["y"]))
    for ax, (title, raw, cal, y) in zip(axes[0], todo):
        for probs, label, style in ((raw, "raw", "o--"), (cal, "calibrated", "s-")):
            b = reliability_bins(probs, y, bins=10)
            ok = b["count"] > 0
            ax.plot(b["confidence"][ok], b["accuracy"][ok], style, label=label)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set(title=title, xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=8)
    if m["kl_raw"] is not None:
        ax = axes[0][2]
        for grade in range(5):
            p, hit = m["kl_cal"][:, grade], (m["y"] == grade).astype(float)
            edges = np.linspace(0, 1, 6)
            idx = np.clip(np.digitize(p, edges) - 1, 0, 4)
            xs = [p[idx == k].mean() for k in range(5) if (idx == k).any()]
            ys = [hit[idx == k].mean() for k in range(5) if (idx == k).any()]
            ax.plot(xs, ys, "o-", label=f"KL {grade}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set(title="KL per class (calibrated)", xlabel="P(KL = k)", ylabel="observed share", xlim=(0, 1),
               ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.suptitle(m["name"])
    fig.tight_layout()
    return fig_to_png(fig, dpi=100, bbox_inches=None)


def ood_png(models: list[dict]) -> bytes:
    from kneeoa.analysis.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for m in models:
        d = m["ood"][np.isfinite(m["ood"])]
        if len(d):
            ax.hist(d, bins=20, histtype="step", label=f"{m['name']} ({int(m['flag'].sum())} flagged)")
    ax.set(xlabel="OOD score (Mahalanobis distance of the embedding)", ylabel="test knees")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig_to_png(fig, dpi=100, bbox_inches=None)


def triage_rows(models: list[dict], out: Path) -> list[dict]:
    """The test knees most worth a second look: flagged first, then the largest sets."""
    rows = []
    for m in models:
        sal = out / "saliency" / m["name"]
        for i, case in enumerate(m["ids"]):
            stem = case_id_from_name(m["images"][i])
            maps = sorted(sal.glob(f"{stem}*")) if sal.is_dir() and stem else []
            rows.append({"model": m["name"], "case": case, "true KL": int(m["y"][i]), "KL set": m["set"][i],
                         "OA set": m["oa_set"][i], "OOD p": m["ood_p"][i], "flag": bool(m["flag"][i]),
                         "why": m["warnings"][i],
                         "saliency": maps[0].relative_to(out).as_posix() if maps else "",
                         "_size": m["high"][i] - m["low"][i] if np.isfinite(m["high"][i]) else 0})
    rows.sort(key=lambda r: (not r["flag"], -r["_size"], r["OOD p"] if np.isfinite(r["OOD p"]) else 1.0))
    return [{k: v for k, v in r.items() if k != "_size"} for r in rows[:TRIAGE_ROWS]]


def trust_section(out: str | Path, model_names: list[str]) -> Section:
    """The report section (says so when no model of the study was calibrated)."""
    out = Path(out)
    models = [m for m in (load_model_trust(out / "predictions", n) for n in model_names) if m is not None]
    missing = [n for n in model_names if n not in {m["name"] for m in models}]
    text = ("<p>Temperature scaling (one T per head) and split-conformal sets fitted on training knees held out "
            "from training (<code>--calibration-fraction</code>); measured here on the test knees. A set "
            "(e.g. <i>KL 2-3 at 90 %</i>) holds the recorded grade for about 90 % of knees like these "
            "<b>on average</b>, not for every knee; a flag says a volume is unlike the training data (OOD p-value "
            "&le; 0.05 or an acquisition check failed), not that the grade is wrong.</p>")
    if missing:
        text += f"<p>Not calibrated (no trust file): {html.escape(', '.join(missing))}.</p>"
    if not models:
        return Section("Trust: calibration, sets, out-of-distribution", text)
    items: list[Table | Figure] = [
        Table(calibration_table(models), caption="ECE (15 bins, top-label), Brier and NLL on the test knees, raw "
                                                 "vs calibrated. Dual vs Single-KL: compare the KL rows."),
        Table(coverage_table(models), caption="Empirical coverage and mean set size per true grade (ordinal sets)"),
        *[Figure(reliability_png(m), f"Reliability: {m['name']}") for m in models],
        Figure(ood_png(models), "OOD score distribution of the test knees"),
        Table(triage_rows(models, out), caption="Triage: flagged knees first, then the widest sets "
                                                "(each saliency file links to the map in the study folder)",
              links=("saliency",)),
    ]
    return Section("Trust: calibration, sets, out-of-distribution", text, items)
