"""Residual building blocks shared by the backbones (2D or 3D).

Every activation is `inplace=False` and residual sums are out-of-place: captum's full backward hooks
fail on tensors modified in place ("Output 0 of BackwardHookFunctionBackward is a view ...").
"""

from __future__ import annotations

from torch import Tensor, nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def conv(dims: int, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
         bias: bool = False) -> nn.Module:
    """A 'same'-padded convolution (for stride 1) in 2 or 3 dimensions."""
    return _CONV[dims](cin, cout, kernel_size=kernel, stride=stride, padding=dilation * (kernel // 2),
                       dilation=dilation, bias=bias)


def norm(dims: int, channels: int) -> nn.Module:
    """BatchNorm in 2 or 3 dimensions."""
    return _NORM[dims](channels)


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN + shortcut, ReLU. Shortcut B (1x1 conv + BN) when shapes change."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = conv(dims, cin, cout, 3, stride, dilation)
        self.bn1 = norm(dims, cout)
        self.conv2 = conv(dims, cout, cout, 3, 1, dilation)
        self.bn2 = norm(dims, cout)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(dims, cin, cout, 1, stride), norm(dims, cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def res_layer(dims: int, cin: int, cout: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """`blocks` BasicBlocks; the first one changes channels/stride."""
    layers = [BasicBlock(dims, cin, cout, stride, dilation)]
    layers += [BasicBlock(dims, cout, cout, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def init_resnet_weights(module: nn.Module) -> None:
    """He (fan_out) init for convolutions, BN weight 1 / bias 0 — the MedicalNet / torchvision scheme."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
