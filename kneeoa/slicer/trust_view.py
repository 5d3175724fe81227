"""How the grading panel shows trust: the KL set ("KL 2-3 at 90 %"), an out-of-distribution banner, and the
calibrated probabilities in the chart and the result table (standard library only, like all of kneeoa.slicer).

The numbers come from the `trust` block of the grade-result JSON (kneeoa.contracts.trust names); a result
of an uncalibrated checkpoint has none, and the panel then looks as before.
"""

from __future__ import annotations

import html
from typing import Any

from kneeoa.contracts import trust as names

BANNER_STYLE = "background-color:#fde2e1; color:#8a1c12; padding:4px; font-weight:bold"


def trust_of(result: dict | None) -> dict | None:
    block = (result or {}).get(names.TRUST_KEY)
    return block if isinstance(block, dict) else None


def is_flagged(result: dict | None) -> bool:
    t = trust_of(result)
    return bool(t and t.get(names.OOD_FLAG))


def ood_banner(result: dict | None) -> str | None:
    """Plain words for a flagged volume, None when it is not flagged (or the checkpoint has no OOD statistics)."""
    t = trust_of(result)
    if not t or not t.get(names.OOD_FLAG):
        return None
    reasons = [r for r in (t.get(names.ENVELOPE_WARNINGS) or "").split("; ") if r]
    p = t.get(names.OOD_P)
    if p is not None and not reasons:
        reasons.append(f"its features are further from the training knees than those of "
                       f"{100 * (1 - p):.0f} % of held-out training-like knees (p = {p:.3f})")
    return ("Unlike the training data: " + "; ".join(reasons) +
            ". The grade and its set may not hold for this volume.")


def set_label(result: dict | None) -> str | None:
    t = trust_of(result)
    return t.get(names.KL_SET_LABEL) if t else None


def summary_html(summary: str, result: dict | None) -> str:
    """The panel's summary line, with the set after it and the OOD banner above it (rich text for a QLabel)."""
    text = html.escape(summary)
    label = set_label(result)
    if label:
        text += f" | set: <b>{html.escape(label)}</b>"
    t = trust_of(result)
    if t and t.get(names.OA_SET):
        text += f" | OA set: {html.escape(t[names.OA_SET])}"
    banner = ood_banner(result)
    if banner:
        text = f'<div style="{BANNER_STYLE}">&#9888; {html.escape(banner)}</div>' + text
    return text


def chart_probabilities(result: dict) -> tuple[list[float] | None, bool]:
    """(KL probabilities for the chart, whether they are the calibrated ones)."""
    t = trust_of(result)
    if t and all(c in t for c in names.KL_PROB_CAL_COLUMNS):
        return [float(t[c]) for c in names.KL_PROB_CAL_COLUMNS], True
    return result.get("kl_probs"), False


def trust_rows(result: dict | None) -> list[tuple[str, Any]]:
    """Result-table rows: the set, calibrated probabilities, OOD score, p-value and verdict."""
    t = trust_of(result)
    if not t:
        return []
    level = t.get(names.SET_LEVEL)
    pct = f"{100 * level:.0f} %" if level is not None else ""
    rows: list[tuple[str, Any]] = []
    if names.KL_SET in t:
        rows.append((f"KL set ({pct}, {t.get(names.SET_METHOD)})", t[names.KL_SET]))
    rows.append((f"OA set ({pct})", t.get(names.OA_SET)))
    rows.append(("Calibrated OA probability", t.get(names.OA_PROB_CAL)))
    for grade, col in enumerate(names.KL_PROB_CAL_COLUMNS):
        if col in t:
            rows.append((f"Calibrated P(KL = {grade})", t[col]))
    if names.OOD_SCORE in t:
        rows += [("OOD score (Mahalanobis)", t[names.OOD_SCORE]), ("OOD p-value", t[names.OOD_P])]
    rows.append(("Out of distribution", bool(t.get(names.OOD_FLAG))))
    if t.get(names.ENVELOPE_WARNINGS):
        rows.append(("Acquisition check", t[names.ENVELOPE_WARNINGS]))
    return rows
