"""The model zoo and its one registry.

`MODELS` maps an architecture name to a `ModelSpec`; `create_model(name, num_classes)` builds it.
CIFAR-style models (used at 32x32 for CIFAR-100 and 64x64 for TinyImageNet) and ImageNet-style
models share the `Classifier` interface (`forward` -> logits, `forward_features` -> ModelOutput).

Each architecture registers itself in its own file (`@MODELS.register(name, style=..., student_lr=...)`
on its constructor); the registry imports every module of this package when it is first read, so a
new model is a new file here. The imports below export the classes and fix the registry's order.

The CIFAR ResNet50 is registered as "resnet50_cifar"; "resnet50" is torchvision's ImageNet one.
"""
from __future__ import annotations

from ._registry import CIFAR_LIGHT_LR, CIFAR_LR, IMAGENET_LR, MODELS, ModelSpec
from .base import Classifier, ModelOutput
from .resnet_cifar import CifarResNet
from .resnet50_cifar import CifarResNet50
from .vgg import VGG
from .wrn import WideResNet
from .shufflenetv1 import ShuffleNetV1
from .mobilenetv2 import MobileNetV2
from .imagenet import MobileNetV1, TorchvisionResNet


def list_models(style: str | None = None) -> list[str]:
    """Registered architecture names (optionally only one style), in registry order."""
    return [n for n, s in MODELS.items() if style is None or s.style == style]


def create_model(name: str, num_classes: int) -> Classifier:
    """Build a freshly initialised model; ValueError (the registry's UnknownNameError) for an unknown
    name, ValueError for num_classes < 1."""
    spec = MODELS[name]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r} for architecture {name!r}")
    return spec.constructor(num_classes)


__all__ = [
    "MODELS",
    "ModelSpec",
    "ModelOutput",
    "Classifier",
    "create_model",
    "list_models",
    "CIFAR_LR",
    "CIFAR_LIGHT_LR",
    "IMAGENET_LR",
    "CifarResNet",
    "CifarResNet50",
    "VGG",
    "WideResNet",
    "ShuffleNetV1",
    "MobileNetV2",
    "MobileNetV1",
    "TorchvisionResNet",
]
