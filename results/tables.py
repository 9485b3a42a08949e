"""Aggregation of the results DataFrame into the paper's tables: pure functions, no I/O but the
packaged paper numbers.

- `trial_outcomes(df, select)`: one row per trial with the accuracies that count: its last epoch
  (default) or its best test epoch (`select="best-epoch"`, the test-selected convention of
  public KD codebases).
- `main_table` (the paper's Tables 1-3), `ablation_table` (Tables 4-5), `group_count_table`
  (Table 6): `Table` objects that `results.render` turns into Markdown, LaTeX, HTML and CSV.

- `chosen_table` and `best_configs`: the hyperparameters the final runs used, per cell.

Which trials count: stages "final", "single" and "teacher" with status "completed" (search
trials feed the figures only; errored and early-stopped final trials are left out and counted in
the notes). Teachers (config role "teacher") fill the Teacher row of every column whose pair has
that teacher architecture; the Student row is method "ce". Spread is the sample standard
deviation over seeds (ddof 1) with a 95% Student-t interval (results/statistics.py); a cell with
one seed shows its mean alone, with no spread and no interval. The gain row carries a paired
t-test of LTKD against its block's comparator (chosen on validation: results/comparator.py),
Holm-adjusted over the table's gain cells. Captions describe how the rows were
produced from the rows themselves (selection split, search trials, seeds, teacher seeds).
"""
from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pandas as pd

from results.captions import (NOT_SIGNIFICANT, TEST_CHOSEN, data_seed_text, gain_caption, paper_protocol_text,
                              teacher_spread_text, weak_teacher_text)
from results.comparator import choose_comparator
from results.guessed import guessed_sentence
from results.pooling import per_seed, refuse_mixed
from results.search_effort import search_sentence
from results.statistics import ALPHA, CONFIDENCE, holm, paired_test, summary
from trainables.data.sources import DATASETS
from trainables.methods import METHODS, table_order
from trainables.metrics import ACCURACY_METRICS

SELECT_MODES = ("last-epoch", "best-epoch")
TABLE_STAGES = ("final", "single", "teacher")
TEACHER_ROW = "teacher"
STUDENT_METHOD = "ce"
PROPOSED = "ltkd"
# Rows and blocks follow the registries: the teacher, then the methods in the paper's row order
# (MethodSpec.table_row), and datasets in the order they are registered (CIFAR-100, TinyImageNet,
# ImageNet, digits); a name this installation does not register (results from elsewhere) follows,
# alphabetically.
METHOD_ORDER = (TEACHER_ROW, *table_order())
DATASET_ORDER = tuple(DATASETS.names())
PAIR_ORDER = (("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"), ("wrn_40_2", "shufflenetv1"),
              ("resnet50_cifar", "mobilenetv2"), ("resnet32x4", "shufflenetv1"), ("vgg13", "mobilenetv2"),
              ("wrn_40_2", "wrn_40_1"), ("resnet34", "resnet18"), ("resnet50", "mobilenetv1"))
METRICS = (("acc_tail", "Tail"), ("acc", "All"))
DEFAULT_GROUPS = 3
CHOSEN_TABLE = "chosen_hparams"  # file stem of the chosen-hyperparameters table
BEST_CONFIG_FILE = "best_config.json"
# How the captions name the second-best mark (LaTeX and HTML underline it; the Markdown renderer,
# which sets it in italics, rewrites these words: results.render.MARKDOWN_SECOND_BEST).
SECOND_BEST_CAPTION = "underlined: second best"


# ------------------------------------------------------------------------------ labels


def method_label(name: str) -> str:
    """The paper's label of a method (its registry entry's `label`; 'Teacher' for the teacher row)."""
    if name == TEACHER_ROW:
        return "Teacher"
    return METHODS[name].label if name in METHODS else name.upper()


def method_sort_key(name: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(name), "") if name in METHOD_ORDER else (len(METHOD_ORDER), name)


def dataset_label(name: str) -> str:
    return DATASETS[name].label if name in DATASETS else name


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
    ci: tuple[float, float] | None = None  # 95% Student-t interval of the mean (None: fewer than 2 seeds)
    # gain cells only: the paired t-test of LTKD against `compared_to` (results/comparator.py)
    compared_to: str | None = None
    compared_on: str | None = None  # what chose the comparator: "validation" or "test"
    n_pairs: int = 0
    p_value: float | None = None  # the test's own p-value
    p_holm: float | None = None  # Holm-adjusted over the table's gain cells: what significance reads
    no_test: str | None = None  # why there is no p-value

    @property
    def significant(self) -> bool | None:
        p = self.p_holm if self.p_holm is not None else self.p_value
        return None if p is None else p < ALPHA


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
    """Mean, sample std and 95% t-interval over seeds (one value: the mean alone)."""
    result = summary(values)
    return Stat(result.mean, result.std, result.n, ci=result.ci)


