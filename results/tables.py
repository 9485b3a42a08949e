"""Aggregation of the results DataFrame into the paper's tables: pure functions, no I/O but the
packaged paper numbers.

- `trial_outcomes(df, select)`: one row per trial with the accuracies that count: its last epoch
  (default) or its best test epoch (`select="best-epoch"`, the test-selected convention of
  public KD codebases).
- `main_table` (the paper's Tables 1-3), `ablation_table` (Tables 4-5), `group_count_table`
  (Table 6): `Table` objects that `results.render` turns into Markdown, LaTeX, HTML and CSV.

Which trials count: stages "final", "single" and "teacher" with status "completed" (search
trials feed the figures only; errored and early-stopped final trials are left out and counted in
the notes). Teachers (config role "teacher") fill the Teacher row of every column whose pair has
that teacher architecture; the Student row is method "ce". Spread is the sample standard
deviation over seeds (ddof 1); a cell with one seed shows its mean alone.
"""
from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pandas as pd

SELECT_MODES = ("last-epoch", "best-epoch")
TABLE_STAGES = ("final", "single", "teacher")
TEACHER_ROW = "teacher"
STUDENT_METHOD = "ce"
PROPOSED = "ltkd"
# The paper's row order; any other registered method follows, alphabetically.
METHOD_ORDER = ("teacher", "ce", "kd", "dkd", "dist", "reviewkd", "catkd", "bkd", "ltkd")
_FALLBACK_LABELS = {"teacher": "Teacher", "ce": "Student", "kd": "KD", "dkd": "DKD", "dist": "DIST",
                    "reviewkd": "ReviewKD", "catkd": "CAT-KD", "bkd": "BKD", "ltkd": "LTKD"}
DATASET_ORDER = ("cifar100", "tinyimagenet", "imagenet", "digits")
DATASET_LABELS = {"cifar100": "CIFAR-100-LT", "tinyimagenet": "TinyImageNet-LT", "imagenet": "ImageNet-LT",
                  "digits": "Digits-LT"}
PAIR_ORDER = (("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"), ("wrn_40_2", "shufflenetv1"),
              ("resnet50_cifar", "mobilenetv2"), ("resnet32x4", "shufflenetv1"), ("vgg13", "mobilenetv2"),
              ("wrn_40_2", "wrn_40_1"), ("resnet34", "resnet18"), ("resnet50", "mobilenetv1"))
METRICS = (("acc_tail", "Tail"), ("acc", "All"))
DEFAULT_GROUPS = 3


# ------------------------------------------------------------------------------ labels


@functools.lru_cache(maxsize=None)
def method_label(name: str) -> str:
    """The paper's label of a method (registry's `label`; 'Teacher' for the teacher row)."""
    if name == TEACHER_ROW:
        return "Teacher"
    try:
        from trainables.distillers import get_method

        return get_method(name).label
    except Exception:  # a method this installation does not register (results from elsewhere)
        return _FALLBACK_LABELS.get(name, name.upper())


def registered_methods() -> list[str]:
    try:
        from trainables.distillers import METHODS

        return list(METHODS)
    except Exception:
        return []


def method_sort_key(name: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(name), "") if name in METHOD_ORDER else (len(METHOD_ORDER), name)


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name)


def format_factor(value: float) -> str:
    return f"{float(value):g}"


# ------------------------------------------------------------------------------ table model


@dataclass
class Stat:
    """One table cell: mean (and sample std) over n seeds; `mark` is "best" / "second" / None;
    `paper` the published number when asked for and known."""

    mean: float | None
    std: float | None = None
    n: int = 0
    mark: str | None = None
    paper: float | None = None


@dataclass(frozen=True)
class Column:
    dataset: str
    teacher: str | None
    student: str | None
    imbalance_factor: float
    metric: str  # a results column: "acc_tail" or "acc"

    @property
    def group(self) -> str:
        """Top header level: dataset and pair."""
        pair = f"{self.teacher} → {self.student}" if self.student else f"{self.teacher}"
        return f"{dataset_label(self.dataset)}: {pair}"

    @property
    def sub(self) -> str:
        return f"γ={format_factor(self.imbalance_factor)}"

    @property
    def label(self) -> str:
        return dict(METRICS).get(self.metric, self.metric)


