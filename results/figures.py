"""Figures of a report (matplotlib's Agg canvas: no display, no pyplot state). Every figure is
written twice under one stem: `<stem>.pdf` (vector, for a paper) and `<stem>.png` (at `DPI`).

- `per_class_*`: per-class test accuracy against class-frequency rank, for the teacher, the
  student and each method of a (dataset, pair, imbalance factor) block, over the training
  counts; Head / Medium / Tail boundaries marked. Each curve is the mean over seeds, shaded
  ± 1 sample standard deviation over seeds (n in the legend).
- `head_bias_*`: the teacher's predicted group probabilities (Head / Medium / Tail mass of its
  softmax on the balanced test set) per epoch, against each group's share of the classes (what
  an unbiased model would give), and every method's final group probabilities; means over
  seeds with ± 1 sample standard deviation (shaded, and whiskers on the bars' boundaries).
- `sensitivity_*`: test accuracy (All and Tail) against every hyperparameter that took more than
  one value over a cell's search trials, one panel each (`sensitivity_panels`; categorical ones
  as strips), plus Optuna's fANOVA importance of those hyperparameters for the search's
  objective, computed on an in-memory study rebuilt from the Parquet rows (`param_importances`)
  when there are enough completed trials.
- `optuna_*`: each search cell's history: accuracy per trial number and the best so far
  (from the search-stage rows; no Optuna storage needed).
- `curves_*`, `coordinates_*`, `groups_*`: results/method_figures.py.

Titles read like a paper's (method, dataset, γ, pair); file names keep the slugs.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
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
    value_text,
)
from trainables.data.groups import group_sizes
from trainables.metrics import LABELS

DPI = 200  # the PNG's resolution; the PDF is vector
FORMATS = ("pdf", "png")  # every figure is written in each, under one stem
_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
GROUP_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c")  # head, medium, tail
GROUP_NAMES = ("Head", "Medium", "Tail")
SPREAD_ALPHA = 0.15  # opacity of the ± 1 std bands
MIN_IMPORTANCE_TRIALS = 5  # completed search trials needed for the importance panel

def _slug(*parts) -> str:
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    text = text.replace("->", "-to-").replace("→", "-to-")
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")[:150]


def _save(fig: Figure, out: Path, stem: str) -> list[Path]:
    """Writes `fig` as `<stem>.pdf` and `<stem>.png` in `out`; returns both paths."""
    FigureCanvasAgg(fig)
    paths = []
    for extension in FORMATS:
        path = out / f"{stem}.{extension}"
        metadata = {"CreationDate": None} if extension == "pdf" else None  # the same results, the same PDF
        fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return paths


def _save_all(figures: Iterable[tuple[str, Figure]], out: Path) -> list[Path]:
    written = []
    for stem, fig in figures:
        written += _save(fig, out, stem)
    return written


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _method_colors(keys: list[str]) -> dict[str, str]:
    palette = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4", "#2ca02c", "#ff7f0e",
               "#7f7f7f", "#aec7e8"]
    out = {TEACHER_ROW: "#000000", "ce": "#7f7f7f", PROPOSED: "#d62728"}
    others = [k for k in keys if k not in out]
    for i, key in enumerate(others):
        out[key] = palette[i % len(palette)]
    return out


def _pair_text(teacher: str | None, student: str | None) -> str:
    if _missing(teacher) or not teacher:
        return str(student)
    return f"{teacher} → {student}" if student else f"teacher {teacher}"


def _block_title(block: tuple) -> str:
    """'CIFAR-100-LT, γ=100, resnet32x4 → resnet8x4': how a paper names a column block."""
    dataset, teacher, student, factor = block
    return f"{dataset_label(dataset)}, γ={format_factor(factor)}, {_pair_text(teacher, student)}"


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


def _stack_lists(values) -> np.ndarray | None:
    """The runs' lists as one array (runs x length); None if there are none or their lengths differ."""
    arrays = [np.asarray(v, dtype=float) for v in values if v is not None and len(v)]
    if not arrays or len({len(a) for a in arrays}) != 1:
        return None
    return np.stack(arrays)


