"""An offline wheelhouse: every wheel KneeOA needs inside a target Slicer, downloaded on a connected machine.

Air-gapped sites are a top complaint about Slicer AI extensions (SlicerNNUnet#16, MedSAMSlicer#9); the
answer Slicer's developers give is `pip download` + `--find-links`. Two pip calls, standard library only:
1. `pip install --dry-run --no-deps --report`, one dependency layer at a time, resolves the requirements *for
   the target* (Slicer's Python, e.g. 3.12, and its platform) without installing anything and *without ever
   resolving torch* (see `resolve`): torch (and what only torch needs: CUDA libraries, triton) comes from
   Slicer's PyTorch extension, which picks the build for the site's GPU driver;
2. `pip download --no-deps` fetches exactly the resolved wheels.
The folder then holds the wheels and `kneeoa-wheelhouse.json` (target, files, sha256); in Slicer the
dependency prompt's "Install from a folder..." installs from it with `pip --no-index --find-links`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kneeoa.utils.hashing import sha256_of  # streamed: a wheel can be gigabytes (CUDA libraries)

MANIFEST = "kneeoa-wheelhouse.json"
# pip platform tags of the platforms Slicer is built for (manylinux_2_28 covers current Slicer Linux builds)
PLATFORMS = {
    "linux": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "windows": ["win_amd64"],
    "macos-arm64": ["macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64", "macosx_14_0_arm64"],
    "macos-x86_64": ["macosx_10_9_x86_64", "macosx_10_13_x86_64", "macosx_11_0_x86_64"],
}
# PEP 508 marker values per platform: sys_platform, platform_system, platform_machine, os_name
TARGETS = {"linux": ("linux", "Linux", "x86_64", "posix"), "windows": ("win32", "Windows", "AMD64", "nt"),
           "macos-arm64": ("darwin", "Darwin", "arm64", "posix"), "macos-x86_64": ("darwin", "Darwin", "x86_64", "posix")}
SLICER_PYTHON = "3.12"  # Slicer 5.10 and 5.12 bundle Python 3.12
EXCLUDED = ("torch",)  # installed through the PyTorch extension, never from a wheelhouse


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


def _packaging() -> Any:
    """`packaging`'s Requirement class: the standalone package when installed, else the copy
    pip vendors (pip is what this module drives, so it is always there; Slicer may lack `packaging`)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - depends on the Python
        from pip._vendor.packaging.requirements import Requirement
    return Requirement


def environment(python_version: str, platform: str) -> dict[str, str]:
    """PEP 508 marker values of the target Slicer's Python (so `; sys_platform == "win32"` deps are right)."""
    sys_platform, system, machine, os_name = TARGETS[platform]
    return {"python_version": ".".join(python_version.split(".")[:2]), "python_full_version": python_version
            if python_version.count(".") == 2 else python_version + ".0", "sys_platform": sys_platform,
            "platform_system": system, "platform_machine": machine, "os_name": os_name,
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "platform_release": "", "platform_version": "", "implementation_version": python_version, "extra": ""}


def _report(requirements: Sequence[str], python_version: str, platforms: Sequence[str],
            index_args: Sequence[str]) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="kneeoa-wheelhouse-") as tmp:
        report = Path(tmp) / "report.json"
        _pip(["install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet", "--report", str(report),
              "--target", str(Path(tmp) / "unused"), *target_args(python_version, platforms), *index_args,
              *requirements])
        return json.loads(report.read_text(encoding="utf-8"))["install"]


def resolve(requirements: Sequence[str], python_version: str, platform: str, index_args: Sequence[str] = (),
            excluded: Sequence[str] = EXCLUDED, max_rounds: int = 25) -> list[dict]:
    """The wheels reachable from `requirements` on the target, never resolving an excluded package.

    Why not one `pip download` with dependencies: torch is a dependency of monai/captum/netcal, and pip's
    resolver then fetches (and backtracks over) multi-GB torch wheels for the target platform - measured here:
    28 GB read in 18 min without finishing. So pip resolves one layer at a time with --no-deps, and the
    Requires-Dist of each resolved wheel (markers evaluated for the target) gives the next layer; a package is
    resolved again when a later layer adds a specifier for it."""
    Requirement = _packaging()
    env = environment(python_version, platform)
    skip = {normalise(name) for name in excluded}
    wanted: dict[str, list[str]] = {}
    for text in requirements:
        req = Requirement(text)
        wanted.setdefault(normalise(req.name), []).append(str(req.specifier))
    resolved: dict[str, tuple[tuple[str, ...], dict]] = {}
    for _round in range(max_rounds):
        todo = [n for n, specs in wanted.items() if n not in resolved or resolved[n][0] != tuple(specs)]
        if not todo:
            return sorted((item for _, item in resolved.values()), key=lambda i: normalise(i["metadata"]["name"]))
        asked = {n: tuple(wanted[n]) for n in todo}
        items = _report([n + ",".join(s for s in asked[n] if s) for n in todo], python_version,
                        PLATFORMS[platform], index_args)
        for item in items:
            name = normalise(item["metadata"]["name"])
            resolved[name] = (asked.get(name, tuple(wanted.get(name, ()))), item)
            for dep in item["metadata"].get("requires_dist") or []:
                req = Requirement(dep)
                if req.marker is not None and not req.marker.evaluate(env):
                    continue  # another platform's, another Python's, or an extra nobody asked for
                dep_name = normalise(req.name)
                if dep_name in skip:
                    continue
                specs = wanted.setdefault(dep_name, [])
                if str(req.specifier) not in specs:
                    specs.append(str(req.specifier))
    raise RuntimeError(f"the requirements did not settle in {max_rounds} resolution rounds")


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
    items = resolve(requirements, python_version, platform, index_args, excluded)
    pins = [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in items]
    if pins:
        _pip(["download", "--no-deps", "--quiet", "-d", str(out), *target_args(python_version, platforms),
              *index_args, *pins])
    files = []
    for path in sorted(out.glob("*.whl")):
        files.append({"file": path.name, "sha256": sha256_of(path)})
    manifest = {"python": python_version, "platform": platform, "platform_tags": platforms,
                "requirements": requirements, "excluded": list(excluded), "pins": pins, "wheels": files}
    from kneeoa.utils.atomic import atomic_write_text

    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
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
        elif sha256_of(wheel) != entry["sha256"]:
            problems.append(f"{wheel}: checksum differs from the manifest")
    return problems
