"""The sweep driver: plans the stages and launches them on Ray Tune. It trains nothing itself.

The teachers train first (reusing any already trained on the same storage); every cell's Optuna
search runs as soon as its teachers have finished, all cells at the same time (with the search
seed, on the metric `SweepConfig.objective_metric` names); each cell's final runs train its best
configuration (or a baseline's defaults) with every final seed, in run folders no search trial
uses, as soon as its search has ended. All three stages are one Tune run
(orchestrator/tune_glue.SweepSearcher), so slots and worker processes pass from stage to stage.
Everything the driver needs to know about earlier work is read back from the run folders, the
Optuna journal and the Parquet results, so `ltkd resume` (or running the same config again)
continues where a killed driver stopped.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.layout import LOCK_FILE, SWEEP_FILE
from orchestrator.plan import PlannedRun, cells, layout, plan_summary, storage_root, sweep_dir, teacher_runs
from orchestrator.ray_auth import check_token_file, private_cluster_env
from orchestrator.studies import CellSearch, opened_storage, run_outcome
from orchestrator.sweep_config import ConfigError, SweepConfig, parse_config
from trainables.console import say, warning
from trainables.errors import UserError
from trainables.methods import get_method
from trainables.storage import Location, StorageError, private_scratch_folder

class SweepError(UserError):
    pass


# ------------------------------------------------------------------------------------ checks


def preflight(config: SweepConfig, address: str | None) -> None:
    """Everything that can be checked before Ray starts: dataset roots, storage, cluster address."""
    from trainables.data.sources import check_root

    for entry in config.datasets:
        check_root(entry.name, entry.root)
    _check_writable(sweep_dir(config).parent)
    if address:
        check_token_file(os.environ)
    if address and address != "auto":
        _check_reachable(address)
    if config.tracking.mlflow_experiment:
        _check_mlflow(config.tracking.mlflow_tracking_uri)


def _check_mlflow(tracking_uri: str | None) -> None:
    """The MLflow tracking store answers (before Ray starts: Tune would fail its first stage with a traceback)."""
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 (any failure of the store is the user's to fix)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SweepError(f"tracking.mlflow_tracking_uri {tracking_uri or '(MLflow default)'} cannot be used "
                         f"({first[:300]}); fix it (e.g. sqlite:///mlflow.db) or remove tracking.mlflow_experiment") from None


def _check_writable(folder: Location) -> None:
    probe = folder / f".ltkd-write-test-{socket.gethostname()}-{os.getpid()}"
    try:
        probe.write_text("ok")
        probe.delete()
    except (OSError, StorageError) as exc:
        reason = exc.detail if isinstance(exc, StorageError) else (exc.strerror or str(exc))
        raise SweepError(f"storage {folder} cannot be written ({reason}); choose a writable storage "
                         "folder or URI in the sweep config") from None


def _check_reachable(address: str) -> None:
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SweepError(f"cluster address '{address}' is not HOST:PORT (e.g. 10.0.0.1:6379 from `ray start --head`)")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise SweepError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
                         "`ray start --head` or fix --address") from None


# ------------------------------------------------------------------------------------ sweep folder


def load_sweep_folder(folder: str | Path) -> SweepConfig:
    """The config of the sweep in `folder` (a path or URI, as `ltkd resume` and `ltkd status` take it)."""
    location = Location.parse(folder)
    text = (location / SWEEP_FILE).read_text()
    if text is None:
        if not location.exists():
            raise SweepError(f"{location} does not exist; pass a sweep folder (storage/name) made by `ltkd sweep`")
        raise SweepError(f"{location} is not a sweep folder (no {SWEEP_FILE}); pass the folder `ltkd sweep` created")
    try:
        values = json.loads(text)
        if isinstance(values, dict) and "selection" not in values:
            # Written before the comparison protocol: its runs were planned under other rules (search
            # trials reused as finals, test-set selection), which this version does not plan.
            raise SweepError(f"{location / SWEEP_FILE} was written by a version without the comparison protocol "
                             "(no 'selection' key): its runs cannot be continued; start a new sweep (another name), "
                             "with selection = \"test\" to reproduce the paper's protocol")
        config = parse_config(values)
    except (ValueError, ConfigError) as exc:
        raise SweepError(f"{location / SWEEP_FILE} cannot be read ({exc})") from None
    if location.name != config.name:
        # Its runs, Optuna studies and results are all keyed by the name in its config.
        raise SweepError(f"{location} holds the sweep named '{config.name}' (its {SWEEP_FILE}), not '{location.name}': "
                         f"a renamed sweep folder cannot be continued; rename the folder back to '{config.name}'")
    if sweep_dir(config) != location:
        # Moved, reached through another mount, or given other URI options: keep the storage it is in now.
        config.storage = location.parent.uri
    return config


def _write_sweep_file(config: SweepConfig) -> None:
    folder = sweep_dir(config)
    config.storage = storage_root(config).uri
    existing = (folder / SWEEP_FILE).read_text()
    if existing is not None:
        try:  # read as a config: keys added since it was written take their defaults
            previous = json.loads(parse_config(json.loads(existing)).to_json())
        except (ValueError, ConfigError):
            previous = json.loads(existing)
        previous["storage"] = config.storage
        current = json.loads(config.to_json())
        if previous != current:
            changed = sorted(k for k in current if previous.get(k) != current.get(k))
            raise SweepError(f"{folder} already holds a different sweep (differs in: {', '.join(changed)}); use another "
                             "name, or `ltkd resume` to continue that one")
        return
    (folder / SWEEP_FILE).write_text(config.to_json())


class DriverLock:
    """One driver per sweep, on any machine: an exclusive lease on `driver.lock` (trainables/locks.py).

    A lock left by a killed driver is taken over: at once on its own machine (its pid is gone or
    belongs to a newer process), after its heartbeat has been seen silent for the stale period
    from any other machine. `force` removes the lock first, whoever holds it.
    """

    def __init__(self, folder: Location, force: bool = False, log=print):
        from trainables.locks import Lease

        self.lease = Lease(folder / LOCK_FILE, stale_after=STALE_AFTER_SECONDS, heartbeat=HEARTBEAT_SECONDS,
                           log=lambda line: log(f"driver lock: {line}"), describe={"what": "sweep driver"})
        self.force = force
        self.log = log

    def __enter__(self):
        from trainables.locks import LeaseHeld, claimed_stale_after

        if self.force:
            holder = self.lease.force_break()
            if holder is not None:
                self.log(f"driver lock: removed the lock of pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                         "(--force)")

        def waiting(state: str, holder: dict) -> None:
            self.log(f"driver lock: held by pid {holder.get('pid', '?')} on {holder.get('host', '?')}, another machine; "
                     f"watching its heartbeat for up to {claimed_stale_after(holder, STALE_AFTER_SECONDS):.0f} s before "
                     "taking over (`ltkd resume --force` takes over a lock whose driver you know is dead)")
        try:
            self.lease.acquire(wait_for_live_holder=False, poll=min(5.0, HEARTBEAT_SECONDS), on_wait=waiting)
        except LeaseHeld:
            holder = self.lease.info() or {}
            raise SweepError(f"another driver (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) is running "
                             "this sweep; wait for it or stop it (`ltkd resume --force` if you know it is dead)") from None
        return self

    def __exit__(self, *exc):
        self.lease.release()

    def taken_over(self) -> str | None:
        """Why this driver must stop (another took its lock over: `--force`, or it was judged dead), or None."""
        if not self.lease.lost.is_set():
            return None
        holder = self.lease.info() or {}
        return (f"another driver (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) took over this sweep's "
                "lock; this driver stopped (its finished work is kept)")

    def stop_if_taken_over(self) -> None:
        reason = self.taken_over()
        if reason:
            raise SweepError(reason)


HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 120.0


def driver_state(folder: Location) -> str:
    """The sweep's driver as `ltkd status` shows it; reads only (see Lease.holder_state)."""
    from trainables.locks import Lease

    holder, alive, where = Lease(folder / LOCK_FILE, stale_after=STALE_AFTER_SECONDS).holder_state()
    if holder is None:
        return "driver: none"
    state = "running" if alive else "not running (stopped or killed: `ltkd resume` continues it)"
    return f"driver: {where}, {state}"


