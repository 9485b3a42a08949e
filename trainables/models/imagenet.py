"""ImageNet-style models: torchvision's ResNet18/34/50 (randomly initialised, never downloaded)
and MobileNetV1 (Howard et al. 2017, the version used by the KD codebases' ImageNet runs).

torchvision is imported when a ResNet is built, not with this module (the model registry imports
every model file): importing it loads torch._dynamo, ~1.5 s, which a process that only builds CIFAR
models (`ltkd plan` counting MACs) need not pay. A training process loads torch._dynamo anyway, when
torch.optim makes its optimizer.

stages are post-ReLU: for the ResNets [stem (before the max-pool), layer1..layer4], for
MobileNetV1 [stem, 56x56, 28x28, 14x14, 7x7 stages at 224 input]; the last one is pooled
(global average pooling, so small test inputs work too).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from ._init import init_weights
from ._registry import IMAGENET_LR, MODELS
from .base import Classifier, GlobalAvgPool, Stage

if TYPE_CHECKING:
    import torchvision


class TorchvisionResNet(Classifier):
    """A torchvision ResNet whose `fc` is kept as `classifier`; other parameter names are torchvision's."""

    def __init__(self, constructor: Callable[..., torchvision.models.ResNet], num_classes: int) -> None:
        super().__init__()
        net = constructor(weights=None, num_classes=num_classes)  # weights=None: nothing is downloaded
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.avgpool = GlobalAvgPool()  # torchvision's AdaptiveAvgPool2d(1), with a deterministic backward
        self.classifier = net.fc
        self.num_features = net.fc.in_features

    def stage_layers(self, x: torch.Tensor) -> list[Stage]:  # stages[0], the stem, is taken before the max-pool
        return [lambda f: self.layer1(self.maxpool(f)), self.layer2, self.layer3, self.layer4]


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def _conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(Classifier):
    # (out channels, stride) of the depthwise-separable layers, grouped into stages
    STAGES = (
        ((64, 1), (128, 2), (128, 1)),
        ((256, 2), (256, 1)),
        ((512, 2),) + ((512, 1),) * 5,
        ((1024, 2), (1024, 1)),
    )

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32, 2)
        in_channels = 32
        stages = []
        for cfg in self.STAGES:
            layers = []
            for out_channels, stride in cfg:
                layers.append(_conv_dw(in_channels, out_channels, stride))
                in_channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.set_head(in_channels, num_classes)
        init_weights(self)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


@MODELS.register("resnet18", style="imagenet", student_lr=IMAGENET_LR)
def resnet18(num_classes: int) -> TorchvisionResNet:
    from torchvision.models import resnet18 as constructor

    return TorchvisionResNet(constructor, num_classes)


@MODELS.register("resnet34", style="imagenet", student_lr=IMAGENET_LR)
def resnet34(num_classes: int) -> TorchvisionResNet:
    from torchvision.models import resnet34 as constructor

    return TorchvisionResNet(constructor, num_classes)


@MODELS.register("resnet50", style="imagenet", student_lr=IMAGENET_LR)
def resnet50(num_classes: int) -> TorchvisionResNet:
    from torchvision.models import resnet50 as constructor

    return TorchvisionResNet(constructor, num_classes)


@MODELS.register("mobilenetv1", style="imagenet", student_lr=IMAGENET_LR)
def mobilenetv1(num_classes: int) -> MobileNetV1:
    return MobileNetV1(num_classes)
