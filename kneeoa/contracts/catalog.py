"""The backbone catalog: name -> where the class lives, its paper width and default input shape.

To add a backbone: write one file with a class `Name(width, ..., **options)` that has
`forward_features(x) -> (B, E)` and `embedding_dim`, then add one `Backbone(...)` line below. Everything
else (config validation, CLI choices, study grid, plots, saliency) reads the names from here.
Standard library only: Slicer and the CLI read this before torch is imported.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from typing import Any

PAPER_SHAPE = (160, 256, 256)  # (D, H, W) for ResNet3D and nnMamba in the paper's code
M3T_SHAPE = (128, 128, 128)  # the paper's code forces 128^3 for M3T


@dataclass(frozen=True)
class Backbone:
    """One catalog entry. `gradcam_layer` = module name (in KneeOAModel) of the last 3-D feature map."""

    target: str  # "module:Class"
    width: int  # the paper's base width
    input_shape: tuple[int, int, int]
    description: str
    label: str  # display name in tables and figures
    embedding_dim: int | None = None  # at the paper width (None: depends on width)
    gradcam_layer: str | None = None
    cube: bool = False  # needs a cube input; the class then takes `cube=N`
    in_study: bool = True  # part of the study grid (`kneeoa study` default backbones)
    paper: bool = False  # one of the paper's three backbones (the fixed slots of `kneeoa stats`)
    # activation bytes per input voxel and sample of a forward + backward (fp32, paper width), measured on an
    # H100 (kneeoa.engine.memory); None = not measured (the estimate then assumes the largest measured figure)
    bytes_per_voxel: float | None = None

    def cls(self) -> Any:
        """The backbone class (imports its module: torch)."""
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    def option_names(self) -> list[str]:
        """Keyword options the class accepts besides width (and cube)."""
        params = inspect.signature(self.cls().__init__).parameters
        return [p for p in params if p not in ("self", "width", "cube")]


BACKBONES: dict[str, Backbone] = {
    "resnet3d": Backbone("kneeoa.models.resnet3d:ResNet3D", 64, PAPER_SHAPE,
                         "MedicalNet ResNet-18, dilated layer3/4 (the paper's)", "ResNet3D", 512, "backbone.layer4", paper=True,
                         bytes_per_voxel=172.0),
    "m3t": Backbone("kneeoa.models.m3t:M3T", 64, M3T_SHAPE, "multi-plane multi-slice transformer", "M3T", 128,
                    "backbone.cnn3d", cube=True, paper=True, bytes_per_voxel=3250.0),
    "nnmamba": Backbone("kneeoa.models.nnmamba:NNMamba", 32, PAPER_SHAPE,
                        "nnMamba encoder (Mamba layer at stem resolution)", "nnMamba", 32, "backbone.layer3", paper=True,
                        bytes_per_voxel=325.0),
    "resnet3d-monai": Backbone("kneeoa.models.resnet3d:MonaiResNet3D", 64, PAPER_SHAPE,
                               "MONAI resnet18, strided (alternative)", "ResNet3D (MONAI)", 512,
                               "backbone.net.layer4", in_study=False, bytes_per_voxel=172.0),
}
# the paper's prediction files call nnMamba "mamba"
ALIASES = {"mamba": "nnmamba"}
DEFAULT_BACKBONE = "resnet3d"


def register_backbone(name: str, entry: Backbone) -> Backbone:
    """Add a catalog entry from outside this file (a plugin module's one catalog line).

    Use: `register_backbone("toy", Backbone("mypkg.toy:Toy", 8, (32, 32, 32), "toy net", "Toy"))` in the
    module named by the KNEEOA_PLUGINS environment variable (comma-separated modules, imported by
    `load_plugins()` before the CLI builds its choices). Re-registering the same entry is a no-op.
    """
    if not isinstance(entry, Backbone):
        raise TypeError(f"register_backbone needs a Backbone, got {type(entry).__name__}")
    if name in ALIASES or (name in BACKBONES and BACKBONES[name] != entry):
        raise ValueError(f"backbone name {name!r} is taken")
    BACKBONES[name] = entry
    return entry


PLUGINS_ENV = "KNEEOA_PLUGINS"


def load_plugins(modules: str | None = None) -> list[str]:
    """Import the plugin modules named in $KNEEOA_PLUGINS (comma-separated); each registers its backbone.

    The CLI calls this before it builds its choices; Python API users may simply import their module.
    """
    names = [m.strip() for m in (os.environ.get(PLUGINS_ENV, "") if modules is None else modules).split(",")]
    for name in filter(None, names):
        importlib.import_module(name)
    return [n for n in names if n]


MIN_INPUT = 8  # the smallest model input side: every backbone halves it at least three times
MAX_INPUT_SIDE = 1024  # voxels per side of the model input (the paper's largest is 256)
MAX_INPUT_VOXELS = 2**25  # 33.5 M voxels: 3x the paper's 160x256x256 (a 1024^3 input would need 4 GB a sample)


def whole_number(value: object) -> bool:
    """An int, or an integral finite float (JSON 64.0); never a bool or a string."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def input_shape_problem(shape: object, backbone: str | None = None) -> str | None:
    """Why `shape` cannot be a model input (D, H, W) for `backbone`, or None: the one rule, used by the run
    config and by ModelSpec. A card is data from a file: Infinity, NaN, "64", true or 10**9 are refused here,
    not met by int() (OverflowError) or by an allocation of terabytes."""
    if not isinstance(shape, (list, tuple)) or not all(whole_number(s) for s in shape):
        return f"input_shape must be three integers (D, H, W), got {shape!r}"
    values = [int(s) for s in shape]
    if len(values) != 3 or min(values) < MIN_INPUT or max(values) > MAX_INPUT_SIDE:
        return f"input_shape must be three integers from {MIN_INPUT} to {MAX_INPUT_SIDE} (D, H, W), got {values}"
    if values[0] * values[1] * values[2] > MAX_INPUT_VOXELS:
        return f"input_shape {values} has more than {MAX_INPUT_VOXELS} voxels (3x the paper's 160x256x256)"
    entry = BACKBONES.get(backbone or "")
    if entry is not None and entry.cube and len(set(values)) != 1:
        return f"{backbone} needs a cube input (N, N, N), got {values}"
    return None


def backbone_names() -> tuple[str, ...]:
    """Every catalog name, in catalog order (the CLI's choices)."""
    return tuple(BACKBONES)


def study_backbones() -> tuple[str, ...]:
    """The study grid's backbones, in the paper's order (ResNet3D, M3T, nnMamba, then any added one)."""
    return tuple(name for name, entry in BACKBONES.items() if entry.in_study)


def paper_backbones() -> tuple[str, ...]:
    """The paper's three backbones in SPEC order (ResNet3D, M3T, nnMamba)."""
    return tuple(name for name, entry in BACKBONES.items() if entry.paper)


def spellings(name: str) -> tuple[str, ...]:
    """Every name a prediction file may use for a backbone: its aliases (sorted), then the name."""
    return (*sorted(a for a, target in ALIASES.items() if target == name), name)


def display_order() -> tuple[str, ...]:
    """Catalog order with the aliases next to their backbone (figure rows, table order)."""
    return tuple(spelling for name in BACKBONES for spelling in spellings(name))


def canonical_backbone(name: str) -> str:
    """'mamba' -> 'nnmamba'; any catalog name unchanged."""
    return ALIASES.get(name, name)


def backbone_label(name: str) -> str:
    """Display name ('nnMamba'); an unknown name is shown as given."""
    entry = BACKBONES.get(canonical_backbone(name)) or BACKBONES.get(str(name).replace("_", "-"))
    return entry.label if entry else name
