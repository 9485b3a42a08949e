"""Optuna studies kept in the sweep folder (a JournalStorage file), one per searched cell.

Ray's OptunaSearch loses results on restore (SPEC section 7), so the sweep drives Optuna itself
through ask/tell: a trial is asked when Tune has room for it and told once when it ends. The
study lives in its own storage, so a resumed sweep reconciles it with what the run folders
hold: a trial that finished while no driver was listening is told its final value; one that
was interrupted is launched again with the same hyperparameters and resumes from its checkpoint.

What a trial is worth is read in one place, `trial_value`, from the run's own metrics history,
as the metric `SweepConfig.objective_metric` names: with selection "val" the validation split's,
so a search never reads a test metric.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import optuna
from optuna.trial import TrialState

from orchestrator.plan import Cell, PlannedRun, search_run
from orchestrator.sweep_config import SweepConfig
from search_spaces import get_space
from trainables.data.sources import DATASETS
from trainables.run_files import METRICS_NAME, parse_metrics
from trainables.errors import UserError
from trainables.storage import Location, hold_scratch, prune_scratch

HPARAMS_ATTR = "hparams"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_INTERMEDIATE_VALUE = 7  # optuna's JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE (a per-epoch report)


def _journal_file(path: Path, driver: bool = False):
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if driver:
        # Only the driver holding the sweep's lock writes the journal: a journal lock found when it opens
        # it is a killed driver's, which Optuna would wait out (30 s) before breaking it.
        journal_lock_file(path).unlink(missing_ok=True)
    _check_journal_file(path)
    # The open-lock works on shared (NFS) folders, where symlink locks may not.
    return JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))


def _check_journal_file(path: Path) -> None:
    """A journal that exists must be a plain file (lstat): Optuna opens it for appending, which follows links."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"Optuna journal {path} is not a plain file (a symbolic link or other); remove it (and "
                        "restore the sweep's journal) before running this sweep")


def journal_lock_file(path: Path) -> Path:
    """The file Optuna's JournalFileOpenLock creates while it appends to the journal at `path`."""
    return Path(f"{path}.lock")


class MirroredJournal(optuna.storages.journal.BaseJournalBackend):
    """A journal on an object store: kept in a local file, and the whole file pushed to the store.

    Only the sweep's driver writes it (one driver per sweep), so the store's copy is the truth:
    opening replaces the local file with it. An append whose push did not finish never reached a
    trial (a trial is launched only after its hyperparameters are written), so losing it is harmless.

    Every append that changes a study or a trial (a new trial, its hyperparameters, its final
    value) is pushed at once. Appends holding only per-epoch intermediate values are pushed at
    most every `intermediate_push_seconds`: a long search reports every epoch of every trial, and
    pushing the whole file each time would upload it tens of thousands of times. The next push
    (at the latest when the trial is told its value) carries them, so only a killed driver can
    lose the last few of them; the Parquet results keep every epoch regardless.
    """

    def __init__(self, remote: Location, intermediate_push_seconds: float = 30.0, driver: bool = False):
        self.remote = remote
        self.intermediate_push_seconds = intermediate_push_seconds
        self.local = remote.scratch("driver") / remote.name
        hold_scratch(self.local.parent)
        prune_scratch(self.local.parent.parent)
        data = remote.read_bytes()
        if data is None:
            self.local.unlink(missing_ok=True)
        else:
            Location.parse(self.local).write_bytes(data)
        self.backend = _journal_file(self.local, driver)
        self.pending = False  # appended locally, not yet pushed
        self.pushed_at = time.monotonic()

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return self.backend.read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.backend.append_logs(logs)
        self.pending = True
        only_intermediate = all(log.get("op_code") == _INTERMEDIATE_VALUE for log in logs)
        if not only_intermediate or time.monotonic() - self.pushed_at >= self.intermediate_push_seconds:
            self.flush()

    def flush(self) -> None:
        """Push the local journal to the store if it holds appends the store lacks."""
        if self.pending:
            self.remote.write_bytes(self.local.read_bytes())
            self.pending = False
            self.pushed_at = time.monotonic()

    def close(self) -> None:
        """Push what is pending (the last intermediate values); the store being gone loses only those."""
        try:
            self.flush()
        except Exception:  # the store is gone: nothing more can be saved
            pass


