"""`kneeoa train --channels-last` for every catalog backbone (M3T holds 2-D convolutions: `Module.to(
memory_format=channels_last_3d)` raises on them, so the engine uses `KneeOAModel.to_channels_last_3d()`)."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import run_main

from kneeoa.contracts.catalog import backbone_names
from kneeoa.models.checkpoint import load_checkpoint
from kneeoa.models.registry import ModelSpec, build_model

TINY_WIDTH = {"m3t": 8}  # M3T's patch embedding needs a few channels; the others train at width 4


@pytest.mark.parametrize("backbone", backbone_names())
def test_channels_last_training_runs_for_every_backbone(backbone, phantom_cohort, tmp_path, monkeypatch):
    out = tmp_path / backbone
    assert run_main(monkeypatch, "train", "--data", str(phantom_cohort), "--backbone", backbone, "--variant", "dual",
                    "--out", str(out), "--epochs", "1", "--input-size", "16", "--width",
                    str(TINY_WIDTH.get(backbone, 4)), "--batch-size", "4", "--device", "cpu", "--channels-last",
                    "--no-cache") == 0
    model, card = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert card["spec"]["backbone"] == backbone and card["training"]["epochs_done"] == 1


@pytest.mark.parametrize("backbone", backbone_names())
def test_channels_last_layout_leaves_the_outputs_unchanged(backbone):
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone, "dual", input_shape=(16, 16, 16), width=TINY_WIDTH.get(backbone, 4))).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        before = model(x).kl_logits
        after = model.to_channels_last_3d()(x.contiguous(memory_format=torch.channels_last_3d)).kl_logits
    assert torch.allclose(before, after, atol=1e-5)
