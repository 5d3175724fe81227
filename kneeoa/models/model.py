"""KneeOAModel: a backbone (timm style: forward_features -> embedding) plus the variant's heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from kneeoa.errors import InputError
from kneeoa.models.heads import Heads
from kneeoa.models.output import ModelOutput

if TYPE_CHECKING:
    from kneeoa.models.registry import ModelSpec


class KneeOAModel(nn.Module):
    """`model(x)` -> ModelOutput for x (B, 1, D, H, W) float32 z-scored in model space."""

    def __init__(self, spec: ModelSpec, backbone: nn.Module):
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.heads = Heads(backbone.embedding_dim, spec.variant, spec.head,
                           spec.options.get("kl_head", "softmax"))

    @property
    def embedding_dim(self) -> int:
        """Width of the embedding (the input of the last Linear in the paper's models)."""
        return int(self.backbone.embedding_dim)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 1, D, H, W) -> embedding (B, E)."""
        if x.dim() != 5 or x.shape[1] != 1:
            raise InputError(f"model input must be (B, 1, D, H, W), got {tuple(x.shape)}")
        return self.backbone.forward_features(x)

    def forward_head(self, embedding: Tensor) -> ModelOutput:
        """Embedding (B, E) -> ModelOutput."""
        return self.heads(embedding)

    def forward(self, x: Tensor) -> ModelOutput:
        return self.forward_head(self.forward_features(x))

    def to_channels_last_3d(self) -> KneeOAModel:
        """channels_last_3d layout for the 3D convolution weights only.

        `Module.to(memory_format=torch.channels_last_3d)` raises on any 4-D weight (M3T's 2D ResNet), so
        training code should call this instead; outputs are unchanged, only the memory layout differs.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
        return self
