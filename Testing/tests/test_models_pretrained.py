"""M3T's ImageNet ResNet-18 (m3t_pretrained: imagenet): from a file, from torchvision's cache, or a clear error."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from paper_models import TVResNet18

from kneeoa.errors import ConfigError
from kneeoa.models.pretrained import RESNET18_IMAGENET_URL, apply_pretrained
from kneeoa.models.registry import ModelSpec, build_model


@pytest.fixture(scope="module")
def imagenet_state():
    """A locally generated state dict in torchvision's resnet18 layout (stands in for IMAGENET1K_V1)."""
    torch.manual_seed(3)
    return TVResNet18(64).state_dict()


def _m3t():
    torch.manual_seed(0)
    return build_model(ModelSpec("m3t", "dual", input_shape=(8, 8, 8)))  # the paper width 64, a tiny cube


def _assert_loaded(model, state):
    own = model.backbone.cnn2d.state_dict()
    for key, value in own.items():
        if key == "conv1.weight":  # replaced in the paper's code (16 input channels), stays new
            assert value.shape[1] == 16 and not torch.equal(value[:, :3], state[key])
        else:
            assert torch.equal(value, state[key]), key


def test_weights_from_a_torch_file_or_a_safetensors_copy(tmp_path, imagenet_state):
    from safetensors.torch import save_file

    torch.save(imagenet_state, tmp_path / "resnet18.pth")
    save_file({k: v.contiguous() for k, v in imagenet_state.items()}, str(tmp_path / "resnet18.safetensors"))
    for name in ("resnet18.pth", "resnet18.safetensors"):
        model = _m3t()
        line = apply_pretrained(model, {"backbone": "m3t", "m3t_pretrained": "imagenet",
                                        "m3t_weights": str(tmp_path / name)})
        assert f"{len(imagenet_state) - 3} ImageNet tensors" in line  # all but fc.weight, fc.bias, conv1.weight
        _assert_loaded(model, imagenet_state)


def test_weights_from_torchvisions_cache(tmp_path, monkeypatch, imagenet_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(imagenet_state, tmp_path / "hub" / "checkpoints" / RESNET18_IMAGENET_URL.rsplit("/", 1)[1])
    model = _m3t()
    apply_pretrained(model, {"backbone": "m3t", "m3t_pretrained": "imagenet", "m3t_weights": None})
    _assert_loaded(model, imagenet_state)


def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_no_weights_anywhere_is_a_clear_error_not_a_random_start(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(ConfigError, match="--m3t-weights FILE"):
        apply_pretrained(_m3t(), {"backbone": "m3t", "m3t_pretrained": "imagenet", "m3t_weights": None})
    with pytest.raises(ConfigError, match="not found"):
        apply_pretrained(_m3t(), {"backbone": "m3t", "m3t_pretrained": "imagenet", "m3t_weights": "nope.pth"})


def test_other_widths_and_backbones(tmp_path, imagenet_state):
    torch.save(imagenet_state, tmp_path / "r.pth")
    narrow = build_model(ModelSpec("m3t", "dual", input_shape=(8, 8, 8), width=8))
    with pytest.raises(ConfigError, match="paper width 64"):
        apply_pretrained(narrow, {"backbone": "m3t", "m3t_pretrained": "imagenet", "m3t_weights": str(tmp_path / "r.pth")})
    resnet = build_model(ModelSpec("resnet3d", "dual", input_shape=(16, 16, 16), width=4))
    assert apply_pretrained(resnet, {"backbone": "resnet3d", "m3t_pretrained": "imagenet"}) is None


def test_paper_preset_asks_for_imagenet_and_training_stops_before_epoch_one_without_it(
        phantom_cohort, tmp_path, monkeypatch):
    from kneeoa.config import resolve_config
    from kneeoa.engine.train import train

    assert resolve_config("paper", "m3t", "dual")["m3t_pretrained"] == "imagenet"
    assert resolve_config("paper", "resnet3d", "dual")["m3t_pretrained"] == "none"
    _offline(monkeypatch, tmp_path)
    with pytest.raises(ConfigError, match="ImageNet"):
        train(phantom_cohort, "m3t", "dual", out=tmp_path / "run", preset="quick",
              overrides={"m3t_pretrained": "imagenet", "input_shape": [8, 8, 8], "epochs": 1})
    assert not list((tmp_path / "run").rglob("*.safetensors"))