@dataclass
class TextTable:
    """A plain table of text cells (the chosen hyperparameters)."""

    name: str
    title: str
    caption: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


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
                    "beta", "temperature", "n_groups", "rebalance", "uniform_within", "within_norm", "hparams_json",
                    "selection", "objective_metric", "search_trials", "teacher_seed", "validation_per_class",
                    "epoch", *ACCURACY_METRICS, "per_class_acc", "group_prob", "teacher_group_prob",
                    "class_counts", "written_at")


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
    records = kept.to_dict("records")
    kept["variant"] = [variant_of(r) for r in records]
    kept["groups"] = [_groups_of(r) for r in records]
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


def _block_text(block: tuple) -> str:
    dataset, teacher, student, factor = block
    return f"{dataset_label(dataset)} {teacher}→{student} γ={format_factor(factor)}"


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


# ------------------------------------------------------------------------------ how the rows were produced


def _known(values: Iterable) -> list:
    return [v for v in values if not _missing(v)]


def _ints(values: Iterable) -> list[int]:
    return sorted({int(v) for v in _known(values)})


def _int_text(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)


def _method_list(keys: Iterable[str]) -> str:
    return ", ".join(method_label(k) for k in sorted(set(keys), key=method_sort_key))


def how_chosen(row: pd.Series | dict) -> str:
    """How a run's hyperparameters were chosen: "val" / "test" (a search on that split), "fixed"
    (no search), "unknown" (a search on an unrecorded split) or "unrecorded" (schema 1 rows)."""
    trials = row.get("search_trials")
    if _missing(trials):
        return "unrecorded"
    if int(trials) == 0:
        return "fixed"
    selection = row.get("selection")
    return "unknown" if _missing(selection) else str(selection)


def _selection_sentences(students: pd.DataFrame) -> list[str]:
    if students.empty:
        return []
    by: dict[str, set[str]] = {}
    chosen = [how_chosen(r) for r in students[[c for c in ("search_trials", "selection") if c in students]]
              .to_dict("records")]
    for how, key in zip(chosen, students["row_key"]):
        by.setdefault(how, set()).add(key)
    searched = students[[how in ("val", "test", "unknown") for how in chosen]]
    objectives = sorted({str(v) for v in _known(searched["objective_metric"])})
    maximised = f"searches maximised {', '.join(objectives)}" if objectives else "the searched metric not recorded"
    holdout = _ints(students.loc[[how == "val" for how in chosen], "validation_per_class"])
    out = []
    kinds = {k for k in by if k in ("val", "test", "unknown")}
    if kinds == {"val"}:
        split = (f", {'/'.join(str(v) for v in holdout)} images per class held out from the training pool"
                 if holdout and min(holdout) > 0 else "")
        out.append(f"Hyperparameters selected on the validation split ({maximised}{split}); "
                   f"accuracy reported on the test set.")
    elif kinds == {"test"}:
        out.append(f"Hyperparameters selected on the test set, the paper's protocol ({maximised}): the searched "
                   f"rows are optimistic.")
    elif kinds:
        parts = []
        if "val" in by:
            parts.append(f"{_method_list(by['val'])} selected on the validation split")
        if "test" in by:
            parts.append(f"{_method_list(by['test'])} on the test set (the paper's protocol)")
        if "unknown" in by:
            parts.append(f"{_method_list(by['unknown'])} on an unrecorded split")
        out.append(f"Mixed selection ({maximised}): {'; '.join(parts)}.")
    elif "fixed" in by:
        out.append("No hyperparameter search: every method ran at fixed hyperparameters.")
    if "unrecorded" in by:
        unrecorded = students[[how == "unrecorded" for how in chosen]]
        old = (unrecorded["schema_version"] < 2 if "schema_version" in unrecorded
               else pd.Series(False, index=unrecorded.index))
        if old.any():
            out.append(f"{_method_list(unrecorded.loc[old, 'row_key'])}: how the hyperparameters were chosen is not "
                       f"recorded (results written before schema version 2, whose searches maximised test-set "
                       f"accuracy).")
        if (~old).any():
            out.append(f"{_method_list(unrecorded.loc[~old, 'row_key'])}: how the hyperparameters were chosen is not "
                       f"recorded in the results.")
    return out