def open_storage(journal: Location) -> optuna.storages.BaseStorage:
    """The sweep's Optuna storage: a journal file in the sweep folder (for reading; a driver uses `opened_storage`)."""
    return optuna.storages.JournalStorage(_journal_backend(journal))


@contextlib.contextmanager
def opened_storage(journal: Location):
    """The sweep's Optuna storage for a `with` block, for the driver that holds the sweep's lock (the journal's
    one writer); an object-store journal gets its last appends pushed at the end."""
    backend = _journal_backend(journal, driver=True)
    try:
        yield optuna.storages.JournalStorage(backend)
    finally:
        if isinstance(backend, MirroredJournal):
            backend.close()


def _journal_backend(journal: Location, driver: bool = False):
    # Optuna logs a line per trial at INFO; the sweep prints its own progress. Set here, when a
    # sweep opens its studies, not on import: importing this module changes nothing.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return MirroredJournal(journal, driver=driver) if journal.remote else _journal_file(journal.local_path, driver)


def run_outcome(run_dir: Location, epochs: int) -> dict[str, Any] | None:
    """The last epoch's metrics if the run finished, else None."""
    history = parse_metrics((run_dir / METRICS_NAME).read_bytes() or b"", str(run_dir / METRICS_NAME))
    epoch = history[-1].get("epoch") if history else None
    if isinstance(epoch, int) and epoch >= epochs:
        return history[-1]
    return None


class MissingObjectiveError(UserError):
    pass


def trial_value(metrics: dict[str, Any], metric: str) -> float:
    """A search trial's value: `metric` of its last epoch (`metrics`: that epoch's row of the history).

    The only place a search reads a result. A run without the metric (no validation split, or a run
    written before val_* metrics existed) is an error, never a silent fall-back to a test metric.
    """
    value = metrics.get(metric)
    if value is None:
        raise MissingObjectiveError(
            f"the search metric '{metric}' is missing from epoch {metrics.get('epoch', '?')} of a search trial "
            f"(it has: {', '.join(sorted(k for k, v in metrics.items() if v is not None))}); with selection "
            "\"val\" every run needs a validation split (validation_per_class >= 1)")
    return float(value)


INTERMEDIATE_VALUES = 20  # per search trial, told to Optuna (CellSearch.report)


