"""Captum alternatives to the paper's SmoothGrad: Integrated Gradients, Saliency, GradCAM, Occlusion.

All work through `ScalarTarget` (captum needs a forward that returns one tensor) on a model-space
input (1, 1, D, H, W) and return a raw (D, H, W) map; `compute_saliency` normalises and resamples it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kneeoa.contracts.catalog import BACKBONES
from kneeoa.errors import ConfigError

# GradCAM looks at the catalog's `gradcam_layer` of each backbone: the last 3-D block (module name in
# KneeOAModel), the deepest feature map that still has a (d, h, w) grid. M3T leaves 3-D after its two-conv
# stem (the rest works on 2-D slices and tokens), so its GradCAM is coarse in meaning but fine in resolution.
# A backbone without one falls back to the last module with a 5-D output.

OCCLUSION_WINDOW = 0.25  # occluding cube = a quarter of each input side, half-overlapping strides


def captum_attribution(method: str, model: torch.nn.Module, forward: Any, x: torch.Tensor, index: int,
                       n_samples: int = 8, batch_size: int | None = None) -> torch.Tensor:
    """Raw (D, H, W) attribution of logit `index` of `forward` at `x` (1,1,D,H,W) with a captum method."""
    x = x.detach().clone().requires_grad_(method != "occlusion")  # gradient methods: captum warns otherwise
    if method == "saliency":
        from captum.attr import Saliency

        attr = Saliency(forward).attribute(x, target=index, abs=True)
    elif method == "integrated_gradients":
        from captum.attr import IntegratedGradients

        # n_samples = integration steps: the same budget of model evaluations as SmoothGrad
        steps = max(int(n_samples), 2)
        attr = IntegratedGradients(forward).attribute(
            x, baselines=torch.zeros_like(x), target=index, n_steps=steps,
            internal_batch_size=int(batch_size or steps))
    elif method == "gradcam":
        attr = gradcam(model, forward, x, index)
    elif method == "occlusion":
        from captum.attr import Occlusion

        window, strides = occlusion_window(tuple(x.shape[2:]))
        attr = Occlusion(forward).attribute(
            x, sliding_window_shapes=(1, *window), strides=(1, *strides), baselines=0.0, target=index,
            perturbations_per_eval=int(batch_size or 8))
    else:
        raise ConfigError(f"unknown captum saliency method {method!r}")
    return attr.detach()[0, 0].abs()


def gradcam(model: torch.nn.Module, forward: Any, x: torch.Tensor, index: int) -> torch.Tensor:
    """LayerGradCam on the backbone's last conv block, upsampled trilinearly to the input size: (1,1,D,H,W)."""
    from captum.attr import LayerGradCam

    layer = gradcam_layer(model, x)
    cam = LayerGradCam(forward, layer).attribute(x, target=index, relu_attributions=True)
    if isinstance(cam, tuple):
        cam = cam[0]
    return F.interpolate(cam.detach(), size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)


def gradcam_layer(model: torch.nn.Module, x: torch.Tensor | None = None) -> torch.nn.Module:
    """The GradCAM layer: the named block for the model's backbone, else the last module with a 5-D output."""
    modules = dict(model.named_modules())
    backbone = getattr(getattr(model, "spec", None), "backbone", None)
    entry = BACKBONES.get(str(backbone))
    name = entry.gradcam_layer if entry else None
    if name in modules:
        return modules[name]
    if x is None:
        raise ConfigError(f"no GradCAM layer known for backbone {backbone!r}")
    return last_spatial_module(model, x)


def last_spatial_module(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """The module whose 5-D output (B,C,d,h,w, more than one voxel) is computed last in a forward pass of `x`."""
    order: list[torch.nn.Module] = []

    def hook(module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 5 and output.shape[2:].numel() > 1:
            order.append(module)

    # blocks, not their inner convs: a hook on a container sees its finished output, which later
    # in-place ops (ReLU(inplace), +=) inside the same block cannot have touched
    handles = [m.register_forward_hook(hook) for name, m in model.named_modules() if name and _is_block(m)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise ConfigError("GradCAM needs a convolutional feature map; this model has no 5-D layer output")
    return order[-1]


def _is_block(module: torch.nn.Module) -> bool:
    # a block = a module with children whose last output is a feature map (Sequential, residual block, stage)
    return len(list(module.children())) > 0


def occlusion_window(shape_dhw: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(window, strides) for 3-D occlusion: a cube of `OCCLUSION_WINDOW` of each side, stride half of it."""
    window = tuple(max(1, round(s * OCCLUSION_WINDOW)) for s in shape_dhw)
    strides = tuple(max(1, w // 2) for w in window)
    return window, strides