def _trials_sentence(students: pd.DataFrame) -> str | None:
    parts = []
    for key in sorted(set(students["row_key"]), key=method_sort_key):
        values = students.loc[students["row_key"] == key, "search_trials"]
        known = _ints(values)
        if not known:
            continue
        text = "/".join("defaults" if v == 0 else str(v) for v in known)
        if len(_known(values)) < len(values):
            text += " (some not recorded)"
        parts.append(f"{method_label(key)} {text}")
    if not parts:
        return None
    return f"Search trials per method (defaults: no search): {', '.join(parts)}."


def _seeds_sentence(trials: pd.DataFrame, df: pd.DataFrame | None) -> str | None:
    students = trials[trials["row_key"] != TEACHER_ROW]
    teachers = trials[trials["row_key"] == TEACHER_ROW]
    parts = []
    if len(students):
        seeds = _ints(students["seed"])
        text = f"student seeds {_int_text(seeds)}"
        taught = students[students["teacher"].notna()] if "teacher" in students else students.iloc[0:0]
        if len(taught):
            teacher_seeds = _ints(taught["teacher_seed"])
            text += (f", teacher seed{'s' if len(teacher_seeds) > 1 else ''} {_int_text(teacher_seeds)}"
                     + teacher_spread_text(seeds, teacher_seeds) if teacher_seeds else ", teacher seeds not recorded")
        parts.append(text)
        if df is not None and not df.empty:
            search = df[(df["row_kind"] == "final") & (df["stage"] == "search")
                        & df["cell"].isin(set(students["cell"]))]
            search_seeds = _ints(search["seed"])
            if search_seeds:
                shared = sorted(set(search_seeds) & set(seeds))
                plural = "s" if len(search_seeds) > 1 else ""
                parts.append(f"search trials used seed{plural} {_int_text(search_seeds)}, "
                             + (f"and seed{'s' if len(shared) > 1 else ''} {_int_text(shared)} "
                                f"{'are' if len(shared) > 1 else 'is'} also reported here (not fresh)" if shared
                                else "none of them reported (fresh seeds for the final runs)"))
    if len(teachers):
        parts.append(f"teacher row: seeds {_int_text(_ints(teachers['seed']))}")
    parts.append(data_seed_text(_ints(trials["data_seed"]) if "data_seed" in trials else []))
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def protocol_caption(trials: pd.DataFrame, df: pd.DataFrame | None = None) -> str:
    """How the rows of a table were produced, read from the rows themselves: the selection split,
    the search trials per method, the seeds and teacher seeds (and whether search seeds recur)."""
    if trials.empty:
        return ""
    students = trials[trials["row_key"] != TEACHER_ROW]
    sentences = _selection_sentences(students)
    trials_text = (search_sentence(students, df, method_label, method_sort_key) or _trials_sentence(students)
                   if len(students) else None)
    if trials_text:
        sentences.append(trials_text)
    seeds = _seeds_sentence(trials, df)
    if seeds:
        sentences.append(seeds)
    guessed = guessed_sentence(students, method_label, method_sort_key) if len(students) else None
    if guessed:
        sentences.append(guessed)
    return " ".join(sentences)


# ------------------------------------------------------------------------------ tables


def _columns_for(blocks: list[tuple], metrics: tuple[tuple[str, str], ...] = METRICS) -> list[Column]:
    return [Column(b[0], b[1], b[2], b[3], metric) for b in blocks for metric, _ in metrics]


def _select_caption(select: str) -> str:
    if select == "best-epoch":
        return ("Accuracy of each run's best test-set epoch (test-selected: the convention of public KD "
                "codebases, optimistic because the test set picks the epoch).")
    return "Accuracy at each run's last epoch."


def _spread_caption(cells: list[list[Stat | None]] | None = None, best: str = "best student") -> str:
    text = (f"Mean ± sample standard deviation over seeds; the CSV and HTML add the {CONFIDENCE:.0%} Student-t "
            f"confidence interval (n − 1 degrees of freedom).")
    counts = sorted({c.n for row in (cells or []) for c in row
                     if c is not None and c.mean is not None and c.compared_to is None})
    if counts:
        text += f" n = {counts[0]}{'' if len(counts) == 1 else f'–{counts[-1]}'} seeds per cell."
    if 1 in counts:
        text += " A cell from one seed shows its mean alone: no spread and no interval."
    return text + f" Bold: {best}; {SECOND_BEST_CAPTION}."


