"""Static checks of the Slicer extension: CMake lists, catalog entry, and that `import kneeoa.slicer` stays light."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.parent.name for p in ROOT.glob("*/CMakeLists.txt")
                 if (p.parent / f"{p.parent.name}.py").is_file())
# Categories the ExtensionsIndex CI accepts (scripts/check_description_files.py), the ones that fit us.
ACCEPTED_CATEGORIES = {"Analysis", "Quantification", "Segmentation", "Informatics", "Utilities", "Examples"}


def _cmake(path: Path) -> str:
    return re.sub(r"(?m)^\s*#.*$", "", path.read_text())  # drop comment lines


def _cmake_set(text: str, name: str) -> list[str]:
    match = re.search(rf"set\(\s*{name}\s+(.*?)\)", text, re.S)
    assert match, f"set({name} ...) not found"
    return match.group(1).split()


def _cmake_value(text: str, name: str) -> str:
    match = re.search(rf'set\(\s*{name}\s+"([^"]*)"\s*\)', text, re.S)
    assert match, f'set({name} "...") not found'
    return match.group(1)


def test_there_is_at_least_the_grading_module():
    assert "KneeOAGrading" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_every_script_and_resource_of_the_module_folder(module):
    folder = ROOT / module
    text = _cmake(folder / "CMakeLists.txt")
    name = re.search(r"set\(\s*MODULE_NAME\s+(\S+)\s*\)", text).group(1)
    assert name == module
    listed = {entry.replace("${MODULE_NAME}", name) for entry in
              _cmake_set(text, "MODULE_PYTHON_SCRIPTS") + _cmake_set(text, "MODULE_PYTHON_RESOURCES")}
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"
               and not p.relative_to(folder).parts[0] == "Testing"}
    assert listed == on_disk, f"missing in CMake: {sorted(on_disk - listed)}; listed but absent: {sorted(listed - on_disk)}"
    assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS", text, re.S)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


@pytest.mark.parametrize("module", MODULES)
def test_module_file_has_the_slicer_classes_and_a_self_test(module):
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for suffix in ("", "ParameterNode", "Widget", "Logic", "Test"):
        assert f"{module}{suffix}" in classes, f"{module}{suffix} missing"
    assert "runTest" in {f.name for f in classes[f"{module}Test"].body if isinstance(f, ast.FunctionDef)}
    decorators = [ast.unparse(d) for d in classes[f"{module}ParameterNode"].decorator_list]
    assert decorators == ["parameterNodeWrapper"]
    assert "import imp\n" not in (ROOT / module / f"{module}.py").read_text()  # removed in Python 3.12


def test_top_level_cmake_is_an_extension_named_kneeoa_with_metadata_and_modules():
    text = _cmake(ROOT / "CMakeLists.txt")
    assert re.search(r"project\(\s*KneeOA\s*\)", text)
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert _cmake_value(text, key).strip()
    assert _cmake_value(text, "EXTENSION_DEPENDS").split() == ["PyTorch"]
    assert _cmake_value(text, "EXTENSION_CATEGORY") in ACCEPTED_CATEGORIES
    # The index CI reads these two with these patterns and downloads every URL
    icon = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text)
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text)
    assert icon and shots
    for url in [icon[0], *shots[0].split()]:
        assert url.startswith("https://raw.githubusercontent.com/")
        local = ROOT / url.split("/main/", 1)[1]
        assert local.is_file(), f"{url} points to {local}, which is not in the repository"
    assert "add_subdirectory(KneeOAGrading)" in text
    assert re.search(r"if\(EXISTS \$\{CMAKE_CURRENT_SOURCE_DIR\}/KneeOATraining/CMakeLists.txt\)\s*"
                     r"add_subdirectory\(KneeOATraining\)", text)
    for line in ("include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text


def test_kneeoa_package_ships_whole_with_the_extension():
    text = _cmake(ROOT / "CMakeLists.txt")
    patterns = re.findall(r"\b(kneeoa/\*\.\w+)", text)
    files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "kneeoa").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    unshipped = [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)]
    assert "kneeoa/*.py" in patterns and not unshipped, f"kneeoa files not shipped by CMake: {unshipped}"
    assert re.search(r"ctkMacroCompilePythonScript\(.*DESTINATION_DIR \$\{CMAKE_BINARY_DIR\}/"
                     r"\$\{Slicer_QTSCRIPTEDMODULES_LIB_DIR\}", text, re.S)


def test_catalog_entry_follows_the_schema_and_the_index_checks():
    entry = json.loads((ROOT / "KneeOA.json").read_text())
    # slicer-extension-catalog-entry-schema v1.0.1: required keys, no others, types
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert {"$schema", "category", "scm_url"} <= set(entry)
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}
    assert set(entry) <= allowed, f"not allowed by the schema: {set(entry) - allowed}"
    assert all(isinstance(entry[k], str) for k in ("category", "scm_url", "scm_revision", "build_subdirectory")
               if k in entry)
    assert isinstance(entry.get("tier", 1), int) and 1 <= entry.get("tier", 1) <= 5
    assert entry.get("scm_type", "git") in ("git", "local")
    # ExtensionsIndex CI: category known, https/git URL, repo name with "Slicer", file name == project()
    assert entry["category"] in ACCEPTED_CATEGORIES
    assert entry["scm_url"].split("://")[0] in ("https", "git")
    assert "slicer" in entry["scm_url"].rstrip("/").rsplit("/", 1)[1].lower()
    cmake = _cmake(ROOT / "CMakeLists.txt")
    assert re.search(r"project\(\s*KneeOA\s*\)", cmake) and not "KneeOA".startswith("Slicer")
    assert entry["build_dependencies"] == _cmake_value(cmake, "EXTENSION_DEPENDS").split()
    assert entry["category"] == _cmake_value(cmake, "EXTENSION_CATEGORY")
    assert (ROOT / "LICENSE").is_file()


def test_importing_kneeoa_slicer_needs_only_the_standard_library():
    code = ("import sys; import kneeoa.slicer, kneeoa.slicer.jobs, kneeoa.slicer.deps, kneeoa.slicer.grading, "
            "kneeoa.slicer.module_widget, kneeoa.slicer.selftest; "
            "heavy = sorted(m for m in ('numpy', 'torch', 'vtk', 'slicer', 'monai', 'nibabel', 'qt') "
            "if m in sys.modules); print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("module", MODULES)
def test_module_file_stays_short_with_its_helpers_in_the_lib_package(module):
    lines = len((ROOT / module / f"{module}.py").read_text().splitlines())
    assert lines < 400, f"{module}.py has {lines} lines: widget helpers belong in {module}Lib/"
    assert (ROOT / module / f"{module}Lib" / "__init__.py").is_file()
