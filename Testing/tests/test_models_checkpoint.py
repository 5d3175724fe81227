"""Checkpoints: the model card travels with the weights; wrong, broken and pickled files fail clearly."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from kneeoa.errors import CheckpointError
from kneeoa.models.checkpoint import CARD_KEY, load_checkpoint, load_weights, read_card, save_checkpoint
from kneeoa.models.registry import ModelSpec, build_model

SPEC = ModelSpec("resnet3d", "dual", input_shape=(16, 16, 16), width=4)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "model.safetensors", build_model(SPEC), {"metrics": {"oa_auc": 0.9}})


def rewrite_card(src, dst, **changes):
    """Same weights, edited model card (what a mislabelled or hand-edited file looks like)."""
    card = read_card(src)
    card.update(changes)
    save_file(load_file(str(src)), str(dst), metadata={CARD_KEY: json.dumps(card)})
    return dst


def test_card_holds_spec_preprocessing_labels_and_provenance(checkpoint):
    card = read_card(checkpoint)
    assert ModelSpec.from_dict(card["spec"]) == SPEC
    assert card["preprocessing"]["input_shape"] == [16, 16, 16]
    assert card["labels"]["oa_rule"] == "OA = KL >= 2"
    assert card["metrics"] == {"oa_auc": 0.9}
    for key in ("training_data", "kneeoa_version", "created"):
        assert key in card


def test_no_temp_files_left_after_saving(checkpoint):
    assert [p.name for p in checkpoint.parent.iterdir()] == ["model.safetensors"]


def test_loads_onto_requested_device_in_eval_mode(checkpoint):
    model, _ = load_checkpoint(checkpoint, device=torch.device("cpu"))
    assert not model.training and next(model.parameters()).device.type == "cpu"


def test_card_naming_another_architecture_is_refused_with_the_keys(checkpoint, tmp_path):
    other = ModelSpec("nnmamba", "dual", input_shape=(16, 16, 16), width=4).to_dict()
    bad = rewrite_card(checkpoint, tmp_path / "bad.safetensors", spec=other)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    msg = str(err.value)
    assert str(bad) in msg and "nnmamba/dual" in msg
    assert "missing keys: backbone.in_conv" in msg and "unexpected keys: backbone." in msg
    assert "backbone.conv1.weight" in msg


def test_card_with_other_width_reports_shape_mismatch(checkpoint, tmp_path):
    bad = rewrite_card(checkpoint, tmp_path / "wide.safetensors", spec={**SPEC.to_dict(), "width": 8})
    with pytest.raises(CheckpointError, match=r"shape mismatch .*backbone.bn1.bias \[4\] vs \[8\]"):
        load_checkpoint(bad)


def test_weights_into_a_different_model_are_refused(checkpoint):
    with pytest.raises(CheckpointError, match="resnet3d/single-oa"):
        load_weights(build_model(ModelSpec("resnet3d", "single-oa", input_shape=(16, 16, 16), width=4)), checkpoint)


def test_truncated_file_is_refused(checkpoint, tmp_path):
    data = checkpoint.read_bytes()
    for n, name in ((len(data) // 2, "half"), (20, "header"), (4, "tiny")):
        cut = tmp_path / f"{name}.safetensors"
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="truncated|corrupt"):
            load_checkpoint(cut)


def test_random_bytes_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="not a KneeOA checkpoint"):
        load_checkpoint(junk)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_safetensors_without_card_is_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="model card"):
        read_card(plain)


def test_card_with_unbuildable_spec_is_refused(checkpoint, tmp_path):
    bad = rewrite_card(checkpoint, tmp_path / "odd.safetensors", spec={"backbone": "vgg"})
    with pytest.raises(CheckpointError, match="unknown backbone"):
        load_checkpoint(bad)


class _Exploit:
    """A pickle payload that would create a marker file if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"state_dict": _Exploit(marker)}, protocol=4))
    assert evil.read_bytes()[:1] == b"\x80"
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_card(evil)
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # proves the payload is live: unpickling does create the marker
    assert marker.exists()


def test_torch_save_zip_is_refused(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save(build_model(SPEC).state_dict(), legacy)
    with pytest.raises(CheckpointError, match="torch.save"):
        load_checkpoint(legacy)
