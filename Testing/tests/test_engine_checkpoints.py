"""Every checkpoint the engine writes loads back, whatever the length of its JSON header."""

from pathlib import Path

import pytest
import torch

from kneeoa.models.checkpoint import load_checkpoint, read_card, save_checkpoint
from kneeoa.models.registry import ModelSpec, build_model


def _header_len(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


# a safetensors file starts with its header length (8 bytes, little-endian): 0x..80 starts like pickle,
# 0x..4B50 like a zip ("PK"); such checkpoints once failed to load as "pickle"
@pytest.mark.parametrize("magic,modulus", [(0x80, 0x100), (0x4B50, 0x10000)])
def test_a_header_length_that_looks_like_pickle_or_zip_magic_still_loads(tmp_path: Path, magic: int, modulus: int):
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet3d", "single-oa", input_shape=(16, 16, 16), width=2)).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"training_data": ""})
    base = _header_len(path)
    target = base + (magic - base) % modulus
    for pad in range(max(0, target - base - 16), target - base + 16):  # the header is padded to 8 bytes
        save_checkpoint(path, model, {"training_data": "x" * pad})
        if _header_len(path) % modulus == magic:
            break
    assert _header_len(path) % modulus == magic
    assert read_card(path)["training_data"] == "x" * pad
    loaded, _ = load_checkpoint(path)
    x = torch.zeros(1, 1, 16, 16, 16)
    assert torch.equal(loaded(x).oa_logits, model(x).oa_logits)
