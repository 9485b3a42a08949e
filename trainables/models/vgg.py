"""CIFAR VGG with batch norm in the CRD/RepDistiller style (vgg8 = config "S", vgg13 = config "B").

Five conv blocks (3x3 conv with bias, BN, ReLU) separated by 2x2 max-pools, 512-wide last block,
adaptive global average pooling and one linear layer. As in RepDistiller, the fourth max-pool is
applied only to inputs of 64 pixels or more (TinyImageNet), so the last block runs at 4x4 for
both 32x32 and 64x64 inputs.

stages = the five blocks' post-ReLU outputs (the maps before each pool); block4 is pooled.
"""
from __future__ import annotations

import torch
from torch import nn

from ._init import init_weights
from ._registry import CIFAR_LR, MODELS
from .base import Classifier, Stage

CFG: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


def _block(in_channels: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_channels = w
    return nn.Sequential(*layers)


class VGG(Classifier):
    def __init__(self, cfg: list[list[int]], num_classes: int) -> None:
        super().__init__()
        blocks = []
        in_channels = 3
        for widths in cfg:
            blocks.append(_block(in_channels, widths))
            in_channels = widths[-1]
        self.block0, self.block1, self.block2, self.block3, self.block4 = blocks
        self.pool = nn.MaxPool2d(2, 2)
        self.set_head(in_channels, num_classes)
        init_weights(self, linear_std=0.01)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.block0(x)

    def stage_layers(self, x: torch.Tensor) -> list[Stage]:
        large = x.shape[-2] >= 64  # the fourth max-pool only for 64-pixel inputs
        return [
            lambda f: self.block1(self.pool(f)),
            lambda f: self.block2(self.pool(f)),
            lambda f: self.block3(self.pool(f)),
            (lambda f: self.block4(self.pool(f))) if large else self.block4,
        ]


@MODELS.register("vgg8", style="cifar", student_lr=CIFAR_LR)
def vgg8(num_classes: int) -> VGG:
    return VGG(CFG["vgg8"], num_classes)


@MODELS.register("vgg13", style="cifar", student_lr=CIFAR_LR)
def vgg13(num_classes: int) -> VGG:
    return VGG(CFG["vgg13"], num_classes)
