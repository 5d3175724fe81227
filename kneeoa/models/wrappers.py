"""Single-tensor views of a KneeOA model for attribution libraries (captum wants one tensor out)."""

from __future__ import annotations

from torch import Tensor, nn

from kneeoa.contracts.vocab import has_kl_head, has_oa_head
from kneeoa.errors import ConfigError


class ScalarTarget(nn.Module):
    """forward(x) -> the logits (B, C) of one head; captum's `target=` picks the class.

    head='kl': the 5 KL logits. head='oa': the OA logits, (B, 1) for a Single-OA model (target 0)
    or (B, 2) for a Dual model (target 1 = OA).
    """

    def __init__(self, model: nn.Module, head: str = "kl"):
        super().__init__()
        if head not in ("kl", "oa"):
            raise ConfigError(f"head must be 'kl' or 'oa', got {head!r}")
        variant = model.spec.variant
        if head == "kl" and not has_kl_head(variant):
            raise ConfigError("a Single-OA model has no KL head; use head='oa'")
        if head == "oa" and not has_oa_head(variant):
            raise ConfigError("a Single-KL model has no OA head; its OA probability is p2+p3+p4 of the KL head")
        self.model = model
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out.kl_logits if self.head == "kl" else out.oa_logits
