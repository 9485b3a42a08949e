"""Optuna define-by-run search spaces, one per method (SPEC: LTKD's alpha, beta and temperature).

A space is a list of parameters to sample plus fixed values; a sweep config may narrow or widen
any of them, fix one, or search one the default space keeps fixed:

    [methods.search.space]
    alpha = {low = 0.5, high = 4, log = true}
    n_groups = {choices = [3, 10]}      # the group-count study: searched on purpose
    within_norm = {choices = ["sum", "mean"]}
    temperature = 4                     # fixed

LTKD's default space fixes n_groups = 3, the paper's main tables (Head / Medium / Tail): the
group-count study (Table 6) varies it on purpose with an override like the one above
(`paper_group_counts(C)` lists the paper's counts that fit C classes). Searching the count under
within_norm = "sum" also changes the loss scale (the within term sums one KL per group), so that
study should say which norm it used; within_norm stays at its default unless overridden.
Ranges may be functions of the setting (class count, imbalance factor), so a space can adapt to it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainables.registry import Registry

# The paper's group counts (Table 6); n = C is continuous reweighting.
PAPER_GROUP_COUNTS = (3, 4, 5, 10, 20, 25, 50, 100)


@dataclass(frozen=True)
class Param:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None  # categorical (then low/high are unused)
    # (num_classes, imbalance_factor) -> dict of field overrides for this setting, e.g. capped choices
    adapt: Callable[[int, float], dict] | None = None

    def for_setting(self, num_classes: int, imbalance_factor: float) -> "Param":
        if self.adapt is None:
            return self
        return Param(**{**self.__dict__, **self.adapt(num_classes, imbalance_factor), "adapt": None})


@dataclass(frozen=True)
class SearchSpace:
    method: str
    params: tuple[Param, ...] = field(default_factory=tuple)
    # Hyperparameters the default space holds at a value (name, value): a config may search them by an override.
    fixed: tuple[tuple[str, Any], ...] = ()

    def resolved(self, overrides: dict[str, Any], num_classes: int, imbalance_factor: float) -> dict[str, Param | Any]:
        """name -> Param to sample, or a fixed value, after the config's overrides."""
        from trainables.methods import get_method

        knobs = get_method(self.method).knobs
        out: dict[str, Param | Any] = {p.name: p.for_setting(num_classes, imbalance_factor) for p in self.params}
        out.update(dict(self.fixed))
        for name, value in (overrides or {}).items():
            if name not in knobs:
                raise ValueError(f"'{name}' is not a hyperparameter of {self.method} (known: {', '.join(sorted(knobs))})")
            if isinstance(value, dict):
                unknown = set(value) - {"low", "high", "log", "choices"}
                if unknown:
                    raise ValueError(f"{name}: unknown range key '{sorted(unknown)[0]}' (use low, high, log or choices)")
                base = out.get(name) if isinstance(out.get(name), Param) else Param(name, integer=knobs[name].kind is int)
                if "choices" in value:
                    choices = tuple(value["choices"])
                    if not choices:
                        raise ValueError(f"{name}: choices must not be empty")
                    out[name] = Param(name, choices=choices)
                else:
                    low, high = value.get("low", base.low), value.get("high", base.high)
                    if low is None or high is None or not low < high:
                        raise ValueError(f"{name}: need low < high, got low={low}, high={high}")
                    log = bool(value.get("log", base.log))
                    if log and low <= 0:
                        raise ValueError(f"{name}: a log range needs low > 0, got {low}")
                    out[name] = Param(name, low=low, high=high, log=log, integer=base.integer)
            else:
                out[name] = value
        return out

    def check_overrides(self, overrides: dict[str, Any], num_classes: int, imbalance_factor: float) -> None:
        """Raise ValueError naming the problem if the overrides (or the capped defaults) cannot be sampled."""
        from trainables.methods import get_method

        knobs = get_method(self.method).knobs
        for name, param in self.resolved(overrides, num_classes, imbalance_factor).items():
            values = []
            if isinstance(param, Param):
                if param.choices is not None:
                    values = list(param.choices)
                else:
                    values = [param.low, param.high]
            else:
                values = [param]
            for value in values:
                knobs[name].validate(value, self.method)
            if name == "n_groups":
                bad = [v for v in values if v > num_classes]
                if bad:
                    raise ValueError(f"n_groups {bad[0]} is more than the {num_classes} classes")

    def sample(self, trial, overrides: dict[str, Any], num_classes: int, imbalance_factor: float) -> dict[str, Any]:
        """Define-by-run: ask the Optuna trial for every parameter; returns the hyperparameters."""
        values = {}
        for name, param in self.resolved(overrides, num_classes, imbalance_factor).items():
            if not isinstance(param, Param):
                values[name] = param
            elif param.choices is not None:
                values[name] = trial.suggest_categorical(name, list(param.choices))
            elif param.integer:
                values[name] = trial.suggest_int(name, int(param.low), int(param.high), log=param.log)
            else:
                values[name] = trial.suggest_float(name, float(param.low), float(param.high), log=param.log)
        return values


