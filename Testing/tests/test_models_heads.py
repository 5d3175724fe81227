"""Heads, probabilities, the hierarchical loss, the ordinal (CORN) KL head and ModelSpec validation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from kneeoa.errors import ConfigError
from kneeoa.models.heads import CornKLHead, Heads, hierarchical_loss, probabilities
from kneeoa.models.output import ModelOutput
from kneeoa.models.registry import ModelSpec, build_model


def out(kl=None, oa=None, batch=3):
    return ModelOutput(kl_logits=kl, oa_logits=oa, embedding=torch.zeros(batch, 4))


def test_single_kl_oa_prob_is_p2_plus_p3_plus_p4():
    kl = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]])
    p = torch.softmax(kl, -1)
    probs = probabilities(out(kl=kl, batch=1))
    torch.testing.assert_close(probs["oa_prob"], p[:, 2:].sum(-1))
    torch.testing.assert_close(probs["oa_prob_from_kl"], probs["oa_prob"])


def test_single_oa_prob_is_sigmoid_of_one_logit():
    probs = probabilities(out(oa=torch.tensor([[0.0], [2.0]]), batch=2))
    torch.testing.assert_close(probs["oa_prob"], torch.sigmoid(torch.tensor([0.0, 2.0])))
    assert probs["kl_probs"] is None and probs["oa_prob_from_kl"] is None


def test_dual_oa_prob_comes_from_the_oa_head_not_the_kl_head():
    kl = torch.tensor([[5.0, 0.0, 0.0, 0.0, 0.0]])  # KL says "no OA"
    oa = torch.tensor([[0.0, 3.0]])  # OA head says "OA"
    probs = probabilities(out(kl=kl, oa=oa, batch=1))
    torch.testing.assert_close(probs["oa_prob"], torch.softmax(oa, -1)[:, 1])
    assert probs["oa_prob_from_kl"].item() < 0.05


def test_chained_oa_head_reads_the_kl_logits():
    heads = Heads(8, "dual", "chained")
    assert heads.oa_head.in_features == 5
    assert Heads(8, "dual", "parallel").oa_head.in_features == 8


def test_dual_loss_is_kl_ce_plus_lambda_times_oa_ce():
    torch.manual_seed(0)
    kl_logits, oa_logits = torch.randn(3, 5), torch.randn(3, 2)
    kl = torch.tensor([0, 2, 4])
    loss = hierarchical_loss(out(kl_logits, oa_logits), kl, None, "dual", lambda_oa=0.5)
    expected = F.cross_entropy(kl_logits, kl) + 0.5 * F.cross_entropy(oa_logits, torch.tensor([0, 1, 1]))
    torch.testing.assert_close(loss, expected)


def test_single_oa_loss_is_bce_with_logits():
    logit = torch.tensor([[0.3], [-1.0]])
    loss = hierarchical_loss(out(oa=logit, batch=2), torch.tensor([1, 3]), None, "single-oa")
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logit[:, 0], torch.tensor([0.0, 1.0])))


def test_unknown_labels_are_left_out_of_the_loss():
    torch.manual_seed(0)
    kl_logits = torch.randn(3, 5)
    loss = hierarchical_loss(out(kl_logits), torch.tensor([-1, 2, -1]), None, "single-kl")
    torch.testing.assert_close(loss, F.cross_entropy(kl_logits[1:2], torch.tensor([2])))


def test_all_unknown_labels_give_zero_loss_with_a_graph():
    kl_logits = torch.randn(2, 5, requires_grad=True)
    loss = hierarchical_loss(out(kl_logits, batch=2), torch.tensor([-1, -1]), None, "single-kl")
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(kl_logits.grad, torch.zeros(2, 5))


def test_explicit_oa_labels_override_the_kl_rule():
    oa_logits = torch.randn(2, 2)
    loss = hierarchical_loss(out(torch.randn(2, 5), oa_logits, batch=2), torch.tensor([-1, -1]),
                             torch.tensor([1, 0]), "dual")
    torch.testing.assert_close(loss, F.cross_entropy(oa_logits, torch.tensor([1, 0])))


def test_loss_refuses_output_without_the_variant_heads():
    with pytest.raises(ConfigError, match="single-kl"):
        hierarchical_loss(out(oa=torch.randn(3, 1)), torch.tensor([0, 1, 2]), None, "single-kl")


def test_corn_probabilities_sum_to_one_and_are_rank_consistent():
    torch.manual_seed(0)
    head = CornKLHead(6)
    log_p = head(torch.randn(10, 6) * 3)
    p = torch.softmax(log_p, -1)
    torch.testing.assert_close(p.sum(-1), torch.ones(10))
    torch.testing.assert_close(p, log_p.exp())  # the "logits" are exact log-probabilities
    above = 1 - torch.cumsum(p, -1)[:, :-1]  # P(KL > k), k = 0..3
    assert torch.all(above[:, 1:] <= above[:, :-1] + 1e-6)


def test_corn_cross_entropy_equals_sum_of_conditional_binary_losses():
    torch.manual_seed(0)
    head = CornKLHead(4)
    emb = torch.randn(5, 4)
    kl = torch.tensor([0, 1, 2, 3, 4])
    ce = F.cross_entropy(head(emb), kl, reduction="none")
    cond = head.fc(emb)
    expected = torch.stack([
        sum(F.binary_cross_entropy_with_logits(cond[i, k], torch.tensor(float(kl[i] > k))) for k in range(min(int(kl[i]) + 1, 4)))
        for i in range(5)])
    torch.testing.assert_close(ce, expected)


def test_corn_option_builds_an_ordinal_dual_model():
    model = build_model(ModelSpec("resnet3d", "dual", input_shape=(16, 16, 16), width=4, options={"kl_head": "corn"}))
    assert isinstance(model.heads.kl_head, CornKLHead)
    o = model.eval()(torch.randn(2, 1, 16, 16, 16))
    torch.testing.assert_close(torch.softmax(o.kl_logits, -1).sum(-1), torch.ones(2))


def test_spec_round_trips_through_json():
    spec = ModelSpec("nnmamba", "dual", "parallel", input_shape=(32, 48, 48), width=8,
                     options={"blocks": 2, "kl_head": "corn"})
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("kwargs,match", [
    ({"backbone": "vgg"}, "unknown backbone"),
    ({"variant": "triple"}, "unknown variant"),
    ({"head": "sideways"}, "unknown head"),
    ({"backbone": "m3t", "input_shape": (64, 64, 32)}, "cube"),
    ({"input_shape": (16, 16)}, "three integers"),
    ({"width": 0}, "positive"),
    ({"options": {"depth_multiplier": 2}}, "depth_multiplier"),
    ({"options": {"kl_head": "coral"}}, "kl_head"),
])
def test_bad_specs_raise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModelSpec(**kwargs)


def test_spec_dict_with_unknown_field_is_refused():
    with pytest.raises(ConfigError, match="colour"):
        ModelSpec.from_dict({"backbone": "resnet3d", "colour": "red"})


@pytest.mark.parametrize("head", ["chained", "parallel"])
def test_a_models_heads_are_the_variants_heads_in_the_contract(head):
    """vocab.VARIANT_HEADS is the one variant -> heads rule: the model, its loss and the trust store follow it."""
    from kneeoa.contracts.vocab import VARIANTS, has_kl_head, has_oa_head

    for variant in VARIANTS:
        heads = Heads(8, variant, head)
        assert (heads.kl_head is not None, heads.oa_head is not None) == (has_kl_head(variant), has_oa_head(variant))
    assert not has_oa_head(None) and not has_kl_head("unknown")
