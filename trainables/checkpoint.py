"""Atomic checkpoint files and their validation on load."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainables.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


class CheckpointError(UserError):
    pass


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def checkpoint_path(location: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    location = Path(location).expanduser()
    return location / CHECKPOINT_NAME if location.is_dir() else location


def load_checkpoint(location: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    path = checkpoint_path(location)
    if not path.exists():
        raise CheckpointError(f"{what} {path} not found; pass the folder of a training run or its {CHECKPOINT_NAME}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{what} {path} is truncated or not a checkpoint ({type(exc).__name__}); "
                              "retrain it or point at another run") from None
    if not isinstance(payload, dict) or payload.get("format") != "ltkd-sweep":
        raise CheckpointError(f"{what} {path} was not written by ltkd-sweep; point at a run folder made by `ltkd train`")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{what} {path} has format version {payload['format_version']}, newer than this "
                              f"ltkd-sweep ({FORMAT_VERSION}); upgrade ltkd-sweep")
    return payload
