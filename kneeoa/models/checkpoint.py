"""Checkpoints without pickle: a safetensors file whose metadata holds the model card as JSON.

The card (`{"kneeoa_card": json}`) says everything needed to rebuild the model: spec, preprocessing,
label rules, training data, metrics, package version, creation time. Loading never executes code from
the file: pickle / torch.save payloads are recognised by their first bytes and refused unread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kneeoa.contracts.checkpoint_meta import CARD_KEY, model_card, read_card
from kneeoa.contracts.checkpoint_meta import check_safetensors as _check_file
from kneeoa.contracts.trust import TENSOR_PREFIX as TRUST_TENSOR_PREFIX
from kneeoa.errors import CheckpointError, ConfigError
from kneeoa.models.registry import ModelSpec, build_model
from kneeoa.utils import strict_json

__all__ = ["CARD_KEY", "default_card", "load_checkpoint", "load_weights", "read_card", "save_checkpoint"]
_LIST_MAX = 6


def default_card(spec: ModelSpec) -> dict[str, Any]:
    """The card fields every checkpoint carries (kneeoa.contracts.checkpoint_meta.model_card); callers extend them."""
    return model_card(spec.to_dict(), spec.input_shape)


def save_checkpoint(path: str | Path, model: nn.Module, card: dict[str, Any] | None = None) -> Path:
    """Write weights + model card atomically; the card's `spec` is always the model's own spec."""
    from safetensors.torch import save_file

    from kneeoa.utils.atomic import atomic_path

    full = default_card(model.spec)
    full.update(card or {})
    full["spec"] = model.spec.to_dict()
    try:
        text = strict_json.dumps(full, default=None)  # NaN metrics -> null
    except (TypeError, ValueError) as err:
        raise ConfigError(f"the model card is not JSON-serialisable: {err}", path) from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={CARD_KEY: text, "format": "pt"})
    return path


def _short(items: list[str]) -> str:
    more = f" (+{len(items) - _LIST_MAX} more)" if len(items) > _LIST_MAX else ""
    return ", ".join(items[:_LIST_MAX]) + more


def _mismatch(stored: dict[str, tuple], wanted: dict[str, tuple], against: str) -> str:
    """'' when the file's tensor names and shapes (`stored`) are the `wanted` ones, else what differs:
    missing keys, unexpected keys, shape mismatches (file vs `against`), joined by '; '."""
    missing = sorted(set(wanted) - set(stored))
    unexpected = sorted(set(stored) - set(wanted))
    shapes = [f"{k} {list(stored[k])} vs {list(wanted[k])}" for k in sorted(set(stored) & set(wanted))
              if tuple(stored[k]) != tuple(wanted[k])]
    parts = [f"missing keys: {_short(missing)}" if missing else "",
             f"unexpected keys: {_short(unexpected)}" if unexpected else "",
             f"shape mismatch (file vs {against}): {_short(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Strictly load a checkpoint's weights into `model`; CheckpointError lists the mismatching keys."""
    from safetensors.torch import load_file

    path = Path(path)
    _check_file(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:
        raise CheckpointError(f"truncated or corrupt checkpoint ({err})", path) from None
    # calibration / OOD statistics (kneeoa.trust.store) live beside the weights under their own prefix
    state = {k: v for k, v in state.items() if not k.startswith(TRUST_TENSOR_PREFIX)}
    problem = _mismatch({k: tuple(v.shape) for k, v in state.items()},
                        {k: tuple(v.shape) for k, v in model.state_dict().items()}, "model")
    if problem:
        spec = getattr(model, "spec", None)
        what = f"{spec.backbone}/{spec.variant}" if spec is not None else type(model).__name__
        raise CheckpointError(f"weights do not match the {what} architecture; {problem}", path)
    model.load_state_dict(state, strict=True)
    return model


def check_shapes_before_building(spec: ModelSpec, path: Path) -> None:
    """Build the card's model on the meta device (no memory) and compare every parameter shape with the
    safetensors header: a small file whose card claims a huge `width`, `layers` or `input_shape` is refused
    here, before a real build allocates weights for it."""
    from safetensors import safe_open

    try:
        with torch.device("meta"):
            meta_model = build_model(spec)
    except ConfigError as err:
        raise CheckpointError(f"the model card's spec cannot be built: {err.problem}", path) from None
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()
                      if not name.startswith(TRUST_TENSOR_PREFIX)}
    except Exception as err:
        raise CheckpointError(f"truncated or corrupt checkpoint ({err})", path) from None
    problem = _mismatch(stored, {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}, "card")
    if problem:
        raise CheckpointError(f"weights do not match the {spec.backbone}/{spec.variant} architecture its card "
                              f"describes; {problem}", path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the card alone, load its weights strictly; returns (model in eval mode, card)."""
    path = Path(path)
    card = read_card(path)
    from kneeoa.contracts.segmentation import SEG_CARD_KIND

    if card.get("kind") == SEG_CARD_KIND:
        raise CheckpointError("this is a segmenter (from `kneeoa train-seg`), not a grading model; use it with "
                              "`kneeoa segment` or --segmenter", path)
    try:
        spec = ModelSpec.from_dict(card["spec"])
    except (ConfigError, TypeError, ValueError, OverflowError) as err:
        raise CheckpointError(f"the model card's spec cannot be built: {getattr(err, 'problem', err)}", path) from None
    check_shapes_before_building(spec, path)
    model = load_weights(build_model(spec), path)
    return model.to(device).eval(), card