def _chosen_caption() -> str:
    return (f"The hyperparameters each student row used: the chosen-hyperparameters table ({CHOSEN_TABLE}.*) "
            f"and {BEST_CONFIG_FILE}.")


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
            stat = summarize(per_seed(trials_here, column.metric))  # n: distinct seeds
            if lookup:
                stat.paper = lookup.get(block + (paper_key(key),), {}).get(column.metric)
            cells[i][j] = stat
    return cells


def _used(per_block: dict) -> pd.DataFrame:
    """Every trial a table's cells use."""
    frames = [t for rows in per_block.values() for t in rows.values() if len(t)]
    if not frames:
        return pd.DataFrame()
    used = pd.concat(frames)
    return used.drop_duplicates(["sweep", "trial_id"]) if {"sweep", "trial_id"} <= set(used.columns) else used


def _columns_and_cells(per_block: dict, blocks: list[tuple], keys: list, paper_data: tuple[str, str] | None,
                       paper_key=lambda key: key, metrics: tuple[tuple[str, str], ...] = METRICS):
    """A table's columns, the paper's numbers for them (`paper_data`: the packaged CSV and its row-key
    column, None when not asked for) and its cells."""
    columns = _columns_for(blocks, metrics)
    lookup = _paper_lookup(paper_frame(paper_data[0]), paper_data[1]) if paper_data else {}
    return columns, lookup, _cell_stats(per_block, columns, keys, lookup, paper_key)


def _mixed_notes(per_block: dict, label_of: Callable[[Any], str | None], ignore: str | None = None) -> list[str]:
    """A note for every cell that pools several hyperparameter settings (`label_of` names the row, None:
    no note for it; `ignore`: a hyperparameter the rows differ in by design)."""
    notes = []
    for block, rows in per_block.items():
        for key, trials_here in rows.items():
            label = label_of(key)
            if label is None:
                continue
            if ignore is not None:
                trials_here = trials_here.assign(
                    hparams_json=[_without(h, ignore) for h in trials_here["hparams_json"]])
            note = _mixed_note(label, block, trials_here)
            if note:
                notes.append(note)
    return notes


def _paper_differences(used: pd.DataFrame) -> str:
    """The caption's sentence on how the rows' protocol differs from the paper's (--paper)."""
    students = used[used["row_key"] != TEACHER_ROW] if "row_key" in used else used
    holdouts = {d: _ints(students.loc[students["dataset"] == d, "validation_per_class"])
                for d in set(students["dataset"])} if len(students) else {}
    n_max = {d: DATASETS[d].n_max for d in holdouts if d in DATASETS}
    selections = {how_chosen(r) for r in students.to_dict("records")}
    return paper_protocol_text(holdouts, n_max, selections, dataset_label)


def _captioned(table: Table, caption: str, paper_source: str, used: pd.DataFrame | None = None) -> Table:
    """The table with its caption (white space folded), saying where the paper's numbers come from
    and how our protocol differs from the paper's when it shows them."""
    if table.paper:
        caption += f" In parentheses: the paper's published number {paper_source}."
        if used is not None and not used.empty:
            caption += " " + _paper_differences(used)
    table.caption = " ".join(caption.split())
    return table


