"""Wide ResNets (Zagoruyko & Komodakis 2016) as used by the CIFAR KD codebases: WRN-d-k.

Pre-activation basic blocks, (d - 4) / 6 blocks per group, group widths 16k, 32k, 64k after a
16-channel 3x3 stem; a final BN-ReLU, adaptive global average pooling and one linear layer.

stages = the outputs of the three groups; the last one is taken after the final BN-ReLU (the map
that is pooled). Being a pre-activation network, the first two are the raw residual sums (the
next block applies its own BN-ReLU), as in RepDistiller's features.
"""
from __future__ import annotations

import torch
from torch import nn

from ._init import init_weights
from ._registry import CIFAR_LR, MODELS
from .base import Classifier, Stage


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.shortcut: nn.Module | None = None
        if not self.equal_in_out:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.bn1(x))
        # with a projection shortcut the projection reads the activated input (as in the original)
        identity = x if self.shortcut is None else self.shortcut(act)
        out = self.relu(self.bn2(self.conv1(act)))
        out = self.conv2(self.dropout(out))
        return out + identity


class WideResNet(Classifier):
    stem_is_stage = False  # stages are the three groups' outputs

    def __init__(self, depth: int, widen_factor: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        in_planes = widths[0]
        groups = []
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(in_planes, planes, stride if j == 0 else 1, drop_rate))
                in_planes = planes
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.set_head(in_planes, num_classes)
        init_weights(self)
        nn.init.zeros_(self.classifier.bias)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)

    def stage_layers(self, x: torch.Tensor) -> list[Stage]:
        return [self.block1, self.block2, self.block3]

    def pre_pool(self, features: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(features))  # the final BN-ReLU of a pre-activation network


@MODELS.register("wrn_40_1", style="cifar", student_lr=CIFAR_LR)
def wrn_40_1(num_classes: int) -> WideResNet:
    return WideResNet(40, 1, num_classes)


@MODELS.register("wrn_40_2", style="cifar", student_lr=CIFAR_LR)
def wrn_40_2(num_classes: int) -> WideResNet:
    return WideResNet(40, 2, num_classes)
