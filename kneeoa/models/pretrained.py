"""ImageNet weights for M3T's 2D ResNet-18, as the paper's code (`torchvision.models.resnet18(weights=True)`).

The paper loads torchvision's `ResNet18_Weights.IMAGENET1K_V1`, then replaces conv1 (it takes the 16 3-D
channels) and drops fc; every other parameter and BatchNorm statistic keeps its ImageNet value. Sources, in order:
- `m3t_weights` / `--m3t-weights FILE`: a safetensors file or a torch state dict (read with
  `torch.load(weights_only=True)`, no code runs), with torchvision's parameter names;
- torchvision's own file: `torch.hub.load_state_dict_from_url` on torchvision's URL, which is what
  torchvision calls itself, so its cache (`$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth`) is used
  when present and the file is downloaded otherwise (no torchvision install needed).
When neither works a ConfigError says so: a run never trains from scratch in silence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kneeoa.contracts.vocab import M3T_PRETRAINED as PRETRAINED_CHOICES
from kneeoa.errors import ConfigError
from kneeoa.models.state_files import read_state_dict

# torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
RESNET18_IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
REPLACED = ("conv1.weight",)  # the paper's code swaps conv1 for a 16-channel one: not taken from ImageNet


def imagenet_resnet18_state(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 state dict: from `path`, else torchvision's cache or download."""
    if path:
        return read_state_dict(path, "M3T ImageNet weights file", ConfigError)
    try:
        return torch.hub.load_state_dict_from_url(RESNET18_IMAGENET_URL, map_location="cpu", progress=False,
                                                  check_hash=True, weights_only=True)
    except Exception as err:  # no network, a proxy, a broken cache file
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(RESNET18_IMAGENET_URL).name
        raise ConfigError(
            f"M3T needs torchvision's ImageNet ResNet-18 weights (m3t_pretrained: imagenet, as the paper) but they "
            f"are not in the cache ({cache}) and could not be downloaded ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120]}). Pass --m3t-weights FILE (resnet18-f37072fd.pth or a safetensors "
            "copy), copy that file into the cache, or train from scratch with --m3t-pretrained none") from None


def load_imagenet_resnet18(cnn2d: nn.Module, state: dict[str, Any]) -> list[str]:
    """Copy ImageNet weights into M3T's ResNet2D18 (all but conv1 and fc); returns the names loaded."""
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    own = cnn2d.state_dict()
    wanted = [k for k in own if k not in REPLACED]
    missing = [k for k in wanted if k not in state]
    shapes = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in wanted
              if k in state and state[k].shape != own[k].shape]
    if missing or shapes:
        raise ConfigError("the ImageNet weights do not fit M3T's ResNet-18 (they need the paper width 64): "
                          + "; ".join(filter(None, [f"missing {missing[:4]}" if missing else "",
                                                    f"shape mismatch {shapes[:3]}" if shapes else ""])))
    with torch.no_grad():
        for k in wanted:
            own[k].copy_(state[k].to(own[k].dtype))
    return wanted


def apply_pretrained(model: nn.Module, cfg: dict[str, Any]) -> str | None:
    """Load M3T's ImageNet ResNet-18 when the config asks for it; returns a log line or None."""
    choice = cfg.get("m3t_pretrained", "none")
    if choice not in PRETRAINED_CHOICES:
        raise ConfigError(f"m3t_pretrained must be one of {', '.join(PRETRAINED_CHOICES)}, got {choice!r}")
    if choice == "none" or cfg.get("backbone") != "m3t":
        return None
    source = cfg.get("m3t_weights")
    names = load_imagenet_resnet18(model.backbone.cnn2d, imagenet_resnet18_state(source))
    return f"M3T 2D ResNet-18: {len(names)} ImageNet tensors from {source or RESNET18_IMAGENET_URL} (conv1 new)"
