"""`ltkd status SWEEP_DIR`: where a sweep stands, read from its files only (nothing is written)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from orchestrator.plan import cells, sweep_dir, teacher_runs
from orchestrator.studies import run_outcome
from orchestrator.sweep import driver_state, load_sweep_folder
from trainables.storage import Location


def sweep_status(folder: str | Path) -> str:
    config = load_sweep_folder(folder)
    folder = sweep_dir(config)
    lines = [f"sweep {config.name}: {folder}"]
    lines.append(f"protocol: selection {config.selection} (searches maximise {config.objective_metric}), search seed "
                 f"{config.search_seed}, final seeds {', '.join(map(str, config.seeds))}, teacher seeds "
                 f"{', '.join(map(str, config.teacher_seeds))}")
    lines.append(driver_state(folder))

    teachers = teacher_runs(config)
    finished = sum(run_outcome(t.run_dir, t.run.resolved().epochs) is not None for t in teachers)
    lines.append(f"teachers: {finished}/{len(teachers)} finished")

    records = _records(folder)
    for stage in ("search", "final"):
        stage_records = records[records["stage"] == stage] if len(records) else records
        counts = Counter(stage_records["status"]) if len(stage_records) else Counter()
        if stage == "search":
            planned = sum(cell.entry.search.n_trials for cell in cells(config) if cell.entry.search is not None)
        else:
            planned = len(cells(config)) * len(config.seeds)
        ended = sum(counts.values())
        lines.append(f"{stage}: {ended}/{planned} trials ended ({counts.get('completed', 0)} completed, "
                     f"{counts.get('early_stopped', 0)} early-stopped, {counts.get('errored', 0)} errored)")
        metric = config.objective_metric  # what the searches maximise: never a test metric with selection "val"
        if stage == "search" and len(stage_records) and metric in stage_records:
            best = stage_records[stage_records["status"] == "completed"].groupby("cell")[metric].max()
            for cell, value in best.dropna().items():
                lines.append(f"  best {metric} {value:6.2f}  {cell}")
    return "\n".join(lines)


def _records(folder: Location):
    import pandas as pd

    from results.store import read_results

    if not (folder / "results").is_dir():
        return pd.DataFrame(columns=["stage", "status", "cell"])
    frame = read_results([folder.uri], warn=lambda message: None, allow_empty=True)
    if "row_kind" in frame:
        frame = frame[frame["row_kind"] == "final"]
    return frame
