"""Ray Tune wiring: the trial function Tune runs, the Searcher that hands out a sweep's trials (teachers,
every cell's Optuna search at once, finals) in one Tune run, ASHA for search trials, and the live
progress view."""
from __future__ import annotations

import heapq
import importlib
import os
import sys
import time

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from orchestrator.plan import PlannedRun
from orchestrator.records import write_record
from orchestrator.studies import CellSearch
from orchestrator.sweep_config import SweepConfig
from trainables.console import stamp
from trainables.trial import TrialSpec
from trainables.tune_trainable import run_trial


# A benchmark hook, not a product mode: "module:function" of a stand-in for the engine's `fit` that
# every trial then trains with (benchmarks/scale.py: simulated training that sleeps, to measure the
# orchestration alone at paper scale). Read from the environment the Ray workers inherit.
BENCHMARK_FIT_ENV = "LTKD_BENCHMARK_FIT"


def benchmark_fit():
    """The stand-in `fit` LTKD_BENCHMARK_FIT names, or None (the engine's: always, outside benchmarks)."""
    target = os.environ.get(BENCHMARK_FIT_ENV)
    if not target:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def ltkd_trial(config: dict) -> None:
    """What Tune runs for every trial (its name in Tune's logs): the trainable, recording into the sweep's store."""
    run_trial(TrialSpec.from_dict(config["trial"]), record=write_record, fit=benchmark_fit())


