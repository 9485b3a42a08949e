"""The architecture registry, `MODELS`, and what an entry is: each model file registers its
constructors here, next to their definition:

    @MODELS.register("resnet8", style="cifar", student_lr=CIFAR_LR)
    def resnet8(num_classes): ...

A module of its own (underscore: the registry's package scan skips it) so model files import it
without importing the package's `__init__`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

from trainables.registry import Registry

if TYPE_CHECKING:
    from .base import Classifier

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


MODELS: Registry[ModelSpec] = Registry(
    "architecture",
    package="trainables.models",
    make=lambda name, constructor, style, student_lr: ModelSpec(name, constructor, style, student_lr),
)
