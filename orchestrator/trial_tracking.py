"""Ray Tune's W&B and MLflow loggers, labelled per trial with its stage and cell.

A sweep is one Tune run holding teachers, search trials and finals (orchestrator/tune_glue.py), so
a logger made once for the run would file them all under one label. These read each trial's own
stage and cell (its TrialSpec in `trial.config["trial"]`) when the trial starts. Imported only
when the config's [tracking] section asks for a tracker (it imports Ray).
"""
from __future__ import annotations

from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback


def trial_labels(sweep: str, trial_config: dict[str, Any]) -> dict[str, str]:
    """The sweep, stage (teacher, search or final) and cell of a trial, from its Tune config."""
    spec = trial_config.get("trial") or {}
    return {"sweep": sweep, "stage": str(spec.get("stage") or "unknown"), "cell": str(spec.get("cell") or "unknown")}


def wandb_labels(labels: dict[str, str]) -> dict[str, str]:
    """W&B's grouping: a cell's runs in one group, its stages told apart by job type."""
    return {"group": f"{labels['sweep']}/{labels['cell']}", "job_type": labels["stage"]}


class TrialWandbLoggerCallback(WandbLoggerCallback):
    """WandbLoggerCallback whose every trial gets its own group (sweep/cell) and job type (stage)."""

    def __init__(self, sweep: str, **kwargs):
        super().__init__(**kwargs)
        self.sweep = sweep

    def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
        wandb_init_kwargs.update(wandb_labels(trial_labels(self.sweep, trial.config)))
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)


class TrialMLflowLoggerCallback(MLflowLoggerCallback):
    """MLflowLoggerCallback whose every trial's run is tagged with its sweep, stage and cell."""

    def __init__(self, sweep: str, **kwargs):
        super().__init__(**kwargs)
        self.sweep = sweep

    def log_trial_start(self, trial):
        shared = self.tags  # Ray's method reads self.tags: this trial's labels for this call only
        self.tags = {**(shared or {}), **trial_labels(self.sweep, trial.config)}
        try:
            super().log_trial_start(trial)
        finally:
            self.tags = shared
