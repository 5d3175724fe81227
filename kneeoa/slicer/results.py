"""Grading results as MRML nodes: a result table, a KL bar chart, and the results kept on each volume.

A result is the dict `kneeoa grade --result-json` writes (kl_probs, oa_prob, pred_kl, pred_oa,
consistent_kl, heads_agree, saliency_path, overlap, card). It is stored as JSON in an attribute of
the graded volume node, and the nodes made for it (saliency, cartilage, table, chart) are node
references of that volume: both are saved with the scene, and selecting the volume again shows its
results without re-running the model.
"""

from __future__ import annotations

import json
import math
from typing import Any

from kneeoa.contracts.prediction import Prediction
from kneeoa.contracts.vocab import COMPARTMENT_NAMES
from kneeoa.slicer import trust_view
from kneeoa.utils import strict_json

RESULT_ATTRIBUTE = "KneeOA.Result"
GRADED_TABLE_ATTRIBUTE = "KneeOA.GradedTable"
ROLE_SALIENCY = "KneeOASaliency"
ROLE_CARTILAGE = "KneeOACartilage"
ROLE_RESULT_TABLE = "KneeOAResultTable"
ROLE_KL_CHART = "KneeOAKLChart"
ROLE_KL_TABLE = "KneeOAKLTable"
GRADED_COLUMNS = ("Volume", "Predicted KL", "OA probability", "Heads agree", "Saliency on cartilage", "Volume ID")
KL_COLUMNS = ("KL grade", "Probability")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows = []
        for key, inner in value.items():
            rows += _flatten(f"{prefix} / {key}" if prefix else str(key), inner)
        return rows
    if isinstance(value, (list, tuple)):
        return [(prefix, ", ".join(_fmt(v) for v in value))]
    return [(prefix, value)]


def result_rows(result: dict) -> list[tuple[str, str]]:
    """(quantity, value) rows of one grading result, in reading order, values formatted for display."""
    p = Prediction.from_result(result)
    rows: list[tuple[str, Any]] = [
        ("Predicted KL grade", p.pred_kl),
        ("OA probability", p.oa_prob),
        ("OA (KL >= 2)", None if p.pred_oa is None else bool(p.pred_oa)),
    ]
    if p.oa_prob_from_kl is not None:
        rows.append(("OA probability from KL head", p.oa_prob_from_kl))
    for grade, prob in enumerate(p.kl_probs or []):
        rows.append((f"P(KL = {grade})", float(prob)))
    rows += [("KL grade consistent with OA head", p.consistent_kl), ("Heads agree", p.heads_agree)]
    rows += trust_view.trust_rows(result)
    rows += overlap_rows(p.overlap or {})
    if result.get("mask_source"):  # which cartilage mask the overlap used: a reference or an automatic one
        rows.append(("Cartilage mask", result["mask_source"]))
    rows += [(f"Thickness {k.removesuffix('_mm').replace('_', ' ')} (mm)", v)
             for k, v in (result.get("thickness") or {}).items()]
    if result.get("device"):
        batch = result.get("saliency_batch")
        rows.append(("Ran on", result["device"] + (f" (saliency {batch} samples at a time)" if batch else "")))
    return [(name, _fmt(value)) for name, value in rows]


def overlap_rows(overlap: dict) -> list[tuple[str, Any]]:
    """Saliency-vs-cartilage rows (kneeoa.analysis.overlap keys): mass, top-k share, Dice, per compartment."""
    if "mass_roi" not in overlap:  # another layout: show it as it is
        return [(f"Saliency {name}", value) for name, value in _flatten("", overlap)]
    rows: list[tuple[str, Any]] = [("Saliency mass on cartilage", overlap["mass_roi"])]
    for key in overlap:
        if key.startswith("top") and key.endswith("_roi"):
            percent = key[3:-4]
            rows.append((f"Top {percent}% saliency voxels on cartilage", overlap[key]))
            if f"dice{percent}" in overlap:
                rows.append((f"Dice of top {percent}% with cartilage", overlap[f"dice{percent}"]))
    for key, label in COMPARTMENT_NAMES.items():
        if isinstance(overlap.get(key), dict) and "mass_roi" in overlap[key]:
            rows.append((f"Saliency mass on {label}", overlap[key]["mass_roi"]))
    return rows


