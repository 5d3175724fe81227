"""The paper's three model definitions, rebuilt from its public code (jukieCheung/coarse2fine-oa-mri @ 9059db9).

Module structure, parameter names and forward passes as in models/resnet.py (MedicalNet, conv_seg =
Identity + pool + fc), models/M3T.py and models/nnMamba4cls.py, and the DualHeadModel of
train_oaizib_3models_dual.py. Only the imports differ: einops is replaced by reshape/permute, torchvision's
resnet18 by the same layout written out (names and shapes identical), and mamba_ssm.Mamba by KneeOA's Mamba
(the same parameter names). Used to check parameter counts and `kneeoa import-paper-checkpoint`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# --- MedicalNet ResNet-18 as ResNet3DCls -------------------------------------------------------------
class MedBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += residual
        return self.relu(out)


class ResNet3DCls(nn.Module):
    def __init__(self, num_classes=5, width=64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv3d(1, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, 2)
        self.layer2 = self._make_layer(2 * width, 2, stride=2)
        self.layer3 = self._make_layer(4 * width, 2, dilation=2)
        self.layer4 = self._make_layer(8 * width, 2, dilation=4)
        self.conv_seg = nn.Identity()
        self.global_pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8 * width, num_classes)

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm3d(planes))
        layers = [MedBasicBlock(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes
        layers += [MedBasicBlock(planes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.global_pool(x).view(x.size(0), -1))


# --- torchvision resnet18 layout (for M3T's CNN_2D) ----------------------------------------------------
class TVBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TVResNet18(nn.Module):
    def __init__(self, width=64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(TVBasicBlock(w, w), TVBasicBlock(w, w))
        self.layer2 = nn.Sequential(TVBasicBlock(w, 2 * w, 2), TVBasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(TVBasicBlock(2 * w, 4 * w, 2), TVBasicBlock(4 * w, 4 * w))
        self.layer4 = nn.Sequential(TVBasicBlock(4 * w, 8 * w, 2), TVBasicBlock(8 * w, 8 * w))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, 1000)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- M3T (models/M3T.py) ------------------------------------------------------------------------------
class CNN3DBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=5, stride=1, padding=2)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size=5, stride=1, padding=2)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class MultiPlaneMultiSliceExtractProject(nn.Module):
    def __init__(self, out_channels, width=64, emb_size=128):
        super().__init__()
        self.CNN_2D = TVResNet18(width)
        self.CNN_2D.conv1 = nn.Conv2d(out_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.CNN_2D.fc = nn.Identity()
        self.non_linear_proj = nn.Sequential(nn.Linear(8 * width, 4 * width), nn.ReLU(), nn.Linear(4 * width, emb_size))

    def forward(self, input_tensor):
        B, C, D, H, W = input_tensor.shape
        Ecor = torch.cat(torch.split(input_tensor, 1, dim=2), dim=2)
        Esag = torch.cat(torch.split(input_tensor.clone(), 1, dim=3), dim=3)
        Eax = torch.cat(torch.split(input_tensor.clone(), 1, dim=4), dim=4)
        Scor = (Ecor * input_tensor).permute(0, 2, 1, 3, 4).contiguous()
        Ssag = (Esag * input_tensor).permute(0, 3, 1, 2, 4).contiguous()
        Sax = (Eax * input_tensor).permute(0, 4, 1, 2, 3).contiguous()
        S = torch.cat((Scor, Ssag, Sax), dim=1)
        S = S.view(-1, C, H, W).contiguous()
        pooled_feat = self.CNN_2D(S).view(B, 3 * H, -1)
        return self.non_linear_proj(pooled_feat)


class EmbeddingLayer(nn.Module):
    def __init__(self, emb_size=256, total_tokens=384):
        super().__init__()
        self.n = total_tokens // 3
        self.cls_token = nn.Parameter(torch.randn(1, 1, emb_size))
        self.sep_token = nn.Parameter(torch.randn(1, 1, emb_size))
        self.coronal_plane = nn.Parameter(torch.randn(1, emb_size))
        self.sagittal_plane = nn.Parameter(torch.randn(1, emb_size))
        self.axial_plane = nn.Parameter(torch.randn(1, emb_size))
        self.positions = nn.Parameter(torch.randn(total_tokens + 4, emb_size))

    def forward(self, input_tensor):
        b, n = input_tensor.shape[0], self.n
        cls_tokens = self.cls_token.expand(b, -1, -1)
        sep_token = self.sep_token.expand(b, -1, -1)
        x = torch.cat((cls_tokens, input_tensor[:, :n, :], sep_token, input_tensor[:, n:2 * n, :], sep_token,
                       input_tensor[:, 2 * n:, :], sep_token), dim=1)
        x[:, :n + 2] += self.coronal_plane
        x[:, n + 2:2 * n + 3] += self.sagittal_plane
        x[:, 2 * n + 3:] += self.axial_plane
        x += self.positions
        return x


class MultiHeadAttention(nn.Module):
    def __init__(self, emb_size=256, num_heads=8, dropout=0):
        super().__init__()
        self.emb_size = emb_size
        self.num_heads = num_heads
        self.qkv = nn.Linear(emb_size, emb_size * 3)
        self.att_drop = nn.Dropout(dropout)
        self.projection = nn.Linear(emb_size, emb_size)

    def forward(self, x):
        b, n, _ = x.shape
        # rearrange(self.qkv(x), "b n (h d qkv) -> (qkv) b h n d", h=self.num_heads, qkv=3)
        qkv = self.qkv(x).reshape(b, n, self.num_heads, -1, 3).permute(4, 0, 2, 1, 3)
        queries, keys, values = qkv[0], qkv[1], qkv[2]
        energy = torch.einsum("bhqd, bhkd -> bhqk", queries, keys)
        att = F.softmax(energy, dim=-1) / self.emb_size ** (1 / 2)
        att = self.att_drop(att)
        out = torch.einsum("bhal, bhlv -> bhav ", att, values)
        out = out.permute(0, 2, 1, 3).reshape(b, n, -1)
        return self.projection(out)


class ResidualAdd(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        res = x
        x = self.fn(x)
        x += res
        return x


class FeedForwardBlock(nn.Sequential):
    def __init__(self, emb_size, expansion=2, drop_p=0.0):
        super().__init__(nn.Linear(emb_size, expansion * emb_size), nn.GELU(), nn.Dropout(drop_p),
                         nn.Linear(expansion * emb_size, emb_size))


class TransformerEncoderBlock(nn.Sequential):
    def __init__(self, emb_size=256, drop_p=0.0, forward_expansion=2):
        super().__init__(
            ResidualAdd(nn.Sequential(nn.LayerNorm(emb_size), MultiHeadAttention(emb_size), nn.Dropout(drop_p))),
            ResidualAdd(nn.Sequential(nn.LayerNorm(emb_size), FeedForwardBlock(emb_size, forward_expansion),
                                      nn.Dropout(drop_p))))


class ClassificationHead(nn.Module):
    def __init__(self, emb_size=256, n_classes=2):
        super().__init__()
        self.linear = nn.Linear(emb_size, n_classes)

    def forward(self, x):
        return self.linear(x[:, 0])


class PaperM3T(nn.Sequential):
    """M3T(in_channels=1, out_channels=16, emb_size=128, depth=4, n_classes) of the paper's training scripts;
    `width` scales the 2-D ResNet and `cube` the slice count (128 in the paper) for small test models."""

    def __init__(self, n_classes, out_channels=16, emb_size=128, depth=4, width=64, cube=128):
        super().__init__(CNN3DBlock(1, out_channels),
                         MultiPlaneMultiSliceExtractProject(out_channels, width, emb_size),
                         EmbeddingLayer(emb_size=emb_size, total_tokens=3 * cube),
                         nn.Sequential(*[TransformerEncoderBlock(emb_size=emb_size) for _ in range(depth)]),
                         ClassificationHead(emb_size, n_classes))


# --- nnMamba (models/nnMamba4cls.py) -------------------------------------------------------------------
def _conv1x1(cin, cout, stride=1):
    return nn.Conv3d(cin, cout, kernel_size=1, stride=stride, bias=False)


class MBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


def make_res_layer(inplanes, planes, blocks, stride=1):
    downsample = nn.Sequential(_conv1x1(inplanes, planes, stride), nn.BatchNorm3d(planes))
    return nn.Sequential(MBasicBlock(inplanes, planes, stride, downsample),
                         *[MBasicBlock(planes, planes) for _ in range(1, blocks)])


class MambaLayer(nn.Module):
    def __init__(self, dim, d_state=8, d_conv=4, expand=2):
        super().__init__()
        from kneeoa.models.mamba import Mamba

        self.dim = dim
        self.nin = _conv1x1(dim, dim)
        self.nin2 = _conv1x1(dim, dim)
        self.norm2 = nn.BatchNorm3d(dim)
        self.relu2 = nn.ReLU(inplace=True)
        self.norm = nn.BatchNorm3d(dim)
        self.relu = nn.ReLU(inplace=True)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x):
        B, C = x.shape[:2]
        x = self.relu(self.norm(self.nin(x)))
        act_x = x
        img_dims = x.shape[2:]
        x_flat = x.reshape(B, C, img_dims.numel()).transpose(-1, -2)
        out = self.mamba(x_flat).transpose(-1, -2).reshape(B, C, *img_dims)
        out += act_x
        return self.relu2(self.norm2(self.nin2(out)))


class DoubleConv(nn.Module):
    def __init__(self, in_ch, out_ch, stride=1, kernel_size=3):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv3d(in_ch, out_ch, kernel_size=kernel_size, stride=stride, padding=int(kernel_size / 2)),
            nn.BatchNorm3d(out_ch), nn.ReLU(inplace=True),
            nn.Conv3d(out_ch, out_ch, 3, padding=1, dilation=1), nn.BatchNorm3d(out_ch), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class NNMambaEncoder(nn.Module):
    def __init__(self, in_ch=1, channels=32, blocks=3, number_classes=1):
        super().__init__()
        self.in_conv = DoubleConv(in_ch, channels, stride=2, kernel_size=3)
        self.mamba_layer_stem = MambaLayer(dim=channels, d_state=8, d_conv=4, expand=2)
        self.layer1 = make_res_layer(channels, channels * 2, blocks, stride=2)
        self.layer2 = make_res_layer(channels * 2, channels * 4, blocks, stride=2)
        self.layer3 = make_res_layer(channels * 4, channels * 8, blocks, stride=2)
        self.pooling = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.mlp = nn.Sequential(nn.Linear(channels * 14, channels), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(channels, number_classes))

    def forward(self, x):
        c1 = self.in_conv(x)
        c1_s = self.mamba_layer_stem(c1) + c1
        c2 = self.layer1(c1_s)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        b = c1.shape[0]
        h = torch.cat([self.pooling(c).reshape(b, -1) for c in (c2, c3, c4)], dim=1)
        return self.mlp(h)


class DualHeadModel(nn.Module):
    def __init__(self, backbone, num_classes_5=5, num_classes_2=2):
        super().__init__()
        self.backbone = backbone
        self.binary_head = nn.Linear(num_classes_5, num_classes_2)

    def forward(self, x):
        logits_5 = self.backbone(x)
        return logits_5, self.binary_head(logits_5)


def paper_model(backbone: str, variant: str, width: int | None = None, cube: int = 128) -> nn.Module:
    """The paper's model for `backbone` (resnet3d | m3t | nnmamba) and `variant` (single-oa | single-kl | dual)."""
    n = 1 if variant == "single-oa" else 5
    if backbone == "resnet3d":
        net = ResNet3DCls(n, width or 64)
    elif backbone == "m3t":
        w = width or 64
        net = PaperM3T(n, out_channels=max(1, w // 4), emb_size=2 * w, width=w, cube=cube)
    else:
        net = NNMambaEncoder(channels=width or 32, number_classes=n)
    return DualHeadModel(net) if variant == "dual" else net