@dataclass
class CellSearch:
    """The search of one cell: asks new trials until n_trials have ended, resumes interrupted ones."""

    config: SweepConfig
    cell: Cell
    storage: optuna.storages.BaseStorage
    study: optuna.Study = field(init=False)
    to_resume: list[PlannedRun] = field(default_factory=list, init=False)
    live: dict[int, optuna.trial.Trial | None] = field(default_factory=dict, init=False)

    def __post_init__(self):
        name = self.cell.study_name(self.config.name)
        study = optuna.create_study(storage=self.storage, study_name=name, direction="maximize", load_if_exists=True)
        # Seeded per cell for reproducibility, and per reopening: a resumed search must not
        # replay the random draws that its first session already used.
        seed = int(hashlib.sha1(self.cell.key.encode()).hexdigest()[:8], 16) + len(study.trials)
        self.study = optuna.load_study(study_name=name, storage=self.storage,
                                       sampler=optuna.samplers.TPESampler(seed=seed))

    @property
    def n_trials(self) -> int:
        return self.cell.entry.search.n_trials

    @property
    def objective(self) -> str:
        """The metric this search maximises (SweepConfig.objective_metric: val_* with selection "val")."""
        return self.config.objective_metric

    def planned(self, number: int, hparams: dict[str, Any]) -> PlannedRun:
        return search_run(self.config, self.cell, hparams, study=self.study.study_name, optuna_trial=number)

    def value_of(self, run: PlannedRun, reported: dict | None = None) -> float:
        """The trial's value from the run's metrics history (its last epoch); `reported` (Tune's last
        result) only when the history cannot be read."""
        outcome = run_outcome(run.run_dir, run.epochs)
        return trial_value(outcome if outcome is not None else (reported or {}), self.objective)

    def reconcile(self) -> list[tuple[PlannedRun, dict]]:
        """Tell finished-but-untold trials; queue interrupted ones. Returns (run, final metrics) told now."""
        told = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            hparams = frozen.user_attrs.get(HPARAMS_ATTR)
            if hparams is None:  # asked but never launched: nothing ran, nothing to keep
                self.study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
                continue
            run = self.planned(frozen.number, hparams)
            outcome = run_outcome(run.run_dir, run.epochs)
            if outcome is not None:
                self.study.tell(frozen.number, trial_value(outcome, self.objective), skip_if_finished=True)
                told.append((run, outcome))
            else:
                self.to_resume.append(run)
        return told

    def ended(self) -> int:
        """Trials of the budget that ended: a trial asked but never launched (its driver was killed in
        between; told FAIL by `reconcile`) ran nothing and does not count."""
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=FINISHED_STATES)
                   if t.state != TrialState.FAIL or HPARAMS_ATTR in t.user_attrs)

    def remaining(self) -> int:
        """Trials still to run: interrupted ones plus new ones up to n_trials."""
        return len(self.to_resume) + max(0, self.n_trials - self.ended() - len(self.to_resume) - len(self.live))

    def next_run(self) -> PlannedRun | None:
        if self.to_resume:
            run = self.to_resume.pop(0)
            self.live[run.optuna_trial] = None
            return run
        running = len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if self.ended() + running >= self.n_trials:
            return None
        trial = self.study.ask()
        setting = self.cell.setting
        hparams = get_space(self.cell.entry.method).sample(
            trial, self.cell.entry.search.space, num_classes=DATASETS[setting.dataset].num_classes,
            imbalance_factor=setting.imbalance_factor)
        trial.set_user_attr(HPARAMS_ATTR, {**self.cell.entry.hparams, **hparams})
        self.live[trial.number] = trial
        return self.planned(trial.number, {**self.cell.entry.hparams, **hparams})

    def report(self, number: int, epoch: int, value: float, epochs: int) -> None:
        """Tell Optuna an epoch's value (its history and the dashboard's curves; no Optuna pruner reads
        them): at most INTERMEDIATE_VALUES of a trial's epochs, evenly spaced, and its last. Each is a
        journal entry written with an fsync by the driver: every epoch of a paper-scale search
        (240 epochs x 1,200 trials a table) would be ~300k entries and minutes of the driver's loop."""
        trial = self.live.get(number)
        step = -(-epochs // INTERMEDIATE_VALUES)
        if trial is not None and (epoch % step == 0 or epoch >= epochs):
            trial.report(value, epoch)

    def finish(self, number: int, result: dict | None, error: bool, run: PlannedRun) -> str:
        """Tell Optuna how the trial ended (its value from the run's metrics history); returns the results status."""
        self.live.pop(number, None)
        if error or not result:
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            return "errored"
        if result.get("epoch", 0) < run.epochs:  # stopped early by ASHA
            self.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
            return "early_stopped"
        try:
            value = self.value_of(run, result)
        except MissingObjectiveError as exc:
            print(f"search: {self.cell.key} trial {number}: {exc}")
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            return "errored"
        self.study.tell(number, value, skip_if_finished=True)
        return "completed"

    def best_hparams(self) -> dict[str, Any] | None:
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return None
        best = max(complete, key=lambda t: (t.value, -t.number))
        return dict(best.user_attrs[HPARAMS_ATTR])
