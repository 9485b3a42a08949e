"""`ltkd status SWEEP_DIR`: where a sweep stands, read from its files only (nothing is written).

It reads the plan the driver wrote (plan.json), the teachers' metrics logs, the Parquet results
and the driver's lock, and never loads torch or Ray. A sweep whose driver never wrote a plan
(made by an older version) is planned again from its sweep.json.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from orchestrator.layout import SweepLayout
from orchestrator.studies import run_outcome
from orchestrator.sweep import driver_state, load_sweep_folder
from trainables.console import printable, span, stamp
from trainables.storage import Location


def read_plan(layout: SweepLayout) -> dict[str, Any] | None:
    """The sweep's plan.json (see plan.plan_summary), or None when it has none or it cannot be read."""
    from orchestrator.plan import PLAN_FORMAT

    text = layout.plan_file.read_text()
    try:
        plan = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT or plan.get("sweep") != layout.name:
        return None
    return plan


def sweep_status(folder: str | Path) -> str:
    folder = Location.parse(folder)
    layout = SweepLayout(folder.parent, folder.name)
    plan = read_plan(layout)
    if plan is None:  # no plan written yet (or by an older version): plan it from sweep.json
        from orchestrator.plan import plan_summary

        plan = plan_summary(load_sweep_folder(folder))  # the error names what is wrong with a non-sweep folder
    lines = [f"sweep {plan['sweep']}: {layout.folder}"]
    lines.append(f"protocol: selection {plan['selection']} (searches maximise {plan['objective_metric']}), search seed "
                 f"{plan['search_seed']}, final seeds {', '.join(map(str, plan['seeds']))}, teacher seeds "
                 f"{', '.join(map(str, plan['teacher_seeds']))}")
    lines.append(driver_state(layout.folder))

    teachers = plan["teachers"]
    finished = sum(run_outcome(layout.teacher_dir(t["name"]), t["epochs"]) is not None for t in teachers)
    lines.append(f"teachers: {finished}/{len(teachers)} finished")

    unreadable: list[str] = []
    records = _records(layout, lambda path, why: unreadable.append(path.rsplit("/", 1)[-1]))
    running = running_runs(layout, plan)
    lines += [f"running: {len(running)} trials"] + [f"  {line}" for line in running]
    for stage in ("search", "final"):
        stage_records = records[records["stage"] == stage] if len(records) else records
        counts = Counter(stage_records["status"]) if len(stage_records) else Counter()
        planned = plan["search_trials"] if stage == "search" else plan["final_runs"]
        ended = sum(counts.values())
        eta = _time_left(stage_records, planned - ended, len(running))
        lines.append(f"{stage}: {ended}/{planned} trials ended ({counts.get('completed', 0)} completed, "
                     f"{counts.get('early_stopped', 0)} early-stopped, {counts.get('errored', 0)} errored){eta}")
        metric = plan["objective_metric"]  # what the searches maximise: never a test metric with selection "val"
        if stage == "search" and len(stage_records) and metric in stage_records:
            best = stage_records[stage_records["status"] == "completed"].groupby("cell")[metric].max()
            for cell, value in best.dropna().items():
                lines.append(f"  best {metric} {value:6.2f}  {cell}")
    if unreadable:
        lines.append(unreadable_line(unreadable))
    return "\n".join(lines)


def unreadable_line(names: list[str], shown: int = 10) -> str:
    """The result files a status skipped, by name (`ltkd report` warns why, file by file)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    listed = ", ".join(printable(name) for name in sorted(names)[:shown])
    return f"{len(names)} result files could not be read: {listed}{more} (`ltkd report` says why)"


def _records(layout: SweepLayout, skipped):
    import pandas as pd

    from results.store import read_results
    from trainables.metrics import ACCURACY_METRICS

    if not layout.results.is_dir():
        return pd.DataFrame(columns=["stage", "status", "cell"])
    # The columns status shows (OBJECTIVES' validation twins included: whichever the searches maximise).
    columns = ("stage", "status", "cell", "wall_seconds", *ACCURACY_METRICS)
    return read_results([layout.folder.uri], warn=lambda message: None, allow_empty=True, final_only=True,
                        columns=columns, skipped=skipped)


def running_runs(layout: SweepLayout, plan: dict[str, Any]) -> list[str]:
    """A line per run whose folder a live process holds: where it is, its epoch, last metric, hyperparameters."""
    from trainables.locks import Lease
    from trainables.run_files import CONFIG_NAME, METRICS_NAME, RUN_LOCK_NAME, parse_metrics

    folders = [(f"teacher {t['name']}", layout.teacher_dir(t["name"])) for t in plan["teachers"]]
    for cell in layout.runs.subfolders():
        folders += [(f"{cell}/{name}", layout.runs / cell / name) for name in (layout.runs / cell).subfolders()]
    lines = []
    for label, folder in folders:
        holder, alive, where = Lease(folder / RUN_LOCK_NAME).holder_state()
        if holder is None or not alive:
            continue
        try:
            config = json.loads((folder / CONFIG_NAME).read_text() or "{}")
            history = parse_metrics((folder / METRICS_NAME).read_bytes() or b"", str(folder / METRICS_NAME))
        except ValueError:  # a file being rewritten: shown next time
            config, history = {}, []
        last = history[-1] if history else {}
        metric = plan["objective_metric"]
        value = f", {metric} {last[metric]:.2f}" if isinstance(last.get(metric), (int, float)) else ""
        hparams = ", ".join(f"{k}={_short(v)}" for k, v in sorted((config.get("hparams") or {}).items()))
        lines.append(f"{label}: epoch {last.get('epoch', 0)}/{config.get('epochs', '?')}{value}, {where}"
                     + (f" | {hparams}" if hparams and config.get("role") == "student" else ""))
    return lines


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def _time_left(records, left: int, running: int) -> str:
    """", about N min left" from the median wall time of the stage's ended trials and the trials running now."""
    if left <= 0 or not len(records) or "wall_seconds" not in records:
        return ""
    durations = records.loc[records["status"] == "completed", "wall_seconds"].dropna()
    if not len(durations) or not running:
        return ""
    median = float(durations.median())
    return f", about {span(median * left / running)} left at {running} at once (median trial {span(median)})"


def watch(folder: str | Path, every: float = 10.0, stream=None) -> int:
    """`ltkd status --watch`: the status again every `every` seconds until the sweep's driver is gone."""
    import sys
    import time

    stream = stream or sys.stdout
    while True:
        text = sweep_status(folder)
        if stream.isatty():
            stream.write("\033[H\033[J")  # redraw in place
        stream.write(f"{stamp()}\n{text}\n")
        stream.flush()
        if "driver: none" in text or "not running" in text:
            return 0
        time.sleep(every)
