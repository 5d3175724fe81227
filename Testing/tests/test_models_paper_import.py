"""The paper's models, rebuilt from its code (paper_models.py): parameter counts and checkpoint import."""

from __future__ import annotations

import pytest
import torch
from paper_models import paper_model

from kneeoa.errors import CheckpointError
from kneeoa.models.checkpoint import load_checkpoint
from kneeoa.models.registry import ModelSpec, describe

VARIANTS = ("single-oa", "single-kl", "dual")
# the published models' sizes (M3T at 128^3, the others at 160x256x256)
PAPER_PARAMS = {
    "m3t": (11_995_953, 11_996_469, 11_996_481),
    "resnet3d": (33_160_513, 33_162_565, 33_162_577),
    "nnmamba": (12_876_321, 12_876_453, 12_876_465),
}


@pytest.mark.parametrize("backbone", sorted(PAPER_PARAMS))
def test_parameter_counts_equal_the_papers_definitions(backbone):
    for variant, published in zip(VARIANTS, PAPER_PARAMS[backbone]):
        with torch.device("meta"):
            theirs = sum(p.numel() for p in paper_model(backbone, variant).parameters())
        ours = describe(ModelSpec(backbone, variant))["params"]
        assert ours == theirs == published, (backbone, variant)


def _outputs(model, x):
    out = model(x)
    return out if isinstance(out, tuple) else (out,)


# small versions of the paper's models: the same code with narrower widths and a 12^3 M3T cube
SMALL = {"resnet3d": (8, (16, 16, 16)), "m3t": (8, (12, 12, 12)), "nnmamba": (8, (16, 16, 16))}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backbone", sorted(SMALL))
def test_imported_paper_checkpoint_gives_identical_outputs(tmp_path, backbone, variant):
    from kneeoa.models.paper_import import import_paper_checkpoint

    width, shape = SMALL[backbone]
    torch.manual_seed(0)
    theirs = paper_model(backbone, variant, width=width, cube=shape[0])
    theirs.train()(torch.randn(2, 1, *shape))  # move BatchNorm running statistics off their defaults
    theirs.eval()
    src = tmp_path / f"{backbone}_{variant}.pth"
    torch.save(theirs.state_dict(), src)
    dst, spec = import_paper_checkpoint(src, tmp_path / "imported.safetensors", input_shape=shape)
    assert (spec["backbone"], spec["variant"], spec["width"], spec["reorient"]) == (backbone, variant, width, "none")
    ours, card = load_checkpoint(dst)
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        expected = _outputs(theirs, x)
        got = ours(x)
    if variant == "single-oa":
        assert torch.equal(got.oa_logits, expected[0])
    else:
        assert torch.equal(got.kl_logits, expected[0])
    if variant == "dual":
        assert torch.equal(got.oa_logits, expected[1])


def test_import_refuses_a_pickled_object_and_a_foreign_state_dict(tmp_path):
    from kneeoa.models.paper_import import import_paper_checkpoint

    pickled = tmp_path / "object.pth"
    torch.save({"net": torch.nn.Linear(2, 2)}, pickled)  # a module object: weights_only refuses it
    with pytest.raises(CheckpointError, match="weights-only"):
        import_paper_checkpoint(pickled, tmp_path / "a.safetensors")
    foreign = tmp_path / "foreign.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not one of the paper's models"):
        import_paper_checkpoint(foreign, tmp_path / "b.safetensors")


def test_cli_imports_a_paper_checkpoint(tmp_path, capsys):
    from kneeoa.cli import main

    torch.manual_seed(1)
    src = tmp_path / "resnet3d_single_kl.pth"
    torch.save(paper_model("resnet3d", "single-kl", width=4).state_dict(), src)
    dst = tmp_path / "out.safetensors"
    assert main(["import-paper-checkpoint", str(src), str(dst), "--input-shape", "16", "16", "16"]) == 0
    assert "resnet3d single-kl width 4" in capsys.readouterr().err
    assert main(["import-paper-checkpoint", str(src), str(dst)]) == 1  # no clobbering without --overwrite
