"""The Ray Tune trainable: adapts the engine's `fit` to Tune. The engine knows nothing about Ray.

A trial's config carries a complete RunConfig (as a dict) and the run folder on the sweep's
storage. The engine checkpoints into that folder every epoch, so a retried or resumed trial
continues from its last epoch; a finished run is never trained again. Only `ray.tune.report`
is used here (SPEC section 7: any `ray.train.*` call fails the trial under Train V2).
"""
from __future__ import annotations

import time
import traceback
from typing import Any

# Scalar metrics reported to Tune each epoch (lists stay in the run folder and the Parquet store).
REPORTED = ("epoch", "epochs", "acc", "acc_head", "acc_medium", "acc_tail", "train_loss", "lr", "epoch_seconds")


def _record(trial: dict[str, Any], history: list[dict], status: str, started: float, error: str | None = None):
    from results.store import TrialRecord, code_version
    from trainables.checkpoint import CheckpointError, load_checkpoint

    try:
        class_counts = load_checkpoint(trial["run_dir"]).get("class_counts")
    except CheckpointError:
        class_counts = None
    device = history[-1]["device"] if history else ""
    return TrialRecord(
        sweep=trial["sweep"], trial_id=trial["trial_id"], stage=trial["stage"], cell=trial["cell"],
        config=trial["resolved_run"], history=history, status=status, wall_seconds=time.time() - started,
        device=device, code_version=code_version(), error=error, study=trial.get("study"),
        optuna_trial=trial.get("optuna_trial"), class_counts=class_counts,
    )


def trial_record(trial: dict[str, Any], status: str, started: float, error: str | None = None):
    """The results record of a trial from what its run folder holds (used by the driver too)."""
    from trainables.engine import read_metrics

    return _record(trial, read_metrics(trial["run_dir"]), status, started, error)


def run_trial(trial: dict[str, Any]) -> None:
    """Function trainable: trial = {"run": RunConfig dict, "run_dir": str, "sweep_dir": str, ...}."""
    import torch
    from ray import tune

    from results.store import write_trial
    from trainables.config import RunConfig
    from trainables.engine import fit

    torch.set_num_threads(max(1, int(trial.get("cpus", 1))))
    config = RunConfig.from_dict(trial["run"])
    started = time.time()
    reported = []

    def on_epoch(metrics: dict[str, Any], checkpoint_path) -> None:
        reported.append(metrics["epoch"])
        tune.report({name: metrics[name] for name in REPORTED})

    try:
        gpus = float(trial.get("gpus", 0))
        # A fraction of a GPU is only a scheduling label to Ray: cap this trial's memory to its share.
        memory_share = gpus * 0.95 if 0 < gpus < 1 else None
        result = fit(config, trial["run_dir"], callback=on_epoch, log=None, cuda_memory_fraction=memory_share)
    except Exception as exc:
        write_trial(trial["sweep_dir"], trial_record(trial, "errored", started, f"{type(exc).__name__}: {exc}"))
        traceback.print_exc()
        raise
    if not reported:  # already finished earlier (resumed sweep): report its final epoch once
        tune.report({name: result.metrics[name] for name in REPORTED})
    write_trial(trial["sweep_dir"], _record(trial, result.history, "completed", started))