def _spread(stack: np.ndarray) -> np.ndarray | None:
    """Sample standard deviation (ddof 1) over the runs (rows); None with one run."""
    return stack.std(axis=0, ddof=1) if len(stack) > 1 else None


def _runs_text(n: int, what: str = "run") -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


# ------------------------------------------------------------------------------ per-class accuracy


def _per_class(df: pd.DataFrame, select: str) -> Iterator[tuple[str, Figure]]:
    trials, _ = table_trials(df, select)
    if trials.empty:
        return
    for block in table_cells(trials):
        rows = main_rows(block_members(trials, block))
        curves = {}
        for key, group in rows.items():
            stack = _stack_lists(group["per_class_acc"])
            if stack is not None:
                curves[key] = stack
        sizes = {c.shape[1] for c in curves.values()}
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
        banded = False
        for key in keys:
            stack = curves[key]
            smoothed = np.stack([_smooth(run[order], window) for run in stack])  # per seed, by rank
            y = smoothed.mean(axis=0)
            style = dict(color=colours[key], lw=2.2 if key == PROPOSED else 1.4,
                         ls="--" if key == TEACHER_ROW else "-")
            ax.plot(rank, y, label=f"{method_label(key)} (n={len(stack)}, mean {stack.mean():.1f}%)", **style)
            spread = _spread(smoothed)
            if spread is not None:
                ax.fill_between(rank, np.clip(y - spread, 0, 100), np.clip(y + spread, 0, 100),
                                color=colours[key], alpha=SPREAD_ALPHA, lw=0)
                banded = True
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
        band_note = " (shaded: ± 1 sample std over seeds)" if banded else ""
        smooth_note = f"; moving average over {window} classes" if window > 1 else ""
        bars_note = ("grey bars: training images per class" if counts is not None else
                     "training counts not recorded: classes in index order, class 0 assumed most frequent")
        ax.set_title(f"Per-class accuracy, {_block_title(block)}\nmean over n seeds{band_note}, {which}"
                     f"{smooth_note}\n{bars_note}", fontsize=10, pad=16)
        ax.legend(fontsize=8, loc="lower left", framealpha=0.9)  # head classes: accurate, so the curves are high
        yield f"per_class_{_block_slug(block)}", fig


def per_class_figures(df: pd.DataFrame, out: Path, select: str = "last-epoch") -> list[Path]:
    return _save_all(_per_class(df, select), out)


# ------------------------------------------------------------------------------ head bias


def _teacher_seen(rows: dict[str, pd.DataFrame]) -> np.ndarray | None:
    """The teacher's group probabilities as its students recorded them: one per teacher checkpoint."""
    seen: dict[Any, Any] = {}
    for group in rows.values():
        for teacher, value in zip(group["teacher"], group["teacher_group_prob"]):
            if value is not None and len(value) == 3:
                seen.setdefault(None if _missing(teacher) else teacher, value)
    return _stack_lists(seen.values())


