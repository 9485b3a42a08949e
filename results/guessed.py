"""The caption's sentence on guessed defaults: which rows' runs kept a default that is a guess.

A guess is a default neither published for the run's dataset nor studied (trainables/guesses.py);
a run "kept" it when its recorded hyperparameter equals that default for its setting, so a value a
search chose, or one set by hand to something else, is not flagged.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable

import pandas as pd

from trainables.guesses import guesses_used, recipe_guess
from trainables.methods import METHODS


def _epochs(record: dict) -> int | None:
    for key in ("planned_epochs", "epoch"):
        value = record.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return int(value)
    return None


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def guessed_by_row(students: pd.DataFrame) -> dict[str, list[str]]:
    """Row key -> the guessed knobs its runs kept (in first-seen order); rows without any left out."""
    out: dict[str, dict[str, None]] = {}
    columns = [c for c in ("row_key", "method", "dataset", "hparams_json", "planned_epochs", "epoch", "teacher_arch",
                           "arch") if c in students]
    for record in students[columns].to_dict("records"):
        method, dataset = record.get("method"), record.get("dataset")
        if method not in METHODS or not isinstance(dataset, str) or not record.get("hparams_json"):
            continue
        try:
            used = guesses_used(METHODS[method], dataset, json.loads(record["hparams_json"]), _epochs(record),
                                _text(record.get("teacher_arch")), _text(record.get("arch")))
        except (ValueError, KeyError):  # a dataset this version does not know
            continue
        if used:
            out.setdefault(record["row_key"], {}).update(dict.fromkeys(used))
    return {key: list(knobs) for key, knobs in out.items()}


def guessed_sentence(trials: pd.DataFrame, label: Callable[[str], str], order: Callable[[str], tuple]) -> str | None:
    """Which rows kept guessed defaults (and which), and the datasets whose training recipe is borrowed."""
    rows = guessed_by_row(trials)
    datasets = sorted({d for d in trials.get("dataset", pd.Series(dtype=object)).dropna() if isinstance(d, str)})
    recipes = [text for text in map(_recipe, datasets) if text]
    if not rows and not recipes:
        return None
    parts = [f"{label(key)} {', '.join(knobs)}" for key, knobs in sorted(rows.items(), key=lambda kv: order(kv[0]))]
    text = ("Guessed defaults (neither published for the dataset nor studied; `ltkd list methods` marks them) kept by "
            + "; ".join(parts) + "." if parts else "")
    if recipes:
        text += (" " if text else "") + "Training recipe guessed: " + "; ".join(recipes) + "."
    return text


def _recipe(dataset: str) -> str | None:
    try:
        return recipe_guess(dataset)
    except (ValueError, KeyError):
        return None
