"""Offline install: `kneeoa wheelhouse` resolves and downloads wheels with the real pip (here from a local folder
of small wheels made by the test, --no-index), leaves out torch-like exclusions with what only they need, and a
Slicer dependency prompt answered with the folder installs from it without an index."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kneeoa.slicer import deps, wheelhouse


def _wheel(folder: Path, name: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal, valid pure-Python wheel `name`-1.0 with the given Requires-Dist lines."""
    module = name.replace("-", "_")
    files = {
        f"{module}/__init__.py": f"NAME = {name!r}\n",
        f"{module}-1.0.dist-info/METADATA": "Metadata-Version: 2.1\n"
                                            f"Name: {name}\nVersion: 1.0\n"
                                            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{module}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: kneeoa-test\nRoot-Is-Purelib: true\n"
                                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{module}-1.0.dist-info/RECORD,,")
    files[f"{module}-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = folder / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name_in_zip, text in files.items():
            zf.writestr(name_in_zip, text)
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """A local package index folder: an app, its library, a heavy dependency (torch's role) and what only the
    heavy one needs, plus an optional extra."""
    folder = tmp_path_factory.mktemp("index")
    _wheel(folder, "toy-app", ("toy-lib>=1.0", "toy-heavy", "toy-optional; extra == 'gpu'"))
    _wheel(folder, "toy-lib")
    _wheel(folder, "toy-heavy", ("toy-heavy-runtime",))
    _wheel(folder, "toy-heavy-runtime")
    _wheel(folder, "toy-optional")
    return folder


@pytest.mark.slow
def test_wheelhouse_holds_the_closure_without_the_excluded_package(index, tmp_path):
    manifest = wheelhouse.build(tmp_path / "wh", ["toy-app"], "3.12", "linux",
                                ["--no-index", "--find-links", str(index)], excluded=("toy-heavy",))
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "wh").glob("*.whl"))
    assert names == ["toy_app", "toy_lib"]  # no toy-heavy, nor its runtime, nor the unrequested extra
    assert manifest["pins"] == ["toy-app==1.0", "toy-lib==1.0"] and manifest["python"] == "3.12"
    assert wheelhouse.verify(tmp_path / "wh") == []
    on_disk = json.loads((tmp_path / "wh" / wheelhouse.MANIFEST).read_text())
    assert [w["file"] for w in on_disk["wheels"]] == sorted(p.name for p in (tmp_path / "wh").glob("*.whl"))


@pytest.mark.slow
def test_the_cli_writes_a_wheelhouse_that_installs_offline(index, tmp_path):
    out = tmp_path / "wheels"
    done = subprocess.run([sys.executable, "-m", "kneeoa", "wheelhouse", str(out), "--platform", "windows",
                           "--no-index", "--find-links", str(index), "--requirement", "toy-lib>=1.0"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1 wheels" in done.stderr and "torch excluded" in done.stderr
    # what the Slicer prompt's "Install from a folder..." runs: the plan's pip arguments with the folder
    plan = deps.install_plan(deps.DependencyReport(torch_version="2.13.0", torch_ok=True, missing=["toy-lib>=1.0"]))
    target = tmp_path / "site"
    args = plan.pip_args(find_links=out)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), *args], check=True)
    assert (target / "toy_lib" / "__init__.py").is_file()


def test_an_altered_wheel_is_found_by_its_checksum(index, tmp_path):
    folder = tmp_path / "wh"
    folder.mkdir()
    wheel = _wheel(folder, "toy-lib")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (folder / wheelhouse.MANIFEST).write_text(json.dumps({"wheels": [{"file": wheel.name, "sha256": digest}]}))
    assert wheelhouse.verify(folder) == []
    wheel.write_bytes(wheel.read_bytes() + b"x")
    assert "checksum differs" in wheelhouse.verify(folder)[0]
    assert "not a folder written by" in wheelhouse.verify(tmp_path)[0]


def test_a_failed_resolution_is_one_line_naming_the_folder(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kneeoa", "wheelhouse", str(tmp_path / "w"), "--no-index",
                           "--requirement", "surely-not-a-kneeoa-dependency>=1"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("kneeoa wheelhouse: error:") and len(done.stderr.strip().splitlines()) == 1
