"""The backbone catalog: name -> where the class lives, its paper width and default input shape.

To add a backbone: write one file with a class `Name(width, ..., **options)` that has
`forward_features(x) -> (B, E)` and `embedding_dim`, then add one `Backbone(...)` line below. Everything
else (config validation, CLI choices, study grid, plots, saliency) reads the names from here.
Standard library only: Slicer and the CLI read this before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    in_study: bool = True  # part of the paper's 3x3 study grid


BACKBONES: dict[str, Backbone] = {
    "resnet3d": Backbone("kneeoa.models.resnet3d:ResNet3D", 64, PAPER_SHAPE,
                         "MedicalNet ResNet-18, dilated layer3/4 (the paper's)", "ResNet3D", 512, "backbone.layer4"),
    "m3t": Backbone("kneeoa.models.m3t:M3T", 64, M3T_SHAPE, "multi-plane multi-slice transformer", "M3T", 128,
                    "backbone.cnn3d", cube=True),
    "nnmamba": Backbone("kneeoa.models.nnmamba:NNMamba", 32, PAPER_SHAPE,
                        "nnMamba encoder (Mamba layer at stem resolution)", "nnMamba", 32, "backbone.layer3"),
    "resnet3d-monai": Backbone("kneeoa.models.resnet3d:MonaiResNet3D", 64, PAPER_SHAPE,
                               "MONAI resnet18, strided (alternative)", "ResNet3D (MONAI)", 512,
                               "backbone.net.layer4", in_study=False),
}
# the paper's prediction files call nnMamba "mamba"
ALIASES = {"mamba": "nnmamba"}


def backbone_names() -> tuple[str, ...]:
    """Every catalog name, in catalog order (the CLI's choices)."""
    return tuple(BACKBONES)


def study_backbones() -> tuple[str, ...]:
    """The study grid's backbones, in the paper's order (ResNet3D, M3T, nnMamba, then any added one)."""
    return tuple(name for name, entry in BACKBONES.items() if entry.in_study)


def canonical_backbone(name: str) -> str:
    """'mamba' -> 'nnmamba'; any catalog name unchanged."""
    return ALIASES.get(name, name)


def backbone_label(name: str) -> str:
    """Display name ('nnMamba'); an unknown name is shown as given."""
    entry = BACKBONES.get(canonical_backbone(name))
    return entry.label if entry else name