def main_table(df: pd.DataFrame, select: str = "last-epoch", paper: bool = False) -> Table | None:
    """The paper's Tables 1-3: methods as rows, (dataset, pair) x imbalance factor x (Tail, All)
    as columns, and LTKD's gain over the best other student method with a paired t-test."""
    trials, notes = table_trials(df, select)
    if trials.empty:
        return None
    blocks = table_cells(trials)
    members = {b: block_members(trials, b) for b in blocks}
    per_block = {b: main_rows(members[b]) for b in blocks}
    notes += refuse_mixed(per_block, method_label, _block_text, shared=(TEACHER_ROW,))
    keys = sorted({k for rows in per_block.values() for k in rows}, key=method_sort_key)
    columns, lookup, cells = _columns_and_cells(per_block, blocks, keys, ("main_results", "method") if paper else None)
    notes += _mixed_notes(per_block, lambda key: None if key == TEACHER_ROW else method_label(key))
    kinds = ["teacher" if k == TEACHER_ROW else "method" for k in keys]
    labels = [method_label(k) for k in keys]
    table = Table("main_table", "Main results", "", columns, labels, kinds, cells, notes=notes,
                  row_keys=list(keys), select=select, paper=paper)
    mark_best(table)
    gain_text = ""
    if PROPOSED in keys and any(k not in (PROPOSED, TEACHER_ROW) for k in keys):
        table.rows.append(f"Δ {method_label(PROPOSED)} − comparator")
        table.kinds.append("gain")
        table.row_keys.append("gain")
        gains = [_gain(table, j, lookup, per_block) for j in range(len(columns))]
        _adjust(gains)
        table.cells.append(gains)
        gain_text = " " + gain_caption(gains, method_label(PROPOSED), method_label)
    weak = weak_teacher_text(_weak_teachers(per_block))
    if weak:
        notes.append(weak)
        gain_text = " " + weak + gain_text
    groups = sorted({main_groups(members[b]) for b in blocks})
    used = _used(per_block)
    caption = (f"Top-1 accuracy (%) on the balanced test set; Tail: the 33% least frequent classes, All: every "
               f"class. {_select_caption(select)} {protocol_caption(used, df)} "
               f"{_spread_caption(cells)}{gain_text} LTKD row: rebalanced and reweighted, "
               f"{'/'.join(str(g) for g in groups)} groups. {_chosen_caption()}")
    return _captioned(table, caption, "(arXiv 2506.18496, Tables 1-3), where it has one", used)


def _weak_teachers(per_block: dict) -> list[tuple[str, float, float]]:
    """(block, teacher's, student alone's mean val_acc) where the teacher is the lower one."""
    out = []
    for block, rows in per_block.items():
        teacher, alone = rows.get(TEACHER_ROW), rows.get(STUDENT_METHOD)
        if teacher is None or alone is None or "val_acc" not in teacher or "val_acc" not in alone:
            continue
        t, a = summary(teacher["val_acc"]).mean, summary(alone["val_acc"]).mean
        if t is not None and a is not None and t < a:
            out.append((_block_text(block), t, a))
    return out


def _has_teacher_seeds(trials: pd.DataFrame) -> bool:
    return "teacher_seed" in trials and trials["teacher_seed"].notna().any()


def pair_key(row: pd.Series | dict, with_teacher: bool) -> tuple:
    """What pairs two runs of different methods: the seed, and the teacher's seed when both have one."""
    seed = None if _missing(row.get("seed")) else int(row.get("seed"))
    if not with_teacher:
        return (seed,)
    teacher = row.get("teacher_seed")
    return (seed, None if _missing(teacher) else int(teacher))


def paired_values(trials: pd.DataFrame, metric: str, with_teacher: bool) -> dict[tuple, float]:
    """pair key -> the metric (the mean, should one key hold several runs)."""
    values: dict[tuple, list[float]] = {}
    for row in trials[[c for c in ("seed", "teacher_seed", metric) if c in trials]].to_dict("records"):
        value = row.get(metric)
        if not _missing(value):
            values.setdefault(pair_key(row, with_teacher), []).append(float(value))
    return {key: statistics.fmean(v) for key, v in values.items()}


def _gain(table: Table, j: int, lookup: dict, per_block: dict | None = None) -> Stat | None:
    """LTKD's mean minus its comparator's (chosen per block on validation, results/comparator.py) in
    column j, with the paired test across seeds (p_holm is filled in over the whole table later)."""
    column = table.columns[j]
    block = (column.dataset, column.teacher, column.student, column.imbalance_factor)
    rows = (per_block or {}).get(block, {})
    comparator = choose_comparator(rows, exclude=(PROPOSED, TEACHER_ROW))
    cells = dict(zip(table.row_keys, (row[j] for row in table.cells)))
    ours, theirs_cell = cells.get(PROPOSED), cells.get(comparator.key) if comparator else None
    if ours is None or ours.mean is None or theirs_cell is None or theirs_cell.mean is None:
        return None
    gain = Stat(ours.mean - theirs_cell.mean, compared_to=comparator.key, compared_on=comparator.basis)
    mine, theirs = rows.get(PROPOSED), rows.get(comparator.key)
    with_teacher = _has_teacher_seeds(mine) and _has_teacher_seeds(theirs)
    test = paired_test(paired_values(mine, column.metric, with_teacher),
                       paired_values(theirs, column.metric, with_teacher))
    gain.n_pairs, gain.p_value, gain.no_test, gain.ci = test.n_pairs, test.p_value, test.reason, test.ci
    if table.paper:
        published = {key[-1]: values.get(column.metric) for key, values in lookup.items() if key[:4] == block}
        theirs_paper = published.get(PROPOSED)
        others = [v for k, v in published.items() if k not in (PROPOSED, TEACHER_ROW) and v is not None]
        if theirs_paper is not None and others:
            gain.paper = theirs_paper - max(others)
    return gain


