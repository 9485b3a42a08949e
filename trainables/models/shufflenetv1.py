"""ShuffleNet V1 (Zhang et al. 2018), CIFAR variant of the KD codebases (RepDistiller `ShuffleV1`).

groups = 3, stage widths 240/480/960 with 4/8/4 units, a 1x1 stride-1 stem of 24 channels and no
max-pool, so a 32x32 input ends at 4x4. The first unit of each stage has stride 2 and concatenates
a 3x3 average-pooled shortcut; the first pointwise conv of the first unit (24 inputs) is not grouped.
Pooling is adaptive.

stages = [stem, stage1, stage2, stage3], post-ReLU; stage3 (960 channels) is pooled.
"""
from __future__ import annotations

import torch
from torch import nn

from ._init import init_weights
from ._registry import CIFAR_LIGHT_LR, MODELS
from .base import Classifier


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    n, c, h, w = x.shape
    # reshape (not view): safe for channels_last inputs
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        g1 = 1 if in_planes == 24 else groups
        self.groups1 = g1
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, 3, stride=stride, padding=1, groups=mid_planes, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.groups1)
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = torch.cat([out, self.shortcut(x)], 1)
        else:
            out = out + x
        return self.relu(out)


class ShuffleNetV1(Classifier):
    def __init__(
        self,
        num_classes: int,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 24
        stages = []
        for planes, n in zip(out_planes, num_blocks):
            units = []
            for j in range(n):
                # the first unit concatenates its input, so its branch makes the remainder
                units.append(ShuffleUnit(in_planes, planes - in_planes if j == 0 else planes, 2 if j == 0 else 1, groups))
                in_planes = planes
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.set_head(in_planes, num_classes)
        init_weights(self)


@MODELS.register("shufflenetv1", style="cifar", student_lr=CIFAR_LIGHT_LR)
def shufflenetv1(num_classes: int) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes)
