"""The shared shape of every distillation method: a registry entry (MethodSpec) plus its loss.

Adding a method = one new file in this package that defines its pure loss function, a
Distiller module wrapping it, and calls `register(MethodSpec(...))`; then one import line in
`__init__.py`. Nothing else in the code base names methods.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainables.models.base import Classifier, ModelOutput


class UnknownMethodError(ValueError):
    pass


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


@dataclass(frozen=True)
class Hyperparameter:
    """A named, typed, range-checked knob of a method. Bounds are inclusive; None = unbounded.

    kind is float, int, bool or str. A str knob takes one of a fixed set of `choices` (required for
    str; for a number it optionally restricts the values to that set as well).
    """

    name: str
    default: Any
    kind: type = float  # float, int, bool or str
    low: float | None = None
    high: float | None = None
    help: str = ""
    choices: tuple | None = None  # the allowed values (required for kind=str)

    def __post_init__(self):
        if self.kind not in (float, int, bool, str):
            raise ValueError(f"hyperparameter '{self.name}': kind must be float, int, bool or str, got {self.kind!r}")
        if self.kind is str and not self.choices:
            raise ValueError(f"hyperparameter '{self.name}': a string hyperparameter needs its choices")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))

    def _choices_text(self) -> str:
        return ", ".join(str(c) for c in self.choices)

    def validate(self, value: Any, method: str) -> Any:
        if self.kind is str:
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{method}: hyperparameter '{self.name}' must be one of {self._choices_text()}, "
                                 f"got {value!r}")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{method}: hyperparameter '{self.name}' must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{method}: hyperparameter '{self.name}' must be a number, got {value!r}")
        if self.kind is int:
            if float(value) != int(value):
                raise ValueError(f"{method}: hyperparameter '{self.name}' must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{method}: hyperparameter '{self.name}' must be finite, got {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"{method}: hyperparameter '{self.name}' must be >= {self.low}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{method}: hyperparameter '{self.name}' must be <= {self.high}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{method}: hyperparameter '{self.name}' must be one of {self._choices_text()}, "
                             f"got {value!r}")
        return value


# Knobs every method has. ce_weight scales the cross-entropy on the labels; warmup_epochs
# ramps the distillation term linearly from 1/k to 1 over the first k epochs (DKD's warm-up).
COMMON_HYPERPARAMETERS = (
    Hyperparameter("ce_weight", 1.0, float, 0.0, None, "weight of the cross-entropy on the labels"),
    Hyperparameter("warmup_epochs", 0, int, 0, None, "linear warm-up of the distillation term, in epochs"),
)


@dataclass(frozen=True)
class MethodSpec:
    """A registry entry: how a method is named, what it needs and how it is built.

    build(context, hparams) returns the Distiller, or None for a method without a teacher
    (`ce`, the student trained alone). `defaults_for(dataset_style, teacher_arch,
    student_arch)` returns the method's published defaults for that setting (SPEC section 2),
    overriding the plain defaults of `hyperparameters`.
    """

    name: str
    label: str  # as in the paper's tables: "KD", "DKD", "LTKD", ...
    kind: str  # "none" (no teacher), "logit" or "feature"
    hyperparameters: tuple[Hyperparameter, ...]
    build: Callable[[DistillContext, dict], Distiller | None]
    defaults_for: Callable[[str, str, str], Mapping[str, Any]] | None = None
    description: str = ""
    # Defaults a documented study chose for one dataset, over the style's: {dataset: {knob: value}}.
    studied_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Knobs whose style-level defaults are guesses (neither published nor studied), and why: a run
    # that leaves them at those defaults, on a dataset without a study, is warned in one line.
    guessed_defaults: tuple[str, ...] = ()
    guess_note: str = ""
    _by_name: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in ("none", "logit", "feature"):
            raise ValueError(f"method kind must be none, logit or feature, got {self.kind!r}")
        knobs = {h.name: h for h in COMMON_HYPERPARAMETERS}
        knobs.update({h.name: h for h in self.hyperparameters})
        self._by_name.update(knobs)

    @property
    def needs_teacher(self) -> bool:
        return self.kind != "none"

    @property
    def knobs(self) -> dict[str, Hyperparameter]:
        """Every hyperparameter of the method, the common ones included, by name."""
        return dict(self._by_name)

    def defaults(self, dataset_style: str = "cifar", teacher_arch: str = "", student_arch: str = "",
                 dataset: str = "") -> dict[str, Any]:
        values = {name: knob.default for name, knob in self._by_name.items()}
        if self.defaults_for is not None:
            values.update(self.defaults_for(dataset_style, teacher_arch, student_arch))
        values.update(self.studied_defaults.get(dataset, {}))
        return values

    def guessed_defaults_warning(self, dataset: str, overrides: Mapping[str, Any] | None = None) -> str | None:
        """One line when a run on `dataset` would use defaults that no study backs, else None."""
        if dataset in self.studied_defaults:
            return None
        guessed = [name for name in self.guessed_defaults if name not in (overrides or {})]
        if not guessed:
            return None
        return (f"{self.label}'s defaults for {', '.join(guessed)} on {dataset} are guesses no study backs "
                f"({self.guess_note}); search them or set them")

    def resolve(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        dataset_style: str = "cifar",
        teacher_arch: str = "",
        student_arch: str = "",
        dataset: str = "",
    ) -> dict[str, Any]:
        """Defaults for the setting, updated with `overrides`; every value validated."""
        values = self.defaults(dataset_style, teacher_arch, student_arch, dataset)
        for name, value in (overrides or {}).items():
            if name not in self._by_name:
                known = ", ".join(sorted(self._by_name))
                raise ValueError(f"{self.name}: unknown hyperparameter '{name}' (known: {known})")
            values[name] = value
        return {name: self._by_name[name].validate(value, self.name) for name, value in values.items()}


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in METHODS:
        raise ValueError(f"method '{spec.name}' is registered twice")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise UnknownMethodError(f"unknown method '{name}' (known: {known})") from None


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """Weight of the distillation term at 0-based `epoch`: (epoch + 1) / k for the first k epochs, then 1."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / warmup_epochs)