def _adjust(gains: list[Stat | None]) -> None:
    """Holm's adjustment over every tested gain of the table (one family: the table's Δ row)."""
    adjusted = holm([None if g is None else g.p_value for g in gains])
    for gain, p in zip(gains, adjusted):
        if gain is not None:
            gain.p_holm = p


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
    notes += refuse_mixed(per_block, lambda key: method_label("kd") if key == "kd" else VARIANT_LABELS[key], _block_text)
    keys = [k for k in ["kd"] + VARIANT_ORDER if any(k in rows for rows in per_block.values())]
    columns, _, cells = _columns_and_cells(per_block, blocks, keys, ("ablations", "variant") if paper else None,
                                           lambda key: "baseline_kd" if key == "kd" else key)
    notes += _mixed_notes(per_block, lambda key: method_label("kd") if key == "kd" else VARIANT_LABELS[key])
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
    caption = (f"LTKD's switches (the paper's Tables 4-5): cross-group term rebalanced (or the teacher's own "
               f"group probabilities), within-group terms with uniform weights (or the teacher's group "
               f"probabilities), each term on or off (alpha = 0: within only; beta = 0: cross only). "
               f"Top-1 accuracy (%). {_select_caption(select)} {protocol_caption(_used(per_block), df)} "
               f"{_spread_caption(cells)} {_chosen_caption()}")
    return _captioned(table, caption, "(Tables 4-5, CIFAR-100-LT γ=20)", _used(per_block))


WITHIN_NORMS = {"sum": "the within-group term sums the groups with weight 1 each, the paper's, so it grows with "
                       "the group count",
                "mean": "the within-group term is divided by the group count"}


def _norm_of(row: pd.Series | dict) -> str | None:
    value = row.get("within_norm")
    return None if _missing(value) else str(value)


def _within_norm_sentence(norms: set) -> str:
    known = sorted(n for n in norms if n is not None)
    if len(norms) > 1:
        return ("Rows mix within_norm settings (" + ", ".join(known + (["not recorded"] if None in norms else []))
                + "): each row names its own.")
    if known:
        return f"within_norm = {known[0]}: {WITHIN_NORMS.get(known[0], known[0])}."
    return ("within_norm not recorded (results from before the option existed, when the within-group term "
            "summed the groups with weight 1 each, the paper's).")


def group_count_table(df: pd.DataFrame, select: str = "last-epoch", paper: bool = False) -> Table | None:
    """The paper's Table 6: full LTKD by the number of class groups (overall accuracy), one row per
    group count (per group count and within_norm when the runs mix normalisations)."""
    trials, notes = table_trials(df, select)
    if trials.empty:
        return None
    trials = trials.assign(norm=[_norm_of(r) for r in trials.to_dict("records")])
    candidates = []
    for block in table_cells(trials):
        members = block_members(trials, block)
        full = members[(members["row_key"] == PROPOSED) & (members["variant"] == "ltkd")]
        if full["groups"].nunique() < 2:
            continue
        candidates.append((block, full))
    if not candidates:
        return None
    norms = {n for _, full in candidates for n in full["norm"]}
    split = len(norms) > 1
    blocks = []
    per_block = {}
    for block, full in candidates:
        blocks.append(block)
        if split:
            labelled = full.assign(norm=full["norm"].fillna(""))  # groupby drops None keys
            per_block[block] = {(int(n), norm or None): group for (n, norm), group in
                                labelled.groupby(["groups", "norm"], sort=False)}
        else:
            per_block[block] = {(int(n), None): group for n, group in full.groupby("groups")}
    notes += refuse_mixed(per_block, lambda key: f"LTKD with {key[0]} groups", _block_text)
    keys = sorted({k for rows in per_block.values() for k in rows}, key=lambda k: (k[0], k[1] or ""))
    columns, _, cells = _columns_and_cells(per_block, blocks, keys, ("group_count", "n_groups") if paper else None,
                                           lambda key: key[0], (("acc", "All"),))
    notes += _mixed_notes(per_block, lambda key: f"LTKD with {key[0]} groups"
                          + (f" (within_norm {key[1] or 'not recorded'})" if split else ""), ignore="n_groups")
    labels = [f"{n} groups" + (f" ({norm or 'norm not recorded'})" if split else "") for n, norm in keys]
    row_keys = [f"{n}/{norm or 'unrecorded'}" if split else str(n) for n, norm in keys]
    table = Table("group_count_table", "LTKD by number of class groups", "", columns, labels,
                  ["method"] * len(keys), cells, notes=notes, row_keys=row_keys, select=select, paper=paper,
                  row_header="Groups")
    mark_best(table)
    caption = (f"Full LTKD with the classes split into n frequency groups (the paper's Table 6; n = number of "
               f"classes is continuous reweighting). {_within_norm_sentence(norms)} Overall top-1 accuracy (%). "
               f"{_select_caption(select)} {protocol_caption(_used(per_block), df)} "
               f"{_spread_caption(cells, 'best group count')} {_chosen_caption()}")
    return _captioned(table, caption, "(Table 6, CIFAR-100-LT γ=100)", _used(per_block))


