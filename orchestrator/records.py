"""A trial's results record (results/store.py's TrialRecord) from its run folder, written to the sweep's store.

Trials call `write_record` when they finish or fail (it is the recorder the orchestrator hands
the trainable); the driver calls it for what trials cannot record themselves: a trial a
scheduler stopped early, or a finished run whose record a killed driver never saw written.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from results.store import RESULTS_DIR, TrialRecord, code_version, trial_file_name, write_trial
from trainables.run_files import CHECKPOINT_NAME, DATA_NAME, METRICS_NAME, read_data_summary, read_metrics
from trainables.storage import Location
from trainables.trial import TrialSpec


def trial_record(trial: TrialSpec, status: str, started: float, error: str | None = None,
                 run_folder: Path | None = None) -> TrialRecord:
    """The record of `trial` from what its run folder holds (fetched when it is on an object store)."""
    if run_folder is None:
        location = Location.parse(trial.run_dir)
        if location.remote:
            with tempfile.TemporaryDirectory(prefix="ltkd-record-") as copy:
                names = (METRICS_NAME, DATA_NAME) if (location / DATA_NAME).exists() else (METRICS_NAME, CHECKPOINT_NAME)
                location.fetch(Path(copy), keep=lambda name: name in names)
                return trial_record(trial, status, started, error, run_folder=Path(copy))
        run_folder = location.local_path
    history = read_metrics(run_folder)
    summary = read_data_summary(run_folder)
    class_counts = summary["class_counts"] if summary else _checkpoint_class_counts(run_folder)
    return TrialRecord(
        sweep=trial.sweep, trial_id=trial.trial_id, stage=trial.stage, cell=trial.cell,
        config=trial.run.to_dict(), history=history, status=status, wall_seconds=time.time() - started,
        device=history[-1]["device"] if history else "", code_version=code_version(), error=error,
        study=trial.study, optuna_trial=trial.optuna_trial, class_counts=class_counts,
        selection=trial.selection, teacher_seed=trial.teacher_seed, search_trials=trial.search_trials,
        objective_metric=trial.objective_metric,
    )


def _checkpoint_class_counts(run_folder: Path) -> list[int] | None:
    """Class counts of a run written before data.json existed: from its checkpoint (loads torch)."""
    from trainables.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(run_folder).get("class_counts")
    except CheckpointError:
        return None


def write_record(trial: TrialSpec, run_folder: Path | None, status: str, started: float | None = None,
                 error: str | None = None) -> None:
    """Write `trial`'s record into its sweep's results store (replacing an earlier one)."""
    started = time.time() if started is None else started
    write_trial(trial.sweep_dir, trial_record(trial, status, started, error, run_folder=run_folder))


def has_record(trial: TrialSpec) -> bool:
    return (Location.parse(trial.sweep_dir) / RESULTS_DIR / trial_file_name(trial.trial_id)).exists()