@dataclass
class Table:
    name: str  # file stem: main_table, ablation_table, group_count_table
    title: str
    caption: str
    columns: list[Column]
    rows: list[str]  # row labels
    kinds: list[str]  # per row: "teacher" (not ranked), "method" (ranked) or "gain"
    cells: list[list[Stat | None]]
    lead_headers: list[str] = field(default_factory=list)  # extra leading columns (ablation switches)
    lead: list[list[Any]] = field(default_factory=list)  # per row: True / False / None (n/a)
    notes: list[str] = field(default_factory=list)
    row_keys: list[str] = field(default_factory=list)  # machine names of the rows (method, variant, n)
    row_header: str = "Method"
    select: str = "last-epoch"
    paper: bool = False


def summarize(values: Iterable[float]) -> Stat:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return Stat(None, None, 0)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(mean, std, len(values))


def mark_best(table: Table, digits: int = 2) -> None:
    """Bold (best) and underline (second best) per column among the ranked rows, on the
    displayed (rounded) means so that ties look tied."""
    for j in range(len(table.columns)):
        ranked = []
        for i, kind in enumerate(table.kinds):
            cell = table.cells[i][j]
            if kind == "method" and cell is not None and cell.mean is not None:
                ranked.append((i, round(cell.mean, digits)))
        if not ranked:
            continue
        values = sorted({v for _, v in ranked}, reverse=True)
        best = values[0]
        second = values[1] if len(values) > 1 else None
        for i, v in ranked:
            if v == best:
                table.cells[i][j].mark = "best"
            elif second is not None and v == second:
                table.cells[i][j].mark = "second"


# ------------------------------------------------------------------------------ trial outcomes


_OUTCOME_COLUMNS = ("sweep", "trial_id", "stage", "cell", "study", "optuna_trial", "status", "dataset",
                    "imbalance_factor", "data_seed", "role", "arch", "teacher_arch", "method", "seed", "alpha",
                    "beta", "temperature", "n_groups", "rebalance", "uniform_within", "hparams_json", "epoch",
                    "acc", "acc_head", "acc_medium", "acc_tail", "per_class_acc", "group_prob",
                    "teacher_group_prob", "class_counts", "written_at")


def trial_outcomes(df: pd.DataFrame, select: str = "last-epoch") -> pd.DataFrame:
    """One row per trial: its configuration and the metrics of the selected epoch.

    last-epoch: the final row (the last epoch the trial ran). best-epoch: the epoch with the
    highest overall test accuracy (earliest on ties): selection on the test set.
    """
    if select not in SELECT_MODES:
        raise ValueError(f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}")
    if df.empty:
        return df.reindex(columns=list(_OUTCOME_COLUMNS))
    final = df[df["row_kind"] == "final"]
    if select == "last-epoch":
        out = final.copy()
    else:
        epochs = df[(df["row_kind"] == "epoch") & df["acc"].notna()]
        if epochs.empty:
            return final.iloc[0:0].copy()
        order = epochs.sort_values(["sweep", "trial_id", "acc", "epoch"], ascending=[True, True, False, True])
        best = order.drop_duplicates(["sweep", "trial_id"], keep="first")
        # status and error live on the final row; the epoch rows carry the same status
        out = best.copy()
    out = out.reset_index(drop=True)
    return out


def is_full_ltkd(row: pd.Series | dict) -> bool:
    """LTKD with both terms, rebalanced cross term and uniform within weights (not an ablation)."""
    return variant_of(row) == "ltkd"