# ------------------------------------------------------------------------------------ running


def _ensure_record(run: PlannedRun, config: SweepConfig) -> None:
    """A finished run whose results were not written (driver killed in between) gets them now."""
    from orchestrator.records import has_record, write_record

    spec = run.spec(config)
    if not has_record(spec):
        write_record(spec, None, "completed")


def _progress(config: SweepConfig, total: int, stop_check=None):
    """The console view of a sweep's Tune run (tune_glue.Progress); it records trials stopped early."""
    from orchestrator.records import write_record
    from orchestrator.tune_glue import Progress
    from trainables.trial import TrialSpec

    def on_end(trial: dict, status: str, started: float) -> None:
        # A trial stopped early never returns from its last report: the driver writes its record.
        if status == "early_stopped" and trial:
            write_record(TrialSpec.from_dict(trial), None, "early_stopped", started)

    return Progress("sweep", total, config.objective_metric, on_trial_end=on_end, stop_check=stop_check)


def trial_slots(config: SweepConfig, cluster: dict[str, float]) -> int:
    """Trials at once: resources.max_concurrent_trials, or as many as `cluster` (Ray's resources) holds."""
    if config.resources.max_concurrent_trials:
        return config.resources.max_concurrent_trials
    slots = [cluster.get("CPU", 0.0) / config.resources.cpus_per_trial]
    if config.resources.gpus_per_trial:
        slots.append(cluster.get("GPU", 0.0) / config.resources.gpus_per_trial)
    return max(1, int(min(slots) + 1e-9))


