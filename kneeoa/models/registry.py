"""Model registry: a small `ModelSpec` -> `build_model(spec)`.

The backbones themselves are listed once, in the torch-free catalog `kneeoa.contracts.catalog`
(add a backbone there: one file with the class plus one catalog line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from kneeoa.contracts.catalog import BACKBONES, DEFAULT_BACKBONE, Backbone, input_shape_problem, whole_number
from kneeoa.contracts.vocab import HEADS, KL_HEADS, REORIENT, VARIANTS
from kneeoa.errors import ConfigError
from kneeoa.models.model import KneeOAModel
from kneeoa.utils.strict_json import finite_or_none

HEAD_OPTIONS = {"kl_head": "softmax"}  # options consumed by the heads, valid for every backbone


MAX_OPTION_NUMBER = 4096  # any number in width/options (paper widths are 32-768)
MAX_OPTION_TOTAL = 512  # sum of an integer list option (e.g. ResNet `layers`: the paper's is 8 blocks)


def _check_option_numbers(options: dict[str, Any]) -> None:
    """Every number in the options finite, non-negative and small: they size layers, and a card is untrusted."""
    for key, value in options.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if any(v != v or v in (float("inf"), float("-inf")) or not 0 <= v <= MAX_OPTION_NUMBER for v in numbers):
            raise ConfigError(f"option {key} = {value!r}: numbers must be finite, from 0 to {MAX_OPTION_NUMBER}")
        if isinstance(value, (list, tuple)) and (len(value) > 64 or sum(numbers) > MAX_OPTION_TOTAL):
            raise ConfigError(f"option {key} = {value!r}: at most 64 entries summing to {MAX_OPTION_TOTAL}")


@dataclass
class ModelSpec:
    """What to build. `input_shape` None = the backbone's paper shape; `width` None = the paper width."""

    backbone: str = DEFAULT_BACKBONE
    variant: str = "dual"
    head: str = "chained"
    input_shape: tuple[int, int, int] | None = None
    width: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    reorient: str = "ras"  # voxel order of the input: RAS (ours) or the file's own ("none", the paper's)

    def __post_init__(self) -> None:
        if self.reorient not in REORIENT:
            raise ConfigError(f"unknown reorient {self.reorient!r}; choose one of {', '.join(REORIENT)}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        entry = BACKBONES[self.backbone]
        shape = entry.input_shape if self.input_shape is None else self.input_shape
        problem = input_shape_problem(shape, self.backbone)
        if problem:
            raise ConfigError(problem)
        self.input_shape = tuple(int(s) for s in shape)
        if self.width is not None and (not whole_number(self.width) or not 1 <= self.width <= MAX_OPTION_NUMBER):
            raise ConfigError(f"width must be a positive integer up to {MAX_OPTION_NUMBER}, got {self.width!r}")
        self.width = None if self.width is None else int(self.width)
        if not isinstance(self.options or {}, dict):
            raise ConfigError(f"options must be a mapping, got {type(self.options).__name__}")
        self.options = {k: finite_or_none(v) for k, v in dict(self.options or {}).items()}  # tuples -> lists
        _check_option_numbers(self.options)
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
                "input_shape": list(self.input_shape), "width": self.width, "options": dict(self.options),
                "reorient": self.reorient}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Inverse of `to_dict`; unknown keys are a ConfigError (a card from a newer KneeOA, or a typo)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a model spec must be a mapping, got {type(d).__name__}")
        names = {"backbone", "variant", "head", "input_shape", "width", "options", "reorient"}
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