def _flag(value: Any) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def _positive(value: Any) -> bool:
    """A term weight switches its term on unless it is exactly 0 (unknown counts as on)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return float(value) != 0.0


# LTKD ablation variants (the paper's Tables 4-5): key -> (name, label), in table order.
VARIANTS = {
    (True, False, False, None): ("biased_cross_only", "Cross only, teacher's p_G"),
    (True, True, False, None): ("rebalanced_cross_only", "Cross only, rebalanced"),
    (False, None, True, False): ("teacher_weighted_within_only", "Within only, teacher weights"),
    (False, None, True, True): ("reweighted_within_only", "Within only, uniform weights"),
    (True, False, True, False): ("biased_cross_teacher_within", "Teacher's p_G + teacher weights"),
    (True, False, True, True): ("biased_cross_reweighted_within", "Teacher's p_G + uniform weights"),
    (True, True, True, False): ("rebalanced_cross_teacher_within", "Rebalanced + teacher weights"),
    (True, True, True, True): ("ltkd", "LTKD (rebalanced + uniform)"),
}
VARIANT_ORDER = [name for name, _ in VARIANTS.values()]
VARIANT_LABELS = {name: label for name, label in VARIANTS.values()}
VARIANT_SWITCHES = {name: key for key, (name, _) in VARIANTS.items()}


def variant_of(row: pd.Series | dict) -> str | None:
    """The ablation variant of an LTKD trial (None for other methods or with both terms off)."""
    if row.get("method") != PROPOSED:
        return None
    cross = _positive(row.get("alpha"))
    within = _positive(row.get("beta"))
    rebalance = _flag(row.get("rebalance"))
    uniform = _flag(row.get("uniform_within"))
    key = (cross, (rebalance is not False) if cross else None, within, (uniform is not False) if within else None)
    entry = VARIANTS.get(key)
    return entry[0] if entry else None


def _groups_of(row: pd.Series | dict) -> int:
    value = row.get("n_groups")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DEFAULT_GROUPS
    return int(value)


def table_trials(df: pd.DataFrame, select: str = "last-epoch") -> tuple[pd.DataFrame, list[str]]:
    """The trials that feed the tables (completed final / single / teacher runs), plus notes on
    what was left out."""
    outcomes = trial_outcomes(df, select)
    notes = []
    if outcomes.empty:
        return outcomes, notes
    staged = outcomes[outcomes["stage"].isin(TABLE_STAGES)]
    left = staged[staged["status"] != "completed"]
    if len(left):
        counts = left["status"].value_counts()
        parts = [f"{counts[s]} {s.replace('_', '-')}" for s in ("errored", "early_stopped") if s in counts]
        notes.append(f"Left out: {', '.join(parts)} run(s) of the final / single / teacher stages.")
    kept = staged[staged["status"] == "completed"].copy()
    kept["row_key"] = [TEACHER_ROW if r == "teacher" else m for r, m in zip(kept["role"], kept["method"])]
    kept["variant"] = [variant_of(r) for r in kept.to_dict("records")]
    kept["groups"] = [_groups_of(r) for r in kept.to_dict("records")]
    return kept.reset_index(drop=True), notes


# ------------------------------------------------------------------------------ columns


def _pair_sort_key(pair: tuple[str | None, str | None]) -> tuple:
    if pair in PAIR_ORDER:
        return (0, PAIR_ORDER.index(pair), "", "")
    return (1, 0, pair[0] or "", pair[1] or "")


def _dataset_sort_key(name: str) -> tuple:
    return (DATASET_ORDER.index(name), "") if name in DATASET_ORDER else (len(DATASET_ORDER), name)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def table_cells(trials: pd.DataFrame) -> list[tuple[str, str | None, str | None, float]]:
    """(dataset, teacher, student, imbalance factor) of every column block, in the paper's order.

    Pairs come from the student runs; a teacher without any student gets a block of its own."""
    blocks = set()
    students = trials[trials["row_key"] != TEACHER_ROW]
    for row in students.itertuples():
        teacher = None if _missing(row.teacher_arch) else row.teacher_arch
        if teacher is not None:
            blocks.add((row.dataset, teacher, row.arch, float(row.imbalance_factor)))
    # Students without a known teacher (the CE student) join every pair with their architecture.
    for row in students.itertuples():
        if _missing(row.teacher_arch) and not any(b[0] == row.dataset and b[2] == row.arch and
                                                  b[3] == float(row.imbalance_factor) for b in blocks):
            blocks.add((row.dataset, None, row.arch, float(row.imbalance_factor)))
    for row in trials[trials["row_key"] == TEACHER_ROW].itertuples():
        if not any(b[0] == row.dataset and b[1] == row.arch and b[3] == float(row.imbalance_factor) for b in blocks):
            blocks.add((row.dataset, row.arch, None, float(row.imbalance_factor)))
    return sorted(blocks, key=lambda b: (_dataset_sort_key(b[0]), _pair_sort_key((b[1], b[2])), b[3]))


def block_members(trials: pd.DataFrame, block: tuple) -> pd.DataFrame:
    """The trials that belong to a column block (any method, any variant)."""
    dataset, teacher, student, factor = block
    same = (trials["dataset"] == dataset) & (trials["imbalance_factor"].astype(float) == factor)
    is_teacher = trials["row_key"] == TEACHER_ROW
    teacher_match = is_teacher & (trials["arch"] == teacher) if teacher is not None else is_teacher & False
    if student is None:
        student_match = ~is_teacher & False
    else:
        known = trials["teacher_arch"].notna()
        student_match = ~is_teacher & (trials["arch"] == student) & (
            (known & (trials["teacher_arch"] == teacher)) | ~known)
    return trials[same & (teacher_match | student_match)]


def main_groups(members: pd.DataFrame) -> int:
    """The group count of the main LTKD row of a block: 3 when run, else the most common."""
    full = members[members["variant"] == "ltkd"]
    if full.empty or (full["groups"] == DEFAULT_GROUPS).any():
        return DEFAULT_GROUPS
    return int(full["groups"].value_counts().idxmax())


def main_rows(members: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Trials per main-table row of one block: LTKD only with both terms on and the main group count."""
    out = {}
    groups = main_groups(members)
    for key, trials in members.groupby("row_key", sort=False):
        if key == PROPOSED:
            trials = trials[(trials["variant"] == "ltkd") & (trials["groups"] == groups)]
        if len(trials):
            out[key] = trials
    return out


