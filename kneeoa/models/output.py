"""The one output type of every KneeOA model."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    """KL logits (B,5) or None, OA logits (B,1)/(B,2) or None, and the backbone embedding (B,E)."""

    kl_logits: torch.Tensor | None
    oa_logits: torch.Tensor | None
    embedding: torch.Tensor