def _without(hparams_json: str, name: str) -> str:
    try:
        values = json.loads(hparams_json)
    except (TypeError, ValueError):
        return str(hparams_json)
    values.pop(name, None)
    return json.dumps(values, sort_keys=True)


# ------------------------------------------------------------------------------ what was chosen


def _one(values: Iterable) -> Any:
    """The one known value (None if none; a sorted list if they differ)."""
    known = sorted({v.item() if hasattr(v, "item") else v for v in _known(values)}, key=repr)
    if not known:
        return None
    return known[0] if len(known) == 1 else known


def _searched_names(search: pd.DataFrame) -> list[str]:
    """The hyperparameters that took more than one value over a cell's search trials."""
    seen: dict[str, set[str]] = {}
    for text in search["hparams_json"]:
        try:
            values = json.loads(text)
        except (TypeError, ValueError):
            continue
        for name, value in values.items():
            seen.setdefault(name, set()).add(json.dumps(value, sort_keys=True))
    return sorted(name for name, values in seen.items() if len(values) > 1)


def _sort_entry(entry: dict) -> tuple:
    return (_dataset_sort_key(entry["dataset"] or ""), float(entry["imbalance_factor"] or 0),
            _pair_sort_key((entry["teacher_arch"], entry["student_arch"])), method_sort_key(entry["method"] or ""),
            entry["cell"], -entry["runs"])


def chosen_configs(df: pd.DataFrame) -> list[dict]:
    """One entry per (sweep, cell, hyperparameter setting) of the final (and single) student runs:
    the hyperparameters they used and how they were chosen."""
    if df.empty:
        return []
    finals = df[(df["row_kind"] == "final") & df["stage"].isin(("final", "single")) & (df["role"] != "teacher")]
    search = df[(df["row_kind"] == "final") & (df["stage"] == "search")]
    searches = dict(list(search.groupby(["sweep", "cell"], sort=False)))
    entries = []
    for (sweep, cell, hparams), group in finals.groupby(["sweep", "cell", "hparams_json"], sort=False):
        first = group.iloc[0]
        searched = searches.get((sweep, cell), search.iloc[0:0])
        try:
            values = json.loads(hparams)
        except (TypeError, ValueError):
            values = {}
        completed = group[group["status"] == "completed"]
        taught = completed[completed["teacher"].notna()]
        entries.append({
            "sweep": sweep, "cell": cell, "method": first["method"], "dataset": first["dataset"],
            "imbalance_factor": None if _missing(first["imbalance_factor"]) else float(first["imbalance_factor"]),
            "teacher_arch": None if _missing(first["teacher_arch"]) else first["teacher_arch"],
            "student_arch": first["arch"], "hparams": values,
            "searched": _searched_names(searched) if len(searched) > 1 else [],
            "selection": _one(group["selection"]), "objective_metric": _one(group["objective_metric"]),
            "search_trials": _one(int(v) for v in _known(group["search_trials"])),
            "seeds": _ints(completed["seed"]), "teacher_seeds": _ints(taught["teacher_seed"]) if len(taught) else [],
            "not_completed_seeds": _ints(group.loc[group["status"] != "completed", "seed"]),
            "runs": len(group), "completed": len(completed),
        })
    return sorted(entries, key=_sort_entry)


