"""Dependency check and install plan for Slicer (torch only via the PyTorch extension, never pip)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from kneeoa.slicer import deps

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_dependencies() -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - CI runs 3.11+
        tomllib = pytest.importorskip("tomli")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [re.sub(r"\s+", "", d) for d in data["project"]["dependencies"]]


def test_requirements_match_the_package_dependencies():
    assert sorted([deps.TORCH_REQUIREMENT, *deps.REQUIREMENTS]) == sorted(_pyproject_dependencies())


def test_version_tuple_ignores_local_and_pre_release_suffixes():
    assert deps.version_tuple("2.13.0+cu126") == (2, 13, 0)
    assert deps.version_tuple("1.26.4") == (1, 26, 4)
    assert deps.version_tuple("2.0rc1") == (2, 0)


def test_requirement_syntax_beyond_ge_and_eq_is_refused():
    assert deps.split_requirement("numpy>=1.24") == ("numpy", ">=", "1.24")
    assert deps.split_requirement("tqdm") == ("tqdm", None, None)
    with pytest.raises(ValueError, match="unsupported requirement"):
        deps.split_requirement("numpy<2; python_version<'3.9'")


def test_everything_is_installed_in_the_test_environment():
    report = deps.check()
    assert report.ok and report.torch_version is not None and report.missing == []


def test_missing_and_too_old_packages_are_reported():
    report = deps.check(["numpy>=1.0", "numpy>=999", "surely-not-a-kneeoa-dependency>=1.0"])
    assert report.missing == ["numpy>=999", "surely-not-a-kneeoa-dependency>=1.0"]


def test_missing_torch_goes_through_the_pytorch_extension_not_pip():
    report = deps.DependencyReport(torch_version=None, torch_ok=False, missing=["monai>=1.3", "captum>=0.7"])
    plan = deps.install_plan(report)
    assert plan.torch_step == "install"
    assert not any(r.startswith("torch") for r in plan.pip_requirements)
    assert "PyTorch extension" in plan.message and "monai>=1.3, captum>=0.7" in plan.message


def test_pip_step_pins_the_installed_torch_with_a_constraints_file(tmp_path):
    report = deps.DependencyReport(torch_version="2.13.0+cu126", torch_ok=True, missing=["monai>=1.3"])
    plan = deps.install_plan(report)
    constraints = tmp_path / "c.txt"
    constraints.write_text(deps.constraints_text({"torch": report.torch_version}))
    assert plan.torch_step is None
    assert plan.pip_args(constraints) == ["monai>=1.3", "--constraint", str(constraints)]
    assert constraints.read_text() == "torch==2.13.0+cu126\n"


def test_constraints_keep_every_package_slicer_ships_at_its_installed_version():
    from importlib import metadata

    text = deps.constraints_text()
    for name in ("torch", "numpy", "scipy", "SimpleITK"):
        assert f"{name}=={metadata.version(name)}\n" in text
    assert all(line.split("==")[0] in deps.SLICER_SHIPPED for line in text.splitlines())


def test_a_wheelhouse_folder_installs_without_an_index(tmp_path):
    plan = deps.install_plan(deps.DependencyReport(torch_version="2.13.0", torch_ok=True, missing=["monai>=1.3"]))
    assert plan.pip_args(tmp_path / "c.txt", tmp_path / "wheels")[-3:] == ["--no-index", "--find-links",
                                                                          str(tmp_path / "wheels")]


def test_choosing_a_folder_passes_it_to_the_installer(tmp_path):
    calls = []
    ok = deps.ensure(lambda message: tmp_path, lambda plan, **kw: calls.append(kw),
                     requirements=["surely-not-a-kneeoa-dependency>=1.0"])
    assert ok is False and calls == [{"find_links": tmp_path}]  # still missing: the fake folder held nothing


def test_old_torch_is_upgraded_through_the_extension():
    plan = deps.install_plan(deps.DependencyReport(torch_version="1.13.1", torch_ok=False))
    assert plan.torch_step == "upgrade" and "found 1.13.1" in plan.message and plan.pip_requirements == []


def test_device_note_explains_cpu_fallback():
    assert deps.device_note("auto", cuda_available=True) is None
    assert "No CUDA GPU found" in deps.device_note("auto", cuda_available=False)
    assert "will fail" in deps.device_note("cuda", cuda_available=False)
    assert "CPU (chosen)" in deps.device_note("cpu", cuda_available=True)


def _asked_and_installed():
    asked, installed = [], []
    return asked, installed, (lambda message: asked.append(message) or True), installed.append


def test_ensure_asks_nothing_when_everything_is_there():
    asked, installed, confirm, install = _asked_and_installed()
    assert deps.ensure(confirm, install) is True
    assert asked == [] and installed == []


def test_ensure_shows_the_plan_and_installs_only_after_a_yes():
    asked, installed, confirm, install = _asked_and_installed()
    missing = ["surely-not-a-kneeoa-dependency>=1.0"]
    assert deps.ensure(confirm, install, requirements=missing) is False  # still missing after the "install"
    assert "surely-not-a-kneeoa-dependency>=1.0" in asked[0]
    assert [plan.pip_requirements for plan in installed] == [missing]


def test_ensure_installs_nothing_when_the_user_says_no():
    installed = []
    assert deps.ensure(lambda message: False, installed.append, requirements=["surely-not-a-kneeoa-dep>=1"]) is False
    assert installed == []


def test_require_passes_when_everything_is_installed():
    deps.require("Grading")


def test_require_offers_the_install_prompt_then_names_what_is_still_missing():
    from kneeoa.errors import DependencyError

    offered = []
    with pytest.raises(DependencyError, match="Exporting a PNG needs surely-not-a-kneeoa-dependency>=1.0"):
        deps.require("Exporting a PNG", ["surely-not-a-kneeoa-dependency>=1.0"], offer=lambda: offered.append(1))
    assert offered == [1]


def test_require_without_an_application_raises_without_asking(monkeypatch):
    from kneeoa.errors import DependencyError

    monkeypatch.delitem(sys.modules, "slicer", raising=False)
    with pytest.raises(DependencyError, match="Install from a folder"):
        deps.require("Grading", ["surely-not-a-kneeoa-dependency>=1.0"])