def _head_bias(df: pd.DataFrame, select: str) -> Iterator[tuple[str, Figure]]:
    trials, _ = table_trials(df, select)
    if trials.empty:
        return
    epochs = df[(df["row_kind"] == "epoch") & (df["role"] == "teacher") & (df["status"] == "completed")]
    for block in table_cells(trials):
        dataset, teacher, student, factor = block
        rows = main_rows(block_members(trials, block))
        teacher_epochs = epochs[(epochs["dataset"] == dataset) & (epochs["arch"] == teacher)
                                & (epochs["imbalance_factor"].astype(float) == factor)]
        per_epoch = []
        for epoch, group in teacher_epochs.groupby("epoch"):
            stack = _stack_lists(group["group_prob"])
            if stack is not None and stack.shape[1] == 3:
                per_epoch.append((int(epoch), stack))
        finals = {}
        for key, group in rows.items():
            stack = _stack_lists(group["group_prob"])
            if stack is not None and stack.shape[1] == 3:
                finals[key] = stack
        if TEACHER_ROW not in finals:  # the teacher's own runs are not in these results: use what students saw
            seen = _teacher_seen(rows)
            if seen is not None:
                finals[TEACHER_ROW] = seen
        if not per_epoch and not finals:
            continue
        num_classes = next((len(v) for v in trials["per_class_acc"] if v is not None and len(v)), None)
        shares = np.asarray(_group_sizes(num_classes), dtype=float) / num_classes if num_classes else None
        fig = Figure(figsize=(11, 4.2))
        left = fig.add_subplot(1, 2, 1)
        right = fig.add_subplot(1, 2, 2)
        if per_epoch:
            x = [e for e, _ in per_epoch]
            values = np.stack([s.mean(axis=0) for _, s in per_epoch])
            seeds = max(len(s) for _, s in per_epoch)
            spreads = [_spread(s) for _, s in per_epoch]
            for g in range(3):
                left.plot(x, values[:, g], color=GROUP_COLORS[g], lw=1.8, marker="o" if len(x) <= 30 else None,
                          ms=3, label=f"{GROUP_NAMES[g]}")
                if seeds > 1:
                    sd = np.array([0.0 if s is None else s[g] for s in spreads])
                    left.fill_between(x, values[:, g] - sd, values[:, g] + sd, color=GROUP_COLORS[g],
                                      alpha=SPREAD_ALPHA, lw=0)
            if shares is not None:
                for share in sorted(set(np.round(shares, 4))):
                    left.axhline(share, color="#666666", ls="--", lw=1)
            left.set_xlabel("epoch")
            left.xaxis.set_major_locator(MaxNLocator(integer=True))
            spread_note = ", shaded: ± 1 sample std" if seeds > 1 else ""
            left.set_title(f"Teacher {teacher}: predicted group probability per epoch\n"
                           f"(mean of {_runs_text(seeds)}{spread_note})", fontsize=9)
            handles, labels = left.get_legend_handles_labels()
            handles.append(Line2D([], [], color="#666666", ls="--"))
            labels.append("share of the classes (unbiased): " + ", ".join(
                f"{GROUP_NAMES[g][0]} {shares[g]:.2f}" for g in range(3)) if shares is not None else "")
            left.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
                        frameon=False, title=f"mean of n = {_runs_text(seeds, 'teacher run')}", title_fontsize=8)
            upper = values + np.stack([np.zeros(3) if s is None else s for s in spreads])
            left.set_ylim(0, max(1.0 * upper.max() * 1.1, 0.6))
        else:
            left.text(0.5, 0.5, "no per-epoch teacher rows in these results", ha="center", va="center",
                      transform=left.transAxes)
            left.set_xticks([])
        left.set_ylabel("mean softmax mass on the group (balanced test set)")
        keys = sorted(finals, key=method_sort_key)
        y = np.arange(len(keys))
        means = {k: finals[k].mean(axis=0) for k in keys}
        cumulative = np.zeros(len(keys))
        for g in range(3):
            widths = np.array([means[k][g] for k in keys])
            right.barh(y, widths, left=cumulative, color=GROUP_COLORS[g], label=GROUP_NAMES[g], height=0.7)
            for yi, (start, width) in enumerate(zip(cumulative, widths)):
                if width > 0.08:
                    right.text(start + width / 2, yi, f"{width:.2f}", ha="center", va="center", fontsize=7,
                               color="white")
            cumulative += widths
        whiskers = False
        for yi, key in enumerate(keys):  # the spread of each boundary (Head | Medium, Medium | Tail) over seeds
            boundaries = np.cumsum(finals[key], axis=1)[:, :2]
            spread = _spread(boundaries)
            if spread is not None:
                right.errorbar(boundaries.mean(axis=0), [yi, yi], xerr=spread, fmt="none", ecolor="#111111",
                               elinewidth=1, capsize=3, zorder=4)
                whiskers = True
        if shares is not None:
            for edge in np.cumsum(shares)[:-1]:
                right.axvline(edge, color="#222222", ls="--", lw=1)
        right.set_yticks(y, [f"{method_label(k)} (n={len(finals[k])})" for k in keys])
        right.set_ylim(max(len(keys), 4) - 0.5, -0.5)  # first row on top; bars keep their size
        right.set_xlim(0, 1)
        right.set_xlabel("group probability at the selected epoch (dashed: unbiased split)")
        whisker_note = "; whiskers: ± 1 sample std of each boundary" if whiskers else ""
        right.set_title(f"Predicted group mass by method\n(mean over n seeds{whisker_note})", fontsize=9)
        right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
        fig.suptitle(f"Head bias, {_block_title(block)}", fontsize=11, y=1.06)
        fig.subplots_adjust(wspace=0.35)
        yield f"head_bias_{_block_slug(block)}", fig


