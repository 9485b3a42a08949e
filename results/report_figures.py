"""Every figure of a report, in one place: the per-class, head-bias and search figures (results/figures.py)
and the learning curves, search coordinates and group bars (results/method_figures.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from results import figures
from results.method_figures import draw_method_figures


def draw_figures(df: pd.DataFrame, select: str = "last-epoch",
                 objective: str | None = None) -> Iterator[tuple[str, Figure]]:
    """(file stem, figure) of every figure the results allow, one at a time, unsaved."""
    yield from figures._per_class(df, select)
    yield from figures._head_bias(df, select)
    yield from figures._sensitivity(df, objective)
    yield from figures._optuna_history(df, objective)
    yield from draw_method_figures(df, objective)


def all_figures(df: pd.DataFrame, out: str | Path, select: str = "last-epoch",
                objective: str | None = None) -> list[Path]:
    """Every figure the results allow, each as PDF and PNG; returns every file written. `objective`
    ranks the search trials (default: the metric each search recorded maximising, else acc)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return figures._save_all(draw_figures(df, select, objective), out)