def summary_text(result: dict) -> str:
    """One line for the module panel: grade, OA probability and whether the heads agree."""
    parts = []
    p = Prediction.from_result(result)
    if p.pred_kl is not None:
        probs = p.kl_probs or ()
        confidence = f" (p = {probs[p.pred_kl]:.2f})" if len(probs) > p.pred_kl else ""
        parts.append(f"KL grade {p.pred_kl}{confidence}")
    if not math.isnan(p.oa_prob):
        parts.append(f"OA probability {p.oa_prob:.2f} ({'OA' if p.pred_oa else 'no OA'})")
    if p.heads_agree is not None:
        parts.append("KL and OA heads agree" if p.heads_agree else "KL and OA heads DISAGREE")
    return " | ".join(parts) or "no prediction"


CARD_FIELDS = (("Backbone", ("spec", "backbone")), ("Variant", ("spec", "variant")), ("Head", ("spec", "head")),
               ("Input (D, H, W)", ("spec", "input_shape")), ("Training data", ("training_data",)),
               ("Metrics", ("metrics",)), ("kneeoa version", ("kneeoa_version",)), ("Created", ("created",)))


def card_rows(card: dict | None) -> list[tuple[str, str]]:
    """(field, text) rows describing a checkpoint's model card for the model card panel.

    Nested metrics get one row per group, e.g. ('Metrics (test)', 'n 20, oa_auc 0.917, ...')."""
    rows = []
    for label, keys in CARD_FIELDS:
        value: Any = card or {}
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value in (None, "", {}, []):
            continue
        if isinstance(value, dict):
            groups = {"": {k: v for k, v in value.items() if not isinstance(v, (dict, list))}}
            groups.update({k: v for k, v in value.items() if isinstance(v, dict)})
            for group, items in groups.items():
                text = ", ".join(f"{k} {_fmt(v)}" for k, v in items.items() if not isinstance(v, (dict, list)))
                if text:
                    rows.append((f"{label} ({group})" if group else label, text))
            continue
        if isinstance(value, (list, tuple)):
            value = " x ".join(str(v) for v in value)
        rows.append((label, str(value)))
    return rows


def cartilage_mass(result: dict) -> float | None:
    """Fraction of the saliency mass on the cartilage mask (the paper's mass@ROI), if computed."""
    overlap = result.get("overlap") or {}
    for key in ("mass_roi", "mass@ROI"):
        if isinstance(overlap.get(key), (int, float)):
            return float(overlap[key])
    return None


def _string_table(table_node: Any, columns: dict[str, list[str]]) -> Any:
    import vtk

    table = table_node.GetTable()
    was_modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    for name, values in columns.items():
        column = vtk.vtkStringArray()
        column.SetName(name)
        for value in values:
            column.InsertNextValue(str(value))
        table.AddColumn(column)
    # Column names as the header row, not as an editable first row (Slicer >= 5.11 calls them titles)
    if hasattr(table_node, "SetUseColumnTitleAsColumnHeader"):
        for name in columns:
            table_node.SetColumnTitle(name, name)
        table_node.SetUseColumnTitleAsColumnHeader(True)
    else:
        table_node.SetUseColumnNameAsColumnHeader(True)
    table.Modified()
    table_node.EndModify(was_modifying)
    return table_node


def update_result_table(table_node: Any, result: dict) -> Any:
    """Fill a vtkMRMLTableNode with the (Quantity, Value) rows of `result`."""
    rows = result_rows(result)
    return _string_table(table_node, {"Quantity": [r[0] for r in rows], "Value": [r[1] for r in rows]})


def table_rows(table_node: Any) -> list[list[str]]:
    """All cells of a table node as strings, row by row (for tests and the row-selection lookup)."""
    table = table_node.GetTable()
    return [[table.GetValue(r, c).ToString() for c in range(table.GetNumberOfColumns())]
            for r in range(table.GetNumberOfRows())]


def update_kl_chart(kl_probs: list[float], title: str, scene: Any, table_node: Any = None,
                    chart_node: Any = None, calibrated: bool = False) -> tuple[Any, Any]:
    """Bar chart of the five KL probabilities: (table node, chart node), reusing the given nodes."""
    import numpy as np
    import slicer.util

    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{title} KL probabilities")
    grades = np.arange(len(kl_probs), dtype=np.float64)
    slicer.util.updateTableFromArray(table_node, [grades, np.asarray(kl_probs, dtype=np.float64)],
                                     list(KL_COLUMNS))
    if chart_node is None:
        chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{title} KL chart")
    series = chart_node.GetNthPlotSeriesNode(0)
    if series is None:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{title} KL")
        chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetXColumnName(KL_COLUMNS[0])
    series.SetYColumnName(KL_COLUMNS[1])
    series.SetPlotType(series.PlotTypeBar)
    series.SetColor(0.23, 0.30, 0.75)
    chart_node.SetTitle(f"{title}: {'calibrated ' if calibrated else ''}KL grade probabilities")
    chart_node.SetXAxisTitle("KL grade")
    chart_node.SetYAxisTitle("Probability")
    chart_node.SetYAxisRangeAuto(False)
    chart_node.SetYAxisRange(0.0, 1.0)
    chart_node.SetLegendVisibility(False)
    return table_node, chart_node


