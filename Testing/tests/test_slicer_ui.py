"""The module widgets checked statically against their .ui files (no Qt here): names, bindings, types.

Every `self.ui.<name>` in the module code must be a widget of the .ui; every `SlicerParameterName`
must be a field of the @parameterNodeWrapper class and every field must have one widget of a kind
the wrapper can connect to that type (Slicer docs, parameter_nodes/gui_connection.md).
"""

from __future__ import annotations

import ast
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.parents[2].name for p in ROOT.glob("*/Resources/UI/*.ui") if p.stem == p.parents[2].name)
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QComboBox", "QCheckBox", "QProgressBar", "QFrame", "QSpinBox",
              "QDoubleSpinBox", "QLineEdit", "QTextEdit", "QPlainTextEdit", "QTableView", "QTableWidget",
              "QGroupBox", "QSlider", "QTabWidget", "QToolButton", "QRadioButton", "QSplitter", "QScrollArea"}


class Choice:  # stand-ins recording the validator arguments (slicer.parameterNodeWrapper needs Qt)
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi


class Minimum:
    def __init__(self, value):
        self.lo, self.hi = value, None


class Maximum:
    def __init__(self, value):
        self.lo, self.hi = None, value


def _annotation(*_args):  # Decimals, SingleStep: display hints, nothing to check
    return None


def _parameter_fields(module: str) -> dict[str, tuple[typing.Any, typing.Any]]:
    """field -> (evaluated annotation, default) of the module's @parameterNodeWrapper class."""
    import importlib

    import slicer

    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}ParameterNode")
    helpers = {alias.asname or alias.name: importlib.import_module(f"kneeoa.slicer.{alias.name}")
               for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "kneeoa.slicer"
               for alias in node.names}
    helpers.update({alias.asname or alias.name: getattr(importlib.import_module(node.module), alias.name)
                    for node in tree.body if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("kneeoa.contracts") for alias in node.names})
    namespace = {**{name: getattr(typing, name) for name in ("Annotated", "Union", "Optional", "Literal")},
                 "Path": Path, "pathlib": __import__("pathlib"), "Choice": Choice, "WithinRange": WithinRange,
                 "Minimum": Minimum, "Maximum": Maximum, "Decimals": _annotation, "SingleStep": _annotation,
                 **helpers, **{name: getattr(slicer, name) for name in dir(slicer) if name.startswith("vtkMRML")}}
    fields = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign):
            annotation = eval(ast.unparse(stmt.annotation), namespace)  # noqa: S307 (our own source)
            default = eval(ast.unparse(stmt.value), namespace) if stmt.value is not None else None  # noqa: S307
            fields[stmt.target.id] = (annotation, default)
    return fields


def _ui(module: str) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui").getroot()
    return root, {w.get("name"): w for w in root.iter("widget")}


def _prop(widget: ET.Element, name: str) -> ET.Element | None:
    return next((p for p in widget.findall("property") if p.get("name") == name), None)


def _ui_names_used_in_code(module: str) -> set[str]:
    """`self.ui.<name>` in the module file and in its `<Module>Lib` helpers (mixed into the widget)."""
    files = [ROOT / module / f"{module}.py", *sorted((ROOT / module / f"{module}Lib").glob("*.py"))]
    return {node.attr for path in files for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def _bindings(widgets: dict[str, ET.Element]) -> dict[str, ET.Element]:
    bound = {}
    for widget in widgets.values():
        prop = _prop(widget, "SlicerParameterName")
        if prop is not None:
            name = prop.find("string").text
            assert name not in bound, f"two widgets bound to {name!r}"
            bound[name] = widget
    return bound


def _split(annotation):
    """(base type, validators) of a possibly Annotated type."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, extras
    return annotation, []


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_name_used_by_the_code_exists_in_the_ui_file(module):
    _, widgets = _ui(module)
    missing = _ui_names_used_in_code(module) - set(widgets)
    assert not missing, f"self.ui names not in {module}.ui: {sorted(missing)}"


def test_the_widget_helpers_in_the_lib_package_are_checked_too():
    assert {"modelCardLabel", "summaryLabel", "progressBar"} <= _ui_names_used_in_code("KneeOAGrading")
    assert {"latentSummaryLabel", "selectedCaseLabel", "modelComboBox"} <= _ui_names_used_in_code("KneeOATraining")


@pytest.mark.parametrize("module", MODULES)
def test_slicer_parameter_names_match_the_parameter_node_fields(module):
    _, widgets = _ui(module)
    fields = _parameter_fields(module)
    bound = _bindings(widgets)
    assert set(bound) == set(fields), (f"bound but no field: {sorted(set(bound) - set(fields))}; "
                                       f"field without widget: {sorted(set(fields) - set(bound))}")


@pytest.mark.parametrize("module", MODULES)
def test_each_bound_widget_can_carry_its_parameter_type(module):
    _, widgets = _ui(module)
    for name, (annotation, default) in _parameter_fields(module).items():
        widget = _bindings(widgets)[name]
        cls = widget.get("class")
        base, extras = _split(annotation)
        if cls == "qMRMLNodeComboBox":
            node_types = {s.text for s in _prop(widget, "nodeTypes").iter("string")}
            classes = {t.__name__ for t in (typing.get_args(base) or (base,)) if t is not type(None)}
            assert node_types == classes, f"{name}: .ui nodeTypes {node_types} != annotation {classes}"
        elif cls == "QComboBox":
            choices = [e for e in extras if isinstance(e, Choice)]
            assert base is str and choices, f"{name}: a QComboBox needs a str with Choice"
            assert default in choices[0].choices, f"{name}: default {default!r} not a choice"
        elif cls in ("ctkSliderWidget", "QDoubleSpinBox", "QSpinBox", "QSlider"):
            number, tag = (float, "double") if cls in ("ctkSliderWidget", "QDoubleSpinBox") else (int, "number")
            assert base is number, f"{name}: {cls} carries a {number.__name__}"
            for bound in (e for e in extras if isinstance(e, (WithinRange, Minimum, Maximum))):
                for limit, prop in ((bound.lo, "minimum"), (bound.hi, "maximum")):
                    if limit is not None and _prop(widget, prop) is not None:
                        assert float(_prop(widget, prop).find(tag).text) == limit, f"{name}: .ui {prop} != {limit}"
            if _prop(widget, "value") is not None and default is not None:
                assert float(_prop(widget, "value").find(tag).text) == pytest.approx(default), f"{name}: default"
        elif cls in ("ctkPathLineEdit", "ctkDirectoryButton"):
            assert base is Path, f"{name}: {cls} carries a pathlib.Path"
        elif cls in ("QLineEdit", "QTextEdit", "QLabel"):
            assert base is str, f"{name}: {cls} carries a str"
        elif cls == "QCheckBox":
            assert base is bool
        else:
            pytest.fail(f"{name}: no parameter connector for {cls}")


@pytest.mark.parametrize("module", MODULES)
def test_mrml_widgets_get_the_scene_and_custom_widgets_are_declared(module):
    root, widgets = _ui(module)
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    needs_scene = {n for n, w in widgets.items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    assert needs_scene <= receivers, f"no setMRMLScene connection: {sorted(needs_scene - receivers)}"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in widgets.values()} - QT_CLASSES
    assert used <= declared, f"custom widgets not declared: {sorted(used - declared)}"
    assert widgets[module].get("class") == "qMRMLWidget"
