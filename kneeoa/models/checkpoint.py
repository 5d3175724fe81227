"""Checkpoints without pickle: a safetensors file whose metadata holds the model card as JSON.

The card (`{"kneeoa_card": json}`) says everything needed to rebuild the model: spec, preprocessing,
label rules, training data, metrics, package version, creation time. Loading never executes code from
the file: pickle / torch.save payloads are recognised by their first bytes and refused unread.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kneeoa.contracts.trust import TENSOR_PREFIX as TRUST_TENSOR_PREFIX
from kneeoa.errors import CheckpointError, ConfigError
from kneeoa.hierarchy import KL_GRADES, OA_THRESHOLD
from kneeoa.models.registry import ModelSpec, build_model
from kneeoa.utils import strict_json

CARD_KEY = "kneeoa_card"
_LIST_MAX = 6


def default_card(spec: ModelSpec) -> dict[str, Any]:
    """The card fields every checkpoint carries; callers override/extend them."""
    from kneeoa import __version__

    return {
        "spec": spec.to_dict(),
        "preprocessing": {"input_shape": list(spec.input_shape), "axis_order": "DHW = NIfTI (k, i, j)",
                          "zscore": True, "resize": "trilinear"},
        "labels": {"kl_grades": list(KL_GRADES), "oa_rule": f"OA = KL >= {OA_THRESHOLD}"},
        "training_data": "",
        "metrics": {},
        "kneeoa_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


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


def _check_file(path: Path) -> None:
    """Refuse missing, pickled, truncated and non-safetensors files before any library parses them."""
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    # the safetensors layout is checked first: its 8-byte header length may itself start with 0x80 or "PK"
    # (a 640-byte header does), which would otherwise pass for pickle / zip magic
    if 2 <= header_len <= size - 8 and head[8:9] == b"{":
        return
    if head[:2] == b"PK" and not _is_torch_zip(path):
        raise CheckpointError("a ZIP archive (e.g. .xlsx, .docx, .zip), not a KneeOA checkpoint; a KneeOA checkpoint "
                              "is a .safetensors file written by `kneeoa train` (e.g. RUN/checkpoints/"
                              "last.safetensors, or the bundled Resources/demo_model.safetensors)", path)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(
            "this is a pickle / torch.save file; KneeOA never unpickles checkpoints because loading a pickle can "
            "run arbitrary code. Use a KneeOA checkpoint (.safetensors with a model card), or convert weights "
            "you trust with save_checkpoint() in a trusted environment", path)
    raise CheckpointError("not a KneeOA checkpoint: not a safetensors file, or truncated/corrupt", path)


def _is_torch_zip(path: Path) -> bool:
    """torch.save's ZIP format holds `<archive>/data.pkl`; any other ZIP (a spreadsheet, say) is not a pickle.
    Only the central directory is listed; nothing is extracted or unpickled."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card of a checkpoint (reads only the header, never the weights)."""
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error type for truncated/corrupt headers
        raise CheckpointError(f"truncated or corrupt checkpoint ({err})", path) from None
    if CARD_KEY not in meta:
        raise CheckpointError("safetensors file without a KneeOA model card (metadata 'kneeoa_card')", path)
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"the model card is not valid JSON ({err})", path) from None
    except RecursionError:  # a card nested thousands deep exhausts the parser's stack
        raise CheckpointError("the model card is nested too deeply to read", path) from None
    if not isinstance(card, dict) or "spec" not in card:
        raise CheckpointError("the model card has no 'spec'", path)
    return card


def _short(items: list[str]) -> str:
    more = f" (+{len(items) - _LIST_MAX} more)" if len(items) > _LIST_MAX else ""
    return ", ".join(items[:_LIST_MAX]) + more


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
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}"
              for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        spec = getattr(model, "spec", None)
        what = f"{spec.backbone}/{spec.variant}" if spec is not None else type(model).__name__
        parts = [f"missing keys: {_short(missing)}" if missing else "",
                 f"unexpected keys: {_short(unexpected)}" if unexpected else "",
                 f"shape mismatch (file vs model): {_short(shapes)}" if shapes else ""]
        raise CheckpointError(f"weights do not match the {what} architecture; " + "; ".join(p for p in parts if p),
                              path)
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
            stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as err:
        raise CheckpointError(f"truncated or corrupt checkpoint ({err})", path) from None
    wanted = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    missing = sorted(set(wanted) - set(stored))
    unexpected = sorted(set(stored) - set(wanted))
    shapes = [f"{k} {list(stored[k])} vs {list(wanted[k])}" for k in sorted(set(stored) & set(wanted))
              if stored[k] != wanted[k]]
    if missing or unexpected or shapes:
        parts = [f"missing keys: {_short(missing)}" if missing else "",
                 f"unexpected keys: {_short(unexpected)}" if unexpected else "",
                 f"shape mismatch (file vs card): {_short(shapes)}" if shapes else ""]
        raise CheckpointError(f"weights do not match the {spec.backbone}/{spec.variant} architecture its card "
                              "describes; " + "; ".join(p for p in parts if p), path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the card alone, load its weights strictly; returns (model in eval mode, card)."""
    path = Path(path)
    card = read_card(path)
    try:
        spec = ModelSpec.from_dict(card["spec"])
    except (ConfigError, TypeError, ValueError, OverflowError) as err:
        raise CheckpointError(f"the model card's spec cannot be built: {getattr(err, 'problem', err)}", path) from None
    check_shapes_before_building(spec, path)
    model = load_weights(build_model(spec), path)
    return model.to(device).eval(), card
