"""The one reader of plain weight files (a state dict of tensors, no model card): the paper's `.pth`
checkpoints (`kneeoa import-paper`) and the ImageNet ResNet-18 weights of M3T (`--m3t-weights`).

A safetensors file is read with safetensors; anything else with `torch.load(weights_only=True)`, which
refuses every object but tensors and plain containers, so no code in the file runs. The state dict may be
bare or under 'state_dict' / 'model_state_dict' / 'model' (training scripts save all three), and
DataParallel's `module.` prefix is dropped. KneeOA's own checkpoints are read by `kneeoa.models.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kneeoa.contracts.checkpoint_meta import safetensors_header_length
from kneeoa.errors import CheckpointError, KneeOAError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def read_state_dict(path: str | Path, what: str = "weights file",
                    error: type[KneeOAError] = CheckpointError) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; `error` (naming the file) when it is missing, unreadable, pickles an
    object or holds no tensors. `what` names the file in the not-found message."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found", path)
    try:
        if safetensors_header_length(path) is not None:
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses anything but tensors/containers; also truncated files
        raise error(f"cannot read as safetensors or a weights-only torch file: {str(err).splitlines()[0]}",
                    path) from None
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise error("not a state dict of tensors (expected torch.save(model.state_dict()))", path)
    return {str(k).removeprefix("module."): v for k, v in obj.items()}