def _mixed_note(label: str, block: tuple, trials: pd.DataFrame) -> str | None:
    settings = trials["hparams_json"].nunique()
    if settings > 1:
        dataset, teacher, student, factor = block
        return (f"{label} at {dataset_label(dataset)} {teacher}→{student} γ={format_factor(factor)} pools "
                f"{settings} different hyperparameter settings.")
    return None


# ------------------------------------------------------------------------------ paper numbers


def _paper_model(name: str, dataset: str) -> str:
    if name == "shufflev1":
        return "shufflenetv1"
    if name == "resnet50" and dataset in ("cifar100", "tinyimagenet"):
        return "resnet50_cifar"
    return name


def _paper_dataset(name: str) -> str:
    return name[:-3] if name.endswith("_lt") else name


def _paper_method(name: str) -> str:
    return {"student": STUDENT_METHOD, "teacher": TEACHER_ROW}.get(name, name)


@functools.lru_cache(maxsize=None)
def paper_frame(name: str) -> pd.DataFrame:
    """A packaged CSV of the paper's numbers (results/paper_data/<name>.csv), in our names."""
    with resources.files("results").joinpath("paper_data", f"{name}.csv").open("r") as handle:
        frame = pd.read_csv(handle)
    frame["dataset_raw"] = frame["dataset"]
    frame["dataset"] = [_paper_dataset(d) for d in frame["dataset_raw"]]
    frame["teacher"] = [_paper_model(m, d) for m, d in zip(frame["teacher"], frame["dataset"])]
    frame["student"] = [_paper_model(m, d) for m, d in zip(frame["student"], frame["dataset"])]
    frame["imbalance_factor"] = frame["imbalance_factor"].astype(float)
    if "method" in frame:
        frame["method"] = [_paper_method(m) for m in frame["method"]]
    return frame


def _paper_lookup(frame: pd.DataFrame, key_column: str) -> dict[tuple, dict[str, float]]:
    out: dict[tuple, dict[str, float]] = {}
    for row in frame.to_dict("records"):
        key = (row["dataset"], row["teacher"], row["student"], row["imbalance_factor"], row[key_column])
        values = {}
        if "tail_acc" in row:
            values["acc_tail"] = float(row["tail_acc"])
        values["acc"] = float(row["all_acc"])
        out[key] = values
    return out


# ------------------------------------------------------------------------------ tables


def _columns_for(blocks: list[tuple], metrics: tuple[tuple[str, str], ...] = METRICS) -> list[Column]:
    return [Column(b[0], b[1], b[2], b[3], metric) for b in blocks for metric, _ in metrics]


def _select_caption(select: str) -> str:
    if select == "best-epoch":
        return ("Accuracy of each run's best test-set epoch (test-selected: the convention of public KD "
                "codebases, optimistic because the test set picks the epoch).")
    return "Accuracy at each run's last epoch (no selection on the test set)."


def _spread_caption() -> str:
    return ("Mean ± sample standard deviation over seeds (one seed: the mean alone). "
            "Bold: best student; underlined: second best.")


