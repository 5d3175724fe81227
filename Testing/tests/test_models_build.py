"""Every backbone x variant builds, runs, trains a step and round-trips through a checkpoint (tiny sizes)."""

from __future__ import annotations

import pytest
import torch

from kneeoa.contracts.catalog import BACKBONES
from kneeoa.models.checkpoint import load_checkpoint, save_checkpoint
from kneeoa.models.heads import hierarchical_loss, probabilities
from kneeoa.models.registry import ModelSpec, build_model

SHAPE = (16, 16, 16)
TINY_WIDTH = {"resnet3d": 4, "resnet3d-monai": 4, "m3t": 8, "nnmamba": 4}
VARIANTS = [("single-oa", "chained"), ("single-kl", "chained"), ("dual", "chained"), ("dual", "parallel")]
CASES = [(b, v, h) for b in BACKBONES for v, h in VARIANTS]


def tiny(backbone: str, variant: str, head: str = "chained", **options) -> ModelSpec:
    return ModelSpec(backbone, variant, head, input_shape=SHAPE, width=TINY_WIDTH[backbone], options=options)


def test_registry_covers_every_backbone_in_the_tests():
    assert set(BACKBONES) == set(TINY_WIDTH)


@pytest.mark.parametrize("backbone,variant,head", CASES)
def test_forward_shapes(backbone, variant, head):
    torch.manual_seed(0)
    model = build_model(tiny(backbone, variant, head)).eval()
    out = model(torch.randn(2, 1, *SHAPE))
    assert out.embedding.shape == (2, model.embedding_dim)
    assert model.forward_features(torch.zeros(1, 1, *SHAPE)).shape == (1, model.embedding_dim)
    assert (out.kl_logits is None) == (variant == "single-oa")
    if out.kl_logits is not None:
        assert out.kl_logits.shape == (2, 5)
    expected_oa = {"single-oa": (2, 1), "single-kl": None, "dual": (2, 2)}[variant]
    assert (None if out.oa_logits is None else tuple(out.oa_logits.shape)) == expected_oa
    probs = probabilities(out)
    assert probs["oa_prob"].shape == (2,)
    assert torch.all((probs["oa_prob"] >= 0) & (probs["oa_prob"] <= 1))


@pytest.mark.parametrize("backbone,variant,head", CASES)
def test_train_step_then_checkpoint_round_trip(backbone, variant, head, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny(backbone, variant, head))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.randn(2, 1, *SHAPE)
    before = [p.detach().clone() for p in model.parameters()]
    loss = hierarchical_loss(model(x), torch.tensor([1, 3]), None, variant)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))

    model.eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, {"training_data": "two random volumes"})
    loaded, card = load_checkpoint(path)
    assert card["spec"] == model.spec.to_dict()
    assert card["training_data"] == "two random volumes"
    assert not loaded.training
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.embedding, b.embedding)
    for name in ("kl_logits", "oa_logits"):
        if getattr(a, name) is not None:
            assert torch.equal(getattr(a, name), getattr(b, name))


def test_paper_embedding_widths_and_input_shapes():
    from kneeoa.models.registry import describe

    widths = {b: describe(ModelSpec(b, "dual"))["embedding_dim"] for b in BACKBONES}
    assert widths == {"resnet3d": 512, "resnet3d-monai": 512, "m3t": 128, "nnmamba": 32}
    assert ModelSpec("m3t").input_shape == (128, 128, 128)
    assert ModelSpec("resnet3d").input_shape == (160, 256, 256)


def test_meta_parameter_count_equals_real_model():
    from kneeoa.models.registry import describe

    spec = tiny("nnmamba", "dual", "parallel")
    assert describe(spec)["params"] == sum(p.numel() for p in build_model(spec).parameters())


def test_m3t_token_count_follows_cube_size():
    model = build_model(ModelSpec("m3t", "single-kl", input_shape=(12, 12, 12), width=8))
    assert model.backbone.pos_embed.shape[1] == 3 * 12 + 4


def test_m3t_refuses_other_input_size():
    from kneeoa.errors import InputError

    model = build_model(ModelSpec("m3t", "single-kl", input_shape=(12, 12, 12), width=8)).eval()
    with pytest.raises(InputError, match="12"):
        model(torch.randn(1, 1, 16, 16, 16))


def test_m3t_slice_batches_give_the_same_embedding():
    torch.manual_seed(0)
    spec = ModelSpec("m3t", "single-kl", input_shape=(12, 12, 12), width=8)
    whole = build_model(spec).eval()
    grouped = build_model(ModelSpec("m3t", "single-kl", input_shape=(12, 12, 12), width=8,
                                    options={"slice_batch": 5})).eval()
    grouped.load_state_dict(whole.state_dict())
    x = torch.randn(2, 1, 12, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(whole.forward_features(x), grouped.forward_features(x))


def test_model_refuses_input_without_channel_axis():
    from kneeoa.errors import InputError

    model = build_model(tiny("resnet3d", "dual"))
    with pytest.raises(InputError, match="B, 1, D, H, W"):
        model(torch.randn(2, *SHAPE))


def test_resnet3d_is_dilated_with_output_stride_8():
    model = build_model(ModelSpec("resnet3d", "dual", input_shape=(32, 32, 32), width=4))
    bb = model.backbone
    assert bb.layer3[0].conv1.dilation == (2, 2, 2) and bb.layer4[0].conv1.dilation == (4, 4, 4)
    x = bb.maxpool(bb.relu(bb.bn1(bb.conv1(torch.randn(1, 1, 32, 32, 32)))))
    assert bb.layer4(bb.layer3(bb.layer2(bb.layer1(x)))).shape[2:] == (4, 4, 4)


@pytest.mark.parametrize("backbone", ["m3t", "resnet3d"])
def test_channels_last_3d_changes_layout_not_outputs(backbone):
    torch.manual_seed(0)
    model = build_model(tiny(backbone, "dual")).eval()
    x = torch.randn(1, 1, *SHAPE)
    with torch.no_grad():
        before = model(x).kl_logits
        model.to_channels_last_3d()
        after = model(x.contiguous(memory_format=torch.channels_last_3d)).kl_logits
    conv3d = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-5)


def test_monai_conv1_stride_option_reaches_the_network():
    model = build_model(ModelSpec("resnet3d-monai", "dual", input_shape=SHAPE, width=4, options={"conv1_stride": 1}))
    assert model.backbone.net.conv1.stride == (1, 1, 1)
    assert build_model(tiny("resnet3d-monai", "dual")).backbone.net.conv1.stride == (2, 2, 2)
