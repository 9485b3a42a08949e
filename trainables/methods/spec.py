"""What a distillation method is, without its loss: a torch-free registry entry.

`MethodSpec` names the method, its label in the paper's tables, what it needs (no teacher, the
teacher's logits or its features), its typed hyperparameters and their published defaults, and
the module that holds its loss (`implementation`, imported only to train). Everything that only
plans, validates or reports (`ltkd status`, `ltkd report`, sweep configs, search spaces) reads
these entries without loading torch.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainables.registry import Registry, UnknownNameError


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
    # Other names this knob answers to: the common name of what it is (DIST's tau is a softmax
    # temperature), used by `--temperature` and by the results store's `temperature` column.
    aliases: tuple[str, ...] = ()

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

    `build(context, hparams)` returns the Distiller from `implementation`, or None for a method
    without a teacher (`ce`, the student trained alone). The defaults of a setting (SPEC section 2)
    are, each over the last: the hyperparameters' own, `style_defaults[style]`, `defaults_for(style,
    teacher_arch, student_arch)` and `studied_defaults[dataset]`.
    """

    name: str
    label: str  # as in the paper's tables: "KD", "DKD", "LTKD", ...
    kind: str  # "none" (no teacher), "logit" or "feature"
    hyperparameters: tuple[Hyperparameter, ...]
    # The module of its loss and Distiller, whose `build(context, hparams)` makes the Distiller;
    # None for a method without a teacher. Imported only when a run builds it (it loads torch).
    implementation: str | None = None
    table_row: int = 100  # the position of its row in the paper's tables (trainables.methods.table_order)
    # The published defaults per dataset style ("cifar", "imagenet"), over the hyperparameters' own.
    style_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Defaults that depend on the teacher-student pair too: (style, teacher_arch, student_arch) -> values.
    defaults_for: Callable[[str, str, str], Mapping[str, Any]] | None = None
    description: str = ""
    # Defaults a documented study chose for one dataset, over the style's: {dataset: {knob: value}}.
    studied_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Defaults that are guesses (neither published nor studied), per dataset style: {style: {knob:
    # why}}. trainables/guesses.py adds what a dataset borrows from another's published configs.
    guesses: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    _by_name: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in ("none", "logit", "feature"):
            raise ValueError(f"method kind must be none, logit or feature, got {self.kind!r}")
        knobs = {h.name: h for h in COMMON_HYPERPARAMETERS}
        knobs.update({h.name: h for h in self.hyperparameters})
        self._by_name.update(knobs)

    def build(self, context, hparams: dict):
        """The method's Distiller for `context` (trainables.distillers.DistillContext), or None without a teacher."""
        if self.implementation is None:
            return None
        return importlib.import_module(self.implementation).build(context, hparams)

    @property
    def needs_teacher(self) -> bool:
        return self.kind != "none"

    @property
    def knobs(self) -> dict[str, Hyperparameter]:
        """Every hyperparameter of the method, the common ones included, by name."""
        return dict(self._by_name)

    def knob_for(self, name: str) -> Hyperparameter | None:
        """The hyperparameter called `name`, or the one that has `name` as an alias; None if neither."""
        if name in self._by_name:
            return self._by_name[name]
        return next((knob for knob in self._by_name.values() if name in knob.aliases), None)

    def defaults(self, dataset_style: str = "cifar", teacher_arch: str = "", student_arch: str = "",
                 dataset: str = "") -> dict[str, Any]:
        values = {name: knob.default for name, knob in self._by_name.items()}
        values.update(self.style_defaults.get(dataset_style, {}))
        if self.defaults_for is not None:
            values.update(self.defaults_for(dataset_style, teacher_arch, student_arch))
        values.update(self.studied_defaults.get(dataset, {}))
        return values

    def guessed_defaults_warning(self, dataset: str, overrides: Mapping[str, Any] | None = None) -> str | None:
        """One line when a run on `dataset` would keep defaults that are guesses, else None."""
        from trainables.guesses import guessed_defaults_warning

        return guessed_defaults_warning(self, dataset, overrides)

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


# Every method, one module each in this package (imported on first read, so a new method is its file).
METHODS: Registry[MethodSpec] = Registry("method", package="trainables.methods")
UnknownMethodError = UnknownNameError


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)


def table_order() -> list[str]:
    """Method names in the order of the paper's table rows (then any other method, alphabetically)."""
    return sorted(METHODS.names(), key=lambda name: (METHODS[name].table_row, name))


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """Weight of the distillation term at 0-based `epoch`: (epoch + 1) / k for the first k epochs, then 1."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / warmup_epochs)
