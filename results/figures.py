"""Figures of a report (PNG, matplotlib's Agg canvas: no display, no pyplot state).

- `per_class_*.png`: per-class test accuracy against class-frequency rank, for the teacher, the
  student and each method of a (dataset, pair, imbalance factor) block, over the training
  counts; Head / Medium / Tail boundaries marked.
- `head_bias_*.png`: the teacher's predicted group probabilities (Head / Medium / Tail mass of its
  softmax on the balanced test set) per epoch, against each group's share of the classes (what
  an unbiased model would give), and every method's final group probabilities.
- `sensitivity_*.png`: accuracy against alpha and against beta over the search trials of a cell
  (the paper's sensitivity figure), coloured by the other parameter.
- `optuna_*.png`: each search cell's history: accuracy per trial number and the best so far
  (from the search-stage rows; no Optuna storage needed).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from results.tables import (
    PROPOSED,
    TEACHER_ROW,
    block_members,
    dataset_label,
    format_factor,
    main_rows,
    method_label,
    method_sort_key,
    table_cells,
    table_trials,
    trial_outcomes,
)
from trainables.data.groups import group_sizes
from trainables.metrics import LABELS

DPI = 120
_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
GROUP_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c")  # head, medium, tail
GROUP_NAMES = ("Head", "Medium", "Tail")


def _slug(*parts) -> str:
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    text = text.replace("->", "-to-").replace("→", "-to-")
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")[:150]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _method_colors(keys: list[str]) -> dict[str, str]:
    palette = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4", "#2ca02c", "#ff7f0e",
               "#7f7f7f", "#aec7e8"]
    out = {TEACHER_ROW: "#000000", "ce": "#7f7f7f", PROPOSED: "#d62728"}
    others = [k for k in keys if k not in out]
    for i, key in enumerate(others):
        out[key] = palette[i % len(palette)]
    return out


def _block_title(block: tuple) -> str:
    dataset, teacher, student, factor = block
    pair = f"{teacher} → {student}" if student else f"teacher {teacher}"
    return f"{dataset_label(dataset)} γ={format_factor(factor)}: {pair}"


def _block_slug(block: tuple) -> str:
    dataset, teacher, student, factor = block
    return _slug(dataset, f"if{format_factor(factor)}", f"{teacher}-to-{student}" if student else teacher)


def _group_sizes(num_classes: int) -> list[int]:
    return group_sizes(num_classes, 3) if num_classes >= 3 else [num_classes]


def _frequency_order(trials: pd.DataFrame, num_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Class indices from most to least frequent, and the counts in that order (None if unknown)."""
    for counts in trials["class_counts"]:
        if counts is not None and len(counts) == num_classes:
            counts = np.asarray(counts, dtype=float)
            order = np.lexsort((np.arange(num_classes), -counts))  # count descending, ties by class
            return order, counts[order]
    return np.arange(num_classes), None  # the LDAM-DRW convention: class 0 is the largest


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return values
    kernel = np.ones(window)
    padded = np.convolve(values, kernel, mode="same")
    norm = np.convolve(np.ones_like(values), kernel, mode="same")
    return padded / norm


def _mean_lists(values) -> np.ndarray | None:
    arrays = [np.asarray(v, dtype=float) for v in values if v is not None and len(v)]
    if not arrays or len({len(a) for a in arrays}) != 1:
        return None
    return np.mean(arrays, axis=0)


# ------------------------------------------------------------------------------ per-class accuracy