def _cell_stats(per_block: dict, columns: list[Column], keys: list, lookup: dict,
                paper_key=lambda key: key) -> list[list[Stat | None]]:
    """mean +- std of each (row key, column), with the paper's number beside it when `lookup` has one."""
    cells: list[list[Stat | None]] = [[None] * len(columns) for _ in keys]
    for j, column in enumerate(columns):
        block = (column.dataset, column.teacher, column.student, column.imbalance_factor)
        for i, key in enumerate(keys):
            trials_here = per_block[block].get(key)
            if trials_here is None:
                continue
            stat = summarize(trials_here[column.metric])
            if lookup:
                stat.paper = lookup.get(block + (paper_key(key),), {}).get(column.metric)
            cells[i][j] = stat
    return cells


def main_table(df: pd.DataFrame, select: str = "last-epoch", paper: bool = False) -> Table | None:
    """The paper's Tables 1-3: methods as rows, (dataset, pair) x imbalance factor x (Tail, All)
    as columns, and LTKD's gain over the best other student method."""
    trials, notes = table_trials(df, select)
    if trials.empty:
        return None
    blocks = table_cells(trials)
    per_block = {b: main_rows(block_members(trials, b)) for b in blocks}
    keys = sorted({k for rows in per_block.values() for k in rows}, key=method_sort_key)
    columns = _columns_for(blocks)
    lookup = _paper_lookup(paper_frame("main_results"), "method") if paper else {}
    cells = _cell_stats(per_block, columns, keys, lookup)
    for block, rows in per_block.items():
        for key, trials_here in rows.items():
            if key != TEACHER_ROW:
                note = _mixed_note(method_label(key), block, trials_here)
                if note:
                    notes.append(note)
    kinds = ["teacher" if k == TEACHER_ROW else "method" for k in keys]
    labels = [method_label(k) for k in keys]
    table = Table("main_table", "Main results", "", columns, labels, kinds, cells, notes=notes,
                  row_keys=list(keys), select=select, paper=paper)
    mark_best(table)
    if PROPOSED in keys and any(k not in (PROPOSED, TEACHER_ROW) for k in keys):
        table.rows.append(f"Δ {method_label(PROPOSED)} − best baseline")
        table.kinds.append("gain")
        table.row_keys.append("gain")
        table.cells.append([_gain(table, j, lookup) for j in range(len(columns))])
    groups = sorted({main_groups(block_members(trials, b)) for b in blocks})
    caption = (f"Top-1 accuracy (%) on the balanced test set; Tail: the 33% least frequent classes, All: every "
               f"class. {_select_caption(select)} {_spread_caption()} Δ: LTKD minus the best other student "
               f"method (the teacher excluded). LTKD row: rebalanced and reweighted, "
               f"{'/'.join(str(g) for g in groups)} groups.")
    if paper:
        caption += " In parentheses: the paper's published number (arXiv 2506.18496, Tables 1-3), where it has one."
    table.caption = caption
    return table


def _gain(table: Table, j: int, lookup: dict) -> Stat | None:
    ours = None
    baselines = []
    for key, cell in zip(table.row_keys, (row[j] for row in table.cells)):
        if cell is None or cell.mean is None:
            continue
        if key == PROPOSED:
            ours = cell.mean
        elif key != TEACHER_ROW:
            baselines.append(cell.mean)
    if ours is None or not baselines:
        return None
    gain = Stat(ours - max(baselines))
    if table.paper:
        column = table.columns[j]
        block = (column.dataset, column.teacher, column.student, column.imbalance_factor)
        published = {key[-1]: values.get(column.metric) for key, values in lookup.items() if key[:4] == block}
        theirs = published.get(PROPOSED)
        others = [v for k, v in published.items() if k not in (PROPOSED, TEACHER_ROW) and v is not None]
        if theirs is not None and others:
            gain.paper = theirs - max(others)
    return gain