def head_bias_figures(df: pd.DataFrame, out: Path, select: str = "last-epoch") -> list[Path]:
    return _save_all(_head_bias(df, select), out)


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


def _first(group: pd.DataFrame, column: str) -> Any:
    if column not in group:
        return None
    known = [v for v in group[column] if not _missing(v)]
    return known[0] if known else None


def cell_title(group: pd.DataFrame) -> str:
    """How a paper names a search cell: 'LTKD, Digits-LT, γ=10, resnet20 → resnet8' (a named
    variant adds its name: 'LTKD (ltkd_no_rebalance), ...'); no study or cell id."""
    method = _first(group, "method")
    label = method_label(method) if method else "?"
    name = str(_first(group, "cell") or "").rsplit("/", 1)[-1]
    if method and name and name != method:
        label += f" ({name})"
    parts = [label]
    dataset = _first(group, "dataset")
    if dataset:
        parts.append(dataset_label(dataset))
    factor = _first(group, "imbalance_factor")
    if factor is not None:
        parts.append(f"γ={format_factor(factor)}")
    parts.append(_pair_text(_first(group, "teacher_arch"), _first(group, "arch")))
    return ", ".join(parts)


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


def _hparams(group: pd.DataFrame) -> list[dict]:
    """Each trial's hyperparameters (its `hparams_json`; {} when unreadable), in the group's order."""
    out = []
    for text in group["hparams_json"]:
        try:
            values = json.loads(text) if isinstance(text, str) else {}
        except ValueError:
            values = {}
        out.append(values if isinstance(values, dict) else {})
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def sensitivity_panels(group: pd.DataFrame) -> list[tuple[str, str]]:
    """The panels of a cell's sensitivity figure: (hyperparameter, "numeric" or "categorical") for
    every hyperparameter that took more than one value over the given search trials, by name."""
    params = _hparams(group)
    panels = []
    for name in sorted({n for p in params for n in p}):
        values = [p[name] for p in params if name in p and p[name] is not None]
        if len({_key(v) for v in values}) < 2:
            continue
        panels.append((name, "numeric" if all(_is_number(v) for v in values) else "categorical"))
    return panels


def param_importances(group: pd.DataFrame, panels: list[tuple[str, str]], objective: str) -> dict[str, float] | None:
    """Optuna's fANOVA importance (normalised to sum 1) of the searched hyperparameters for `objective`,
    on an in-memory study rebuilt from the completed search trials' rows (their hyperparameters
    and last-epoch value; no Optuna storage read). The distributions span the values seen (log
    when positive over more than a factor 20). None with fewer than two varying hyperparameters,
    fewer than MIN_IMPORTANCE_TRIALS completed trials, or when Optuna cannot evaluate them."""
    done = group[group["status"] == "completed"]
    trials = []
    for params, value in zip(_hparams(done), done[objective]):
        if not _missing(value) and all(params.get(name) is not None for name, _ in panels):
            trials.append(({name: params[name] for name, _ in panels}, float(value)))
    if len(trials) < MIN_IMPORTANCE_TRIALS:
        return None
    try:
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    except ImportError:
        return None
    distributions: dict[str, Any] = {}
    for name, kind in panels:
        values = [params[name] for params, _ in trials]
        if len({_key(v) for v in values}) < 2:
            continue  # constant over the completed trials: nothing to attribute
        if kind == "numeric" and all(isinstance(v, int) for v in values):
            distributions[name] = IntDistribution(min(values), max(values))
        elif kind == "numeric":
            low, high = float(min(values)), float(max(values))
            distributions[name] = FloatDistribution(low, high, log=low > 0 and high / low > 20)
        else:
            choices = sorted({value_text(v) for v in values})
            distributions[name] = CategoricalDistribution(choices)
    if len(distributions) < 2:
        return None

    def param_value(name: str, value: Any) -> Any:
        if isinstance(distributions[name], CategoricalDistribution):
            return value_text(value)
        return float(value) if isinstance(distributions[name], FloatDistribution) else value

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        for params, value in trials:
            study.add_trial(optuna.trial.create_trial(
                params={n: param_value(n, params[n]) for n in distributions}, distributions=distributions,
                value=value))
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception:  # noqa: BLE001 - a figure panel, never a failed report
        return None
    finally:
        optuna.logging.set_verbosity(verbosity)
    if not importances or not all(math.isfinite(v) for v in importances.values()):
        return None
    return {name: float(v) for name, v in importances.items()}


