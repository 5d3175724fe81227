"""One reader of plain weight files for the paper import and M3T's ImageNet weights: the same formats are
read the same way, and a bad file is one error naming it, in the class its caller uses."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from kneeoa.errors import CheckpointError, ConfigError
from kneeoa.models.state_files import read_state_dict


@pytest.fixture
def state():
    torch.manual_seed(0)
    return {"conv.weight": torch.randn(2, 3), "bn.running_mean": torch.randn(2)}


@pytest.mark.parametrize("layout", ["safetensors", "bare", "state_dict", "model_state_dict", "model", "module."])
def test_every_layout_gives_the_same_tensors(tmp_path, state, layout):
    path = tmp_path / "w.bin"
    if layout == "safetensors":
        save_file(state, str(path))
    elif layout == "bare":
        torch.save(state, path)
    elif layout == "module.":  # DataParallel's prefix
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save({layout: state, "epoch": 3}, path)
    got = read_state_dict(path)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


@pytest.mark.parametrize("error", [CheckpointError, ConfigError])
def test_bad_files_are_one_error_of_the_callers_class(tmp_path, error):
    pickled = tmp_path / "object.pth"
    torch.save({"net": torch.nn.Linear(2, 2)}, pickled)  # an object: weights_only refuses to unpickle it
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(pickled.read_bytes()[:40])
    cases = [(tmp_path / "nope.pth", "M3T weights not found"), (pickled, "weights-only"),
             (truncated, "weights-only"), (empty, "not a state dict of tensors")]
    for path, message in cases:
        with pytest.raises(error, match=message) as err:
            read_state_dict(path, "M3T weights", error)
        assert str(path) in str(err.value)


def test_both_callers_use_it():
    import kneeoa.models.paper_import as paper_import
    import kneeoa.models.pretrained as pretrained

    assert paper_import.read_state_dict is pretrained.read_state_dict is read_state_dict