def tune_config(config: SweepConfig, total: int, search_alg, slots: int, scheduler=None):
    """Tune's settings for the sweep's one run: `total` trials from `search_alg` (SweepSearcher), at most
    `slots` at once (`trial_slots`), `scheduler` (SearchTrialsASHA) or every trial to its end."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from orchestrator.tune_glue import SweepScheduler, trial_dirname

    # A trial is handed to Tune only when a slot is free. Without the limit Tune keeps one trial pending
    # and starts a worker process for it on any free slot, then stops that process when a running trial's
    # worker comes free first (the trial takes that one): a process start and an import of Ray and torch
    # for nothing, most trial ends (the whole grid of benchmarks/scale.py: 4,043 processes for 78 that
    # ran trials). With it, a finished trial's worker takes the next trial; processes start to fill slots.
    return tune.TuneConfig(num_samples=total, search_alg=ConcurrencyLimiter(search_alg, slots),
                           scheduler=scheduler or SweepScheduler(),
                           metric=config.objective_metric if scheduler else None,
                           mode="max" if scheduler else None, trial_dirname_creator=trial_dirname,
                           # A finished trial's worker takes the next trial, whatever its stage:
                           # no new process, no second import of torch per trial (seconds each).
                           reuse_actors=True)


def _tune_run(config: SweepConfig, progress, verbose: bool, search_alg, tune_folder: Path, *, scheduler=None) -> Any:
    """One Tune run for every stage of the sweep (orchestrator/tune_glue.SweepSearcher hands out the trials).

    Tune keeps its experiment state in `tune_folder`, a private folder of this driver run's
    (`private_scratch_folder`), never on the sweep's storage: Tune decodes cloudpickle in its
    experiment state and in errored trials' error.pkl, so a file planted there would run code. The
    sweep's own files are what a resume reads; Tune's state is never restored.
    """
    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from orchestrator.tune_glue import ltkd_trial

    # Tune's result.json and progress.csv per trial (tune.ExperimentAnalysis reads them), but not its
    # TensorBoard logger: every run folder has its own event files (trainables/tracking.py), and Tune's
    # flushes and fsyncs a file per result in the driver's loop (~40 ms a result at paper scale).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    loggers = [CSVLoggerCallback(), JsonLoggerCallback()]
    resources = {"cpu": config.resources.cpus_per_trial, "gpu": config.resources.gpus_per_trial}
    slots = trial_slots(config, ray.cluster_resources())
    say(f"trials at once: at most {slots} ("
        + ("resources.max_concurrent_trials)" if config.resources.max_concurrent_trials else
           "the cluster's CPUs and GPUs over each trial's resources; resources.max_concurrent_trials sets it)"))
    tuner = tune.Tuner(
        tune.with_resources(ltkd_trial, resources),
        tune_config=tune_config(config, progress.total, search_alg, slots, scheduler),
        run_config=tune.RunConfig(
            name=TUNE_EXPERIMENT, storage_path=str(tune_folder),
            failure_config=tune.FailureConfig(max_failures=config.max_retries),
            callbacks=[progress, *loggers, *tracking_callbacks(config)], verbose=2 if verbose else 0,
        ),
    )
    try:
        return tuner.fit()
    finally:
        progress.close()


TUNE_EXPERIMENT = "trials"  # <tune folder>/trials/ltkd_trial_<id>/: Tune's result.json, progress.csv, error.txt


def tracking_callbacks(config: SweepConfig) -> list:
    """Ray Tune's own W&B and MLflow loggers, when the config's [tracking] section asks for them
    (validate checked the packages are installed): every trial's reported metrics, per epoch,
    labelled with the trial's own stage and cell (orchestrator/trial_tracking.py)."""
    tracking, callbacks = config.tracking, []
    if tracking.wandb_project:
        from orchestrator.trial_tracking import TrialWandbLoggerCallback

        callbacks.append(TrialWandbLoggerCallback(
            config.name, project=tracking.wandb_project,
            **({"entity": tracking.wandb_entity} if tracking.wandb_entity else {})))
    if tracking.mlflow_experiment:
        from orchestrator.trial_tracking import TrialMLflowLoggerCallback

        callbacks.append(TrialMLflowLoggerCallback(config.name, tracking_uri=tracking.mlflow_tracking_uri,
                                                   experiment_name=tracking.mlflow_experiment))
    return callbacks


