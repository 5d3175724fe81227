"""M3T: multi-plane, multi-slice transformer (Jang & Hwang, CVPR 2022) with the paper's structure, for any cube.

The structure, parameter names and initialisation follow the paper's code (models/M3T.py of
jukieCheung/coarse2fine-oa-mri, adapted from KVishnuVardhanR/M3T): two biased 5^3 Conv3d+BN+ReLU, a
torchvision-layout 2D ResNet-18 (conv1 takes the 3-D channels, fc removed) on every slice of the three
planes, projection 512 -> 256 -> 128, tokens [CLS] cor [SEP] sag [SEP] ax [SEP] + plane + position
embeddings (standard-normal init), pre-LN blocks with a fused qkv Linear, and the head on the raw CLS
token (no final LayerNorm). Parameter counts at 128^3 equal the paper's (11,995,953 / 11,996,469 /
11,996,481 for Single-OA / Single-KL / Dual).

Three defects of that code are fixed: the 3-D features are not squared ("S = E * X" multiplies the
features by themselves), attention is softmax(QK^T / sqrt(head_dim)) (the code divides *after* the softmax
and by sqrt(d_model)), and the token count follows the cube edge N (3N+4) instead of a hard-coded 128.
`paper_code_quirks=True` puts the first two back, only so that a checkpoint imported from the paper's
code (`kneeoa import-paper-checkpoint`) gives the paper's predictions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kneeoa.errors import InputError
from kneeoa.models.blocks import conv, init_resnet_weights, norm, res_layer


class ResNet2D18(nn.Module):
    """torchvision's ResNet-18 layout (same parameter names, so its ImageNet weights load): -> 8*width features."""

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        w = width
        self.conv1 = conv(2, in_channels, w, kernel=7, stride=2)
        self.bn1 = norm(2, w)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = res_layer(2, w, w, 2)
        self.layer2 = res_layer(2, w, 2 * w, 2, stride=2)
        self.layer3 = res_layer(2, 2 * w, 4 * w, 2, stride=2)
        self.layer4 = res_layer(2, 4 * w, 8 * w, 2, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = 8 * w
        init_resnet_weights(self)  # torchvision's scheme ...
        self.conv1.reset_parameters()  # ... but the paper replaced conv1 after construction: PyTorch default

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


class Attention(nn.Module):
    """Multi-head self-attention with the paper code's fused qkv Linear (output columns ordered head, dim, q|k|v)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, paper_code_quirks: bool = False):
        super().__init__()
        self.heads, self.dim, self.dropout = heads, dim, dropout
        self.quirks = paper_code_quirks
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        # einops "b n (h d qkv) -> qkv b h n d" of the paper's code, so its weights port unchanged
        q, k, v = self.qkv(x).reshape(b, n, self.heads, d // self.heads, 3).permute(4, 0, 2, 1, 3).unbind(0)
        p = self.dropout if self.training else 0.0
        if self.quirks:  # the paper's code: softmax first, then divide by sqrt(d_model)
            att = F.dropout(torch.softmax(q @ k.transpose(-1, -2), -1) / math.sqrt(d), p, self.training)
            out = att @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN transformer block: x + MSA(LN(x)), then x + MLP(LN(x)) with a GELU MLP (the paper's Eq. 7-8)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, paper_code_quirks: bool):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout, paper_code_quirks)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class M3T(nn.Module):
    """3D CNN -> every slice of 3 planes through a 2D ResNet-18 -> tokens -> transformer -> CLS embedding.

    Paper-code sizes at width 64: 3D channels 16, ResNet-18 512-d, projection 512->256->128, depth 4,
    8 heads, MLP x2. `width` scales all of them (3D channels width/4, d_model 2*width).
    """

    def __init__(self, width: int = 64, cube: int = 128, c3d: int | None = None, d_model: int | None = None,
                 depth: int = 4, heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 slice_batch: int | None = None, paper_code_quirks: bool = False):
        super().__init__()
        c3d = c3d or max(1, width // 4)
        d = d_model or 2 * width
        if d % heads:
            raise ValueError(f"M3T d_model {d} is not divisible by {heads} heads")
        self.cube = int(cube)
        self.quirks = bool(paper_code_quirks)
        # slices go through the 2D CNN in groups of at most `slice_batch` (bounds memory; None = all at once)
        self.slice_batch = slice_batch
        self.cnn3d = nn.Sequential(  # PyTorch default init, biased convs, as the paper's CNN3DBlock
            conv(3, 1, c3d, kernel=5, bias=True), norm(3, c3d), nn.ReLU(inplace=False),
            conv(3, c3d, c3d, kernel=5, bias=True), norm(3, c3d), nn.ReLU(inplace=False),
        )
        self.cnn2d = ResNet2D18(c3d, width)
        feat = self.cnn2d.out_dim
        self.proj = nn.Sequential(nn.Linear(feat, feat // 2), nn.ReLU(inplace=False), nn.Linear(feat // 2, d))
        # standard-normal tokens and embeddings (torch.randn in the paper's EmbeddingLayer)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))
        self.sep_token = nn.Parameter(torch.randn(1, 1, d))
        self.plane_embed = nn.Parameter(torch.randn(3, d))
        self.pos_embed = nn.Parameter(torch.randn(1, 3 * self.cube + 4, d))
        self.blocks = nn.Sequential(*[Block(d, heads, mlp_ratio, dropout, self.quirks) for _ in range(depth)])
        self.embedding_dim = d
        # which plane each of the 3N+4 token positions belongs to: [CLS] cor.. [SEP] | sag.. [SEP] | ax.. [SEP]
        n = self.cube
        plane_ids = torch.tensor([0] * (n + 2) + [1] * (n + 1) + [2] * (n + 1))
        self.register_buffer("plane_ids", plane_ids, persistent=False)

    def _slice_features(self, slices: Tensor) -> Tensor:
        if not self.slice_batch or slices.shape[0] <= self.slice_batch:
            return self.cnn2d(slices)
        return torch.cat([self.cnn2d(s) for s in slices.split(self.slice_batch)], 0)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B,1,N,N,N) -> (B, d_model) CLS embedding."""
        b, _, *spatial = x.shape
        n = self.cube
        if list(spatial) != [n, n, n]:
            raise InputError(f"M3T was built for {n}^3 inputs but got {tuple(spatial)}; resize to the model's input_shape")
        f = self.cnn3d(x)  # (B, C, N, N, N)
        if self.quirks:
            f = f * f  # the paper's "S = E * X": E is X itself
        c = f.shape[1]
        # every slice of each plane becomes one 2D image in the batch: planes along D (coronal in the
        # paper's naming), H (sagittal) and W (axial)
        planes = [f.movedim(axis, 1).reshape(b * n, c, n, n) for axis in (2, 3, 4)]
        tokens = self.proj(self._slice_features(torch.cat(planes, 0)))  # (3*B*N, d)
        tokens = tokens.reshape(3, b, n, -1)
        sep = self.sep_token.expand(b, 1, -1)
        seq = torch.cat([self.cls_token.expand(b, 1, -1), tokens[0], sep, tokens[1], sep, tokens[2], sep], 1)
        seq = seq + self.plane_embed[self.plane_ids] + self.pos_embed  # the paper's order of the two sums
        return self.blocks(seq)[:, 0]  # the raw CLS token, as the paper's ClassificationHead reads it

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)