def store_result(volume_node: Any, result: dict, nodes: dict[str, Any]) -> None:
    """Keep `result` (JSON attribute) and its nodes (references by role) on the graded volume node."""
    volume_node.SetAttribute(RESULT_ATTRIBUTE, strict_json.dumps(result))
    for role, node in nodes.items():
        volume_node.SetNodeReferenceID(role, node.GetID() if node is not None else None)


def stored_result(volume_node: Any) -> dict | None:
    """The result kept on a volume node, or None if it was never graded."""
    text = volume_node.GetAttribute(RESULT_ATTRIBUTE) if volume_node is not None else None
    return json.loads(text) if text else None


def result_node(volume_node: Any, role: str) -> Any:
    """The node kept on a graded volume for `role` (ROLE_SALIENCY, ...), or None."""
    return volume_node.GetNodeReference(role) if volume_node is not None else None


def ensure_result_nodes(volume_node: Any, scene: Any) -> dict[str, Any]:
    """The result table and KL chart of a graded volume, rebuilt from the stored JSON if they were deleted."""
    result = stored_result(volume_node)
    if result is None:
        return {}
    table = result_node(volume_node, ROLE_RESULT_TABLE)
    if table is None:
        table = update_result_table(scene.AddNewNodeByClass("vtkMRMLTableNode", f"{volume_node.GetName()} KneeOA result"),
                                    result)
        volume_node.SetNodeReferenceID(ROLE_RESULT_TABLE, table.GetID())
    chart = result_node(volume_node, ROLE_KL_CHART)
    probs, calibrated = trust_view.chart_probabilities(result)
    if chart is None and probs:
        kl_table, chart = update_kl_chart(probs, volume_node.GetName(), scene,
                                          result_node(volume_node, ROLE_KL_TABLE), calibrated=calibrated)
        volume_node.SetNodeReferenceID(ROLE_KL_TABLE, kl_table.GetID())
        volume_node.SetNodeReferenceID(ROLE_KL_CHART, chart.GetID())
    return {ROLE_RESULT_TABLE: table, ROLE_KL_CHART: chart, ROLE_SALIENCY: result_node(volume_node, ROLE_SALIENCY),
            ROLE_CARTILAGE: result_node(volume_node, ROLE_CARTILAGE)}


def graded_table(scene: Any, create: bool = True) -> Any:
    """The scene's one 'KneeOA graded volumes' table node (created on first use unless create=False)."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLTableNode")
        if node.GetAttribute(GRADED_TABLE_ATTRIBUTE) == "1":
            return node
    if not create:
        return None
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", "KneeOA graded volumes")
    node.SetAttribute(GRADED_TABLE_ATTRIBUTE, "1")
    return node


def graded_volume_nodes(scene: Any) -> list[Any]:
    """Every volume node in the scene that holds a KneeOA result, in scene order."""
    nodes = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        if node.GetAttribute(RESULT_ATTRIBUTE):
            nodes.append(node)
    return nodes


def update_graded_table(table_node: Any, scene: Any) -> Any:
    """One row per graded volume: name, predicted KL, OA probability, heads agree, mass on cartilage, ID."""
    rows = []
    for node in graded_volume_nodes(scene):
        result = stored_result(node)
        rows.append([node.GetName(), _fmt(result.get("pred_kl")), _fmt(result.get("oa_prob")),
                     _fmt(result.get("heads_agree")), _fmt(cartilage_mass(result)), node.GetID()])
    columns = {name: [row[i] for row in rows] for i, name in enumerate(GRADED_COLUMNS)}
    return _string_table(table_node, columns)


def volume_for_row(table_node: Any, row: int, scene: Any) -> Any:
    """The volume node listed in `row` of the graded-volumes table (None if out of range or removed)."""
    table = table_node.GetTable()
    if not 0 <= row < table.GetNumberOfRows():
        return None
    column = table.GetColumnByName(GRADED_COLUMNS[-1])
    return scene.GetNodeByID(column.GetValue(row)) if column is not None else None
