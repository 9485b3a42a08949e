"""The shared shape of every distiller: what a method's build function receives and returns.

A method is its registry entry in trainables/methods/<name>.py (torch-free: name, label,
hyperparameters, defaults) plus, for a method with a teacher, its file here: a pure loss
function, a Distiller module wrapping it and `build(context, hparams)`, which the entry names.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainables.models.base import Classifier, ModelOutput


@dataclass(frozen=True)
class DistillContext:
    """What a method may need to build its Distiller, known before training starts."""

    num_classes: int
    class_counts: tuple[int, ...]  # training images per class of the long-tailed set
    student: Classifier | None = None
    teacher: Classifier | None = None
    teacher_arch: str = ""
    student_arch: str = ""
    input_shape: tuple[int, int, int] = (3, 32, 32)  # (channels, height, width), for probing feature shapes


class Distiller(nn.Module):
    """Computes the distillation term of one batch (the engine adds the weighted CE itself).

    Subclasses set `needs_features = True` when they read `stages`/`pooled` of the outputs
    (the engine then runs `forward_features` on both models and keeps the live teacher).
    A Distiller may own trainable modules (ReviewKD's fusion layers): they are optimised with
    the student and saved in its checkpoints.
    """

    needs_features: bool = False

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


# The registry side, re-exported for code that imports it from here.
from trainables.methods.spec import (COMMON_HYPERPARAMETERS, METHODS, Hyperparameter, MethodSpec,  # noqa: E402,F401
                                     UnknownMethodError, get_method, warmup_factor)

__all__ = ["COMMON_HYPERPARAMETERS", "METHODS", "DistillContext", "Distiller", "Hyperparameter", "MethodSpec",
           "UnknownMethodError", "get_method", "warmup_factor"]
