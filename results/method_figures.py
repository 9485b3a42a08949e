"""More figures of a report (beside results/figures.py, same conventions: Agg canvas, PDF + PNG).

- `curves_*`: student learning curves per method, one figure per (dataset, pair, imbalance
  factor): validation and test accuracy per epoch, the mean over the final runs' seeds with a
  ± 1 sample standard deviation band. Epochs that skipped the test set (`test_every`) are left
  out of the test panel.
- `coordinates_*`: a parallel-coordinates plot per search cell: one line per search trial
  through every numeric hyperparameter that varied and the search's objective, each axis scaled
  to its own range (log when it spans more than a factor 20), coloured by the objective.
- `groups_*`: Head / Medium / Tail test accuracy per method, one figure per (dataset, pair,
  imbalance factor): bars at the mean over seeds, whiskers ± 1 sample standard deviation.

Every number drawn is read from the Parquet rows (`read_results`), never recomputed from runs.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from results.figures import (GROUP_COLORS, GROUP_NAMES, SPREAD_ALPHA, _block_slug, _block_title, _hparams, _is_number,
                             _method_colors, _objective_of, _save_all, _slug, cell_title, search_cells)
from results.tables import (PROPOSED, TEACHER_ROW, block_members, main_rows, method_label, method_sort_key,
                            table_cells, table_trials)
from trainables.metrics import LABELS

CURVE_METRICS = (("val_acc", "validation accuracy (%)"), ("acc", "test accuracy (%)"))
GROUP_METRICS = ("acc_head", "acc_medium", "acc_tail")


def _student_rows(df: pd.DataFrame) -> Iterator[tuple[tuple, dict[str, pd.DataFrame]]]:
    """(block, {method key: its trials}) of every column block, the main table's rows without the teacher."""
    trials, _ = table_trials(df, "last-epoch")
    if trials.empty:
        return
    for block in table_cells(trials):
        rows = {k: v for k, v in main_rows(block_members(trials, block)).items() if k != TEACHER_ROW}
        if rows:
            yield block, dict(sorted(rows.items(), key=lambda item: method_sort_key(item[0])))


def curve_stats(epochs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per epoch: the mean, sample std (NaN for one seed) and count of `metric` over the given trials."""
    known = epochs[epochs[metric].notna()]
    stats = known.groupby("epoch")[metric].agg(["mean", "std", "count"]).reset_index()
    return stats.sort_values("epoch")


def _curves(df: pd.DataFrame) -> Iterator[tuple[str, Figure]]:
    epochs = df[df["row_kind"] == "epoch"]
    for block, rows in _student_rows(df):
        colours = _method_colors(list(rows))
        fig = Figure(figsize=(11, 4.4))
        drawn = False
        for index, (metric, label) in enumerate(CURVE_METRICS):
            ax = fig.add_subplot(1, 2, index + 1)
            for key, trials in rows.items():
                mine = epochs.merge(trials[["sweep", "trial_id"]], on=["sweep", "trial_id"])
                stats = curve_stats(mine, metric) if metric in mine else pd.DataFrame()
                if stats.empty:
                    continue
                x, y = stats["epoch"].to_numpy(), stats["mean"].to_numpy()
                ax.plot(x, y, color=colours[key], lw=2.2 if key == PROPOSED else 1.4, gid=f"{metric}:{key}",
                        label=f"{method_label(key)} (n={len(trials)})")
                spread = stats["std"].to_numpy()
                if np.isfinite(spread).any():
                    ax.fill_between(x, y - np.nan_to_num(spread), y + np.nan_to_num(spread), color=colours[key],
                                    alpha=SPREAD_ALPHA, lw=0, gid=f"band:{metric}:{key}")
                drawn = True
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8, loc="lower right")
        if not drawn:
            continue
        fig.suptitle(f"Student learning curves, {_block_title(block)}\nmean over seeds, shaded ± 1 sample std",
                     fontsize=10)
        fig.tight_layout()
        yield f"curves_{_block_slug(block)}", fig


def coordinate_axes(group: pd.DataFrame, objective: str) -> tuple[list[str], np.ndarray]:
    """The axes of a cell's parallel-coordinates plot (numeric hyperparameters that varied, then the
    objective) and the trials' values on them (one row per scored trial, NaN where a trial lacks one)."""
    params = _hparams(group)
    names = []
    for name in sorted({n for p in params for n in p}):
        values = [p.get(name) for p in params]
        if all(_is_number(v) for v in values) and len(set(values)) > 1:
            names.append(name)
    table = np.array([[float(p[n]) for n in names] + [float(v)] for p, v in zip(params, group[objective])],
                     dtype=float).reshape(len(group), len(names) + 1)
    return [*names, objective], table


