"""What one Tune trial receives: a frozen, typed TrialSpec, made by the orchestrator's plan.

It holds the run's resolved RunConfig (resolved once, when the sweep is planned), where its run
folder is, and how its configuration was chosen (the protocol fields every result records). It
becomes a dict of plain values only at the Ray boundary (`to_dict` / `from_dict`): Tune stores
and shows trial configs as dicts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainables.config import RunConfig


@dataclass(frozen=True)
class TrialSpec:
    trial_id: str  # idempotency key of its results
    stage: str  # teacher | search | final
    cell: str  # e.g. "digits/if10/resnet20->resnet8/ltkd"; a teacher's: "digits/if10/resnet20"
    sweep: str
    sweep_dir: str  # URI of the sweep folder (its results store)
    run_dir: str  # URI of the run folder
    run: RunConfig  # resolved
    teacher_dir: str | None = None  # URI of the teacher's run folder, for a student with a teacher
    study: str | None = None  # the Optuna study of a search trial
    optuna_trial: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    # The protocol (orchestrator/sweep_config.py), recorded with every result.
    selection: str | None = None
    teacher_seed: int | None = None  # None: a teacher run, or a method without a teacher
    search_trials: int | None = None  # Optuna trials behind this configuration; 0 = fixed
    objective_metric: str | None = None

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["run"] = self.run.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialSpec":
        values = dict(values)
        values["run"] = RunConfig.from_dict(values["run"])
        return cls(**values)
