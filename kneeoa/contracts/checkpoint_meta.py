"""Checkpoint metadata with the standard library alone: the model card and the trainer state of a
safetensors file, and the one builder of a grading model card.

A safetensors file is `<u64 little-endian header length><JSON header><tensor bytes>`; the header's
`__metadata__` maps strings to strings, and KneeOA stores its card (`kneeoa_card`) and trainer state
(`kneeoa_trainer_state`) there as JSON text. Reading them needs no torch and no safetensors, so the Slicer
panels (which refresh on every edit) and the torch-side loaders share this one reader. Nothing here
ever unpickles: a pickle / torch.save file is recognised by its first bytes and refused unread.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from kneeoa.errors import CheckpointError

CARD_KEY = "kneeoa_card"  # __metadata__ key of the model card
STATE_KEY = "kneeoa_trainer_state"  # __metadata__ key of the trainer state (`--resume`)
MAX_HEADER = 64 * 1024 * 1024  # a larger JSON header is not one we wrote (and would cost its size in RAM)


def safetensors_header_length(path: str | Path) -> int | None:
    """The JSON header length when the file has the safetensors layout (<u64 length>{...), else None."""
    size = Path(path).stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    return header_len if 2 <= header_len <= size - 8 and head[8:9] == b"{" else None


def check_safetensors(path: str | Path) -> int:
    """The header length of a safetensors file; CheckpointError for a missing, pickled or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path)
    # the safetensors layout is checked first: its 8-byte header length may itself start with 0x80 or "PK"
    # (a 640-byte header does), which would otherwise pass for pickle / zip magic
    header_len = safetensors_header_length(path)
    if header_len is not None:
        return header_len
    with open(path, "rb") as fh:
        head = fh.read(2)
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


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header's `__metadata__` ({} when it has none); CheckpointError for anything unreadable."""
    path = Path(path)
    header_len = check_safetensors(path)
    if header_len > MAX_HEADER:
        raise CheckpointError(f"truncated or corrupt checkpoint (header of {header_len} bytes)", path)
    try:
        with open(path, "rb") as fh:
            fh.seek(8)
            header = json.loads(fh.read(header_len))
    except OSError as err:
        raise CheckpointError(f"cannot read the checkpoint ({err.strerror})", path) from None
    except (ValueError, RecursionError):
        raise CheckpointError("truncated or corrupt checkpoint (its header is not JSON)", path) from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError("truncated or corrupt checkpoint (its metadata is not a string map)", path)
    return meta


def _json_entry(meta: dict[str, str], key: str, what: str, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(meta[key])
    except ValueError as err:
        raise CheckpointError(f"the {what} is not valid JSON ({err})", path) from None
    except RecursionError:  # nested thousands deep exhausts the parser's stack
        raise CheckpointError(f"the {what} is nested too deeply to read", path) from None
    if not isinstance(value, dict):
        raise CheckpointError(f"the {what} is not a JSON object", path)
    return value


def read_card(path: str | Path, require_spec: bool = True) -> dict[str, Any]:
    """The model card of a checkpoint, from its header alone (never the weights)."""
    path = Path(path)
    meta = read_metadata(path)
    if CARD_KEY not in meta:
        raise CheckpointError(f"no KneeOA model card in this file (safetensors metadata '{CARD_KEY}')", path)
    card = _json_entry(meta, CARD_KEY, "model card", path)
    if require_spec and "spec" not in card:
        raise CheckpointError("the model card has no 'spec'", path)
    return card


def read_trainer_meta(path: str | Path) -> dict[str, Any]:
    """The JSON part of a trainer state (epoch, finished, optimizer hyper-parameters, ...)."""
    path = Path(path)
    try:
        meta = read_metadata(path)
    except CheckpointError as err:
        raise CheckpointError(f"trainer state is unreadable ({err.problem}); delete it to restart the run",
                              path) from None
    if STATE_KEY not in meta:
        raise CheckpointError("not a KneeOA trainer state (no metadata)", path)
    return _json_entry(meta, STATE_KEY, "trainer state", path)


def model_card(spec: dict[str, Any], input_shape: Any, training_data: str = "", metrics: dict | None = None,
               **extra: Any) -> dict[str, Any]:
    """The card every grading checkpoint carries: spec, preprocessing, label rules, data, metrics, version,
    creation time; `extra` adds fields (e.g. `training`)."""
    from kneeoa import __version__
    from kneeoa.hierarchy import KL_GRADES, OA_DECISION, OA_THRESHOLD

    return {
        "spec": spec,
        "preprocessing": {"input_shape": list(input_shape), "zscore": "per volume, std floor 1e-6",
                          "resize": "trilinear, align_corners=False", "axis_order": "model (D,H,W) = image (k,i,j)"},
        "labels": {"kl_grades": list(KL_GRADES), "oa_rule": f"OA = KL >= {OA_THRESHOLD}", "oa_decision": OA_DECISION},
        "training_data": training_data,
        **extra,
        "metrics": dict(metrics or {}),
        "kneeoa_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
