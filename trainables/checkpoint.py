"""Atomic checkpoint files and their validation on load.

Checkpoints live on shared storage, so a file may come from anyone: it is read with
`torch.load(weights_only=True)`, which builds tensors and plain containers and runs no code, and a
payload holds nothing else (numpy arrays are saved as tensors; see `_check_plain`).
"""
from __future__ import annotations

import os
import pickle
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from trainables.errors import UserError
from trainables.run_files import CHECKPOINT_NAME

# 2: only tensors and plain containers (version 1 held numpy arrays and a Counter, which
# weights_only loading refuses).
FORMAT_VERSION = 2
PLAIN_TYPES = (str, int, float, bool, type(None))


class CheckpointError(UserError):
    pass


def _check_plain(value: Any, where: str = "payload") -> None:
    """Refuse to write what `torch.load(weights_only=True)` would refuse to read back.

    Exact types: numpy scalars subclass float, and a dict subclass such as Counter is refused
    by older torch releases.
    """
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            _check_plain(key, f"a key of {where}")
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not (type(value) in PLAIN_TYPES or isinstance(value, torch.Tensor)):
        raise TypeError(f"checkpoint {where} is a {type(value).__module__}.{type(value).__qualname__}; "
                        "a checkpoint holds only tensors, dicts, lists, tuples, str, int, float, bool and None")


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    _check_plain(payload)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per writer, opened with open() so the umask sets the mode (mkstemp's 0600
    # would make a teacher shared by a group unreadable to it).
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    f = open(tmp, "xb")
    try:
        with f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def checkpoint_path(location: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    location = Path(location).expanduser()
    return location / CHECKPOINT_NAME if location.is_dir() else location


def _refused_as_unsafe(exc: Exception) -> bool:
    """torch.load(weights_only=True) refused a well-formed pickle for what it would build.

    torch reports every refusal as an UnpicklingError; an unknown opcode ("Unsupported operand")
    means the bytes are no pickle at all, i.e. a garbage or foreign file.
    """
    return isinstance(exc, pickle.UnpicklingError) and "Unsupported operand" not in str(exc)


def load_checkpoint(location: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    path = checkpoint_path(location)
    if not path.exists():
        raise CheckpointError(f"{what} {path} not found; pass the folder of a training run or its {CHECKPOINT_NAME}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if _refused_as_unsafe(exc):
            raise CheckpointError(
                f"{what} {path} contains objects that are not plain tensors/containers, so it is refused (loading "
                f"it could run code; checkpoints of ltkd-sweep before format version {FORMAT_VERSION} are refused "
                "too): retrain it or point at another run") from None
        raise CheckpointError(f"{what} {path} is truncated or not a checkpoint ({type(exc).__name__}); "
                              "retrain it or point at another run") from None
    if not isinstance(payload, dict) or payload.get("format") != "ltkd-sweep":
        raise CheckpointError(f"{what} {path} was not written by ltkd-sweep; point at a run folder made by `ltkd train`")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{what} {path} has format version {payload['format_version']}, newer than this "
                              f"ltkd-sweep ({FORMAT_VERSION}); upgrade ltkd-sweep")
    return payload
