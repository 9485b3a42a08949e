"""Which runs may share a table cell: one protocol per cell, and n counts distinct seeds.

Runs of one row and block that differ in any of POOL_KEYS (the sweep, the epochs trained, the
selection split, the data seed, the validation holdout) answer different questions: averaging them
would report a number no configuration produced. Such a cell is refused with one note naming what
differs (report the sweeps apart, or run them alike). Within a cell, runs of the same student seed
(several teacher seeds, or the same seed run twice) are averaged first, so n is the number of
distinct seeds, never the number of runs.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable

import pandas as pd

# results column -> how a refusal names it
POOL_KEYS = (("sweep", "sweep"), ("planned_epochs", "epochs"), ("selection", "selection"),
             ("data_seed", "data seed"), ("validation_per_class", "holdout per class"))


def _present(values: Iterable) -> list:
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        out.append(value.item() if hasattr(value, "item") else value)
    return out


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def pooling_conflict(trials: pd.DataFrame, across_sweeps: bool = False) -> str | None:
    """What the runs of one cell differ in ("epochs 10, 30; sweep a, b"), or None when they agree.
    `across_sweeps`: the sweep may differ (a teacher that several sweeps reuse and each records)."""
    parts = []
    for column, name in POOL_KEYS:
        if column not in trials or (across_sweeps and column == "sweep"):
            continue
        values = sorted(set(_present(trials[column])), key=repr)
        if len(values) > 1:
            parts.append(f"{name} {', '.join(_shown(v) for v in values)}")
    return "; ".join(parts) or None


def refuse_mixed(per_block: dict, label_of: Callable[[object], str], block_text: Callable[[tuple], str],
                 shared: tuple = ()) -> list[str]:
    """Drop (in place) every cell whose runs mix protocols; one note per dropped cell. Rows in
    `shared` (the teacher) may come from several sweeps."""
    notes = []
    for block, rows in per_block.items():
        for key in list(rows):
            conflict = pooling_conflict(rows[key], across_sweeps=key in shared)
            if conflict:
                del rows[key]
                notes.append(f"Not pooled: {label_of(key)} at {block_text(block)} mixes runs that differ in "
                             f"{conflict}; its cell is left empty (report them apart, or run them alike).")
    return notes


def per_seed(trials: pd.DataFrame, metric: str) -> list[float]:
    """One value per distinct seed (the mean of that seed's runs); runs without a seed count alone."""
    by_seed: dict = {}
    alone = []
    for seed, value in zip(trials["seed"] if "seed" in trials else [None] * len(trials), trials[metric]):
        if value is None or not math.isfinite(float(value)):
            continue
        if seed is None or (isinstance(seed, float) and math.isnan(seed)):
            alone.append(float(value))
        else:
            by_seed.setdefault(int(seed), []).append(float(value))
    return [statistics.fmean(v) for _, v in sorted(by_seed.items())] + alone
