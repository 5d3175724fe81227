"""The cohort latent space in Slicer: PCA points as MRML tables + a scatter chart, one series per KL grade.

The numbers come from `kneeoa latent` (train-fitted PCA, `latent_points.csv` and `latent_summary.csv`);
here they only become nodes, a figure and files. A clicked point is mapped back to its case through
the series' table (row -> case_id); `latent_cases` loads that case into the viewers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneeoa.errors import InputError
from kneeoa.utils.cells import number

POINT_COLUMNS = ("pc1", "pc2", "case_id", "kl", "split")
SPLITS = ("test", "train", "all")
UNGRADED = -1  # series key for points without a KL grade
UNGRADED_COLOUR = (0.6, 0.6, 0.6)


def read_points(path: str | Path) -> list[dict]:
    """Rows of latent_points.csv with typed values: pc1/pc2 float, kl int or None."""
    from kneeoa.data.tables import read_table, require_columns

    rows = read_table(path)
    require_columns(rows, ("name", "split", "case_id", "kl", "pc1", "pc2"), path)
    try:
        return [{"name": str(r["name"]), "split": str(r["split"]), "case_id": str(r["case_id"]),
                 "kl": None if r["kl"] in (None, "") else int(float(r["kl"])),
                 "pc1": float(r["pc1"]), "pc2": float(r["pc2"])} for r in rows]
    except (TypeError, ValueError) as err:
        raise InputError(f"latent points table holds a value that is not a number: {err}", path) from None


def read_summary(path: str | Path) -> dict[str, dict]:
    """latent_summary.csv as {model name: row}."""
    from kneeoa.data.tables import read_table

    return {str(r["name"]): r for r in read_table(path)}


def model_names(points: list[dict]) -> list[str]:
    """Model names in table order (a study holds up to nine)."""
    return list(dict.fromkeys(p["name"] for p in points))


def select_points(points: list[dict], name: str, split: str = "test") -> list[dict]:
    """The points of one model, of one split ('test', 'train') or both ('all')."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return [p for p in points if p["name"] == name and (split == "all" or p["split"] == split)]


def _number(row: dict, key: str) -> float:
    return number(row.get(key))


def summary_rows(row: dict | None) -> list[tuple[str, str]]:
    """(quantity, text) of one model's latent numbers, as the paper reports them."""
    if not row:
        return []

    def fmt(value: float, pattern: str = "{:.3f}") -> str:
        return "n/a" if not math.isfinite(value) else pattern.format(value)

    order = str(row.get("centroid_order") or "n/a")
    monotone = str(row.get("centroid_monotone")).lower() in ("true", "1")
    rows = [("Explained variance PC1 / PC2", f"{fmt(_number(row, 'evr_pc1'), '{:.1%}')} / "
                                             f"{fmt(_number(row, 'evr_pc2'), '{:.1%}')}"),
            ("|rho(PC1, KL)| (test)", fmt(_number(row, "abs_rho_pc1_kl"))),
            ("|rho(PC1, OA)| (test)", fmt(_number(row, "abs_rho_pc1_oa"))),
            ("OA probe AUROC (test, PC1)", fmt(_number(row, "probe_auroc_test"))),
            ("KL centroid order along PC1", order + (" (monotone)" if monotone else ""))]
    severity = _number(row, "abs_rho_pc1_true_severity")
    if math.isfinite(severity):
        rows.append(("|rho(PC1, true severity)| (phantom)", fmt(severity)))
    rows.append(("Cases train / test", f"{row.get('n_train', '?')} / {row.get('n_test', '?')}"))
    return rows


def grade_colour(grade: int) -> tuple[float, float, float]:
    """The report's KL colour (kneeoa.analysis.plots.KL_COLOURS) as RGB in [0, 1]."""
    from kneeoa.analysis.plots import KL_COLOURS

    if grade == UNGRADED:
        return UNGRADED_COLOUR
    code = KL_COLOURS[grade].lstrip("#")
    return tuple(int(code[i:i + 2], 16) / 255.0 for i in (0, 2, 4))


@dataclass
class LatentPlot:
    """The nodes of one latent scatter: chart, and per KL grade (UNGRADED for none) a table and a series."""

    chart_node: Any
    tables: dict[int, Any] = field(default_factory=dict)
    series: dict[int, Any] = field(default_factory=dict)
    name: str = ""
    split: str = "test"


def _fill_table(table_node: Any, rows: list[dict]) -> None:
    import vtk

    table = table_node.GetTable()
    was_modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    for column in POINT_COLUMNS:
        # pc1/pc2 numeric for the chart; case_id a string array, which the plot view shows as point labels
        array = vtk.vtkDoubleArray() if column in ("pc1", "pc2") else vtk.vtkStringArray()
        array.SetName(column)
        for row in rows:
            value = row[column]
            array.InsertNextValue(float(value) if column in ("pc1", "pc2") else ("" if value is None else str(value)))
        table.AddColumn(array)
    table.Modified()
    table_node.EndModify(was_modifying)


