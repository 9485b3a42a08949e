"""`ltkd best SWEEP_DIR`: every cell's chosen hyperparameters, and the `ltkd train` command that reproduces a run.

Read from the Parquet results only (like `ltkd report`): per cell, the hyperparameters its final runs
used (the most used setting when there are several), how they were chosen (search trials, the split
and metric the search maximised), and the command that trains the final run of its first seed again
without Ray: every setting that decides what a run computes is on that command line, so its run
has the same identity (and, on CPU, the same result) as the sweep's.
"""
from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

import pandas as pd

from results.tables import chosen_configs
from trainables.errors import UserError

FORMATS = ("toml", "json")


def best_runs(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per (sweep, cell): its chosen hyperparameters, how they were chosen, and the command."""
    finals = df[(df["row_kind"] == "final") & df["stage"].isin(("final", "single")) & (df["role"] != "teacher")
                & (df["status"] == "completed")] if len(df) else df
    out, seen = [], set()
    for entry in chosen_configs(df):  # the most used setting of a cell comes first
        key = (entry["sweep"], entry["cell"])
        if key in seen or not entry["seeds"]:
            continue
        seen.add(key)
        rows = finals[(finals["sweep"] == entry["sweep"]) & (finals["cell"] == entry["cell"])]
        rows = rows[[json.loads(h) == entry["hparams"] for h in rows["hparams_json"]]].sort_values("seed")
        config = json.loads(rows.iloc[0]["config_json"])
        out.append({
            "sweep": entry["sweep"], "cell": entry["cell"], "method": entry["method"], "dataset": entry["dataset"],
            "imbalance_factor": entry["imbalance_factor"], "teacher_arch": entry["teacher_arch"],
            "student_arch": entry["student_arch"], "hparams": entry["hparams"], "searched": entry["searched"],
            "search_trials": entry["search_trials"], "selection": entry["selection"],
            "objective_metric": entry["objective_metric"], "seeds": entry["seeds"],
            "teacher_seeds": entry["teacher_seeds"], "command": train_command(config),
        })
    return out


def train_command(config: dict[str, Any]) -> str:
    """`ltkd train student ...` for a resolved run config (RunConfig.to_dict()), every identity setting spelled out."""
    args = ["ltkd", "train", "student", "--dataset", config["dataset"]]
    if config.get("root"):
        args += ["--root", str(config["root"])]
    args += ["--imbalance-factor", _number(config["imbalance_factor"]), "--data-seed", str(config["data_seed"]),
             "--validation-per-class", str(config["validation_per_class"]), "--arch", config["arch"],
             "--method", config["method"]]
    if config.get("teacher"):
        args += ["--teacher", str(config["teacher"])]
        if config.get("teacher_arch"):
            args += ["--teacher-arch", config["teacher_arch"]]
    args += ["--seed", str(config["seed"]), "--epochs", str(config["epochs"]), "--batch-size", str(config["batch_size"]),
             "--lr", _number(config["lr"]), "--weight-decay", _number(config["weight_decay"])]
    for name, value in sorted((config.get("hparams") or {}).items()):
        args += ["--set", f"{name}={_value(value)}"]
    slug = "-".join(part for part in (config["dataset"], f"if{_number(config['imbalance_factor'])}", config["arch"],
                                      config["method"], f"seed{config['seed']}"))
    args += ["--out", f"runs/{slug}"]
    return shlex.join(args)


def _number(value: Any) -> str:
    """A number as the command line parses it back to the same value (repr round-trips floats)."""
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):g}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------ formats


def to_json(entries: list[dict[str, Any]]) -> str:
    return json.dumps(entries, indent=2, sort_keys=True)


def to_toml(entries: list[dict[str, Any]]) -> str:
    """An array of tables, one `[[cell]]` per cell with its `[cell.hparams]` (TOML has no null: None keys are left out)."""
    lines = ["# `ltkd best`: each cell's chosen hyperparameters and the command that reproduces its first final run"]
    for entry in entries:
        lines += ["", "[[cell]]"]
        lines += [f"{key} = {_toml(value)}" for key, value in entry.items() if key != "hparams" and value is not None]
        lines += ["", "[cell.hparams]"]
        lines += [f"{_toml_key(key)} = {_toml(value)}" for key, value in sorted(entry["hparams"].items())]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value if v is not None) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string uses JSON's escapes


# ------------------------------------------------------------------------------ command


def cmd_best(args: argparse.Namespace) -> int:
    from results.store import read_results

    entries = best_runs(read_results(args.sweeps, final_only=True))
    if not entries:
        raise UserError(f"no completed final runs in {', '.join(args.sweeps)}: nothing was chosen yet "
                        "(`ltkd status` says where the sweep stands)")
    if args.cell:
        entries = [e for e in entries if args.cell in e["cell"]]
        if not entries:
            raise UserError(f"no cell matches '{args.cell}' (cells: {', '.join(e['cell'] for e in best_runs(read_results(args.sweeps, final_only=True)))})")
    print(to_toml(entries) if args.format == "toml" else to_json(entries), end="" if args.format == "toml" else "\n")
    return 0


def add_commands(commands) -> None:
    best = commands.add_parser("best", help="each cell's chosen hyperparameters and the `ltkd train` command that "
                               "reproduces its run (reads the Parquet results only)")
    best.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR", help="sweep folders or result stores (paths or URIs)")
    best.add_argument("--format", choices=FORMATS, default="toml", help="toml (default) or json")
    best.add_argument("--cell", default=None, help="only cells whose key contains this text, e.g. if100 or /ltkd")
    best.set_defaults(handler=cmd_best)
