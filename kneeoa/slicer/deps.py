"""Which Python packages KneeOA needs inside Slicer, which are missing, and how to install them.

Standard library only (it runs before anything is installed). torch is special: it must come from
Slicer's PyTorch extension (`PyTorchUtils`, which picks the CUDA build matching the driver), never
from PyPI as a side effect. So the pip step runs only once torch is present, and pins the installed
torch with a constraints file: monai, captum and netcal depend on torch and would otherwise let pip
replace it with a CPU wheel from PyPI.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

TORCH_REQUIREMENT = "torch>=2.2"
# The `kneeoa` package's dependencies other than torch (same as pyproject.toml; a test keeps them equal).
REQUIREMENTS = (
    "numpy>=1.24",
    "scipy>=1.10",
    "scikit-learn>=1.3",
    "monai>=1.3",
    "nibabel>=5.0",
    "SimpleITK>=2.3",
    "captum>=0.7",
    "safetensors>=0.4",
    "openpyxl>=3.1",
    "matplotlib>=3.7",
    "pyyaml>=6",
    "tqdm>=4.60",
    "isal>=1.6",
    "netcal>=1.3",
)
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._\-]*)\s*(?:(>=|==)\s*([0-9][0-9A-Za-z.\-+]*))?\s*$")


def split_requirement(requirement: str) -> tuple[str, str | None, str | None]:
    """'numpy>=1.24' -> ('numpy', '>=', '1.24'); only the `>=` and `==` forms KneeOA uses."""
    match = _REQ.match(requirement)
    if not match:
        raise ValueError(f"unsupported requirement {requirement!r} (use name, name>=X or name==X)")
    return match.group(1), match.group(2), match.group(3)


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.13.0+cu126' -> (2, 13, 0): leading numeric parts only, enough for >= checks."""
    parts = []
    for piece in re.split(r"[.+\-]", version):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def installed_version(name: str) -> str | None:
    """Version of an installed distribution (read from metadata, nothing is imported), or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def satisfied(requirement: str) -> bool:
    """True if the requirement's distribution is installed in a matching version."""
    name, op, wanted = split_requirement(requirement)
    found = installed_version(name)
    if found is None:
        return False
    if op is None:
        return True
    have, want = version_tuple(found), version_tuple(wanted or "0")
    return have >= want if op == ">=" else have[: len(want)] == want


@dataclass
class DependencyReport:
    """What is installed and what is missing (requirement strings, as pip takes them)."""

    torch_version: str | None
    torch_ok: bool
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.torch_ok and not self.missing


def check(requirements: tuple[str, ...] | list[str] = REQUIREMENTS,
          torch_requirement: str = TORCH_REQUIREMENT) -> DependencyReport:
    """Check torch and the other requirements without importing any of them."""
    torch_name = split_requirement(torch_requirement)[0]
    return DependencyReport(torch_version=installed_version(torch_name), torch_ok=satisfied(torch_requirement),
                            missing=[r for r in requirements if not satisfied(r)])


