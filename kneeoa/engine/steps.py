"""The training step both trainers share (grading in kneeoa.engine.train, segmentation in
kneeoa.segmentation.train): one AMP-scaled optimizer step and the finite-loss check after it."""

from __future__ import annotations

import math
from typing import Any

from kneeoa.errors import JobError


def scaled_step(loss: Any, optimizer: Any, scaler: Any) -> None:
    """Backpropagate `loss` and step `optimizer` through the AMP grad scaler (`devices.grad_scaler`; a
    disabled scaler passes straight through, so fp32 and bf16 runs take the same path)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def finite_loss(loss: Any, what: str, epoch: int, hint: str) -> float:
    """`loss` as a float; a JobError ('<what> loss became nan in epoch N; <hint>') when it is NaN or Inf, so a
    diverged run stops at once instead of writing NaN weights."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise JobError(f"{what} loss became {value} in epoch {epoch + 1}; {hint}")
    return value