def _unfinished(config: SweepConfig, stage: str, runs: list[PlannedRun]) -> list[PlannedRun]:
    """Runs that have not finished yet; a finished one gets its record if a killed driver left it without."""
    todo = []
    for run in runs:
        if run_outcome(run.run_dir, run.epochs) is not None:
            _ensure_record(run, config)
        else:
            todo.append(run)
    say(f"{stage}: {len(runs)} runs, {len(runs) - len(todo)} already finished (reused), {len(todo)} to run")
    return todo


def _run_stages(config: SweepConfig, verbose: bool, tune_folder: Path, stop_check=None) -> tuple[int, int]:
    """Teachers, searches and finals in one Tune run (none when nothing is left to run).
    Returns (failed teachers, errored students)."""
    from contextlib import nullcontext

    from orchestrator.plan import cell_final_runs, cell_teachers
    from orchestrator.tune_glue import SearchTrialsASHA, SweepSearcher

    teachers = teacher_runs(config)
    todo = _unfinished(config, "teachers", teachers)
    todo_dirs = {run.run_dir.uri for run in todo}
    all_cells = cells(config)
    searched = [cell for cell in all_cells if cell.entry.search is not None]
    journal = opened_storage(layout(config).journal) if searched else nullcontext()
    with journal as storage:
        searches = [CellSearch(config, cell, storage) for cell in searched]
        for search in searches:
            for run, _ in search.reconcile():
                _ensure_record(run, config)
        if searches:
            say(f"search: {len(searches)} cells, {sum(s.ended() for s in searches)} trials already ended, "
                f"{sum(s.remaining() for s in searches)} to run (maximising {config.objective_metric}, search seed "
                f"{config.search_seed})")
        finals = len(all_cells) * len(config.seeds)
        say(f"final: {finals} runs, each cell's as soon as its search has ended (or its teachers, without one)")

        def final_runs_of(cell, chosen):
            if cell.entry.search is not None and chosen is None:
                say(f"search: {cell.key} has no completed trial; its final runs use the defaults")
                warning = get_method(cell.entry.method).guessed_defaults_warning(cell.setting.dataset,
                                                                               cell.entry.hparams)
                if warning:
                    print(f"warning: {cell.entry.label}: {warning}", file=sys.stderr)
            # Finals train every seed in `seeds`: fresh runs, never a search trial's (plan.cell_final_runs).
            return cell_final_runs(config, cell, chosen)

        def finished(run: PlannedRun) -> bool:
            """A final run found finished when its cell's search ended: recorded, not a Tune trial."""
            if run_outcome(run.run_dir, run.epochs) is None:
                return False
            _ensure_record(run, config)
            progress.total -= 1
            return True

        searcher = SweepSearcher(config, todo, {run.run_dir.uri for run in teachers} - todo_dirs, all_cells, searches,
                                 teachers_of=lambda cell: cell_teachers(config, cell), final_runs=final_runs_of,
                                 skip=finished)
        scheduler = None
        if config.scheduler.asha and searches:
            scheduler = SearchTrialsASHA(time_attr="epoch", grace_period=config.scheduler.grace_period,
                                         reduction_factor=config.scheduler.reduction_factor,
                                         max_t=max(run_epochs(config, search) for search in searches))
        total = len(todo) + sum(search.remaining() for search in searches) + finals
        progress = _progress(config, total, stop_check)
        if searcher.nothing_to_run():
            say("nothing left to run")
            return 0, 0
        results = _tune_run(config, progress, verbose, searcher, tune_folder, scheduler=scheduler)
    errored = sum(1 for r in results if r.error is not None and r.config.get("trial", {}).get("stage") != "teacher")
    return len(searcher.failed_teachers), errored