def paper_group_counts(num_classes: int) -> tuple[int, ...]:
    """The paper's group counts (Table 6) that fit `num_classes`, plus C itself (continuous reweighting)."""
    capped = tuple(n for n in PAPER_GROUP_COUNTS if n <= num_classes)
    if num_classes not in capped and num_classes < PAPER_GROUP_COUNTS[-1]:
        capped = capped + (num_classes,)  # continuous reweighting for small class counts
    return capped


# The default space of every searchable method, by method name (a method without one is not searched).
SPACES: Registry[SearchSpace] = Registry("search space", unknown="method '{name}' has no search space (searchable: {known})")


# One rule for the CE weight of every logit method that is searched: it is searched, over the same
# range for all, wide enough to hold every method's published value (KD's CIFAR 0.1 and ImageNet
# 0.5, 1 for DKD, DIST, BKD and LTKD), so no method's search is held at a weight the others escape.
# A method at its defaults (`search = false`) keeps its published CE weight (KD: Hinton's 0.1).
SHARED_CE_WEIGHT = Param("ce_weight", 0.1, 1.0, log=True)


def register_space(space: SearchSpace) -> SearchSpace:
    """Register a method's default space; a logit method's gets the shared CE weight added."""
    from trainables.methods import get_method

    if get_method(space.method).kind == "logit" and "ce_weight" not in {p.name for p in space.params}:
        space = SearchSpace(space.method, space.params + (SHARED_CE_WEIGHT,), space.fixed)
    return SPACES.add(space, space.method)


def ce_weight_rule() -> str:
    """The shared CE-weight rule in words, for captions and listings."""
    p = SHARED_CE_WEIGHT
    return (f"every searched logit method searches its CE weight over [{p.low:g}, {p.high:g}]"
            f"{' (log scale)' if p.log else ''}, which holds each one's published value; "
            f"a method at its defaults keeps its published CE weight")


def param_text(param: "Param | Any") -> str:
    """A resolved space entry as text: a range, a set of choices, or a fixed value."""
    if not isinstance(param, Param):
        return f"= {param}"
    if param.choices is not None:
        return "in {" + ", ".join(str(c) for c in param.choices) + "}"
    return f"{param.low:g}..{param.high:g}{' log' if param.log else ''}"


def get_space(method: str) -> SearchSpace:
    return SPACES.get(method)


# n_groups is fixed at 3 (the paper's tables): searching it would mix the grouping with the loss
# scale under within_norm = "sum" (see above); the group-count study overrides it on purpose.
register_space(SearchSpace("ltkd", (
    Param("alpha", 0.25, 8.0, log=True),
    Param("beta", 0.5, 16.0, log=True),
    Param("temperature", 1.0, 8.0),
), fixed=(("n_groups", 3),)))
register_space(SearchSpace("dkd", (
    Param("alpha", 0.25, 4.0, log=True),
    Param("beta", 0.5, 16.0, log=True),
    Param("temperature", 1.0, 8.0),
)))
register_space(SearchSpace("kd", (
    Param("temperature", 1.0, 8.0),
    Param("kd_weight", 0.1, 1.0),
)))
register_space(SearchSpace("dist", (
    Param("tau", 1.0, 8.0),
    Param("beta", 0.25, 4.0, log=True),
    Param("gamma", 0.25, 4.0, log=True),
)))
register_space(SearchSpace("bkd", (
    Param("temperature", 1.0, 8.0),
)))
register_space(SearchSpace("reviewkd", (
    Param("reviewkd_weight", 0.5, 16.0, log=True),
)))
# CAT-KD's published betas span 1.5 to 600 across pairs: search the scale on a log axis.
register_space(SearchSpace("catkd", (
    Param("beta", 0.5, 1000.0, log=True),
    Param("cam_resolution", choices=(2, 4)),
)))