def update_latent_plot(points: list[dict], name: str, scene: Any, split: str = "test",
                       plot: LatentPlot | None = None) -> LatentPlot:
    """Scatter of PC1 vs PC2 for model `name`, one series per KL grade present; reuses `plot`'s nodes."""
    chosen = select_points(points, name, split)
    if not chosen:
        raise InputError(f"no {split} points for model {name!r} in the latent table")
    if plot is None:
        plot = LatentPlot(scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "KneeOA latent space"))
    plot.name, plot.split = name, split
    groups: dict[int, list[dict]] = {}
    for point in chosen:
        groups.setdefault(UNGRADED if point["kl"] is None else int(point["kl"]), []).append(point)
    chart = plot.chart_node
    chart.RemoveAllPlotSeriesNodeIDs()
    for grade in sorted(set(plot.series) - set(groups)):  # grades absent now: drop their nodes
        scene.RemoveNode(plot.series.pop(grade))
        scene.RemoveNode(plot.tables.pop(grade))
    for grade in sorted(groups, key=lambda g: (g == UNGRADED, g)):
        label = "KL ungraded" if grade == UNGRADED else f"KL {grade}"
        if grade not in plot.tables:
            plot.tables[grade] = scene.AddNewNodeByClass("vtkMRMLTableNode", f"KneeOA latent {label}")
            plot.series[grade] = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", label)
        _fill_table(plot.tables[grade], groups[grade])
        series = plot.series[grade]
        series.SetAndObserveTableNodeID(plot.tables[grade].GetID())
        series.SetXColumnName("pc1")
        series.SetYColumnName("pc2")
        series.SetLabelColumnName("case_id")
        series.SetPlotType(series.PlotTypeScatter)
        series.SetLineStyle(series.LineStyleNone)
        series.SetMarkerStyle(series.MarkerStyleCircle)
        series.SetMarkerSize(9)
        series.SetColor(*grade_colour(grade))
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle(f"{name}: {'all' if split == 'all' else split} cases on the train-fitted PCA")
    chart.SetXAxisTitle("PC1 (oriented to rise with KL)")
    chart.SetYAxisTitle("PC2")
    chart.SetLegendVisibility(True)
    return plot


def table_points(table_node: Any) -> list[dict]:
    """The points held by one series table, back as dicts."""
    table = table_node.GetTable()
    out = []
    for row in range(table.GetNumberOfRows()):
        values = {c: table.GetColumnByName(c).GetValue(row) for c in POINT_COLUMNS}
        kl = str(values["kl"])
        out.append({"case_id": str(values["case_id"]), "split": str(values["split"]),
                    "kl": int(kl) if kl.lstrip("-").isdigit() else None,
                    "pc1": float(values["pc1"]), "pc2": float(values["pc2"])})
    return out


def plot_points(plot: LatentPlot) -> list[dict]:
    """Every point shown in the chart (what the PNG and CSV exports write), with the model name."""
    return [{"name": plot.name, **p} for grade in sorted(plot.tables) for p in table_points(plot.tables[grade])]


def case_for_point(series_node: Any, row: int) -> dict | None:
    """The case behind point `row` of a series (None if the row is out of range)."""
    table_node = series_node.GetTableNode() if series_node is not None else None
    if table_node is None or not 0 <= row < table_node.GetTable().GetNumberOfRows():
        return None
    return table_points(table_node)[row]


def cases_for_selection(scene: Any, series_ids: Any, selections: Any) -> list[dict]:
    """Cases of the points picked in a plot view (qMRMLPlotView's dataSelected(vtkStringArray*, vtkCollection*))."""
    cases = []
    for i in range(series_ids.GetNumberOfValues()):
        series = scene.GetNodeByID(series_ids.GetValue(i))
        selection = selections.GetItemAsObject(i)
        if series is None or selection is None:
            continue
        for j in range(selection.GetNumberOfValues()):
            case = case_for_point(series, int(selection.GetValue(j)))
            if case is not None:
                cases.append(case)
    return cases


def latent_figure(points: list[dict], summary: dict | None = None, name: str = "") -> Any:
    """A matplotlib figure of the shown points (kneeoa.analysis.plots.pca_grid, one panel)."""
    import numpy as np

    from kneeoa.analysis.latent import split_name
    from kneeoa.analysis.plots import pca_grid

    if not points:
        raise InputError("no latent points to draw")
    name = name or points[0].get("name", "")
    backbone, variant = split_name(name)
    splits = {p["split"] for p in points}
    coloured = [p for p in points if p["split"] == "test"] if splits == {"train", "test"} else points
    grey = [p for p in points if p["split"] == "train"] if splits == {"train", "test"} else []
    model = {"backbone": backbone, "variant": variant,
             "test_pc": np.array([[p["pc1"], p["pc2"]] for p in coloured], dtype=float).reshape(-1, 2),
             "test_kl": np.array([-1 if p["kl"] is None else p["kl"] for p in coloured]),
             "train_pc": np.array([[p["pc1"], p["pc2"]] for p in grey], dtype=float).reshape(-1, 2),
             "abs_rho_pc1_kl": _number(summary or {}, "abs_rho_pc1_kl")}
    shown = " and ".join(sorted(splits))
    return pca_grid([model], title=f"{name}: {shown} cases on the train-fitted PCA")


def export_png(plot: LatentPlot, path: str | Path, summary: dict | None = None) -> Path:
    """The chart's points drawn with matplotlib (Agg) into a PNG."""
    from kneeoa.analysis.plots import save_figure

    return save_figure(latent_figure(plot_points(plot), summary, plot.name), path)


def export_csv(plot: LatentPlot, path: str | Path) -> Path:
    """The chart's points as a CSV in the latent_points.csv columns."""
    from kneeoa.analysis.latent import POINT_COLUMNS as CSV_COLUMNS
    from kneeoa.data.tables import write_table

    rows = [{**p, "kl": "" if p["kl"] is None else p["kl"]} for p in plot_points(plot)]
    write_table(path, rows, CSV_COLUMNS)
    return Path(path)