def _warn_guessed_defaults(config: SweepConfig) -> None:
    """One line per method and dataset whose unsearched runs keep defaults that no study backs."""
    from trainables.methods import get_method

    seen = set()
    for cell in cells(config):
        if cell.entry.search is not None:  # the search sets what it searches
            continue
        warning = get_method(cell.entry.method).guessed_defaults_warning(cell.setting.dataset, cell.entry.hparams)
        if warning and warning not in seen:
            seen.add(warning)
            print(f"warning: {cell.entry.label}: {warning}", file=sys.stderr)


def _plan_line(plan: dict) -> str:
    """The plan, announced when a driver starts (each stage then says how much of it is already done)."""
    return (f"plan: {len(plan['teachers'])} teachers, {plan['search_trials']} search trials over "
            f"{plan['searched_cells']} cells, {plan['final_runs']} final runs ({len(plan['seeds'])} seeds per cell)")


def run_epochs(config: SweepConfig, search: CellSearch) -> int:
    return search.planned(0, dict(search.cell.entry.hparams)).epochs


def run_sweep(config: SweepConfig, address: str | None = None, verbose: bool = False, resume: bool = False,
              force: bool = False) -> int:
    """Run (or continue) a sweep to its final table. Returns the exit code.

    `force` takes over the driver lock whoever holds it (the user knows that driver is dead).
    """
    preflight(config, address)
    _write_sweep_file(config)
    folder = sweep_dir(config)
    _warn_guessed_defaults(config)
    with DriverLock(folder, force=force) as lock:
        started = time.time()
        # For `ltkd status`, which reads files only (rewritten by every driver: the code planning it may be newer).
        plan = plan_summary(config)
        layout(config).plan_file.write_text(json.dumps(plan, indent=1))
        say(f"sweep {config.name}: {folder}" + (" (resuming)" if resume else ""))
        say(_plan_line(plan))
        tune_folder = private_scratch_folder("tune", config.name)
        _start_ray(address, verbose, config)
        try:
            failed_teachers, failed = _run_stages(config, verbose, tune_folder, lock.taken_over)
            lock.stop_if_taken_over()
        except Exception:
            lock.stop_if_taken_over()  # a run ended by the takeover: say that, not Tune's error
            raise
        finally:
            import ray

            ray.shutdown()
        if not failed_teachers and not failed:
            shutil.rmtree(tune_folder, ignore_errors=True)  # kept otherwise: Tune's error.txt of each errored trial
        if failed_teachers:
            raise SweepError(f"{failed_teachers} teacher runs failed after {config.max_retries} retries (their cells' "
                             f"students did not run); see their train.log and Tune's logs under {tune_folder}, fix the cause and "
                             f"`ltkd resume {shlex.quote(folder.uri)}`")
        say(f"sweep {config.name} finished in {(time.time() - started) / 60:.1f} min")
        _print_table(folder)
        if failed:
            print(f"{failed} trials errored after {config.max_retries} retries (Tune's logs: {tune_folder}); `ltkd resume {shlex.quote(folder.uri)}` retries "
                  "unfinished runs", file=sys.stderr)
            return 1
        return 0


def _start_ray(address: str | None, verbose: bool, config: SweepConfig) -> None:
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=verbose, configure_logging=True,
                                  logging_level="INFO" if verbose else "ERROR")
    # Workers import this package from the same environment; make the source tree importable too.
    kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))}}
    # No address: always a private instance. A bare ray.init() would attach to whatever cluster
    # `ray start` last recorded on this machine (another user's, or a dead one's leftovers).
    if not address:
        os.environ.update(private_cluster_env())  # inherited by the cluster's processes only
    try:
        ray.init(address=address or "local", **kwargs)
    except ConnectionError as exc:
        raise SweepError(f"cannot connect to the Ray cluster at {address} ({exc}); fix --address") from None
    if address:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        total = ray.cluster_resources()
        say(f"joined the Ray cluster at {address} ({ray.get_runtime_context().gcs_address}): {len(nodes)} nodes, "
              f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs")


def _print_table(folder: Location) -> None:
    """The finished sweep's tables, as `ltkd report` prints them."""
    from results.render import to_markdown
    from results.store import read_results
    from results.tables import all_tables

    tables = all_tables(read_results([folder.uri], warn=warning, allow_empty=True, final_only=True))
    print("\n".join(to_markdown(table) for table in tables))
    print(f"(`ltkd report {shlex.quote(folder.uri)} --out DIR --figures` writes LaTeX, HTML, CSV and figures)")
