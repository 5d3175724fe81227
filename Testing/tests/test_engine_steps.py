"""The shared training step: one AMP-scaled optimizer step, and a diverged loss stops the run in one line."""

import math

import pytest
import torch

from kneeoa.engine.devices import grad_scaler
from kneeoa.engine.steps import finite_loss, scaled_step
from kneeoa.errors import JobError


def test_scaled_step_moves_the_weights_against_the_gradient():
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    scaled_step((weight * 2.0).sum(), optimizer, grad_scaler(torch.device("cpu")))
    assert weight.item() == pytest.approx(0.0)  # 1 - 0.5 * d(2w)/dw


def test_finite_loss_returns_the_value():
    assert finite_loss(torch.tensor(0.25), "training", 0, "try a lower --lr") == 0.25


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_diverged_loss_names_the_epoch_and_the_remedy(bad):
    with pytest.raises(JobError, match=r"^segmentation loss became (nan|inf) in epoch 3; try a lower --lr$"):
        finite_loss(torch.tensor(bad), "segmentation", 2, "try a lower --lr")