def _normalised(column: np.ndarray) -> tuple[np.ndarray, bool]:
    """A column mapped to [0, 1] (log-scaled when positive and spanning more than 20x); True if log."""
    log = bool(len(column) and (column > 0).all() and column.max() / column.min() > 20)
    values = np.log(column) if log else column
    low, high = values.min(), values.max()
    return (np.full_like(values, 0.5) if high == low else (values - low) / (high - low)), log


def _coordinates(df: pd.DataFrame, objective: str | None) -> Iterator[tuple[str, Figure]]:
    for key, group in search_cells(df):
        metric = _objective_of(group, objective)
        scored = group[group["status"].isin(["completed", "early_stopped"]) & group[metric].notna()]
        if len(scored) < 2:
            continue
        names, table = coordinate_axes(scored, metric)
        if len(names) < 2:
            continue
        columns = [_normalised(table[:, i]) for i in range(table.shape[1])]
        ys = np.stack([c[0] for c in columns], axis=1)
        fig = Figure(figsize=(1.9 * len(names) + 2, 4.6))
        ax = fig.add_subplot(1, 1, 1)
        norm = Normalize(table[:, -1].min(), table[:, -1].max())
        cmap = colormaps["viridis"]
        xs = np.arange(len(names))
        for row, trial_id, value in zip(ys, scored["trial_id"], table[:, -1]):
            ax.plot(xs, row, color=cmap(norm(value)), lw=1.4, alpha=0.85, gid=f"trial:{trial_id}")
        for i, (name, (column, log)) in enumerate(zip(names, columns)):
            ax.axvline(i, color="#444444", lw=0.8)
            low, high = table[:, i].min(), table[:, i].max()
            ax.text(i, -0.06, f"{low:.3g}", ha="center", va="top", fontsize=8)
            ax.text(i, 1.06, f"{high:.3g}", ha="center", va="bottom", fontsize=8)
            if log:
                ax.text(i, -0.15, "(log)", ha="center", va="top", fontsize=7, color="#666666")
        ax.set_xticks(xs, [LABELS.get(n, n) if n == metric else n for n in names])
        ax.set_ylim(-0.2, 1.15)
        ax.set_yticks([])
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"{LABELS.get(metric, metric)} (%)")
        ax.set_title(f"Search trials, {cell_title(scored)}\n({len(scored)} scored trials; each axis from its "
                     "lowest to its highest value)", fontsize=9)
        yield f"coordinates_{_slug(key)}", fig


def _groups(df: pd.DataFrame) -> Iterator[tuple[str, Figure]]:
    for block, rows in _student_rows(df):
        keys = list(rows)
        fig = Figure(figsize=(max(6.0, 1.3 * len(keys) + 2), 4.2))
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / len(GROUP_METRICS)
        for g, metric in enumerate(GROUP_METRICS):
            means = [rows[k][metric].mean() for k in keys]
            spreads = [rows[k][metric].std() if len(rows[k]) > 1 else 0.0 for k in keys]
            x = np.arange(len(keys)) + (g - 1) * width
            bars = ax.bar(x, means, width, yerr=spreads, capsize=3, color=GROUP_COLORS[g], label=GROUP_NAMES[g])
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)  # a 0% tail has no bar to see
        ax.set_xticks(np.arange(len(keys)), [f"{method_label(k)}\n(n={len(rows[k])})" for k in keys])
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Head / Medium / Tail accuracy, {_block_title(block)}\nmean over seeds at the last epoch, "
                     "whiskers ± 1 sample std", fontsize=10)
        yield f"groups_{_block_slug(block)}", fig


def draw_method_figures(df: pd.DataFrame, objective: str | None = None) -> Iterator[tuple[str, Figure]]:
    """(file stem, figure) of the learning curves, search coordinates and group bars, unsaved."""
    yield from _curves(df)
    yield from _coordinates(df, objective)
    yield from _groups(df)


def method_figures(df: pd.DataFrame, out: str | Path, objective: str | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return _save_all(draw_method_figures(df, objective), out)
