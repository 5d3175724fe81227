"""M3T: multi-plane, multi-slice transformer (Jang & Hwang, CVPR 2022), implemented correctly for any cube.

Compared with the paper's code (adapted from KVishnuVardhanR/M3T) this version does not square the 3D
features, scales attention inside the softmax by sqrt(head_dim) (torch's MultiheadAttention), and sizes
the token sequence from the cube edge N (3N+4 tokens) instead of hard-coding 128 slices.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kneeoa.errors import InputError
from kneeoa.models.blocks import conv, init_resnet_weights, norm, res_layer


class ResNet2D18(nn.Module):
    """A small torchvision-style 2D ResNet-18 (no pretrained weights): `in_channels` -> 8*width pooled features."""

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
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


class M3T(nn.Module):
    """3D CNN -> every slice of 3 planes through a 2D ResNet-18 -> tokens -> transformer -> CLS embedding.

    Paper-code sizes at width 64: 3D channels 16, ResNet-18 512-d, projection 512->256->128, depth 4,
    8 heads, MLP x2. `width` scales all of them (3D channels width/4, d_model 2*width).
    """

    def __init__(self, width: int = 64, cube: int = 128, c3d: int | None = None, d_model: int | None = None,
                 depth: int = 4, heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 slice_batch: int | None = None):
        super().__init__()
        c3d = c3d or max(1, width // 4)
        d = d_model or 2 * width
        if d % heads:
            raise ValueError(f"M3T d_model {d} is not divisible by {heads} heads")
        self.cube = int(cube)
        # slices go through the 2D CNN in groups of at most `slice_batch` (bounds memory; None = all at once)
        self.slice_batch = slice_batch
        self.cnn3d = nn.Sequential(
            conv(3, 1, c3d, kernel=5), norm(3, c3d), nn.ReLU(inplace=False),
            conv(3, c3d, c3d, kernel=5), norm(3, c3d), nn.ReLU(inplace=False),
        )
        self.cnn2d = ResNet2D18(c3d, width)
        feat = self.cnn2d.out_dim
        self.proj = nn.Sequential(nn.Linear(feat, feat // 2), nn.ReLU(inplace=False), nn.Linear(feat // 2, d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.sep_token = nn.Parameter(torch.zeros(1, 1, d))
        self.plane_embed = nn.Parameter(torch.zeros(3, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 3 * self.cube + 4, d))
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=int(d * mlp_ratio), dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.embedding_dim = d
        for p in (self.cls_token, self.sep_token, self.plane_embed, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        init_resnet_weights(self.cnn3d)
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
        f = self.cnn3d(x)  # (B, C, N, N, N); M3T's "S = E*X" is a product in name only: features used as-is
        c = f.shape[1]
        # every slice of each plane becomes one 2D image in the batch: planes along D (coronal in the
        # paper's naming), H (sagittal) and W (axial)
        planes = [f.movedim(axis, 1).reshape(b * n, c, n, n) for axis in (2, 3, 4)]
        tokens = self.proj(self._slice_features(torch.cat(planes, 0)))  # (3*B*N, d)
        tokens = tokens.reshape(3, b, n, -1)
        sep = self.sep_token.expand(b, 1, -1)
        seq = torch.cat([self.cls_token.expand(b, 1, -1), tokens[0], sep, tokens[1], sep, tokens[2], sep], 1)
        seq = seq + self.pos_embed + self.plane_embed[self.plane_ids]
        out = self.norm(self.transformer(seq))
        return out[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)
