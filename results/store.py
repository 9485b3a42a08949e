"""The Parquet results store: one file per trial, atomic and idempotent writes, checked reads.

Layout: `<store>/results/<safe name of trial_id>.parquet`, where `store` is a sweep folder or
any URI pyarrow understands (`file:///...`, `s3://bucket/prefix`, `gs://...`, `hdfs://...`).
Each file holds one trial: one row per epoch (`row_kind = "epoch"`) and one final row
(`row_kind = "final"`, carrying the last epoch's metrics, the status, the wall time and the
error if any). Every file has the same explicit schema (`SCHEMA` below, version
`SCHEMA_VERSION`), so `pyarrow.dataset.dataset(<store>/results)` reads them all as one table
(when they share a version; `read_results` also reads stores that mix versions).

Writes (`trainables.storage.publish`): the file is written under a hidden temporary name in the
same folder and then moved over the final name: a rename on local disks and HDFS, a server-side
copy on object stores, never a write straight to the final key (pyarrow completes an object-store
upload even when the writer fails midway, which would publish half a file). A reader therefore
sees the old file or the new one, never half of one.
Rewriting a trial (a resumed trial, a retried worker) replaces its file: one copy, whoever
wrote last. Trials never share a file, so workers on many machines write at once without any
lock; two writers of the same trial both write complete files and the last rename wins.

Reads (`read_results`): every file is checked: its schema version (file metadata
`ltkd_sweep.schema_version`) and its columns. A file from an older schema is upgraded on read
(`_UPGRADES`: version 1 files get the columns of version 2 as nulls). Any file that cannot be read
(truncated, not Parquet, a newer schema, columns that are not the schema's) is skipped with a
warning naming it: a results folder on shared storage is untrusted input.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import os
import re
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.errors import UserError
from trainables.metrics import ACCURACY_METRICS, TEST_METRICS, VALIDATION_METRICS
from trainables.storage import Location, publish

SCHEMA_VERSION = 2
RESULTS_DIR = "results"
META_VERSION_KEY = b"ltkd_sweep.schema_version"
META_FORMAT_KEY = b"ltkd_sweep.format"
FORMAT_NAME = b"ltkd-sweep/trial-results"
READ_THREADS = 8

STAGES = ("teacher", "search", "final", "single")
STATUSES = ("completed", "early_stopped", "errored")
ROW_KINDS = ("epoch", "final")

# Hyperparameters flattened into typed columns (the full dict is always in `hparams_json`).
# A knob stored under another name declares it as an alias (DIST's tau fills `temperature`).
FLOAT_HPARAMS = ("alpha", "beta", "temperature", "ce_weight", "kd_weight")
INT_HPARAMS = ("n_groups", "warmup_epochs")
BOOL_HPARAMS = ("rebalance", "uniform_within")
STRING_HPARAMS = ("within_norm",)
# Validation-split metrics (percent; None without a validation split).
VAL_KEYS = VALIDATION_METRICS
# Per-epoch metric keys the engine produces; any other key lands in `extra_json`.
EPOCH_KEYS = ("epoch", "epochs", "train_loss", "lr", *ACCURACY_METRICS,
              "per_class_acc", "group_prob", "teacher_group_prob", "distill_weight", "epoch_seconds", "train_seconds",
              "device")

_LIST_F64 = pa.list_(pa.float64())

# The schema, version 2. Column order is part of it. Changing a column (adding one included)
# means SCHEMA_VERSION + 1 and an entry in _UPGRADES so older files still read.
SCHEMA = pa.schema([
    # identity of the row
    pa.field("schema_version", pa.int32(), nullable=False),
    pa.field("sweep", pa.string(), nullable=False),
    pa.field("trial_id", pa.string(), nullable=False),
    pa.field("row_kind", pa.string(), nullable=False),       # "epoch" | "final"
    pa.field("stage", pa.string(), nullable=False),          # teacher | search | final | single
    pa.field("cell", pa.string(), nullable=False),
    pa.field("study", pa.string()),                          # Optuna study name (search trials)
    pa.field("optuna_trial", pa.int64()),                    # Optuna trial number (search trials)
    pa.field("status", pa.string(), nullable=False),         # completed | early_stopped | errored
    pa.field("error", pa.string()),
    # how the run's configuration was chosen (version 2; null in upgraded version-1 files)
    pa.field("selection", pa.string()),                      # "val" | "test": the split the cell's search maximised
    pa.field("objective_metric", pa.string()),               # the metric the cell's search maximised
    pa.field("search_trials", pa.int64()),                   # Optuna trials behind this configuration (0: fixed)
    pa.field("teacher_seed", pa.int64()),                    # seed of the student's teacher
    # configuration (flattened from RunConfig.to_dict(); the whole dict in config_json)
    pa.field("dataset", pa.string()),
    pa.field("imbalance_factor", pa.float64()),
    pa.field("data_seed", pa.int64()),
    pa.field("validation_per_class", pa.int64()),            # version 2: held-out images per class (0: none)
    pa.field("role", pa.string()),                           # teacher | student
    pa.field("arch", pa.string()),                           # the trained model (the student for students)
    pa.field("teacher_arch", pa.string()),
    pa.field("teacher", pa.string()),                        # teacher checkpoint path
    pa.field("method", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("planned_epochs", pa.int64()),
    pa.field("batch_size", pa.int64()),
    pa.field("base_lr", pa.float64()),
    pa.field("weight_decay", pa.float64()),
    pa.field("alpha", pa.float64()),
    pa.field("beta", pa.float64()),
    pa.field("temperature", pa.float64()),
    pa.field("ce_weight", pa.float64()),
    pa.field("kd_weight", pa.float64()),
    pa.field("n_groups", pa.int64()),
    pa.field("warmup_epochs", pa.int64()),
    pa.field("rebalance", pa.bool_()),
    pa.field("uniform_within", pa.bool_()),
    pa.field("within_norm", pa.string()),                    # version 2: LTKD's "sum" | "mean"
    pa.field("hparams_json", pa.string(), nullable=False),
    pa.field("config_json", pa.string(), nullable=False),
    # metrics (percent; a final row carries the last epoch's)
    pa.field("epoch", pa.int64()),
    pa.field("epochs", pa.int64()),
    pa.field("train_loss", pa.float64()),
    pa.field("lr", pa.float64()),                            # the epoch's learning rate
    *[pa.field(name, pa.float64()) for name in TEST_METRICS],  # acc, acc_head, acc_medium, acc_tail
    *[pa.field(name, pa.float64()) for name in VALIDATION_METRICS],  # version 2: the same on the validation split
    pa.field("per_class_acc", _LIST_F64),
    pa.field("group_prob", _LIST_F64),
    pa.field("teacher_group_prob", _LIST_F64),
    pa.field("distill_weight", pa.float64()),
    pa.field("epoch_seconds", pa.float64()),
    pa.field("train_seconds", pa.float64()),
    pa.field("class_counts", pa.list_(pa.int64())),
    pa.field("extra_json", pa.string()),                     # history keys this schema does not name
    # provenance
    pa.field("wall_seconds", pa.float64()),
    pa.field("device", pa.string()),
    pa.field("code_version", pa.string()),
    pa.field("host", pa.string()),
    pa.field("written_at", pa.timestamp("us", tz="UTC"), nullable=False),
])
SCHEMA_COLUMNS = tuple(SCHEMA.names)

# Columns version 2 added to version 1 (a version-1 file has every other column of SCHEMA).
V2_COLUMNS = ("selection", "objective_metric", "search_trials", "teacher_seed", "validation_per_class",
              "within_norm", *VAL_KEYS)


def _upgrade_1_to_2(table: pa.Table) -> pa.Table:
    """Version 1 -> 2: the new columns, null (version 1 did not record them). The rows keep
    `schema_version` 1: the version they were written with."""
    for name in V2_COLUMNS:
        if name not in table.schema.names:
            table = table.append_column(SCHEMA.field(name), pa.nulls(len(table), SCHEMA.field(name).type))
    return table


# version -> function(table) returning the table in the next version's shape.
_UPGRADES: dict[int, Callable[[pa.Table], pa.Table]] = {1: _upgrade_1_to_2}


class ResultsWarning(UserWarning):
    """A results file that was skipped (truncated, foreign) or a store that holds oddities."""


@dataclass
class TrialRecord:
    sweep: str
    trial_id: str
    stage: str
    cell: str
    config: dict
    history: list[dict]
    status: str
    wall_seconds: float
    device: str
    code_version: str
    error: str | None = None
    study: str | None = None
    optuna_trial: int | None = None
    class_counts: list[int] | None = None
    # How the configuration was chosen (the trial dict's keys; None when not known).
    selection: str | None = None
    teacher_seed: int | None = None
    search_trials: int | None = None
    objective_metric: str | None = None


# ------------------------------------------------------------------------------ code version


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """'<package version>' plus '+g<commit>[.dirty]' when the code runs from a git checkout."""
    try:
        from importlib.metadata import version

        base = version("ltkd-sweep")
    except Exception:  # not installed (running from a source tree)
        base = "unknown"
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5)
        if commit.returncode != 0 or not commit.stdout.strip():
            return base
        label = f"{base}+g{commit.stdout.strip()}"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        if dirty.returncode == 0 and dirty.stdout.strip():
            label += ".dirty"
        return label
    except (OSError, subprocess.SubprocessError):
        return base


# ------------------------------------------------------------------------------ locations


def _filesystem(store: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a sweep folder or URI."""
    location = Location.parse(store)
    if not location.remote:
        return pafs.LocalFileSystem(), location.path
    return location.filesystem()


