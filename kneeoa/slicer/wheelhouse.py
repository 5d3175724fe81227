"""An offline wheelhouse: every wheel KneeOA needs inside a target Slicer, downloaded on a connected machine.

Air-gapped sites are a top complaint about Slicer AI extensions (SlicerNNUnet#16, MedSAMSlicer#9); the
answer Slicer's developers give is `pip download` + `--find-links`. Two pip calls, standard library only:
1. `pip install --dry-run --report` resolves the requirements *for the target* (Slicer's Python, e.g. 3.12,
   and its platform) without installing anything;
2. `pip download --no-deps` fetches exactly the resolved wheels that are reachable from KneeOA's
   requirements *without passing through torch*: torch (and what only torch needs: CUDA libraries, triton)
   comes from Slicer's PyTorch extension, which picks the build for the site's GPU driver.
The folder then holds the wheels and `kneeoa-wheelhouse.json` (target, files, sha256); in Slicer the
dependency prompt's "Install from a folder..." installs from it with `pip --no-index --find-links`.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

MANIFEST = "kneeoa-wheelhouse.json"
# pip platform tags of the platforms Slicer is built for (manylinux_2_28 covers current Slicer Linux builds)
PLATFORMS = {
    "linux": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "windows": ["win_amd64"],
    "macos-arm64": ["macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64", "macosx_14_0_arm64"],
    "macos-x86_64": ["macosx_10_9_x86_64", "macosx_10_13_x86_64", "macosx_11_0_x86_64"],
}
SLICER_PYTHON = "3.12"  # Slicer 5.10 and 5.12 bundle Python 3.12
EXCLUDED = ("torch",)  # installed through the PyTorch extension, never from a wheelhouse
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._\-]*)")


def normalise(name: str) -> str:
    """PEP 503 name: 'SimpleITK' -> 'simpleitk', 'scikit_learn' -> 'scikit-learn'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def target_args(python_version: str, platforms: Sequence[str]) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for tag in platforms:
        args += ["--platform", tag]
    return args


def _pip(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise RuntimeError(f"pip {args[0]} failed:\n{tail}")


def resolve(requirements: Sequence[str], python_version: str, platforms: Sequence[str],
            index_args: Sequence[str] = ()) -> list[dict]:
    """The resolved install set for the target, as pip's installation report items."""
    with tempfile.TemporaryDirectory(prefix="kneeoa-wheelhouse-") as tmp:
        report = Path(tmp) / "report.json"
        _pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
              "--target", str(Path(tmp) / "unused"), *target_args(python_version, platforms), *index_args,
              *requirements])
        return json.loads(report.read_text(encoding="utf-8"))["install"]


def without_excluded(items: list[dict], requirements: Sequence[str], excluded: Sequence[str] = EXCLUDED) -> list[dict]:
    """The items reachable from `requirements` through Requires-Dist without passing an excluded package
    (a dependency only torch has, such as nvidia-cudnn or triton, is dropped with it)."""
    by_name = {normalise(item["metadata"]["name"]): item for item in items}
    skip = {normalise(name) for name in excluded}
    todo = [normalise(_NAME.match(r).group(1)) for r in requirements]
    keep: dict[str, dict] = {}
    while todo:
        name = todo.pop()
        if name in skip or name in keep or name not in by_name:
            continue  # not in the report: its environment marker does not hold on the target
        keep[name] = by_name[name]
        for dep in by_name[name]["metadata"].get("requires_dist") or []:
            if "extra ==" in dep.replace('"', "'").replace("extra==", "extra =="):
                continue  # an optional extra that was not asked for
            match = _NAME.match(dep)
            if match:
                todo.append(normalise(match.group(1)))
    return sorted(keep.values(), key=lambda item: normalise(item["metadata"]["name"]))


def build(out: str | Path, requirements: Sequence[str] | None = None, python_version: str = SLICER_PYTHON,
          platform: str = "linux", index_args: Sequence[str] = (), excluded: Sequence[str] = EXCLUDED) -> dict:
    """Download the wheels for `requirements` (default: KneeOA's, torch excluded) into `out`; returns the
    manifest (also written to `out / kneeoa-wheelhouse.json`)."""
    from kneeoa.slicer import deps

    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    requirements = list(deps.REQUIREMENTS if requirements is None else requirements)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    platforms = PLATFORMS[platform]
    items = without_excluded(resolve(requirements, python_version, platforms, index_args), requirements, excluded)
    pins = [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in items]
    if pins:
        _pip(["download", "--no-deps", "--quiet", "-d", str(out), *target_args(python_version, platforms),
              *index_args, *pins])
    files = []
    for path in sorted(out.glob("*.whl")):
        files.append({"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest = {"python": python_version, "platform": platform, "platform_tags": platforms,
                "requirements": requirements, "excluded": list(excluded), "pins": pins, "wheels": files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def verify(folder: str | Path) -> list[str]:
    """Problems with a wheelhouse folder (missing manifest, missing or altered wheels); [] when it is intact."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return [f"{path}: no {MANIFEST} (not a folder written by `kneeoa wheelhouse`)"]
    problems = []
    for entry in json.loads(path.read_text(encoding="utf-8")).get("wheels", []):
        wheel = folder / entry["file"]
        if not wheel.is_file():
            problems.append(f"{wheel}: missing")
        elif hashlib.sha256(wheel.read_bytes()).hexdigest() != entry["sha256"]:
            problems.append(f"{wheel}: checksum differs from the manifest")
    return problems
