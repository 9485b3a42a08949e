"""What a sweep consists of: teachers, cells (dataset x imbalance factor x pair x method), run folders.

Pure planning: nothing here starts Ray or trains. Every run's folder is named by a hash of its
resolved configuration, so the same run always lands in the same folder: a finished run is
found there and never trained again, and an interrupted one resumes from its last checkpoint.

The protocol (orchestrator/sweep_config.py): teachers train for every teacher seed; search
trials train with the search seed and the first teacher seed; finals train every seed in `seeds`
with the chosen hyperparameters, each from its teacher (`SweepConfig.teacher_seed_for`). Every
run of a dataset entry carries the same validation_per_class, so a student's validation images
are held out of its teacher's training set too.
"""
from __future__ import annotations

import hashlib
import json
import re
import dataclasses
from dataclasses import dataclass
from typing import Any

from orchestrator.layout import SweepLayout
from orchestrator.sweep_config import MethodEntry, SweepConfig
from trainables.config import RunConfig
from trainables.methods import get_method
from trainables.storage import Location
from trainables.trial import TrialSpec


def layout(config: SweepConfig) -> SweepLayout:
    """The sweep's paths on its storage: a folder every node reaches (local, NFS, file://) or an
    object-store URI (s3://, gs://, ...)."""
    return SweepLayout.of(config.storage, config.name)


def storage_root(config: SweepConfig) -> Location:
    return layout(config).storage


def sweep_dir(config: SweepConfig) -> Location:
    return layout(config).folder


def run_hash(resolved: RunConfig) -> str:
    """The run folder's name suffix: a digest of what the (resolved) run computes."""
    identity = json.dumps(resolved.identity(), sort_keys=True, default=str)
    return hashlib.sha1(identity.encode()).hexdigest()[:12]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


@dataclass(frozen=True)
class Setting:
    dataset: str
    root: str | None
    imbalance_factor: float
    teacher_arch: str
    student_arch: str
    validation_per_class: int = 0  # resolved for the dataset entry and the sweep's selection

    @property
    def key(self) -> str:
        return f"{self.dataset}/if{self.imbalance_factor:g}/{self.teacher_arch}->{self.student_arch}"


@dataclass(frozen=True)
class Cell:
    """One search or baseline: a method entry in one setting. Its Optuna study is named after it.

    `entry.search` is the search the entry gets (SweepConfig.search_for: its own, the equal budget
    of search_baselines, or None), never the raw `false` / absent of the config.
    """

    setting: Setting
    entry: MethodEntry

    @property
    def key(self) -> str:
        return f"{self.setting.key}/{self.entry.label}"

    def study_name(self, sweep_name: str) -> str:
        return f"{sweep_name}:{self.key}"


@dataclass
class PlannedRun:
    trial_id: str  # idempotency key of its results
    stage: str  # teacher | search | final
    cell: str
    run: RunConfig  # as planned: the method's hyperparameters over its defaults
    resolved: RunConfig  # `run` resolved (once): every default filled in; what trains and is recorded
    run_dir: Location
    study: str | None = None
    optuna_trial: int | None = None
    teacher_dir: Location | None = None
    teacher_seed: int | None = None  # None: a teacher run, or a method without a teacher
    search_trials: int = 0  # Optuna trials the cell's search runs to choose this configuration; 0 = fixed

    @property
    def epochs(self) -> int:
        return self.resolved.epochs

    def spec(self, config: SweepConfig) -> TrialSpec:
        """What the Tune trainable receives."""
        return TrialSpec(
            trial_id=self.trial_id, stage=self.stage, cell=self.cell, sweep=config.name,
            sweep_dir=sweep_dir(config).uri, run_dir=self.run_dir.uri, run=self.resolved,
            teacher_dir=self.teacher_dir.uri if self.teacher_dir else None, study=self.study,
            optuna_trial=self.optuna_trial, cpus=config.resources.cpus_per_trial,
            gpus=config.resources.gpus_per_trial,
            # The protocol, recorded with every result.
            selection=config.selection, teacher_seed=self.teacher_seed, search_trials=self.search_trials,
            objective_metric=config.objective_metric,
        )

    def trial_config(self, config: SweepConfig) -> dict[str, Any]:
        """`spec` as Tune carries it: plain, picklable values."""
        return self.spec(config).to_dict()


def settings(config: SweepConfig) -> list[Setting]:
    return [Setting(d.name, d.root, float(f), p.teacher, p.student, config.validation_per_class_for(d))
            for d in config.datasets for f in d.imbalance_factors for p in config.pairs]


def cells(config: SweepConfig) -> list[Cell]:
    """Every (setting, method entry), each entry carrying the search it gets (see Cell)."""
    entries = [dataclasses.replace(entry, search=config.search_for(entry)) for entry in config.methods]
    return [Cell(s, entry) for s in settings(config) for entry in entries]


def _common(config: SweepConfig, setting: Setting) -> dict[str, Any]:
    return dict(dataset=setting.dataset, root=setting.root, imbalance_factor=setting.imbalance_factor,
                data_seed=config.data_seed, validation_per_class=setting.validation_per_class,
                batch_size=config.batch_size, device=config.device, progress=False, teacher_cache=config.teacher_cache,
                teacher_cache_dtype=config.teacher_cache_dtype, test_every=config.test_every,
                checkpoint_every_seconds=config.checkpoint_every_seconds, deterministic=config.deterministic)


