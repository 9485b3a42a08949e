"""Which baseline the Δ row compares LTKD with, chosen without looking at the numbers it reports.

One comparator per column block (dataset, pair, imbalance factor), used for every metric column of
the block: the baseline (any student method but LTKD) with the highest mean validation accuracy
(`val_acc`) over its final runs. The test columns the Δ row reports never choose it. When some
baseline has no validation accuracy (selection "test", no holdout, results from before the split),
validation cannot decide: the comparator is then the one with the highest mean test accuracy (All),
`basis` says "test", and the captions mark it as chosen on the data it is reported on.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

VALIDATION_METRIC = "val_acc"
TEST_FALLBACK_METRIC = "acc"


@dataclass(frozen=True)
class Comparator:
    key: str  # the baseline's row key (method name)
    basis: str  # "validation" or "test"
    score: float  # its mean of the metric it was chosen on


def _mean(trials: pd.DataFrame, metric: str) -> float | None:
    if metric not in trials:
        return None
    values = [float(v) for v in trials[metric] if v is not None and math.isfinite(float(v))]
    return statistics.fmean(values) if values else None


def choose_comparator(rows: Mapping[str, pd.DataFrame], exclude: tuple[str, ...]) -> Comparator | None:
    """The comparator among `rows` (row key -> the block's final runs of that row, in table order)
    other than `exclude`; the first of equal means wins. None when no baseline ran."""
    candidates = [(key, trials) for key, trials in rows.items() if key not in exclude and len(trials)]
    if not candidates:
        return None
    validation = [(key, _mean(trials, VALIDATION_METRIC)) for key, trials in candidates]
    if all(score is not None for _, score in validation):
        key, score = max(validation, key=lambda kv: kv[1])
        return Comparator(key, "validation", score)
    test = [(key, _mean(trials, TEST_FALLBACK_METRIC)) for key, trials in candidates]
    test = [(key, score) for key, score in test if score is not None]
    if not test:
        return None
    key, score = max(test, key=lambda kv: kv[1])
    return Comparator(key, "test", score)
