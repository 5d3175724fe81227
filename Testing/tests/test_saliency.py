"""The paper's SmoothGrad x input: grid and affine of the map, batching, targets, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from saliency_helpers import IMAGE_SHAPE, oblique_affine, oblique_volume, tiny_model

from kneeoa.analysis.saliency import (
    compute_saliency,
    explain,
    model_to_image_grid,
    normalise_01,
    resolve_target,
    smoothgrad_sequential,
    smoothgrad_x_input,
)
from kneeoa.data.preprocess import preprocess_volume
from kneeoa.data.volume import Volume
from kneeoa.errors import ConfigError, InputError
from kneeoa.models.wrappers import ScalarTarget


def model_input(model, volume) -> torch.Tensor:
    return preprocess_volume(volume, model.spec.input_shape)[None]


def test_map_lies_on_the_original_grid_with_the_image_affine(tmp_path):
    volume = oblique_volume(tmp_path)
    saliency = compute_saliency(tiny_model(), volume)
    assert saliency.array.shape == IMAGE_SHAPE
    assert saliency.array.dtype == np.float32
    np.testing.assert_array_equal(saliency.affine, volume.affine)
    np.testing.assert_allclose(saliency.affine, oblique_affine(), atol=1e-5)


def test_map_values_are_in_0_1_and_not_all_equal(tmp_path):
    array = compute_saliency(tiny_model(), oblique_volume(tmp_path)).array
    assert array.min() >= 0.0 and array.max() <= 1.0
    assert array.max() > 0.5 and array.std() > 0


def test_model_space_map_lands_back_on_the_voxels_it_came_from(tmp_path):
    # The z-scored image itself as the "map": with no resize it must come back voxel for voxel,
    # through the RAS reorientation of the flipped, rotated affine and the (k, i, j) permutation.
    volume = oblique_volume(tmp_path)
    k, i, j = IMAGE_SHAPE[2], IMAGE_SHAPE[0], IMAGE_SHAPE[1]
    x = preprocess_volume(volume, (k, i, j))[0]
    back = model_to_image_grid(normalise_01(x - x.min()), volume)
    expected = (volume.array - volume.array.min()) / np.ptp(volume.array)
    np.testing.assert_allclose(back, expected, atol=1e-5)


def test_model_space_map_resized_back_follows_the_image(tmp_path):
    volume = oblique_volume(tmp_path)
    x = preprocess_volume(volume, (24, 24, 24))[0]
    back = model_to_image_grid(normalise_01(x - x.min()), volume)
    assert back.shape == IMAGE_SHAPE
    assert np.corrcoef(back.ravel(), volume.array.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("backbone", ["resnet3d", "m3t", "nnmamba"])
def test_batched_smoothgrad_equals_the_sequential_loop(tmp_path, backbone):
    # float64: in float32 the conv backend may pick another algorithm for batch 8 than for batch 1
    # (differences ~1e-3 of the max), which would hide a real batching bug behind a loose tolerance
    model = tiny_model(backbone).double()
    x = model_input(model, oblique_volume(tmp_path)).double()
    forward = ScalarTarget(model, "kl")
    batched = smoothgrad_x_input(forward, x, index=2, n_samples=8, noise_std=0.05, seed=3)
    sequential = smoothgrad_sequential(forward, x, index=2, n_samples=8, noise_std=0.05, seed=3)
    assert batched.shape == x.shape[2:]
    assert float(batched.abs().max()) > 0
    torch.testing.assert_close(batched, sequential, rtol=1e-9, atol=1e-12 * float(sequential.abs().max()))


def test_smaller_batches_give_the_same_map(tmp_path):
    model = tiny_model().double()
    x = model_input(model, oblique_volume(tmp_path)).double()
    forward = ScalarTarget(model, "kl")
    whole = smoothgrad_x_input(forward, x, 1, n_samples=8, seed=0)
    chunked = smoothgrad_x_input(forward, x, 1, n_samples=8, batch_size=3, seed=0)
    torch.testing.assert_close(whole, chunked, rtol=1e-9, atol=1e-12 * float(whole.abs().max()))


def test_noise_follows_the_seed(tmp_path):
    model = tiny_model()
    volume = oblique_volume(tmp_path)
    a = compute_saliency(model, volume, seed=1).array
    b = compute_saliency(model, volume, seed=1).array
    c = compute_saliency(model, volume, seed=2).array
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_auto_target_is_the_argmax_kl_logit_for_a_kl_model(tmp_path):
    model = tiny_model(variant="single-kl")
    x = model_input(model, oblique_volume(tmp_path))
    with torch.no_grad():
        expected = int(model(x).kl_logits[0].argmax())
    assert resolve_target(model, x, "auto") == ("kl", expected)


def test_auto_target_is_the_oa_logit_for_a_single_oa_model(tmp_path):
    model = tiny_model(variant="single-oa")
    x = model_input(model, oblique_volume(tmp_path))
    assert resolve_target(model, x, "auto") == ("oa", 0)


def test_oa_target_of_a_two_logit_head_is_oa_present(tmp_path):
    model = tiny_model(variant="dual")
    x = model_input(model, oblique_volume(tmp_path))
    assert resolve_target(model, x, "oa") == ("oa", 1)


def test_an_explicit_kl_grade_is_the_explained_logit(tmp_path):
    model = tiny_model(variant="dual")
    volume = oblique_volume(tmp_path)
    grade0 = explain(model, volume, target=0)
    grade4 = explain(model, volume, target="4")
    assert (grade0.head, grade0.index) == ("kl", 0) and (grade4.head, grade4.index) == ("kl", 4)
    assert not np.allclose(grade0.volume.array, grade4.volume.array)


@pytest.mark.parametrize("variant,target", [("single-oa", "kl"), ("single-oa", 3), ("single-kl", "oa"),
                                            ("dual", 5), ("dual", "-1")])
def test_a_target_the_model_cannot_explain_is_a_config_error(tmp_path, variant, target):
    with pytest.raises(ConfigError):
        compute_saliency(tiny_model(variant=variant), oblique_volume(tmp_path), target=target)


def test_train_mode_is_restored_and_batchnorm_statistics_are_untouched(tmp_path):
    model = tiny_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compute_saliency(model, oblique_volume(tmp_path))
    assert model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)


@pytest.mark.parametrize("options", [{"method": "guided"}, {"target": "knee"}, {"n_samples": 0},
                                     {"batch_size": 0}, {"noise_std": -0.1}])
def test_bad_options_are_config_errors(tmp_path, options):
    with pytest.raises(ConfigError):
        compute_saliency(tiny_model(), oblique_volume(tmp_path), **options)


def test_an_image_with_nan_is_an_input_error_naming_the_file(tmp_path):
    volume = oblique_volume(tmp_path)
    volume.array[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="knee_0000"):
        compute_saliency(tiny_model(), volume)


def test_a_4d_array_is_an_input_error(tmp_path):
    volume = Volume(np.zeros((8, 8, 8, 2), np.float32), np.eye(4))
    with pytest.raises(InputError, match="3-D"):
        compute_saliency(tiny_model(), volume)


def test_a_constant_map_normalises_to_zeros():
    assert float(normalise_01(torch.full((4, 4, 4), 3.0)).abs().max()) == 0.0
    ramp = normalise_01(torch.arange(8.0).reshape(2, 2, 2) - 3)
    assert float(ramp.min()) == 0.0 and float(ramp.max()) == 1.0


def _hand_written_smoothgrad(model, x, index, n_samples, noise_std, seed, mode):
    """The paper's InputSaliency3D loop written out: one noisy copy at a time, plain autograd, no KneeOA helper."""
    gen = torch.Generator().manual_seed(seed)
    noise = (torch.randn((n_samples, *x.shape[1:]), generator=gen, dtype=torch.float32) * noise_std).to(x.dtype)
    acc = torch.zeros_like(x)
    for i in range(n_samples):
        x_pert = (x + noise[i:i + 1]).clone().detach().requires_grad_(True)
        model(x_pert).kl_logits[0, index].backward()
        grad = x_pert.grad
        acc += grad * x_pert.detach() if mode == "grad*input" else grad
    acc /= n_samples
    return acc[0, 0].abs()