def best_configs(df: pd.DataFrame) -> dict:
    """What `best_config.json` holds: sweep -> cell -> the final runs' hyperparameters, the split
    their search was selected on, the metric it maximised and its trial count. A cell whose final
    runs used more than one setting gives the most used one and lists the others."""
    out: dict[str, dict[str, dict]] = {}
    for entry in chosen_configs(df):
        cells = out.setdefault(entry["sweep"], {})
        record = {"method": entry["method"], "dataset": entry["dataset"],
                  "imbalance_factor": entry["imbalance_factor"], "teacher_arch": entry["teacher_arch"],
                  "student_arch": entry["student_arch"], "hparams": entry["hparams"],
                  "searched": entry["searched"], "selection": entry["selection"],
                  "objective_metric": entry["objective_metric"], "search_trials": entry["search_trials"],
                  "seeds": entry["seeds"], "teacher_seeds": entry["teacher_seeds"]}
        if entry["cell"] in cells:  # entries come most runs first within a cell
            cells[entry["cell"]].setdefault("other_hparams", []).append(entry["hparams"])
        else:
            cells[entry["cell"]] = record
    return out


def value_text(value: Any) -> str:
    """A hyperparameter's value as tables and figures print it: true/false, 4 significant digits, text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _trials_text(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, list):
        return "/".join(_trials_text(v) for v in value)
    return "defaults" if int(value) == 0 else str(int(value))


def _selection_text(entry: dict) -> str:
    trials = entry["search_trials"]
    if trials == 0:
        return "– (no search)"
    selection, objective = entry["selection"], entry["objective_metric"]
    if selection is None:
        return "not recorded"
    names = {"val": "validation", "test": "test set"}
    split = "/".join(names.get(s, s) for s in selection) if isinstance(selection, list) else \
        names.get(selection, selection)
    if objective is not None:
        split += f" ({'/'.join(objective) if isinstance(objective, list) else objective})"
    return split


def chosen_table(df: pd.DataFrame) -> TextTable | None:
    """The chosen hyperparameters of every cell's final runs, one row per cell (per setting if a
    cell's runs used several)."""
    entries = chosen_configs(df)
    if not entries:
        return None
    sweeps = sorted({e["sweep"] for e in entries})
    headers = (["Sweep"] if len(sweeps) > 1 else []) + [
        "Method", "Dataset", "γ", "Pair", "Hyperparameters", "Searched", "Trials", "Selection", "Seeds"]
    rows, notes, seen = [], [], {}
    for entry in entries:
        label = method_label(entry["method"])
        name = str(entry["cell"]).rsplit("/", 1)[-1]
        if name and name != entry["method"]:
            label += f" ({name})"
        pair = (f"{entry['teacher_arch']} → {entry['student_arch']}" if entry["teacher_arch"]
                else entry["student_arch"])
        hparams = ", ".join(f"{k}={value_text(v)}" for k, v in sorted(entry["hparams"].items())) or "–"
        seeds = _int_text(entry["seeds"])
        if entry["teacher_seeds"]:
            seeds += f" (teacher {_int_text(entry['teacher_seeds'])})"
        if entry["not_completed_seeds"]:
            seeds += f"; not completed: {_int_text(entry['not_completed_seeds'])}"
        rows.append(([entry["sweep"]] if len(sweeps) > 1 else []) + [
            label, dataset_label(entry["dataset"]), format_factor(entry["imbalance_factor"] or 0), pair, hparams,
            ", ".join(entry["searched"]) or "–", _trials_text(entry["search_trials"]), _selection_text(entry), seeds])
        key = (entry["sweep"], entry["cell"])
        seen[key] = seen.get(key, 0) + 1
    for (sweep, cell), count in seen.items():
        if count > 1:
            notes.append(f"{cell} ({sweep}): the final runs used {count} different hyperparameter settings.")
    caption = ("Hyperparameters of the final runs of every cell, also written to "
               f"{BEST_CONFIG_FILE}. Searched: the hyperparameters that took more than one value over the cell's "
               "search trials found in these results; Trials: the Optuna trials behind the choice (defaults: no "
               "search); Selection: the split the search maximised, and the metric; Seeds: the student (and "
               "teacher) seeds of the completed final runs.")
    return TextTable(CHOSEN_TABLE, "Chosen hyperparameters", caption, headers, rows, notes)


def all_tables(df: pd.DataFrame, select: str = "last-epoch", paper: bool = False) -> list[Table | TextTable]:
    """The main, ablation and group-count tables the results allow, then the chosen hyperparameters."""
    tables = [main_table(df, select, paper), ablation_table(df, select, paper), group_count_table(df, select, paper)]
    tables = [t for t in tables if t is not None]
    if tables:
        chosen = chosen_table(df)
        if chosen is not None:
            tables.append(chosen)
    return tables
