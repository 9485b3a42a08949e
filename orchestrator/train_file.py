"""`ltkd train student --config FILE [--cell TEXT]`: the run a `ltkd best` file describes, and the file itself.

A `ltkd best` file (results/best.py, TOML or JSON) holds one entry per cell, each with the
`ltkd train student ...` command that trains its first final run. `--config` trains that command,
with the flags given beside it laid over it (a flag given on the command line wins over the
file's; `--set` adds to the file's hyperparameters). `--print-config` writes the run the flags
describe as such a file, one cell long.
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from trainables.errors import UserError

# Options of the command line that pick the file rather than describe the run.
FILE_OPTIONS = ("--config", "--cell")


def read_best_file(path: str | Path) -> list[dict[str, Any]]:
    """The cell entries of a `ltkd best` file (TOML: `[[cell]]` tables; JSON: a list)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path} not found; pass a file `ltkd best SWEEP_DIR > best.toml` wrote")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            entries = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            entries = tomllib.loads(text).get("cell", [])
    except ValueError as exc:
        raise UserError(f"--config {path} is not a `ltkd best` file ({str(exc).splitlines()[0]}); "
                        "write one with `ltkd best SWEEP_DIR`") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("command"), str)
                                                and isinstance(e.get("cell"), str) for e in entries) or not entries:
        raise UserError(f"--config {path} holds no cell with a command; write it with `ltkd best SWEEP_DIR`")
    return entries


def pick_cell(entries: list[dict[str, Any]], cell: str | None, path: str) -> dict[str, Any]:
    """The one entry `--cell` picks (an exact key, else the one key containing it); any entry when there is one."""
    names = [e["cell"] for e in entries]
    if cell is None:
        if len(entries) == 1:
            return entries[0]
        raise UserError(f"--config {path} holds {len(entries)} cells ({', '.join(names)}); pick one with --cell TEXT")
    if cell in names:
        return entries[names.index(cell)]
    matches = [e for e in entries if cell in e["cell"]]
    if len(matches) != 1:
        what = "no cell" if not matches else f"{len(matches)} cells ({', '.join(e['cell'] for e in matches)})"
        raise UserError(f"--cell {cell}: {what} of {path} match (cells: {', '.join(names)}); pass text only one "
                        "cell key contains")
    return matches[0]


def _without_file_options(argv: list[str]) -> list[str]:
    """The student's own flags as typed, after `train student`, less --config/--cell and their values."""
    out, skip = [], False
    for token in argv[argv.index("student") + 1:]:
        if skip:
            skip = False
        elif token in FILE_OPTIONS:
            skip = True
        elif not token.startswith(tuple(f"{o}=" for o in FILE_OPTIONS)):
            out.append(token)
    return out


def args_from_file(args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """The namespace of the file's command with the command line's own flags parsed after it (they win)."""
    from orchestrator.cli import build_parser

    entry = pick_cell(read_best_file(args.config), args.cell, args.config)
    command = shlex.split(entry["command"])
    if command[:3] != ["ltkd", "train", "student"]:
        raise UserError(f"--config {args.config}: the command of cell {entry['cell']} is not `ltkd train student ...`; "
                        "write the file with `ltkd best SWEEP_DIR`")
    merged = build_parser().parse_args(["train", "student", *command[3:], *_without_file_options(argv)])
    merged.config = merged.cell = None
    merged.from_cell = entry["cell"]
    return merged


def teacher_files(teacher: str | None, cell: str | None) -> Path | None:
    """The teacher's run folder on this machine: a folder as it is, or a copy of one on an object store."""
    from trainables.storage import Location, local_folder

    if not teacher:
        return None
    location = Location.parse(teacher)
    if location.remote:
        return local_folder(location, keep=lambda name: not name.endswith((".lock", ".tmp", ".part")))
    if not location.local_path.exists():
        where = f" (cell {cell})" if cell else ""
        raise UserError(f"teacher {teacher}{where} not found: the sweep's storage is not reachable here; pass "
                        "--teacher DIR (its teachers/<run> folder)")
    return None


def cell_key(config: dict[str, Any]) -> str:
    """The cell key a sweep gives a run: dataset/if<factor>/<teacher>-><student>/<method>."""
    from results.best import _number

    return (f"{config['dataset']}/if{_number(config['imbalance_factor'])}/{config.get('teacher_arch') or 'teacher'}"
            f"->{config['arch']}/{config['method']}")


def best_file_of(resolved: dict[str, Any], out: str | None) -> str:
    """A one-cell `ltkd best` file (TOML) for a resolved run config: `--config` trains it again."""
    from results.best import to_toml, train_command
    from trainables.config import _teacher_arch_on_disk

    command = train_command(resolved)
    if resolved.get("teacher") and not resolved.get("teacher_arch"):  # for the cell key; the command stays as it was
        resolved = {**resolved, "teacher_arch": _teacher_arch_on_disk(resolved["teacher"])}
    if out:
        command = shlex.join([*shlex.split(command)[:-2], "--out", out])
    entry = {"cell": cell_key(resolved), "method": resolved["method"], "dataset": resolved["dataset"],
             "imbalance_factor": resolved["imbalance_factor"], "teacher_arch": resolved.get("teacher_arch"),
             "student_arch": resolved["arch"], "hparams": resolved.get("hparams") or {},
             "seeds": [resolved["seed"]], "command": command}
    return to_toml([entry])
