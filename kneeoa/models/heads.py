"""Supervision heads (Single-OA, Single-KL, Dual chained/parallel), probabilities and the hierarchical loss.

Dual "chained" is the paper's code: the OA head is Linear(5 -> 2) on the KL logits. "parallel" puts a
Linear(E -> 2) on the shared embedding instead. The optional ordinal KL head ("corn", ours) predicts the
4 conditional probabilities P(KL > k | KL >= k) and returns the 5 class *log-probabilities* as its KL
logits: softmax gives the class probabilities back exactly, and cross-entropy on them is the per-sample
CORN loss (sum of the conditional binary cross-entropies), so probabilities() and the loss need no
special case.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kneeoa.contracts.vocab import HEADS, KL_HEADS, VARIANTS, has_kl_head, has_oa_head
from kneeoa.errors import ConfigError
from kneeoa.hierarchy import N_KL, oa_from_kl, oa_prob_from_kl_probs
from kneeoa.models.output import ModelOutput


class CornKLHead(nn.Module):
    """Ordinal (CORN) KL head: rank-consistent class log-probabilities (B, 5) from 4 conditional logits."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, N_KL - 1)

    def forward(self, embedding: Tensor) -> Tensor:
        cond = self.fc(embedding)  # logit of P(KL > k | KL >= k), k = 0..3
        log_above = torch.cumsum(F.logsigmoid(cond), 1)  # log P(KL > k)
        log_at_least = torch.cat([torch.zeros_like(log_above[:, :1]), log_above[:, :-1]], 1)  # log P(KL >= k)
        # P(KL = k) = P(KL >= k) * P(KL <= k | KL >= k) for k < 4, and P(KL = 4) = P(KL > 3)
        return torch.cat([log_at_least + F.logsigmoid(-cond), log_above[:, -1:]], 1)


class Heads(nn.Module):
    """The variant's heads on top of an embedding of width `embedding_dim`."""

    def __init__(self, embedding_dim: int, variant: str, head: str = "chained", kl_head: str = "softmax"):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if head not in HEADS:
            raise ConfigError(f"unknown head topology {head!r}; choose one of {', '.join(HEADS)}")
        if kl_head not in KL_HEADS:
            raise ConfigError(f"unknown KL head {kl_head!r}; choose one of {', '.join(KL_HEADS)}")
        self.variant, self.head = variant, head
        self.kl_head: nn.Module | None = None
        self.oa_head: nn.Module | None = None
        if has_kl_head(variant):
            self.kl_head = CornKLHead(embedding_dim) if kl_head == "corn" else nn.Linear(embedding_dim, N_KL)
        if variant == "single-oa":
            self.oa_head = nn.Linear(embedding_dim, 1)  # one logit + BCE, as the paper's --num_classes 1
        elif variant == "dual":
            self.oa_head = nn.Linear(N_KL if head == "chained" else embedding_dim, 2)

    def forward(self, embedding: Tensor) -> ModelOutput:
        kl_logits = None if self.kl_head is None else self.kl_head(embedding)
        oa_logits = None
        if self.oa_head is not None:
            chained = self.variant == "dual" and self.head == "chained"
            oa_logits = self.oa_head(kl_logits if chained else embedding)
        return ModelOutput(kl_logits=kl_logits, oa_logits=oa_logits, embedding=embedding)


def oa_prob_from_logits(oa_logits: Tensor) -> Tensor:
    """P(OA) (B,) from an OA head: sigmoid of a single logit, softmax[:, 1] of two."""
    if oa_logits.shape[-1] == 1:
        return torch.sigmoid(oa_logits.float())[:, 0]
    return torch.softmax(oa_logits.float(), -1)[:, 1]


def probabilities(out: ModelOutput) -> dict[str, Tensor | None]:
    """kl_probs (B,5)|None; oa_prob (B,) from the OA head, else p2+p3+p4; oa_prob_from_kl (B,)|None."""
    kl_probs = None if out.kl_logits is None else torch.softmax(out.kl_logits.float(), -1)
    from_kl = None if kl_probs is None else oa_prob_from_kl_probs(kl_probs)
    oa_prob = from_kl if out.oa_logits is None else oa_prob_from_logits(out.oa_logits)
    if oa_prob is None:
        raise ValueError("model output has neither KL nor OA logits")
    return {"kl_probs": kl_probs, "oa_prob": oa_prob, "oa_prob_from_kl": from_kl}


def _masked_ce(logits: Tensor, target: Tensor) -> Tensor:
    valid = target >= 0  # -1 = unknown label: left out of the mean
    if not bool(valid.any()):
        return logits.sum() * 0.0  # keeps the graph (and DDP's gradient buckets) connected
    return F.cross_entropy(logits[valid].float(), target[valid].long())


def _masked_bce(logit: Tensor, target: Tensor) -> Tensor:
    valid = target >= 0
    if not bool(valid.any()):
        return logit.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logit[valid].float(), target[valid].float())


def hierarchical_loss(out: ModelOutput, kl: Tensor, oa: Tensor | None, variant: str,
                      lambda_oa: float = 1.0) -> Tensor:
    """Single-OA: BCE(OA); Single-KL: CE(KL); Dual: CE(KL) + lambda_oa * CE(OA). Labels < 0 are ignored.

    `oa` None derives OA = (KL >= 2) from `kl` (unknown KL stays unknown).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    kl = torch.as_tensor(kl).long().to(out.embedding.device)
    if oa is None:
        oa = torch.where(kl >= 0, oa_from_kl(kl).long(), torch.full_like(kl, -1))
    oa = torch.as_tensor(oa).long().to(out.embedding.device)
    need_kl, need_oa = has_kl_head(variant), has_oa_head(variant)
    if (need_kl and out.kl_logits is None) or (need_oa and out.oa_logits is None):
        raise ConfigError(f"the model output does not have the heads of variant {variant!r}")
    loss = _masked_ce(out.kl_logits, kl) if need_kl else None
    if need_oa:
        logits = out.oa_logits
        oa_loss = _masked_bce(logits[:, 0], oa) if logits.shape[1] == 1 else _masked_ce(logits, oa)
        loss = oa_loss if loss is None else loss + lambda_oa * oa_loss
    return loss
