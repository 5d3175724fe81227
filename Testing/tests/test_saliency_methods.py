"""Captum alternatives (Integrated Gradients, Saliency, GradCAM, Occlusion) on every backbone family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from saliency_helpers import IMAGE_SHAPE, oblique_volume, tiny_model

from kneeoa.analysis.saliency import compute_saliency
from kneeoa.analysis.saliency_methods import gradcam_layer, last_spatial_module, occlusion_window

CAPTUM_METHODS = ["integrated_gradients", "saliency", "gradcam", "occlusion"]


@pytest.mark.parametrize("backbone", ["resnet3d", "m3t", "nnmamba"])
@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_each_captum_method_gives_a_map_on_the_image_grid(tmp_path, backbone, method):
    volume = oblique_volume(tmp_path)
    saliency = compute_saliency(tiny_model(backbone), volume, method=method, target="oa")
    assert saliency.array.shape == IMAGE_SHAPE
    np.testing.assert_array_equal(saliency.affine, volume.affine)
    assert np.isfinite(saliency.array).all()
    assert saliency.array.min() >= 0.0 and saliency.array.max() <= 1.0


@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_captum_maps_depend_on_the_target(tmp_path, method):
    model, volume = tiny_model(), oblique_volume(tmp_path)
    grade0 = compute_saliency(model, volume, method=method, target=0).array
    grade4 = compute_saliency(model, volume, method=method, target=4).array
    assert grade0.max() > 0 and not np.allclose(grade0, grade4)


@pytest.mark.parametrize("backbone,name", [("resnet3d", "backbone.layer4"), ("m3t", "backbone.cnn3d"),
                                           ("nnmamba", "backbone.layer3")])
def test_gradcam_looks_at_the_last_3d_conv_block_of_each_backbone(backbone, name):
    model = tiny_model(backbone)
    assert gradcam_layer(model) is dict(model.named_modules())[name]


def test_gradcam_finds_the_last_feature_map_of_an_unknown_network():
    last = torch.nn.Sequential(torch.nn.Conv3d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU())
    net = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU()), last,
                              torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(6, 5))
    assert gradcam_layer(net, torch.zeros(1, 1, 8, 8, 8)) is last
    assert last_spatial_module(net, torch.zeros(1, 1, 8, 8, 8)) is last


def test_occlusion_window_is_a_quarter_of_each_side_with_half_overlap():
    assert occlusion_window((160, 256, 256)) == ((40, 64, 64), (20, 32, 32))
    assert occlusion_window((3, 24, 24)) == ((1, 6, 6), (1, 3, 3))
