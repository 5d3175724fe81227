"""Trainer state for `--resume`, stored WITHOUT pickle: one safetensors file holding the model weights, the
optimizer tensors and the RNG states, with everything else (epoch, optimizer hyper-parameters, grad-scaler
state, seed) as JSON in its metadata. One file, written atomically, so weights and optimizer never disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kneeoa.contracts.checkpoint_meta import STATE_KEY, read_trainer_meta
from kneeoa.errors import CheckpointError
from kneeoa.utils.atomic import atomic_path

__all__ = ["STATE_KEY", "load_trainer_state", "read_trainer_meta", "restore", "save_trainer_state"]
STATE_VERSION = 1


def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    import torch

    tensors, scalars = {}, {}
    for pid, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_trainer_state(path: str | Path, model: Any, optimizer: Any, scaler: Any, epoch: int,
                       finished: bool, info: dict | None = None) -> Path:
    """Write model + optimizer + RNG + progress atomically. `epoch` = number of completed epochs."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    meta = {"version": STATE_VERSION, "epoch": int(epoch), "finished": bool(finished), "optimizer": optim_meta,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            **(info or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={STATE_KEY: json.dumps(meta)})
    return path


def load_trainer_state(path: str | Path) -> dict:
    """{'meta', 'model', 'optimizer', 'rng'} from a trainer state file."""
    from safetensors.torch import load_file

    meta = read_trainer_meta(path)
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"trainer state is unreadable ({err}); delete it to restart the run", path) from None
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    optimizer = _unflatten_optimizer(tensors, meta["optimizer"])
    return {"meta": meta, "model": model, "optimizer": optimizer, "rng": rng}


def restore(state: dict, model: Any, optimizer: Any, scaler: Any) -> int:
    """Load a trainer state into live objects; returns the number of completed epochs."""
    import torch

    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"trainer state does not match the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state["meta"].get("scaler"):
        scaler.load_state_dict(state["meta"]["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    cuda = [state["rng"][k] for k in sorted(state["rng"]) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return int(state["meta"]["epoch"])
