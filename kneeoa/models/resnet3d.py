"""ResNet3D backbones: the paper's MedicalNet-style dilated ResNet-18, and MONAI's strided resnet18."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kneeoa.models.blocks import conv, init_resnet_weights, norm, res_layer


class ResNet3D(nn.Module):
    """MedicalNet ResNet (BasicBlock, shortcut B): conv1 7^3 s2, max-pool, layer3 dilation 2, layer4 dilation 4.

    Like the paper's code (MedicalNet `resnet18` with conv_seg = Identity) the output stride is 8 and the
    embedding is the global average of layer4: 8 * width channels (512 at the default width 64).
    """

    def __init__(self, width: int = 64, layers: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"ResNet3D needs 4 stage depths, got {list(layers)}")
        w = width
        self.conv1 = conv(3, 1, w, kernel=7, stride=2)
        self.bn1 = norm(3, w)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = res_layer(3, w, w, layers[0])
        self.layer2 = res_layer(3, w, 2 * w, layers[1], stride=2)
        self.layer3 = res_layer(3, 2 * w, 4 * w, layers[2], stride=1, dilation=2)
        self.layer4 = res_layer(3, 4 * w, 8 * w, layers[3], stride=1, dilation=4)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.embedding_dim = 8 * w
        init_resnet_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B,1,D,H,W) -> (B, 8*width) pooled embedding."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


class MonaiResNet3D(nn.Module):
    """MONAI's `resnet18` (Hara 3D-ResNet, strided layers 2-4) used as an embedding extractor.

    Same network as `monai.networks.nets.resnet18(spatial_dims=3, n_input_channels=1, feed_forward=False)`,
    built through `ResNet` so the width can change. conv1 is 7^3 with stride 2 like the MedicalNet variant;
    `conv1_stride=1` is MONAI's own default, which costs ~8x the activation memory at 160x256x256.
    """

    def __init__(self, width: int = 64, layers: Sequence[int] = (2, 2, 2, 2), conv1_stride: int = 2):
        super().__init__()
        from monai.networks.nets import ResNet

        w = width
        self.net = ResNet(block="basic", layers=list(layers), block_inplanes=[w, 2 * w, 4 * w, 8 * w],
                          spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=conv1_stride,
                          shortcut_type="B", feed_forward=False, act=("relu", {"inplace": False}))
        self.embedding_dim = 8 * w

    def forward_features(self, x: Tensor) -> Tensor:
        """(B,1,D,H,W) -> (B, 8*width)."""
        return self.net(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)