def _results_dir(path: str) -> str:
    return f"{path.rstrip('/')}/{RESULTS_DIR}" if path not in ("", "/") else f"/{RESULTS_DIR}"


def trial_file_name(trial_id: str) -> str:
    """A safe, stable file name for a trial id: readable slug + hash of the exact id."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", trial_id).strip("._-")[:80] or "trial"
    digest = hashlib.sha256(trial_id.encode("utf-8")).hexdigest()[:12]
    return f"{slug}-{digest}.parquet"


# ------------------------------------------------------------------------------ records -> table


def _num(value: Any, kind: type) -> Any:
    if value is None or (isinstance(value, bool) and kind is not bool):
        return None
    if kind is bool:
        return value if isinstance(value, bool) else None
    try:
        value = kind(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if kind is float and not math.isfinite(value):
        return value  # NaN/inf accuracies are kept as they are (an errored epoch)
    return value


def _float_list(values: Any) -> list[float] | None:
    if values is None:
        return None
    return [float(v) for v in values]


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _hparam(method: str | None, hparams: dict[str, Any], column: str) -> Any:
    """The value for a hyperparameter column: the knob of that name, or the one declaring it as an
    alias (DIST's tau fills `temperature`); a method this installation does not know: by name only."""
    from trainables.methods import METHODS

    if column in hparams or method not in METHODS:
        return hparams.get(column)
    knob = METHODS[method].knob_for(column)
    return hparams.get(knob.name) if knob is not None else None


def _config_columns(record: TrialRecord) -> dict[str, Any]:
    config = dict(record.config or {})
    hparams = dict(config.get("hparams") or {})
    teacher_arch = config.get("teacher_arch")
    if not teacher_arch and config.get("role") == "student":
        teacher_arch = teacher_arch_from_cell(record.cell)
    columns = {
        "dataset": config.get("dataset"),
        "imbalance_factor": _num(config.get("imbalance_factor"), float),
        "data_seed": _num(config.get("data_seed"), int),
        "validation_per_class": _num(config.get("validation_per_class"), int),
        "role": config.get("role"),
        "arch": config.get("arch"),
        "teacher_arch": teacher_arch or None,
        "teacher": None if config.get("teacher") is None else str(config.get("teacher")),
        "method": config.get("method"),
        "seed": _num(config.get("seed"), int),
        "planned_epochs": _num(config.get("epochs"), int),
        "batch_size": _num(config.get("batch_size"), int),
        "base_lr": _num(config.get("lr"), float),
        "weight_decay": _num(config.get("weight_decay"), float),
        "hparams_json": _json(hparams),
        "config_json": _json(config),
    }
    for name in FLOAT_HPARAMS:
        columns[name] = _num(_hparam(config.get("method"), hparams, name), float)
    for name in INT_HPARAMS:
        columns[name] = _num(hparams.get(name), int)
    for name in BOOL_HPARAMS:
        columns[name] = _num(hparams.get(name), bool)
    for name in STRING_HPARAMS:
        columns[name] = None if hparams.get(name) is None else str(hparams.get(name))
    return columns


def teacher_arch_from_cell(cell: str) -> str | None:
    """The teacher architecture named in a cell like 'cifar100/if10/resnet32x4->resnet8x4/ltkd'."""
    for part in str(cell or "").split("/"):
        if "->" in part:
            return part.split("->", 1)[0].strip() or None
    return None


def _metric_columns(metrics: dict[str, Any] | None) -> dict[str, Any]:
    m = metrics or {}
    extra = {k: v for k, v in m.items() if k not in EPOCH_KEYS}
    return {
        "epoch": _num(m.get("epoch"), int),
        "epochs": _num(m.get("epochs"), int),
        "train_loss": _num(m.get("train_loss"), float),
        "lr": _num(m.get("lr"), float),
        **{name: _num(m.get(name), float) for name in ACCURACY_METRICS},
        "per_class_acc": _float_list(m.get("per_class_acc")),
        "group_prob": _float_list(m.get("group_prob")),
        "teacher_group_prob": _float_list(m.get("teacher_group_prob")),
        "distill_weight": _num(m.get("distill_weight"), float),
        "epoch_seconds": _num(m.get("epoch_seconds"), float),
        "train_seconds": _num(m.get("train_seconds"), float),
        "extra_json": _json(extra) if extra else None,
    }


def _check_record(record: TrialRecord) -> None:
    problems = []
    if not isinstance(record.trial_id, str) or not record.trial_id:
        problems.append("trial_id must be a non-empty string")
    if not isinstance(record.sweep, str) or not record.sweep:
        problems.append("sweep must be a non-empty string")
    if record.stage not in STAGES:
        problems.append(f"stage must be one of {', '.join(STAGES)}, got {record.stage!r}")
    if record.status not in STATUSES:
        problems.append(f"status must be one of {', '.join(STATUSES)}, got {record.status!r}")
    if not isinstance(record.config, dict):
        problems.append("config must be a dict (RunConfig.to_dict())")
    if not isinstance(record.history, list) or not all(isinstance(m, dict) for m in record.history):
        problems.append("history must be a list of per-epoch metric dicts")
    if record.selection not in (None, "val", "test"):
        problems.append(f"selection must be 'val', 'test' or None, got {record.selection!r}")
    if problems:
        raise ValueError(f"trial record {record.trial_id!r}: " + "; ".join(problems))


def record_table(record: TrialRecord) -> pa.Table:
    """The rows of one trial (its epochs, then its final row) as a table with SCHEMA."""
    _check_record(record)
    common = {
        "schema_version": SCHEMA_VERSION,
        "sweep": record.sweep,
        "trial_id": record.trial_id,
        "stage": record.stage,
        "cell": record.cell or "",
        "study": record.study,
        "optuna_trial": _num(record.optuna_trial, int),
        "status": record.status,
        "selection": None if record.selection is None else str(record.selection),
        "objective_metric": None if record.objective_metric is None else str(record.objective_metric),
        "search_trials": _num(record.search_trials, int),
        "teacher_seed": _num(record.teacher_seed, int),
        **_config_columns(record),
        "class_counts": None if record.class_counts is None else [int(c) for c in record.class_counts],
        "wall_seconds": _num(record.wall_seconds, float),
        "code_version": record.code_version,
        "host": socket.gethostname(),
        "written_at": _dt.datetime.now(_dt.timezone.utc),
    }
    rows = []
    for metrics in record.history:
        rows.append({**common, "row_kind": "epoch", "error": None, **_metric_columns(metrics),
                     "device": metrics.get("device") or record.device})
    last = record.history[-1] if record.history else None
    rows.append({**common, "row_kind": "final", "error": record.error, **_metric_columns(last),
                 "device": record.device})
    # Epoch rows carry the status of their trial too: filtering on status never needs a join.
    columns = {name: [row.get(name) for row in rows] for name in SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=_schema_for_write())


def _schema_for_write() -> pa.Schema:
    return SCHEMA.with_metadata({META_VERSION_KEY: str(SCHEMA_VERSION).encode(), META_FORMAT_KEY: FORMAT_NAME})


# ------------------------------------------------------------------------------ write


def write_trial(store: str, record: TrialRecord) -> str:
    """Write one trial's rows to `<store>/results/<safe name>.parquet`, atomically; returns the path.

    Writing the same trial_id again replaces the file (one copy). Safe to call from many
    processes and machines at once: each trial has its own file and no lock is taken.
    """
    table = record_table(record)
    fs, root = _filesystem(store)
    name = trial_file_name(record.trial_id)
    # The final row in a row group of its own: status and tables read that group alone, whatever the
    # number of epoch rows (a paper run has 100-240, each with its per-class accuracies).
    epoch_rows = max(1, table.num_rows - 1)
    publish(fs, f"{_results_dir(root)}/{name}", lambda sink: pq.write_table(table, sink, row_group_size=epoch_rows))
    location = Location.parse(store)
    return f"{location.path}/{RESULTS_DIR}/{name}" if location.remote else f"{_results_dir(root)}/{name}"


# ------------------------------------------------------------------------------ read


def _default_warn(message: str) -> None:
    warnings.warn(message, ResultsWarning, stacklevel=3)


def _list_files(store: str, allow_empty: bool = False) -> tuple[pafs.FileSystem, list[str]]:
    """The result files of a store (its results/ folder, or the folder itself if it holds them)."""
    fs, root = _filesystem(store)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{store}: no such folder")
    if info.type != pafs.FileType.Directory:
        raise UserError(f"{store}: not a folder (give a sweep folder that holds {RESULTS_DIR}/*.parquet)")
    candidates = [_results_dir(root), root]
    for folder in candidates:
        if fs.get_file_info(folder).type != pafs.FileType.Directory:
            continue
        entries = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        files = sorted(e.path for e in entries if e.type == pafs.FileType.File
                       and e.base_name.endswith(".parquet") and not e.base_name.startswith("."))
        if files:
            return fs, files
    if allow_empty:
        return fs, []
    raise UserError(f"{store}: no results (expected {RESULTS_DIR}/*.parquet written by ltkd-sweep)")


def _read_file(fs: pafs.FileSystem, path: str, schema: pa.Schema, final_only: bool = False,
               ) -> tuple[pa.Table | None, str | None]:
    """(table, None) or (None, why it is skipped): the file's columns of `schema` (SCHEMA or a projection
    of it); with `final_only` its final row alone (no per-epoch rows)."""
    try:
        with fs.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            metadata = parquet.schema_arrow.metadata or {}
            if META_VERSION_KEY not in metadata:
                return None, "not an ltkd-sweep results file (no schema version in its metadata)"
            try:
                version = int(metadata[META_VERSION_KEY])
            except ValueError:
                return None, f"unreadable schema version {metadata[META_VERSION_KEY]!r}"
            if version > SCHEMA_VERSION:  # one such file (planted, or a newer driver's) must not block every read
                return None, (f"written by a newer ltkd-sweep (schema {version} > {SCHEMA_VERSION}); upgrade "
                              "ltkd-sweep to read it")
            # A current file reads only the columns asked for; an older one whole, for its upgrade.
            columns = schema.names if version == SCHEMA_VERSION and schema is not SCHEMA else None
            # The final row is the file's last row: write_trial gives it a row group of its own (older files
            # hold every row in one group, filtered below).
            table = (parquet.read_row_group(parquet.num_row_groups - 1, columns=columns) if final_only
                     and parquet.num_row_groups else parquet.read(columns=columns))
    except (pa.ArrowException, OSError, ValueError) as exc:
        return None, f"unreadable Parquet ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    while version < SCHEMA_VERSION:
        if version not in _UPGRADES:
            return None, f"schema version {version} has no upgrade path"
        table = _UPGRADES[version](table)
        version += 1
    current = table.schema.equals(schema)  # the common case: a current file, nothing to check or convert
    missing = [] if current else [f.name for f in schema if f.name not in table.schema.names]
    if missing:  # checked before any column is used: the metadata may claim a version its columns are not
        return None, f"not an ltkd-sweep results file (missing columns: {', '.join(missing[:5])})"
    wrong = [] if current else [f.name for f in schema if not table.schema.field(f.name).type.equals(f.type)]
    if wrong:
        return None, f"column types differ from schema {SCHEMA_VERSION} ({', '.join(wrong[:5])})"
    if final_only and (table.num_rows != 1 or table["row_kind"][0].as_py() != "final"):
        import pyarrow.compute as pc

        table = table.filter(pc.equal(table["row_kind"], "final"))
    table = table if current else table.select(list(schema.names)).cast(schema)
    return table.replace_schema_metadata(None), None


# What every read keeps, whatever columns it asks for: the row kind and what tells trials and copies apart.
KEY_COLUMNS = ("sweep", "trial_id", "row_kind", "written_at")


def _projected(columns: tuple[str, ...] | None) -> pa.Schema:
    """SCHEMA, or its `columns` (with KEY_COLUMNS) in SCHEMA's order."""
    if columns is None:
        return SCHEMA
    unknown = sorted(set(columns) - set(SCHEMA.names))
    if unknown:
        raise ValueError(f"unknown results columns: {', '.join(unknown)}")
    keep = set(columns) | set(KEY_COLUMNS)
    return pa.schema([f for f in SCHEMA if f.name in keep])


def read_tables(stores: Iterable[str], warn: Callable[[str], None] | None = None, allow_empty: bool = False,
                final_only: bool = False, columns: Iterable[str] | None = None,
                skipped: Callable[[str, str], None] | None = None) -> pa.Table:
    """Every valid row of every store as one Arrow table (with a `source` column naming the file);
    with `final_only` one row per trial, its final row (what tables and status read: a paper-scale
    store holds 100-240 per-epoch rows per trial, each with its per-class accuracies); with `columns`
    only those (and KEY_COLUMNS): a status of a paper-scale sweep reads thousands of files.
    `skipped(path, why)` is told of each file that could not be read, besides its warning."""
    schema = _projected(None if columns is None else tuple(columns))  # an unknown column: the caller's error
    warn = warn or _default_warn
    stores = [str(s) for s in stores]
    if not stores:
        raise UserError("no sweep folder given")
    parts: list[pa.Table] = []
    sources: list[str] = []  # the file of each part
    seen: set[tuple[str, str]] = set()
    for store in stores:
        fs, files = _list_files(store, allow_empty)
        location = Location.parse(store)
        good = 0
        fresh = [path for path in files if (fs.type_name, path) not in seen]
        good += len(files) - len(fresh)  # the same store named twice (as a path and a URI, say)
        seen.update((fs.type_name, path) for path in fresh)
        # Reading is I/O bound (and slow per file on object stores): read files in parallel.
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            loaded = list(pool.map(lambda path: _read_file(fs, path, schema, final_only), fresh))
        for path, (table, problem) in zip(fresh, loaded):
            if table is None:
                warn(f"skipping {path}: {problem}")
                if skipped is not None:
                    skipped(path, problem)
                continue
            good += 1
            # The file as write_trial names it: a local path, or the store's URI path (its query options left out).
            sources.append(f"{location.path}/{RESULTS_DIR}/{path.rsplit('/', 1)[-1]}" if location.remote else path)
            parts.append(table)
        if not good and files and not allow_empty:
            raise UserError(f"{store}: no readable results (every file was skipped)")
    if not parts:  # allow_empty and nothing written yet
        return schema.append(pa.field("source", pa.string())).empty_table()
    table = pa.concat_tables(parts)
    # One `source` column for all parts at once (a column per part costs more than the read of a final row).
    offsets = np.repeat(np.arange(len(parts), dtype=np.int32), [part.num_rows for part in parts])
    table = table.append_column("source", pa.array(sources, pa.string()).take(pa.array(offsets)))
    return _deduplicate(table, warn)


def _deduplicate(table: pa.Table, warn: Callable[[str], None]) -> pa.Table:
    """Keep one copy of each (sweep, trial_id): the newest write (the same store given twice,
    or a trial copied between stores)."""
    import pyarrow.compute as pc

    keys = pa.Table.from_arrays([table["sweep"], table["trial_id"], table["source"], table["written_at"]],
                                names=["sweep", "trial_id", "source", "written_at"])
    per_file = keys.group_by(["sweep", "trial_id", "source"]).aggregate([("written_at", "max")])
    if per_file.num_rows == len(set(zip(per_file["sweep"].to_pylist(), per_file["trial_id"].to_pylist()))):
        return table
    newest: dict[tuple[str, str], tuple[Any, str]] = {}
    for sweep, trial, source, written in zip(per_file["sweep"].to_pylist(), per_file["trial_id"].to_pylist(),
                                             per_file["source"].to_pylist(), per_file["written_at_max"].to_pylist()):
        key = (sweep, trial)
        if key not in newest or written > newest[key][0]:
            newest[key] = (written, source)
    keep = pa.array(sorted({source for _, source in newest.values()}))
    dropped = sorted(set(per_file["source"].to_pylist()) - set(keep.to_pylist()))
    if dropped:
        warn(f"{len(dropped)} file(s) hold trials also found elsewhere; keeping the newest copy of each")
    return table.filter(pc.is_in(table["source"], value_set=keep))


def read_results(stores: list[str] | str, warn: Callable[[str], None] | None = None, allow_empty: bool = False,
                 final_only: bool = False, columns: Iterable[str] | None = None,
                 skipped: Callable[[str, str], None] | None = None):
    """All rows of all stores as a pandas DataFrame (SCHEMA's columns plus `source`); with
    `final_only` each trial's final row alone; with `columns` only those columns (and KEY_COLUMNS).

    `warn(message)` is called for every skipped file (default: a ResultsWarning), and `skipped(path,
    why)` too. Raises UserError for a missing folder and a folder without readable results (unless
    `allow_empty`: then an empty frame with every column, for a sweep that has written nothing yet).
    """
    if isinstance(stores, (str, os.PathLike)):
        stores = [str(stores)]
    table = read_tables(stores, warn, allow_empty, final_only, columns, skipped)
    return table.to_pandas(types_mapper=None)


def schema_description() -> list[tuple[str, str]]:
    """(column, Arrow type) of the current schema, for documentation."""
    return [(f.name, str(f.type)) for f in SCHEMA]


__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "STAGES", "V2_COLUMNS", "STATUSES", "ResultsWarning", "TrialRecord", "code_version",
    "read_results", "read_tables", "record_table", "schema_description", "teacher_arch_from_cell",
    "trial_file_name", "write_trial",
]