def ablation_table(df: pd.DataFrame, select: str = "last-epoch", paper: bool = False) -> Table | None:
    """The paper's Tables 4-5: KD, LTKD's switch variants and full LTKD, for the columns where an
    ablation variant ran."""
    trials, notes = table_trials(df, select)
    if trials.empty:
        return None
    blocks = []
    per_block = {}
    for block in table_cells(trials):
        members = block_members(trials, block)
        ltkd = members[(members["row_key"] == PROPOSED) & members["variant"].notna()]
        ltkd = ltkd[ltkd["groups"] == main_groups(members)]
        if not (ltkd["variant"] != "ltkd").any():
            continue
        rows = {}
        kd = members[members["row_key"] == "kd"]
        if len(kd):
            rows["kd"] = kd
        for variant, group in ltkd.groupby("variant"):
            rows[variant] = group
        blocks.append(block)
        per_block[block] = rows
    if not blocks:
        return None
    keys = [k for k in ["kd"] + VARIANT_ORDER if any(k in rows for rows in per_block.values())]
    columns = _columns_for(blocks)
    lookup = _paper_lookup(paper_frame("ablations"), "variant") if paper else {}
    cells = _cell_stats(per_block, columns, keys, lookup, lambda key: "baseline_kd" if key == "kd" else key)
    for block, rows in per_block.items():
        for key, trials_here in rows.items():
            note = _mixed_note(method_label("kd") if key == "kd" else VARIANT_LABELS[key], block, trials_here)
            if note:
                notes.append(note)
    labels = [f"{method_label('kd')} (baseline)" if k == "kd" else VARIANT_LABELS[k] for k in keys]
    lead = []
    for key in keys:
        if key == "kd":
            lead.append([None, None, None, None])
        else:
            cross, rebalanced, within, reweighted = VARIANT_SWITCHES[key]
            lead.append([rebalanced, reweighted, cross, within])
    table = Table("ablation_table", "Ablation of LTKD's components", "", columns, labels, ["method"] * len(keys),
                  cells, row_header="Variant", lead_headers=["Cross rebalanced", "Within reweighted", "Cross term", "Within term"],
                  lead=lead, notes=notes, row_keys=keys, select=select, paper=paper)
    mark_best(table)
    table.caption = (f"LTKD's switches (the paper's Tables 4-5): cross-group term rebalanced (or the teacher's own "
                     f"group probabilities), within-group terms with uniform weights (or the teacher's group "
                     f"probabilities), each term on or off (alpha = 0: within only; beta = 0: cross only). "
                     f"Top-1 accuracy (%). {_select_caption(select)} {_spread_caption()}")
    if paper:
        caption = " In parentheses: the paper's published number (Tables 4-5, CIFAR-100-LT γ=20)."
        table.caption += caption
    return table


def group_count_table(df: pd.DataFrame, select: str = "last-epoch", paper: bool = False) -> Table | None:
    """The paper's Table 6: full LTKD by the number of class groups (overall accuracy)."""
    trials, notes = table_trials(df, select)
    if trials.empty:
        return None
    blocks = []
    per_block = {}
    for block in table_cells(trials):
        members = block_members(trials, block)
        full = members[(members["row_key"] == PROPOSED) & (members["variant"] == "ltkd")]
        if full["groups"].nunique() < 2:
            continue
        blocks.append(block)
        per_block[block] = {int(n): group for n, group in full.groupby("groups")}
    if not blocks:
        return None
    counts = sorted({n for rows in per_block.values() for n in rows})
    columns = _columns_for(blocks, (("acc", "All"),))
    lookup = _paper_lookup(paper_frame("group_count"), "n_groups") if paper else {}
    cells = _cell_stats(per_block, columns, counts, lookup)
    for block, rows in per_block.items():
        for n, trials_here in rows.items():
            note = _mixed_note(f"LTKD with {n} groups", block, trials_here.assign(
                hparams_json=[_without(h, "n_groups") for h in trials_here["hparams_json"]]))
            if note:
                notes.append(note)
    table = Table("group_count_table", "LTKD by number of class groups", "", columns,
                  [f"{n} groups" for n in counts], ["method"] * len(counts), cells, notes=notes,
                  row_keys=[str(n) for n in counts], select=select, paper=paper, row_header="Groups")
    mark_best(table)
    table.caption = (f"Full LTKD with the classes split into n frequency groups (the paper's Table 6; n = number of "
                     f"classes is continuous reweighting). Overall top-1 accuracy (%). {_select_caption(select)} "
                     f"{_spread_caption().replace('best student', 'best group count')}")
    if paper:
        table.caption += " In parentheses: the paper's published number (Table 6, CIFAR-100-LT γ=100)."
    return table


def _without(hparams_json: str, name: str) -> str:
    try:
        values = json.loads(hparams_json)
    except (TypeError, ValueError):
        return str(hparams_json)
    values.pop(name, None)
    return json.dumps(values, sort_keys=True)


def all_tables(df: pd.DataFrame, select: str = "last-epoch", paper: bool = False) -> list[Table]:
    tables = [main_table(df, select, paper), ablation_table(df, select, paper), group_count_table(df, select, paper)]
    return [t for t in tables if t is not None]
