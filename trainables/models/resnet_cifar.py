"""CIFAR ResNets in the CRD/RepDistiller style: a 3x3 stem and three residual stages.

resnet20/32/56 use widths [16, 16, 32, 64] (He et al. 2016, CIFAR variant); resnet8x4 and
resnet32x4 use [32, 64, 128, 256]. Depth 6n+2 with n basic blocks per stage. Global pooling is
adaptive, so the same model runs at 32x32 (CIFAR) and 64x64 (TinyImageNet).

stages = [stem, stage1, stage2, stage3], each the post-ReLU output; stage3 is the pooled map.
"""
from __future__ import annotations

import torch
from torch import nn

from ._init import init_weights
from ._registry import CIFAR_LR, MODELS
from .base import Classifier


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(Classifier):
    """ResNet of depth 6n+2 over widths [stem, stage1, stage2, stage3]."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        layers = []
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.set_head(in_planes, num_classes)
        init_weights(self)


@MODELS.register("resnet8x4", style="cifar", student_lr=CIFAR_LR)
def resnet8x4(num_classes: int) -> CifarResNet:
    return CifarResNet(8, (32, 64, 128, 256), num_classes)


@MODELS.register("resnet32x4", style="cifar", student_lr=CIFAR_LR)
def resnet32x4(num_classes: int) -> CifarResNet:
    return CifarResNet(32, (32, 64, 128, 256), num_classes)


@MODELS.register("resnet8", style="cifar", student_lr=CIFAR_LR)
def resnet8(num_classes: int) -> CifarResNet:
    """The smallest CIFAR ResNet (one block per stage): a quick student for the digits runs."""
    return CifarResNet(8, (16, 16, 32, 64), num_classes)


@MODELS.register("resnet20", style="cifar", student_lr=CIFAR_LR)
def resnet20(num_classes: int) -> CifarResNet:
    return CifarResNet(20, (16, 16, 32, 64), num_classes)


@MODELS.register("resnet32", style="cifar", student_lr=CIFAR_LR)
def resnet32(num_classes: int) -> CifarResNet:
    return CifarResNet(32, (16, 16, 32, 64), num_classes)


@MODELS.register("resnet56", style="cifar", student_lr=CIFAR_LR)
def resnet56(num_classes: int) -> CifarResNet:
    return CifarResNet(56, (16, 16, 32, 64), num_classes)