def missing_requirements(requirements: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """What KneeOA needs and this Python lacks (requirement strings; torch first), read from package metadata."""
    report = check(REQUIREMENTS if requirements is None else requirements)
    return ([] if report.torch_ok else [TORCH_REQUIREMENT]) + list(report.missing)


@dataclass
class InstallPlan:
    """Steps to make the report ok, in order, with a message to show before asking the user."""

    torch_step: str | None  # None, "install" or "upgrade" (both through the PyTorch extension)
    pip_requirements: list[str]
    message: str

    def pip_args(self, constraints_file: str | Path | None = None, find_links: str | Path | None = None) -> list[str]:
        """Arguments for `pip install` (Slicer's `slicer.util.pip_install` accepts this list); `find_links` = a
        wheelhouse folder: install from it alone, without an index (offline / air-gapped sites)."""
        args = list(self.pip_requirements)
        if constraints_file is not None:
            args += ["--constraint", str(constraints_file)]
        if find_links is not None:
            args += ["--no-index", "--find-links", str(find_links)]
        return args


def install_plan(report: DependencyReport) -> InstallPlan:
    """What to install and how, as a plan the user can read before agreeing."""
    lines = []
    torch_step = None
    if not report.torch_ok:
        torch_step = "upgrade" if report.torch_version else "install"
        have = f" (found {report.torch_version})" if report.torch_version else ""
        lines.append(f"PyTorch ({TORCH_REQUIREMENT}{have}) through the PyTorch extension (PyTorchUtils), "
                     "which picks the build for your GPU driver.")
    if report.missing:
        lines.append("Python packages with pip: " + ", ".join(report.missing) + ".")
        lines.append("The installed torch is pinned, so pip will not replace it.")
    message = ("KneeOA needs:\n- " + "\n- ".join(lines)) if lines else "All KneeOA dependencies are installed."
    return InstallPlan(torch_step=torch_step, pip_requirements=list(report.missing), message=message)


# Distributions Slicer ships (or that the PyTorch extension installed): pip must keep the installed version of
# each, or installing monai/captum/scikit-learn could replace Slicer's own numpy, scipy or SimpleITK.
SLICER_SHIPPED = ("torch", "numpy", "scipy", "SimpleITK", "vtk", "pydicom", "requests", "pillow")


def installed_pins(names: tuple[str, ...] | list[str] = SLICER_SHIPPED) -> dict[str, str]:
    """name -> installed version, for each of `names` that is installed (read from metadata)."""
    found = {name: installed_version(name) for name in names}
    return {name: version for name, version in found.items() if version is not None}


def constraints_text(pins: dict[str, str] | None = None) -> str:
    """A pip constraints file keeping what is installed ('torch==2.13.0+cu126', 'numpy==1.26.4', ...);
    None = every installed distribution of SLICER_SHIPPED."""
    pins = installed_pins() if pins is None else pins
    return "".join(f"{name}=={version}\n" for name, version in pins.items())


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU and driver are visible, checked without importing torch (fast, for the GUI)."""
    if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()):
        return True
    return shutil.which("nvidia-smi") is not None or (os.name == "nt" and
                                                      Path(os.environ.get("SystemRoot", "C:/Windows"),
                                                           "System32", "nvidia-smi.exe").is_file())


def device_note(device: str, cuda_available: bool | None = None) -> str | None:
    """A note for the user when the model will run on the CPU; None when a GPU will be used."""
    gpu = nvidia_gpu_present() if cuda_available is None else cuda_available
    if device == "cpu":
        return "Running on the CPU (chosen): slower than a GPU, mostly for the saliency map."
    if gpu:
        return None
    if device == "cuda":
        return ("No CUDA GPU was found, but device 'cuda' was chosen: the job will fail. "
                "Choose 'auto' or 'cpu'.")
    return "No CUDA GPU found: running on the CPU (slower than a GPU, mostly for the saliency map)."


def install(plan: InstallPlan, ask_confirmation: bool = False, find_links: str | Path | None = None) -> None:
    """Carry out a plan inside Slicer: torch through PyTorchUtils, then pip with Slicer's packages pinned;
    `find_links` = a wheelhouse folder (`kneeoa wheelhouse`) for a site without internet."""
    import tempfile

    import slicer

    if plan.torch_step and find_links is not None:
        raise RuntimeError("PyTorch is missing: it cannot come from a wheelhouse folder. Install the PyTorch "
                           "extension and PyTorch first (see the README's offline install section).")
    if plan.torch_step:
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise RuntimeError("KneeOA needs the PyTorch extension: install 'PyTorch' from the Extensions Manager, "
                               "restart Slicer and try again.") from None
        wanted = TORCH_REQUIREMENT[len(split_requirement(TORCH_REQUIREMENT)[0]):]  # ">=2.2"
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask_confirmation,
                                                         torchVersionRequirement=wanted) is None:
            raise RuntimeError("PyTorch was not installed.")
    report = check()
    if report.missing:
        if not report.torch_ok:
            raise RuntimeError("PyTorch is still missing or too old; restart Slicer after installing it.")
        constraints = Path(tempfile.mkdtemp(prefix="kneeoa-deps-")) / "constraints.txt"
        constraints.write_text(constraints_text())
        slicer.util.pip_install(install_plan(report).pip_args(constraints, find_links))


def ensure(confirm: Callable[[str], bool | str | Path], install_plan_with: Callable[..., None] = install,
           requirements: tuple[str, ...] | list[str] = REQUIREMENTS,
           torch_requirement: str = TORCH_REQUIREMENT) -> bool:
    """True when every dependency is there, after asking `confirm(plan message)` to install what is missing
    and installing it with `install_plan_with(plan)` (errors propagate to the caller, which shows them).
    `confirm` may answer a folder instead of True: then `install_plan_with(plan, find_links=folder)`."""
    report = check(requirements, torch_requirement)
    if report.ok:
        return True
    plan = install_plan(report)
    answer = confirm(plan.message)
    if not answer:
        return False
    if isinstance(answer, (str, Path)):  # the user chose "install from a folder" (a wheelhouse)
        install_plan_with(plan, find_links=answer)
    else:
        install_plan_with(plan)
    return check(requirements, torch_requirement).ok


def _offer_in_slicer() -> Callable[[], bool] | None:
    """The module's install prompt when a Slicer application runs this code, else None (headless, tests).

    Found in sys.modules, not imported: kneeoa.slicer.module_widget (which both KneeOA modules load at
    startup) imports this module, and an import back would make the two a cycle."""
    import sys

    slicer = sys.modules.get("slicer")
    if slicer is None or getattr(slicer, "app", None) is None:
        return None
    return getattr(sys.modules.get("kneeoa.slicer.module_widget"), "offer_dependencies", None)


def require(purpose: str, requirements: tuple[str, ...] | list[str] | None = None,
            offer: Callable[[], bool] | None = None) -> None:
    """Call before anything that needs KneeOA's packages in *this* process (console `process()`, latent tables,
    PNG export, a case load): inside Slicer the install prompt is offered; if something is still missing a
    DependencyError says what and how to get it (never a raw ImportError from deep inside)."""
    from kneeoa.errors import DependencyError

    missing = missing_requirements(requirements)
    if not missing:
        return
    offer = offer if offer is not None else _offer_in_slicer()
    if offer is not None and offer():
        missing = missing_requirements(requirements)  # what the install left missing
        if not missing:
            return
    raise DependencyError(f"{purpose} needs {', '.join(missing)}, not installed in this Slicer: open a KneeOA "
                          "module and accept the offer to install them (offline: 'Install from a folder...' with "
                          "a `kneeoa wheelhouse` folder)")
