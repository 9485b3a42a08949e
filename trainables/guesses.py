"""Which defaults of a run are guesses, and why: neither published for its dataset nor studied.

Three sources, in this order: a method's own guesses per dataset style (`MethodSpec.guesses`: LTKD's
values, which the paper lost; DIST's ImageNet loss weight); any default of a style that was
published for another dataset of that style (`PUBLISHED_ON`: TinyImageNet and digits borrow CIFAR-100's
method defaults); minus what a study chose for the dataset (`MethodSpec.studied_defaults`). The
training recipe (SPEC section 5) is a guess in the same way on a dataset that falls back to its
style's recipe. Torch-free: `ltkd list`, the warnings of `ltkd train` and `ltkd sweep`, and the
report's captions all read these functions.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The dataset whose public configs each style's published defaults come from.
PUBLISHED_ON = {"cifar": "cifar100", "imagenet": "imagenet"}


def _style(dataset: str) -> str:
    from trainables.data.sources import get_dataset

    return get_dataset(dataset).style


def guessed_defaults(spec, dataset: str, teacher_arch: str = "", student_arch: str = "") -> dict[str, str]:
    """Knob -> why its default is a guess, for method `spec` (a MethodSpec) on `dataset`."""
    style = _style(dataset)
    out = dict(spec.guesses.get(style, {}))
    published = PUBLISHED_ON.get(style)
    if published is not None and dataset != published:
        borrowed = set(spec.style_defaults.get(style, {}))
        if spec.defaults_for is not None:
            borrowed |= set(spec.defaults_for(style, teacher_arch, student_arch))
        for knob in sorted(borrowed):
            out.setdefault(knob, f"{published}'s, borrowed for {dataset}")
    for knob in spec.studied_defaults.get(dataset, {}):
        out.pop(knob, None)
    return out


def recipe_guess(dataset: str) -> str | None:
    """Why `dataset`'s training recipe (epochs, batch, lr, ...) is a guess, or None when it has its own."""
    from trainables.config import RECIPES

    style = _style(dataset)
    published = PUBLISHED_ON.get(style)
    if dataset in RECIPES or published is None or dataset == published:
        return None
    return f"{published}'s recipe, borrowed for {dataset}"


def guesses_used(spec, dataset: str, hparams: Mapping[str, Any], epochs: int | None = None,
                 teacher_arch: str = "", student_arch: str = "") -> list[str]:
    """The guessed knobs a recorded run kept at their default (`hparams`: what it trained with).

    A warm-up default is scaled to the run's length (trainables.config), so it is compared scaled.
    """
    from trainables.config import RECIPES

    style = _style(dataset)
    defaults = spec.defaults(style, teacher_arch, student_arch, dataset)
    used = []
    for knob in guessed_defaults(spec, dataset, teacher_arch, student_arch):
        default = defaults.get(knob)
        if knob == "warmup_epochs" and default and epochs:
            default = max(1, round(default * epochs / RECIPES[style]["epochs"]))
        if knob in hparams and hparams[knob] == default:
            used.append(knob)
    return used


def guessed_defaults_warning(spec, dataset: str, overrides: Mapping[str, Any] | None = None) -> str | None:
    """One line when a run of `spec` on `dataset` keeps defaults that are guesses, else None."""
    guessed = {k: why for k, why in guessed_defaults(spec, dataset).items() if k not in (overrides or {})}
    if not guessed:
        return None
    reasons = "; ".join(dict.fromkeys(guessed.values()))
    return (f"{spec.label}'s defaults for {', '.join(guessed)} on {dataset} are guesses no study backs "
            f"({reasons}); search them or set them")