def trial_dirname(trial) -> str:
    """A trial's folder under ray/trials/: `ltkd_trial_<Tune's trial id>` (not ~150 characters of its config)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


class SweepSearcher(Searcher):
    """Every stage of a sweep in one Tune run, so that slots and worker processes go from stage to stage
    without waiting for a whole stage to end (and without a new process per slot per stage).

    Teachers come first. A cell's search trials start once the teachers it reads have finished
    (round-robin over the ready cells, so all their searches run at the same time); its final runs
    once its search has ended, or at once for a cell without a search. A cell whose teacher failed
    runs nothing (`blocked`). `final_runs(cell, chosen)` plans a cell's final runs at its search's
    best hyperparameters (None: no search or no completed trial); `skip(run)` says whether a planned
    final run is already finished (the driver then records it and it is not run).
    """

    def __init__(self, config: SweepConfig, teachers: list[PlannedRun], done_teachers: set[str],
                 cells: list, searches: list[CellSearch], teachers_of, final_runs, skip=lambda run: False):
        # Per-epoch values told to Optuna (for its history) are the searched metric.
        super().__init__(metric=config.objective_metric, mode="max")
        self.config = config
        self.teachers = list(teachers)  # still to run
        self.done_teachers = set(done_teachers)  # run folder URIs
        self.failed_teachers: set[str] = set()
        self.final_runs, self.skip = final_runs, skip
        self.cells = list(cells)
        # cell key -> run folder URIs of its teachers (planned once: Tune asks for trials many times a second)
        self.teachers_of = {cell.key: frozenset(teachers_of(cell)) for cell in self.cells}
        self.searches = {search.cell.key: search for search in searches}
        self.finals_planned: set[str] = set()
        self.finals: list[PlannedRun] = []
        self.by_trial: dict[str, tuple[PlannedRun, CellSearch | None]] = {}
        self.turn = 0

    def _ready(self, cell) -> bool:
        return self.teachers_of[cell.key] <= self.done_teachers

    def blocked(self) -> list:
        """Cells that cannot run: a teacher of theirs failed."""
        return [cell for cell in self.cells if self.teachers_of[cell.key] & self.failed_teachers]

    def _suggest_run(self) -> tuple[PlannedRun, CellSearch | None] | None:
        if self.teachers:
            return self.teachers.pop(0), None
        ready = [s for s in self.searches.values() if self._ready(s.cell)]
        for offset in range(len(ready)):
            search = ready[(self.turn + offset) % len(ready)]
            run = search.next_run()
            if run is not None:
                self.turn = (self.turn + offset + 1) % max(1, len(ready))
                return run, search
        self._plan_finals()
        if self.finals:
            return self.finals.pop(0), None
        return None

    def _plan_finals(self) -> None:
        """Cells whose search has ended (or that have none) get their final runs, once."""
        for cell in self.cells:
            search = self.searches.get(cell.key)
            if cell.key in self.finals_planned or not self._ready(cell):
                continue
            if search is not None and (search.remaining() or search.live):
                continue
            self.finals_planned.add(cell.key)
            self.finals += [run for run in self.final_runs(cell, search.best_hparams() if search else None)
                            if not self.skip(run)]

    def nothing_to_run(self) -> bool:
        """Whether the sweep is finished before any trial: no teacher, search trial or final run is left.

        Asks Optuna for nothing (a search with trials left is not finished); plans the finals of ended
        searches, which `suggest` then hands out.
        """
        if self.teachers or self.by_trial or any(s.remaining() or s.live for s in self.searches.values()):
            return False
        self._plan_finals()
        return not self.finals

    def suggest(self, trial_id: str):
        suggested = self._suggest_run()
        if suggested is not None:
            self.by_trial[trial_id] = suggested
            return {"trial": suggested[0].trial_config(self.config)}
        if self.by_trial:
            return None  # what is left waits for running trials (teachers, a search's trials) to end
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        run, search = self.by_trial.get(trial_id, (None, None))
        if search is not None and self.metric in result:
            search.report(run.optuna_trial, int(result.get("epoch", 0)), float(result[self.metric]), run.epochs)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.by_trial:
            return
        run, search = self.by_trial.pop(trial_id)
        if search is not None:
            search.finish(run.optuna_trial, result, error, run)
        elif run.stage == "teacher":
            (self.failed_teachers if error or not result else self.done_teachers).add(run.run_dir.uri)


class _NewestPendingFirst:
    """Tune starts the trial its scheduler chooses first, on a finished trial's worker when one is free.
    FIFO chooses the oldest pending trial, which already waits for a worker process Tune is starting for
    it; given the free worker, that start is stopped (a process and an import of torch for nothing) and
    the next trial starts another. The newest pending trial has no process yet: it takes the free one."""

    def choose_trial_to_run(self, tune_controller):
        return newest_waiting(tune_controller.get_trials())


def newest_waiting(trials: list) -> Trial | None:
    """The newest pending trial, else the newest paused one, else None (Tune's trials, oldest first)."""
    for status in (Trial.PENDING, Trial.PAUSED):
        for trial in reversed(trials):
            if trial.status == status:
                return trial
    return None


class SweepScheduler(_NewestPendingFirst, FIFOScheduler):
    """Every trial to its end, in the order above (the sweep's scheduler without ASHA)."""


class SearchTrialsASHA(_NewestPendingFirst, ASHAScheduler):
    """Ray Tune's ASHA scheduler for the search trials only: teachers and final runs always train to the end."""

    def on_trial_add(self, tune_controller, trial):
        if _stage(trial) == "search":
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        if _stage(trial) != "search":
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if _stage(trial) == "search":
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if _stage(trial) == "search":
            super().on_trial_remove(tune_controller, trial)


def _stage(trial) -> str:
    return trial.config.get("trial", {}).get("stage", "")


class StageStopped(RuntimeError):
    """Raised from Tune's loop to end a stage at once (the driver lost its lock)."""


class Progress(Callback):
    """A compact live view: per stage, trials done / running / errored, best value per cell, time left.

    On a terminal it redraws one line; otherwise it prints a line whenever a trial ends. A search
    trial's line carries its cell's best value so far (over completed trials' final values).
    `objective` is the metric the searches maximise (SweepConfig.objective_metric).
    """

    def __init__(self, stage: str, total: int, objective: str, stream=None, on_trial_end=None, stop_check=None,
                 clock=time.time):
        self.stage, self.total, self.objective = stage, total, objective
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.clock = clock  # injectable: tests replay a timeline
        self.started = clock()
        self.running: set[str] = set()
        self.slots = 0  # the most trials seen running at once: how many the cluster runs in parallel
        self.done = 0
        self.errored = 0
        self.stopped = 0
        self.best: dict[str, float] = {}
        self.last_result: dict[str, dict] = {}
        self.durations: list[float] = []
        self.trial_started: dict[str, float] = {}
        self.on_trial_end = on_trial_end
        self.stop_check = stop_check  # () -> why the stage must stop now, or None
        self.last_draw = 0.0

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment state; the stop check holds the driver's
        # lock (threads, an open heartbeat), which is this process's alone.
        state = dict(self.__dict__)
        state["stop_check"] = None
        return state

    def on_step_end(self, iteration, trials, **info):
        # An exception here ends Tune's loop (it cleans its trials up and re-raises).
        reason = self.stop_check() if self.stop_check is not None else None
        if reason:
            raise StageStopped(reason)

    def _cell(self, trial) -> str:
        return trial.config.get("trial", {}).get("cell", "?")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.slots = max(self.slots, len(self.running))
        self.trial_started[trial.trial_id] = self.clock()
        self._draw()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last_result[trial.trial_id] = result
        self._draw(throttle=True)

    def _ended(self, trial, status: str) -> None:
        self.running.discard(trial.trial_id)
        now = self.clock()
        started = self.trial_started.pop(trial.trial_id, now)
        self.durations.append(now - started)
        result = self.last_result.get(trial.trial_id, {})
        if status == "completed" and result.get("epoch", 0) < result.get("epochs", 0):
            status = "early_stopped"
        cell = self._cell(trial)
        stage = _stage(trial) or self.stage  # a sweep's Tune run holds every stage's trials
        value = float(result.get(self.objective, float("nan")))
        if status == "errored":
            self.errored += 1
        elif status == "early_stopped":
            self.stopped += 1
        else:
            self.done += 1
            # Best as the search ranks trials: by their last epoch's value (an early epoch's peak is not a result).
            if value == value and stage == "search":
                self.best[cell] = max(self.best.get(cell, float("-inf")), value)
        if self.on_trial_end is not None:
            self.on_trial_end(trial.config.get("trial", {}), status, started)
        best = f", best so far {self.best[cell]:.2f}" if stage == "search" and cell in self.best else ""
        what = f"{stage} {cell}" if stage != self.stage else cell
        self._draw(event=f"{status}: {what} ({self.objective} {value:.2f}{best})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, "completed")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, "errored")

    def eta_seconds(self) -> float | None:
        """Seconds until the stage ends, None before any trial has ended.

        The stage's remaining trials are laid out on the slots it has used at once, as Tune runs
        them: each running trial for what is left of the mean duration (a quarter of the mean once
        it has outlived it: it is still running), each waiting one for the mean. Running trials that
        have outlived the mean raise it (the first trials to end are the short ones). Exact for
        equal trial durations.
        """
        left = self.total - self.done - self.errored - self.stopped
        if not self.durations or left <= 0:
            return None
        now = self.clock()
        elapsed = [now - self.trial_started[t] for t in self.running if t in self.trial_started]
        ended_mean = sum(self.durations) / len(self.durations)
        outlived = [e for e in elapsed if e > ended_mean]
        mean = (sum(self.durations) + sum(outlived)) / (len(self.durations) + len(outlived))
        slots = max(1, self.slots)
        free = sorted(mean - e if e <= mean else 0.25 * ended_mean for e in elapsed)[:slots]
        free += [0.0] * (slots - len(free))
        heapq.heapify(free)
        for _ in range(max(0, left - len(elapsed))):  # waiting trials take the first slot to free up
            heapq.heappush(free, heapq.heappop(free) + mean)
        return max(free)

    def eta(self) -> str:
        seconds = self.eta_seconds()
        return "-" if seconds is None else f"~{seconds / 60:.1f} min"

    def line(self) -> str:
        elapsed = self.clock() - self.started
        best = ", ".join(f"{cell.split('/', 1)[-1]} {value:.1f}" for cell, value in sorted(self.best.items()))
        return (f"[{self.stage}] {self.done + self.stopped}/{self.total} done, {len(self.running)} running, "
                f"{self.errored} errored, {self.stopped} early-stopped | {elapsed / 60:.1f} min, left {self.eta()}"
                + (f" | best {self.objective}: {best}" if best and self.tty else ""))

    def _draw(self, throttle: bool = False, event: str | None = None) -> None:
        now = self.clock()
        if throttle and now - self.last_draw < 1.0:
            return
        self.last_draw = now
        if self.tty:
            text = self.line()
            if event:
                self.stream.write(f"\r\033[K{stamp(now)}   " + event + "\n")
            self.stream.write("\r\033[K" + text[:200])
        elif event:
            self.stream.write(f"{stamp(now)}   {event}  [{self.done + self.stopped}/{self.total} done, "
                              f"{self.errored} errored, left {self.eta()}]\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        self.stream.write(f"{stamp(self.clock())} " + self.line().split(" | best")[0] + "\n")
        self.stream.flush()
