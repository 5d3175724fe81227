"""Attribution through the single-tensor wrapper with captum (Saliency, IntegratedGradients, LayerGradCam)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency

from kneeoa.errors import ConfigError
from kneeoa.models.registry import ModelSpec, build_model
from kneeoa.models.wrappers import ScalarTarget

SHAPE = (16, 16, 16)


def model_for(backbone: str, variant: str = "dual", width: int = 4):
    torch.manual_seed(0)
    return build_model(ModelSpec(backbone, variant, input_shape=SHAPE, width=width)).eval()


def test_wrapper_returns_one_tensor_per_head():
    model = model_for("resnet3d")
    x = torch.randn(2, 1, *SHAPE)
    assert ScalarTarget(model, "kl")(x).shape == (2, 5)
    assert ScalarTarget(model, "oa")(x).shape == (2, 2)


@pytest.mark.parametrize("backbone,width", [("resnet3d", 4), ("m3t", 8), ("nnmamba", 4), ("resnet3d-monai", 4)])
def test_saliency_through_the_kl_head(backbone, width):
    x = torch.randn(1, 1, *SHAPE, requires_grad=True)
    attr = Saliency(ScalarTarget(model_for(backbone, width=width), "kl")).attribute(x, target=3)
    assert attr.shape == x.shape and torch.isfinite(attr).all() and attr.abs().sum() > 0


def test_integrated_gradients_satisfy_completeness_on_the_oa_head():
    wrapped = ScalarTarget(model_for("resnet3d"), "oa")
    x = torch.randn(1, 1, *SHAPE)
    attr, delta = IntegratedGradients(wrapped).attribute(x, target=1, n_steps=16, return_convergence_delta=True)
    assert attr.shape == x.shape
    gap = (wrapped(x)[0, 1] - wrapped(torch.zeros_like(x))[0, 1]).abs().item()
    assert abs(delta.item()) < 0.1 * gap + 1e-3


def test_single_oa_target_is_logit_zero_with_smoothgrad():
    wrapped = ScalarTarget(model_for("resnet3d", "single-oa"), "oa")
    x = torch.randn(1, 1, *SHAPE)
    attr = NoiseTunnel(Saliency(wrapped)).attribute(x, nt_type="smoothgrad", nt_samples=2, stdevs=0.05, target=0)
    assert attr.shape == x.shape and torch.isfinite(attr).all()


def test_layer_gradcam_on_the_last_resnet_stage():
    model = model_for("resnet3d")
    cam = LayerGradCam(ScalarTarget(model, "kl"), model.backbone.layer4).attribute(torch.randn(1, 1, *SHAPE), target=2)
    assert cam.shape[:2] == (1, 1) and torch.isfinite(cam).all()


def test_wrapper_refuses_a_head_the_model_lacks():
    with pytest.raises(ConfigError, match="no KL head"):
        ScalarTarget(model_for("resnet3d", "single-oa"), "kl")
    with pytest.raises(ConfigError, match="p2\\+p3\\+p4"):
        ScalarTarget(model_for("resnet3d", "single-kl"), "oa")
