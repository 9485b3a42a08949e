"""MobileNetV2 (Sandler et al. 2018), CIFAR variant of the KD codebases (RepDistiller `mobile_half`).

Width multiplier 0.5, expansion 6, the ImageNet block table (t, c, n, s) with the stride-2 3x3
stem; only the strides of the second block group differ from ImageNet's (1 instead of 2), so a
32x32 input ends at 2x2. Every block has its expansion 1x1 conv (also when t = 1), the last 1x1
conv has 1280 channels (not scaled below width 1), pooling is adaptive.

stages = [stem, 16x16 group, 8x8 group, 4x4 group, 2x2 group, final 1x1 conv]: the stem and the
final conv are post-ReLU; the block-group outputs in between are MobileNetV2's linear bottlenecks
(the architecture has no ReLU there). The final conv (1280 channels) is the pooled map.
"""
from __future__ import annotations

import torch
from torch import nn

from ._init import init_weights
from ._registry import CIFAR_LIGHT_LR, MODELS
from .base import Classifier, Stage

# t (expansion), c (channels at width 1), n (blocks), s (stride of the first block)
BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# which block groups end a stage (each stage ends before the next resolution change)
STAGE_ENDS = (1, 2, 4, 6)


def conv_bn_relu(inp: int, oup: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            conv_bn_relu(inp, hidden, 1),
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(Classifier):
    def __init__(self, num_classes: int, width_mult: float = 0.5, expansion: int = 6) -> None:
        super().__init__()
        in_channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(3, in_channels, 3, stride=2)
        groups = []
        for t, c, n, s in BLOCKS:
            t = expansion if t != 1 else 1
            out_channels = int(c * width_mult)
            layers = []
            for j in range(n):
                layers.append(InvertedResidual(in_channels, out_channels, s if j == 0 else 1, t))
                in_channels = out_channels
            groups.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(groups)
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(in_channels, last_channels, 1)
        self.set_head(last_channels, num_classes)
        init_weights(self, linear_std=0.01)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)

    def stage_layers(self, x: torch.Tensor) -> list[Stage]:
        # a stage runs the block groups after the previous stage's end up to its own (the last end
        # is the last group); the final 1x1 conv is the last stage
        groups = list(self.blocks)
        starts = (0,) + tuple(end + 1 for end in STAGE_ENDS[:-1])
        stages: list[Stage] = [_chain(groups[a:b + 1]) for a, b in zip(starts, STAGE_ENDS)]
        return stages + [self.conv2]


def _chain(modules: list[nn.Module]) -> Stage:
    def run(x: torch.Tensor) -> torch.Tensor:
        for module in modules:
            x = module(x)
        return x
    return run


@MODELS.register("mobilenetv2", style="cifar", student_lr=CIFAR_LIGHT_LR)
def mobilenetv2(num_classes: int) -> MobileNetV2:
    return MobileNetV2(num_classes, width_mult=0.5)