def _strip_offsets(n: int) -> np.ndarray:
    """Deterministic horizontal offsets of n points of one category (a strip plot)."""
    return np.zeros(n) if n <= 1 else np.linspace(-0.18, 0.18, n)


_SERIES = (("acc", "All", "o", "#1f77b4"), ("acc_tail", "Tail", "^", "#ff7f0e"))


def _sensitivity_panel(ax, group: pd.DataFrame, params: list[dict], name: str, kind: str, best_index) -> None:
    present = [i for i, p in enumerate(params) if p.get(name) is not None]
    rows = group.iloc[present]
    values = [params[i][name] for i in present]
    if kind == "numeric":
        x = np.asarray(values, dtype=float)
        if _scale(ax, x, "x"):
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(_PLAIN)
    else:
        categories = sorted({_key(v) for v in values}, key=lambda k: (value_text(json.loads(k))))
        slots = {k: i for i, k in enumerate(categories)}
        x = np.zeros(len(values))
        for k in categories:
            members = [j for j, v in enumerate(values) if _key(v) == k]
            x[members] = slots[k] + _strip_offsets(len(members))
        ax.set_xticks(range(len(categories)), [value_text(json.loads(k)) for k in categories])
        ax.set_xlim(-0.6, len(categories) - 0.4)
        for k in categories:  # each category's median, All and Tail
            members = [j for j, v in enumerate(values) if _key(v) == k]
            for metric, _, _, colour in _SERIES:
                scores = rows[metric].to_numpy(dtype=float)[members]
                scores = scores[~np.isnan(scores)]
                if len(scores) > 1:
                    ax.hlines(np.median(scores), slots[k] - 0.3, slots[k] + 0.3, color=colour, lw=1.5, alpha=0.7)
    done = (rows["status"] == "completed").to_numpy()
    all_acc, tail_acc = rows["acc"].to_numpy(dtype=float), rows["acc_tail"].to_numpy(dtype=float)
    ax.vlines(x, np.fmin(all_acc, tail_acc), np.fmax(all_acc, tail_acc), color="#bbbbbb", lw=0.8, zorder=1)
    for metric, label, marker, colour in _SERIES:
        y = rows[metric].to_numpy(dtype=float)
        ax.scatter(x[done], y[done], marker=marker, color=colour, s=30, edgecolors="k", linewidths=0.4,
                   label=f"{label} (test)", zorder=3)
        if (~done).any():
            ax.scatter(x[~done], y[~done], marker=marker, facecolors="none", edgecolors=colour, s=30, zorder=3)
    if best_index in rows.index:
        j = list(rows.index).index(best_index)
        ax.scatter([x[j], x[j]], [all_acc[j], tail_acc[j]], marker="*", s=200, facecolors="none",
                   edgecolors="#d62728", linewidths=1.3, zorder=4)
    ax.set_xlabel(name)
    ax.grid(alpha=0.3)


