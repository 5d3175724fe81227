"""Model registry: a small `ModelSpec` -> `build_model(spec)`.

The backbones themselves are listed once, in the torch-free catalog `kneeoa.contracts.catalog`
(add a backbone there: one file with the class plus one catalog line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from kneeoa.contracts.catalog import BACKBONES, DEFAULT_BACKBONE, Backbone
from kneeoa.contracts.vocab import HEADS, KL_HEADS, VARIANTS
from kneeoa.errors import ConfigError
from kneeoa.models.model import KneeOAModel

HEAD_OPTIONS = {"kl_head": "softmax"}  # options consumed by the heads, valid for every backbone


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (list, tuple)) else value


@dataclass
class ModelSpec:
    """What to build. `input_shape` None = the backbone's paper shape; `width` None = the paper width."""

    backbone: str = DEFAULT_BACKBONE
    variant: str = "dual"
    head: str = "chained"
    input_shape: tuple[int, int, int] | None = None
    width: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        entry = BACKBONES[self.backbone]
        shape = entry.input_shape if self.input_shape is None else self.input_shape
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ConfigError(f"input_shape must be three integers (D, H, W), got {self.input_shape!r}") from None
        if len(shape) != 3 or min(shape) < 8:
            raise ConfigError(f"input_shape must be three integers >= 8 (D, H, W), got {list(shape)}")
        if entry.cube and len(set(shape)) != 1:
            raise ConfigError(f"{self.backbone} needs a cube input (N, N, N), got {list(shape)}")
        self.input_shape = shape
        if self.width is not None and (int(self.width) != self.width or self.width < 1):
            raise ConfigError(f"width must be a positive integer, got {self.width!r}")
        self.width = None if self.width is None else int(self.width)
        self.options = {k: _jsonable(v) for k, v in dict(self.options or {}).items()}
        allowed = [*HEAD_OPTIONS, *entry.option_names()]
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for backbone {self.backbone}; allowed: {allowed}")
        kl_head = self.options.get("kl_head", "softmax")
        if kl_head not in KL_HEADS:
            raise ConfigError(f"unknown kl_head {kl_head!r}; choose one of {', '.join(KL_HEADS)}")

    @property
    def resolved_width(self) -> int:
        """The width actually built (the paper's when `width` is None)."""
        return BACKBONES[self.backbone].width if self.width is None else self.width

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `ModelSpec.from_dict(spec.to_dict()) == spec`."""
        return {"backbone": self.backbone, "variant": self.variant, "head": self.head,
                "input_shape": list(self.input_shape), "width": self.width, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Inverse of `to_dict`; unknown keys are a ConfigError (a card from a newer KneeOA, or a typo)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a model spec must be a mapping, got {type(d).__name__}")
        names = {"backbone", "variant", "head", "input_shape", "width", "options"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown model spec field(s) {unknown}; known: {sorted(names)}")
        return cls(**d)


def build_model(spec: ModelSpec | dict[str, Any]) -> KneeOAModel:
    """Build the model (random init, train mode) described by `spec`."""
    if isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec)
    entry: Backbone = BACKBONES[spec.backbone]
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.options.items() if k not in HEAD_OPTIONS}
    if entry.cube:
        kwargs["cube"] = spec.input_shape[0]
    try:
        backbone = entry.cls()(width=spec.resolved_width, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"cannot build {spec.backbone} with width {spec.resolved_width} and {kwargs}: {err}") from None
    return KneeOAModel(spec, backbone)


def describe(spec: ModelSpec) -> dict[str, Any]:
    """Parameter count and embedding width, built on the meta device (no memory for weights)."""
    with torch.device("meta"):
        model = build_model(spec)
    return {"backbone": spec.backbone, "variant": spec.variant,
            "head": spec.head if spec.variant == "dual" else "-",
            "input_shape": list(spec.input_shape), "width": spec.resolved_width,
            "params": sum(p.numel() for p in model.parameters()), "embedding_dim": model.embedding_dim}
