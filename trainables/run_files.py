"""What a run folder holds, in one place: the checkpoint, the resolved config and the metrics log.

    <run folder>/checkpoint.pt   every epoch, atomically (trainables/checkpoint.py)
    <run folder>/run.json        the resolved RunConfig
    <run folder>/metrics.jsonl   one JSON line per finished epoch
    <run folder>/.trial.lock     the lease of the process training it (trainables/storage.py)

Torch-free, so commands that only read run folders (`ltkd status`) never load torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "run.json"
METRICS_NAME = "metrics.jsonl"
RUN_LOCK_NAME = ".trial.lock"
RUN_FILES = (CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME)  # what a run pushes back to its storage, in that order


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch metrics of a local run folder ([] when it has none yet)."""
    path = Path(run_dir) / METRICS_NAME
    return parse_metrics(path.read_text()) if path.exists() else []


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """The per-epoch metrics of a metrics.jsonl text."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def metrics_lines(history: list[dict[str, Any]]) -> str:
    """The metrics.jsonl text of a history."""
    return "".join(json.dumps(m) + "\n" for m in history)