def sensitivity_figure(group: pd.DataFrame, objective: str | None = None) -> Figure | None:
    """The sensitivity figure of one cell's search trials (their last-epoch rows): one panel per
    searched hyperparameter (`sensitivity_panels`), test accuracy All and Tail of every trial against
    it, the best trial by the objective starred; then the importance panel when
    `param_importances` gives one. None with fewer than two scored trials or nothing searched."""
    cell_objective = _objective_of(group, objective)
    group = group[group["status"].isin(["completed", "early_stopped"]) & group[cell_objective].notna()]
    if len(group) < 2:
        return None
    panels = sensitivity_panels(group)
    if not panels:
        return None
    importances = param_importances(group, panels, cell_objective) if len(panels) > 1 else None
    total = len(panels) + (importances is not None)
    ncols = total if total <= 3 else (2 if total == 4 else 3)
    nrows = math.ceil(total / ncols)
    fig = Figure(figsize=(4.3 * ncols, 3.9 * nrows + 0.6))
    params = _hparams(group)
    completed = group[group["status"] == "completed"]
    # the star marks the trial the search chose: only a trial that ran every epoch can be chosen
    best_index = completed[cell_objective].idxmax() if len(completed) else None
    objective_label = LABELS.get(cell_objective, cell_objective)
    first = None
    for k, (name, kind) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1, sharey=first)
        first = first or ax
        _sensitivity_panel(ax, group, params, name, kind, best_index)
        if k % ncols == 0:
            ax.set_ylabel("test accuracy at the trial's last epoch (%)")
    handles, labels = first.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="*", ls="", ms=12, markerfacecolor="none", markeredgecolor="#d62728"))
    labels.append(f"best trial by {objective_label}")
    if (group["status"] == "early_stopped").any():
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor="#777777"))
        labels.append("stopped early (fewer epochs)")
    first.legend(handles, labels, fontsize=7, loc="best")
    if importances is not None:
        ax = fig.add_subplot(nrows, ncols, total)
        names = sorted(importances, key=lambda n: -importances[n])
        y = np.arange(len(names))
        ax.barh(y, [importances[n] for n in names], color="#7f7f7f", height=0.6)
        for yi, n in enumerate(names):
            ax.text(importances[n] + 0.02, yi, f"{importances[n]:.2f}", va="center", fontsize=8)
        ax.set_yticks(y, names)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_xlim(0, 1.15)
        ax.set_xlabel("share of the objective's variance (fANOVA)")
        done = int((group["status"] == "completed").sum())
        ax.set_title(f"Importance for {objective_label}\n(Optuna, {_runs_text(done, 'completed trial')})",
                     fontsize=9)
    searched = ", ".join(name for name, _ in panels)
    fig.suptitle(f"Sensitivity of {cell_title(group)}\n(test accuracy at the last epoch of "
                 f"{_runs_text(len(group), 'search trial')} against {searched})", fontsize=10)
    fig.tight_layout()
    return fig


def search_cells(df: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(cell key, its search trials' outcomes) for every searched cell, in key order."""
    search = search_outcomes(df)
    if search.empty:
        return
    search = search.assign(_key=[_cell_key(r) for r in search.to_dict("records")])
    yield from search.groupby("_key", sort=True)


def _sensitivity(df: pd.DataFrame, objective: str | None) -> Iterator[tuple[str, Figure]]:
    for cell, group in search_cells(df):
        fig = sensitivity_figure(group, objective)
        if fig is not None:
            yield f"sensitivity_{_slug(cell)}", fig


def sensitivity_figures(df: pd.DataFrame, out: Path, objective: str | None = None) -> list[Path]:
    return _save_all(_sensitivity(df, objective), out)


def _optuna_history(df: pd.DataFrame, objective: str | None) -> Iterator[tuple[str, Figure]]:
    search = search_outcomes(df)
    if search.empty:
        return
    search = search.assign(_key=[_cell_key(r) for r in search.to_dict("records")])
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
        if len(done):  # an early-stopped trial's last value is never the search's best: completed only
            best = np.maximum.accumulate(done[objective_here].to_numpy(dtype=float))
            numbers = done["number"].to_numpy()
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
        ax.set_title(f"Optuna history, {cell_title(group)}\n({_runs_text(len(group), 'search trial')})",
                     fontsize=9)
        yield f"optuna_{_slug(key)}", fig


def optuna_history_figures(df: pd.DataFrame, out: Path, objective: str | None = None) -> list[Path]:
    return _save_all(_optuna_history(df, objective), out)