def teacher_run(config: SweepConfig, setting: Setting, seed: int) -> PlannedRun:
    """Teachers live beside the sweeps on the same storage, so later sweeps reuse them."""
    dataset, factor, arch = setting.dataset, setting.imbalance_factor, setting.teacher_arch
    run = RunConfig(**_common(config, setting), role="teacher", arch=arch, method="ce", seed=seed,
                    epochs=config.teacher_epochs)
    resolved = run.resolved()
    name = f"{dataset}-if{factor:g}-{arch}-seed{seed}-{run_hash(resolved)}"
    return PlannedRun(trial_id=f"teacher/{name}", stage="teacher", cell=f"{dataset}/if{factor:g}/{arch}",
                      run=run, resolved=resolved, run_dir=layout(config).teacher_dir(name))


def teacher_runs(config: SweepConfig) -> list[PlannedRun]:
    """One teacher per (setting's dataset, factor, teacher architecture, validation split) and teacher seed."""
    planned = {}
    for s in settings(config):
        for seed in config.teacher_seeds:
            run = teacher_run(config, s, seed)
            planned[run.trial_id] = run
    return list(planned.values())


def student_run(config: SweepConfig, cell: Cell, seed: int, hparams: dict[str, Any], stage: str,
                study: str | None = None, optuna_trial: int | None = None) -> PlannedRun:
    """A student of `cell` trained with `seed`: a search trial (stage "search") or a final run."""
    s = cell.setting
    teacher_dir = teacher_seed = None
    if get_method(cell.entry.method).needs_teacher:
        teacher_seed = config.teacher_seed_for(None if stage == "search" else seed)
        teacher_dir = teacher_run(config, s, teacher_seed).run_dir
    # The teacher is named by its path on the storage (no URI options: they are not part of a run's identity).
    run = RunConfig(**_common(config, s), role="student", arch=s.student_arch,
                    method=cell.entry.method, hparams={**cell.entry.hparams, **hparams},
                    teacher=str(teacher_dir) if teacher_dir else None,
                    teacher_arch=s.teacher_arch, seed=seed, epochs=config.student_epochs)
    resolved = run.resolved()
    digest = run_hash(resolved)
    # Two search trials may draw the same hyperparameters (one run folder): their records stay apart.
    trial = f"t{optuna_trial}-" if optuna_trial is not None else ""
    return PlannedRun(trial_id=f"{stage}/{cell.key}/{trial}seed{seed}-{digest}", stage=stage, cell=cell.key, run=run,
                      resolved=resolved, run_dir=layout(config).student_dir(slug(cell.key), f"seed{seed}-{digest}"),
                      study=study, optuna_trial=optuna_trial, teacher_dir=teacher_dir, teacher_seed=teacher_seed,
                      search_trials=cell.entry.search.n_trials if cell.entry.search is not None else 0)


def search_run(config: SweepConfig, cell: Cell, hparams: dict[str, Any], study: str | None,
               optuna_trial: int | None) -> PlannedRun:
    """One search trial's run: the search seed (never a final seed) and the first teacher seed."""
    return student_run(config, cell, config.search_seed, hparams, "search", study=study, optuna_trial=optuna_trial)


def final_runs(config: SweepConfig, best: dict[str, dict[str, Any]]) -> list[PlannedRun]:
    """Every cell with every seed in `seeds`, at its chosen hyperparameters (`best` by cell key; else its hparams)."""
    return [run for cell in cells(config) for run in cell_final_runs(config, cell, best.get(cell.key))]


def cell_final_runs(config: SweepConfig, cell: Cell, chosen: dict[str, Any] | None) -> list[PlannedRun]:
    """A cell's final runs, one per seed in `seeds`, at `chosen` (its search's best hyperparameters;
    None: no search, or a search that completed no trial, so the entry's own hparams and defaults).

    A final run never shares a run folder with a search trial: search trials train with
    search_seeds, which validate keeps disjoint from seeds, and the seed is part of a run's
    identity (its folder's hash). So a final result is a fresh draw with the chosen
    hyperparameters, never the search's own best draw reused (the max of n test- or
    validation-selected draws would be biased upward).
    """
    if cell.entry.search is not None and chosen is None:
        # The search chose nothing (no trial completed): the finals run at the defaults, and their
        # records must say so (search_trials 0), not claim a selection that never happened.
        cell = dataclasses.replace(cell, entry=dataclasses.replace(cell.entry, search=None))
    return [student_run(config, cell, seed, chosen or {}, "final") for seed in config.seeds]


def cell_teachers(config: SweepConfig, cell: Cell) -> set[str]:
    """The run folders (URIs) of the teachers a cell's runs read: none for a method without a teacher."""
    if not get_method(cell.entry.method).needs_teacher:
        return set()
    return {teacher_run(config, cell.setting, seed).run_dir.uri for seed in config.teacher_seeds}


PLAN_FORMAT = 1


def plan_summary(config: SweepConfig) -> dict[str, Any]:
    """What `ltkd status` needs to know of the plan, as plain values (the driver writes it to plan.json).

    Teachers are named by their folder under the storage's teachers/ (not by URI): a sweep moved to
    another mount or bucket still finds them.
    """
    searched = [cell for cell in cells(config) if cell.entry.search is not None]
    return {
        "format": PLAN_FORMAT, "sweep": config.name, "selection": config.selection,
        "objective_metric": config.objective_metric, "search_seed": config.search_seed,
        "seeds": list(config.seeds), "teacher_seeds": list(config.teacher_seeds),
        "teachers": [{"name": run.run_dir.name, "epochs": run.epochs} for run in teacher_runs(config)],
        "search_trials": sum(cell.entry.search.n_trials for cell in searched),
        "searched_cells": len(searched),
        "final_runs": len(cells(config)) * len(config.seeds),
    }