def per_class_figures(df: pd.DataFrame, out: Path, select: str = "last-epoch") -> list[Path]:
    trials, _ = table_trials(df, select)
    if trials.empty:
        return []
    written = []
    for block in table_cells(trials):
        rows = main_rows(block_members(trials, block))
        curves = {}
        for key, group in rows.items():
            mean = _mean_lists(group["per_class_acc"])
            if mean is not None:
                curves[key] = (mean, len(group))
        sizes = {len(c[0]) for c in curves.values()}
        if not curves or len(sizes) != 1:
            continue
        num_classes = sizes.pop()
        all_trials = pd.concat(list(rows.values()))
        order, counts = _frequency_order(all_trials, num_classes)
        window = max(1, num_classes // 20)
        rank = np.arange(1, num_classes + 1)
        fig = Figure(figsize=(8.5, 4.8))
        ax = fig.add_subplot(1, 1, 1)
        if counts is not None:
            twin = ax.twinx()
            twin.bar(rank, counts, width=1.0, color="#dddddd", zorder=0)
            twin.set_ylabel("training images per class", color="#888888")
            twin.tick_params(axis="y", colors="#888888")
            twin.set_ylim(0, counts.max() * 1.05)
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
        keys = sorted(curves, key=method_sort_key)
        colours = _method_colors(keys)
        for key in keys:
            mean, n = curves[key]
            y = _smooth(mean[order], window)
            style = dict(color=colours[key], lw=2.2 if key == PROPOSED else 1.4,
                         ls="--" if key == TEACHER_ROW else "-")
            ax.plot(rank, y, label=f"{method_label(key)} (n={n}, mean {mean.mean():.1f}%)", **style)
        start = 0
        for g, size in enumerate(_group_sizes(num_classes)):
            if g:
                ax.axvline(start + 0.5, color="#444444", ls=":", lw=1)
            ax.text(start + size / 2 + 0.5, 1.01, GROUP_NAMES[g] if num_classes >= 3 else "", ha="center",
                    va="bottom", transform=ax.get_xaxis_transform(), fontsize=9)
            start += size
        ax.set_xlim(0.5, num_classes + 0.5)
        ax.set_ylim(0, 100)
        ax.set_xlabel("class rank by training frequency (1 = most frequent)")
        ax.set_ylabel("test accuracy (%)")
        which = "best test epoch" if select == "best-epoch" else "last epoch"
        smooth_note = f"; moving average over {window} classes" if window > 1 else ""
        bars_note = ("grey bars: training images per class" if counts is not None else
                     "training counts not recorded: classes in index order, class 0 assumed most frequent")
        ax.set_title(f"Per-class accuracy, {_block_title(block)}\n(mean over seeds, {which}{smooth_note}; "
                     f"{bars_note})", fontsize=10, pad=16)
        ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
        written.append(_save(fig, out / f"per_class_{_block_slug(block)}.png"))
    return written


# ------------------------------------------------------------------------------ head bias


def head_bias_figures(df: pd.DataFrame, out: Path, select: str = "last-epoch") -> list[Path]:
    trials, _ = table_trials(df, select)
    if trials.empty:
        return []
    epochs = df[(df["row_kind"] == "epoch") & (df["role"] == "teacher") & (df["status"] == "completed")]
    written = []
    for block in table_cells(trials):
        dataset, teacher, student, factor = block
        rows = main_rows(block_members(trials, block))
        teacher_epochs = epochs[(epochs["dataset"] == dataset) & (epochs["arch"] == teacher)
                                & (epochs["imbalance_factor"].astype(float) == factor)]
        per_epoch = []
        for epoch, group in teacher_epochs.groupby("epoch"):
            mean = _mean_lists(group["group_prob"])
            if mean is not None and len(mean) == 3:
                per_epoch.append((int(epoch), mean, group["trial_id"].nunique()))
        finals = {}
        for key, group in rows.items():
            mean = _mean_lists(group["group_prob"])
            if mean is not None and len(mean) == 3:
                finals[key] = mean
        if TEACHER_ROW not in finals:  # the teacher's own runs are not in these results: use what students saw
            seen = [v for group in rows.values() for v in group["teacher_group_prob"] if v is not None and len(v) == 3]
            if seen:
                finals[TEACHER_ROW] = np.mean([np.asarray(v, dtype=float) for v in seen], axis=0)
        if not per_epoch and not finals:
            continue
        num_classes = next((len(v) for v in trials["per_class_acc"] if v is not None and len(v)), None)
        shares = np.asarray(_group_sizes(num_classes), dtype=float) / num_classes if num_classes else None
        fig = Figure(figsize=(11, 4.2))
        left = fig.add_subplot(1, 2, 1)
        right = fig.add_subplot(1, 2, 2)
        if per_epoch:
            x = [e for e, _, _ in per_epoch]
            values = np.stack([m for _, m, _ in per_epoch])
            seeds = max(n for _, _, n in per_epoch)
            for g in range(3):
                left.plot(x, values[:, g], color=GROUP_COLORS[g], lw=1.8, marker="o" if len(x) <= 30 else None,
                          ms=3, label=f"{GROUP_NAMES[g]}")
            if shares is not None:
                for share in sorted(set(np.round(shares, 4))):
                    left.axhline(share, color="#666666", ls="--", lw=1)
            left.set_xlabel("epoch")
            left.xaxis.set_major_locator(MaxNLocator(integer=True))
            left.set_title(f"Teacher {teacher}: predicted group probability per epoch\n(mean of {seeds} run(s))",
                           fontsize=9)
            handles, labels = left.get_legend_handles_labels()
            handles.append(Line2D([], [], color="#666666", ls="--"))
            labels.append("share of the classes (unbiased): " + ", ".join(
                f"{GROUP_NAMES[g][0]} {shares[g]:.2f}" for g in range(3)) if shares is not None else "")
            left.legend(handles, labels, fontsize=8, loc="best")
            left.set_ylim(0, max(1.0 * values.max() * 1.1, 0.6))
        else:
            left.text(0.5, 0.5, "no per-epoch teacher rows in these results", ha="center", va="center",
                      transform=left.transAxes)
            left.set_xticks([])
        left.set_ylabel("mean softmax mass on the group (balanced test set)")
        keys = sorted(finals, key=method_sort_key)
        y = np.arange(len(keys))
        cumulative = np.zeros(len(keys))
        for g in range(3):
            widths = np.array([finals[k][g] for k in keys])
            right.barh(y, widths, left=cumulative, color=GROUP_COLORS[g], label=GROUP_NAMES[g], height=0.7)
            for yi, (start, width) in enumerate(zip(cumulative, widths)):
                if width > 0.08:
                    right.text(start + width / 2, yi, f"{width:.2f}", ha="center", va="center", fontsize=7,
                               color="white")
            cumulative += widths
        if shares is not None:
            for edge in np.cumsum(shares)[:-1]:
                right.axvline(edge, color="#222222", ls="--", lw=1)
        right.set_yticks(y, [method_label(k) for k in keys])
        right.set_ylim(max(len(keys), 4) - 0.5, -0.5)  # first row on top; bars keep their size
        right.set_xlim(0, 1)
        right.set_xlabel("group probability at the selected epoch (dashed: unbiased split)")
        right.set_title("Predicted group mass by method\n(mean over seeds)", fontsize=9)
        right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
        fig.suptitle(f"Head bias, {_block_title(block)}", fontsize=11, y=1.06)
        fig.subplots_adjust(wspace=0.3)
        written.append(_save(fig, out / f"head_bias_{_block_slug(block)}.png"))
    return written


# ------------------------------------------------------------------------------ search stage


def search_outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """Last-epoch outcome of every search trial (what Optuna was told)."""
    outcomes = trial_outcomes(df, "last-epoch")
    if outcomes.empty:
        return outcomes
    return outcomes[outcomes["stage"] == "search"].reset_index(drop=True)


def _cell_key(row) -> str:
    study = row.get("study")
    if study is not None and not (isinstance(study, float) and math.isnan(study)):
        return str(study)
    return str(row.get("cell"))


def _scale(ax, values: np.ndarray, axis: str) -> bool:
    """A log axis when the values are positive and span more than a factor 20; True if so."""
    positive = values[values > 0]
    if len(positive) == len(values) and len(values) and positive.max() / positive.min() > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        return True
    return False


def _objective_of(group: pd.DataFrame, objective: str | None) -> str:
    """The metric to rank a cell's search trials by: the one given, else the one the search recorded
    maximising (schema 2), else overall test accuracy."""
    if objective is not None:
        return objective
    recorded = [v for v in group.get("objective_metric", pd.Series(dtype=object)).dropna().unique()
                if v in group.columns]
    return str(recorded[0]) if len(recorded) == 1 else "acc"


def sensitivity_figures(df: pd.DataFrame, out: Path, objective: str | None = None) -> list[Path]:
    search = search_outcomes(df)
    if search.empty:
        return []
    search = search[search["alpha"].notna() & search["beta"].notna()
                    & search["status"].isin(["completed", "early_stopped"])]
    search = search.assign(_key=[_cell_key(r) for r in search.to_dict("records")])
    written = []
    for cell, group in search.groupby("_key", sort=True):
        cell_objective = _objective_of(group, objective)
        group = group[group[cell_objective].notna()]
        done = group[group["status"] == "completed"]
        stopped = group[group["status"] == "early_stopped"]
        if len(group) < 2:
            continue
        fig = Figure(figsize=(10, 7.2))
        axes = [[fig.add_subplot(2, 2, 1 + 2 * r + c) for c in range(2)] for r in range(2)]
        params = (("alpha", "beta"), ("beta", "alpha"))
        for r, (metric, name) in enumerate((("acc", "All"), ("acc_tail", "Tail"))):
            for c, (x_name, colour_name) in enumerate(params):
                ax = axes[r][c]
                colour_values = group[colour_name].to_numpy(dtype=float)
                positive = colour_values[colour_values > 0]
                if len(positive) == len(colour_values) and positive.max() / positive.min() > 20:
                    norm = mcolors.LogNorm(positive.min(), positive.max())
                else:
                    norm = mcolors.Normalize(colour_values.min(), max(colour_values.max(), colour_values.min() + 1e-9))
                points = ax.scatter(done[x_name], done[metric], c=done[colour_name], cmap="viridis", norm=norm,
                                    s=28, edgecolors="k", linewidths=0.4, label="completed")
                if len(stopped):
                    ax.scatter(stopped[x_name], stopped[metric], marker="x", color="#999999", s=20,
                               label="stopped early (fewer epochs)")
                best = group.loc[group[cell_objective].idxmax()]
                ax.scatter([best[x_name]], [best[metric]], marker="*", s=180, facecolors="none",
                           edgecolors="#d62728", linewidths=1.3,
                           label=f"best trial ({LABELS.get(cell_objective, cell_objective)})")
                if _scale(ax, group[x_name].to_numpy(dtype=float), "x"):
                    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                    ax.xaxis.set_minor_formatter(NullFormatter())
                ax.xaxis.set_major_formatter(_PLAIN)
                ax.set_xlabel(x_name)
                ax.set_ylabel(f"{name} accuracy (%)")
                ax.grid(alpha=0.3)
                colourbar = fig.colorbar(points, ax=ax)
                colourbar.set_label(colour_name)
                if isinstance(norm, mcolors.LogNorm):
                    colourbar.locator = LogLocator(subs=(1.0, 2.0, 5.0))
                    colourbar.ax.yaxis.set_minor_formatter(NullFormatter())
                colourbar.formatter = _PLAIN
                colourbar.update_ticks()
                if r == 0 and c == 0:
                    ax.legend(fontsize=7, loc="best")
        fig.suptitle(f"Sensitivity to alpha and beta (last epoch of {len(group)} search trials): {cell}", fontsize=10)
        fig.tight_layout()
        written.append(_save(fig, out / f"sensitivity_{_slug(cell)}.png"))
    return written


def optuna_history_figures(df: pd.DataFrame, out: Path, objective: str | None = None) -> list[Path]:
    search = search_outcomes(df)
    if search.empty:
        return []
    search = search.assign(_key=[_cell_key(r) for r in search.to_dict("records")])
    written = []
    for key, group in search.groupby("_key", sort=True):
        group = group.copy()
        objective_here = _objective_of(group, objective)
        if group["optuna_trial"].isna().all():
            group["number"] = group["written_at"].rank(method="first").astype(int) - 1
        else:
            fallback = group["optuna_trial"].max() + 1 + group["written_at"].rank(method="first")
            group["number"] = group["optuna_trial"].fillna(fallback).astype(int)
        group = group.sort_values("number")
        scored = group[group["status"].isin(["completed", "early_stopped"]) & group[objective_here].notna()]
        failed = group[~group.index.isin(scored.index)]
        fig = Figure(figsize=(8, 4.2))
        ax = fig.add_subplot(1, 1, 1)
        done = scored[scored["status"] == "completed"]
        stopped = scored[scored["status"] == "early_stopped"]
        ax.scatter(done["number"], done[objective_here], s=26, color="#1f77b4", label="completed", zorder=3)
        if len(stopped):
            ax.scatter(stopped["number"], stopped[objective_here], s=26, facecolors="none", edgecolors="#ff7f0e",
                       label="stopped early (last value)", zorder=3)
        if len(scored):
            best = np.maximum.accumulate(scored[objective_here].to_numpy(dtype=float))
            numbers = scored["number"].to_numpy()
            end = group["number"].max()
            ax.step(np.append(numbers, end), np.append(best, best[-1]), where="post", color="#d62728", lw=1.8,
                    label=f"best so far ({best[-1]:.2f}%)", zorder=2)
        if len(failed):
            ax.scatter(failed["number"], [0.0] * len(failed), marker="x", color="#7f0000", s=30,
                       transform=ax.get_xaxis_transform(), label="errored (no value; on the axis)", zorder=3,
                       clip_on=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Optuna trial number")
        ax.set_ylabel(f"{LABELS.get(objective_here, objective_here)} accuracy at the trial's last epoch (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        cells = ", ".join(sorted(set(group["cell"])))
        title = f"Optuna history: {key}" + (f"\n{cells}" if cells != key else "")
        ax.set_title(title, fontsize=9)
        written.append(_save(fig, out / f"optuna_{_slug(key)}.png"))
    return written


def all_figures(df: pd.DataFrame, out: str | Path, select: str = "last-epoch",
                objective: str | None = None) -> list[Path]:
    """Every figure the results allow; `objective` ranks the search trials (default: the metric
    each search recorded maximising, else acc)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    written += per_class_figures(df, out, select)
    written += head_bias_figures(df, out, select)
    written += sensitivity_figures(df, out, objective)
    written += optuna_history_figures(df, out, objective)
    return written
