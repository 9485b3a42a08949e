"""The model zoo and its one registry.

`MODELS` maps an architecture name to a `ModelSpec`; `create_model(name, num_classes)` builds it.
CIFAR-style models (used at 32x32 for CIFAR-100 and 64x64 for TinyImageNet) and ImageNet-style
models share the `Classifier` interface (`forward` -> logits, `forward_features` -> ModelOutput).

The CIFAR ResNet50 is registered as "resnet50_cifar"; "resnet50" is torchvision's ImageNet one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from .base import Classifier, ModelOutput
from .imagenet import MobileNetV1, TorchvisionResNet, mobilenetv1, resnet18, resnet34, resnet50
from .mobilenetv2 import MobileNetV2, mobilenetv2
from .resnet50_cifar import CifarResNet50, resnet50_cifar
from .resnet_cifar import CifarResNet, resnet8, resnet8x4, resnet20, resnet32, resnet32x4, resnet56
from .shufflenetv1 import ShuffleNetV1, shufflenetv1
from .vgg import VGG, vgg8, vgg13
from .wrn import WideResNet, wrn_40_1, wrn_40_2

# the recipes' learning rates (SPEC section 5)
CIFAR_LR = 0.05
CIFAR_LIGHT_LR = 0.01  # ShuffleNet / MobileNet students
IMAGENET_LR = 0.2


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture.

    name: registry key. constructor: num_classes -> Classifier. style: "cifar" (32x32 and 64x64
    inputs, CIFAR recipe) or "imagenet" (224x224, ImageNet recipe). student_lr: the default
    learning rate when this model is trained as a student under its style's recipe: CIFAR 0.05,
    0.01 for ShuffleNetV1 and MobileNetV2; ImageNet 0.2 (batch 512).
    """

    name: str
    constructor: Callable[[int], Classifier]
    style: Literal["cifar", "imagenet"]
    student_lr: float


def _spec(name: str, constructor: Callable[[int], Classifier], style: str, lr: float) -> tuple[str, ModelSpec]:
    return name, ModelSpec(name, constructor, style, lr)  # type: ignore[arg-type]


MODELS: dict[str, ModelSpec] = dict(
    [
        _spec("resnet8x4", resnet8x4, "cifar", CIFAR_LR),
        _spec("resnet32x4", resnet32x4, "cifar", CIFAR_LR),
        _spec("resnet8", resnet8, "cifar", CIFAR_LR),
        _spec("resnet20", resnet20, "cifar", CIFAR_LR),
        _spec("resnet32", resnet32, "cifar", CIFAR_LR),
        _spec("resnet56", resnet56, "cifar", CIFAR_LR),
        _spec("resnet50_cifar", resnet50_cifar, "cifar", CIFAR_LR),
        _spec("vgg8", vgg8, "cifar", CIFAR_LR),
        _spec("vgg13", vgg13, "cifar", CIFAR_LR),
        _spec("wrn_40_1", wrn_40_1, "cifar", CIFAR_LR),
        _spec("wrn_40_2", wrn_40_2, "cifar", CIFAR_LR),
        _spec("shufflenetv1", shufflenetv1, "cifar", CIFAR_LIGHT_LR),
        _spec("mobilenetv2", mobilenetv2, "cifar", CIFAR_LIGHT_LR),
        _spec("resnet18", resnet18, "imagenet", IMAGENET_LR),
        _spec("resnet34", resnet34, "imagenet", IMAGENET_LR),
        _spec("resnet50", resnet50, "imagenet", IMAGENET_LR),
        _spec("mobilenetv1", mobilenetv1, "imagenet", IMAGENET_LR),
    ]
)


def list_models(style: str | None = None) -> list[str]:
    """Registered architecture names (optionally only one style), in registry order."""
    return [n for n, s in MODELS.items() if style is None or s.style == style]


def create_model(name: str, num_classes: int) -> Classifier:
    """Build a freshly initialised model; ValueError for an unknown name or num_classes < 1."""
    spec = MODELS.get(name)
    if spec is None:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(MODELS)})")
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
    "CifarResNet",
    "CifarResNet50",
    "VGG",
    "WideResNet",
    "ShuffleNetV1",
    "MobileNetV2",
    "MobileNetV1",
    "TorchvisionResNet",
]
