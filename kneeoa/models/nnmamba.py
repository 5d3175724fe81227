"""nnMamba classification encoder (lhaof/nnMamba `ssm_nnMamba.py`, as used by the paper's code).

stem (two 3^3 convs, first stride 2) -> one Mamba layer over the raster sequence of all stem voxels
(added residually) -> 3 residual stages of 3 BasicBlocks (2w, 4w, 8w channels, stride 2 each) ->
global-average-pool of the 3 stages (14w = 448) -> Linear(448, w) -> ReLU -> Dropout(0.5).
The 32-d hidden of that MLP is the embedding (the paper's head is the MLP's last Linear).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kneeoa.models.blocks import conv, norm, res_layer
from kneeoa.models.mamba import Mamba


class MambaLayer(nn.Module):
    """1x1x1 conv-BN-ReLU -> Mamba over the flattened D*H*W sequence (+ skip) -> 1x1x1 conv-BN-ReLU."""

    def __init__(self, dim: int, d_state: int = 8, d_conv: int = 4, expand: int = 2,
                 chunk_size: int | None = None):
        super().__init__()
        self.nin = conv(3, dim, dim, kernel=1)
        self.norm = norm(3, dim)
        self.nin2 = conv(3, dim, dim, kernel=1)
        self.norm2 = norm(3, dim)
        self.relu = nn.ReLU(inplace=False)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand, chunk_size=chunk_size)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        act = self.relu(self.norm(self.nin(x)))
        # C-order raster over (D, H, W), a single forward scan (the original is unidirectional)
        seq = act.reshape(b, c, -1).transpose(1, 2)
        out = self.mamba(seq).transpose(1, 2).reshape(b, c, *spatial)
        return self.relu(self.norm2(self.nin2(out + act)))


class NNMamba(nn.Module):
    """nnMamba encoder with width w = stem channels (32 in the paper): embedding_dim = w."""

    def __init__(self, width: int = 32, blocks: int = 3, d_state: int = 8, d_conv: int = 4, expand: int = 2,
                 dropout: float = 0.5, mamba_chunk: int | None = None):
        super().__init__()
        w = width
        self.in_conv = nn.Sequential(
            conv(3, 1, w, 3, stride=2, bias=True), norm(3, w), nn.ReLU(inplace=False),
            conv(3, w, w, 3, bias=True), norm(3, w), nn.ReLU(inplace=False),
        )
        self.mamba_layer_stem = MambaLayer(w, d_state, d_conv, expand, chunk_size=mamba_chunk)
        self.layer1 = res_layer(3, w, 2 * w, blocks, stride=2)
        self.layer2 = res_layer(3, 2 * w, 4 * w, blocks, stride=2)
        self.layer3 = res_layer(3, 4 * w, 8 * w, blocks, stride=2)
        self.pooling = nn.AdaptiveAvgPool3d(1)
        self.mlp = nn.Sequential(nn.Linear(14 * w, w), nn.ReLU(inplace=False), nn.Dropout(dropout))
        self.embedding_dim = w  # PyTorch default init, as the original (no custom init loop)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B,1,D,H,W) -> (B, width) MLP hidden (after ReLU and dropout, the input of the last Linear)."""
        c1 = self.in_conv(x)
        c1 = self.mamba_layer_stem(c1) + c1
        c2 = self.layer1(c1)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        pooled = torch.cat([torch.flatten(self.pooling(c), 1) for c in (c2, c3, c4)], 1)
        return self.mlp(pooled)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)
