"""What the sweep tests share: the `ltkd` command and a tiny sweep config on the embedded digits data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LTKD = [sys.executable, "-m", "orchestrator.cli"]


def tiny_config(storage: Path | str, name: str = "tiny", **overrides) -> dict:
    """A sweep of seconds: one factor, resnet8 teacher and student, CE and a 3-trial LTKD search."""
    config = {
        "name": name, "storage": str(storage), "seeds": [0], "teacher_epochs": 2, "student_epochs": 4,
        "batch_size": 64,
        "datasets": [{"name": "digits", "imbalance_factors": [100]}],
        "pairs": [{"teacher": "resnet8", "student": "resnet8"}],
        "methods": [{"method": "ce"}, {"method": "ltkd", "search": {"n_trials": 3}}],
        "resources": {"cpus_per_trial": 1},
    }
    config.update(overrides)
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    return path


def run_ltkd(*args, timeout=1800, **kwargs) -> subprocess.CompletedProcess:
    """`ltkd ARGS` in a subprocess; the timeout only guards against a hang."""
    return subprocess.run([*LTKD, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)