@pytest.mark.parametrize("method,mode", [("smoothgrad", "grad*input"), ("grad", "grad")])
def test_smoothgrad_methods_equal_the_papers_loop(tmp_path, method, mode):
    from kneeoa.analysis.saliency import SMOOTHGRAD_PRODUCTS

    model = tiny_model().double()
    x = model_input(model, oblique_volume(tmp_path)).double()
    expected = _hand_written_smoothgrad(model, x, 3, 8, 0.05, seed=5, mode=mode)
    got = smoothgrad_x_input(ScalarTarget(model, "kl"), x, 3, n_samples=8, noise_std=0.05, seed=5,
                             product=SMOOTHGRAD_PRODUCTS[method])
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12 * float(expected.max()))


def test_paper_product_differs_from_the_clean_input_product(tmp_path):
    # mean(grad_i * x_i) - mean(grad_i) * x = mean(grad_i * noise_i): not zero for a non-linear model
    model = tiny_model()
    volume = oblique_volume(tmp_path)
    paper = compute_saliency(model, volume, method="smoothgrad", noise_std=0.5).array
    clean = compute_saliency(model, volume, method="smoothgrad_clean_input", noise_std=0.5).array
    plain = compute_saliency(model, volume, method="grad", noise_std=0.5).array
    assert np.abs(paper - clean).max() > 1e-3
    assert np.abs(paper - plain).max() > 1e-2
    same_noise_free = [compute_saliency(model, volume, method=m, noise_std=0.0).array
                       for m in ("smoothgrad", "smoothgrad_clean_input")]
    np.testing.assert_allclose(*same_noise_free, atol=1e-6)  # without noise the two products coincide


def test_a_given_model_input_gives_the_map_preprocessing_would(tmp_path):
    model, volume = tiny_model(), oblique_volume(tmp_path)
    made = explain(model, volume)
    given = explain(model, volume, inputs=model_input(model, volume))
    np.testing.assert_array_equal(given.volume.array, made.volume.array)
    assert (given.head, given.index) == (made.head, made.index)
