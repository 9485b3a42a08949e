"""What a run folder holds, in one place: the checkpoint, the resolved config and the metrics log.

    <run folder>/checkpoint.pt   every epoch (or every checkpoint_every_seconds), atomically (trainables/checkpoint.py)
    <run folder>/run.json        the resolved RunConfig
    <run folder>/data.json       the data the run trains on: class counts, split sizes
    <run folder>/metrics.jsonl   one JSON line per finished epoch
    <run folder>/train.log       the run's own log lines with their times (a sweep's trials; `ltkd train` too)
    <run folder>/.trial.lock     the lease of the process training it (trainables/storage.py)

Torch-free, so commands that only read run folders (`ltkd status`) never load torch.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from trainables.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "run.json"
DATA_NAME = "data.json"
METRICS_NAME = "metrics.jsonl"
TRAIN_LOG_NAME = "train.log"
RUN_LOCK_NAME = ".trial.lock"
RUN_FILES = (CHECKPOINT_NAME, CONFIG_NAME, DATA_NAME, METRICS_NAME, TRAIN_LOG_NAME)  # what a run pushes back, in that order


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch metrics of a local run folder ([] when it has none yet)."""
    path = Path(run_dir) / METRICS_NAME
    return parse_metrics(path.read_bytes(), str(path)) if path.exists() else []


def read_data_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """A local run folder's data.json (class counts and split sizes), None when it has none (older runs)."""
    path = Path(run_dir) / DATA_NAME
    return json.loads(path.read_text()) if path.exists() else None


def data_summary_text(class_counts, train_images: int, val_images: int, test_images: int) -> str:
    """The data.json text: the training pool's class counts (after the validation split) and the split sizes."""
    return json.dumps({"num_classes": len(class_counts), "class_counts": [int(c) for c in class_counts],
                       "train_images": int(train_images), "val_images": int(val_images),
                       "test_images": int(test_images)})


class MetricsError(UserError):
    pass


def parse_metrics(text: str | bytes, source: str = METRICS_NAME) -> list[dict[str, Any]]:
    """The per-epoch metrics of a metrics.jsonl text or its bytes (`source`: the file, for errors).

    A last line that is not JSON is an append a crash cut short: it is left out, so the run counts as
    unfinished (resuming it rewrites the file from its checkpoint's history). Any other line that is
    not a JSON object is a MetricsError naming the file and the line.
    """
    if isinstance(text, bytes):  # the lines are ASCII JSON: a byte that is not UTF-8 spoils its own line only
        text = text.decode("utf-8", errors="replace")
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    history = []
    for index, (number, line) in enumerate(lines):
        try:
            value = json.loads(line)
        except ValueError:
            if index == len(lines) - 1:
                break
            value = None
        if not isinstance(value, dict):
            raise MetricsError(f"{source} line {number} is not a JSON object ({line[:40]!r}); remove that line "
                               "(or the run folder, to train the run again)")
        history.append(value)
    return history


def metrics_lines(history: list[dict[str, Any]]) -> str:
    """The metrics.jsonl text of a history."""
    return "".join(json.dumps(m) + "\n" for m in history)


def append_text(path: Path, text: str, sync: bool = False) -> None:
    """Append `text` to the file at `path` (created with the umask's mode), never through a symbolic link;
    with `sync`, on the disk before returning.

    Run folders are on shared storage: a train.log or metrics.jsonl planted as a link would have the
    append land in whatever file it names.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{path} is a symbolic link; remove it (appends never follow links)") from None
        raise
    with os.fdopen(fd, "a") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())


class TrainLog:
    """Appends a run's log lines, each with its local time, to its train.log (and hands them on)."""

    def __init__(self, run_dir: str | Path, echo=None):
        self.path = Path(run_dir) / TRAIN_LOG_NAME
        self.echo = echo

    def __call__(self, line: str) -> None:
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_text(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        if self.echo is not None:
            self.echo(line)
