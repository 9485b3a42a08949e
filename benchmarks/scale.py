"""The paper's whole grid through the real orchestration, with training replaced by sleep.

    python benchmarks/scale.py [--tables table1,table2,...] [--cpus N] [--epochs 2]
        [--compute-minutes 2.5] [--kill-at 0.5] [--n-trials N] [--seeds N] [--out DIR]

The paper's Tables 1-6 as shipped (`ltkd sweep --list`: 4,922 trials with their searches of 10-20
trials per cell) run one after the other, each with its own `ltkd sweep` driver, on one local Ray
node started with `ray start --num-cpus <cpus>` logical CPUs (one per trial, so that many trials run
at once). Everything is the product's own: the driver, Ray Tune, the Optuna journal, run folders,
leases, the trial records and the Parquet store, `ltkd resume`, `ltkd status`, `ltkd report`. Only
the training step is a stand-in (`simulated_fit`, below), installed through the trainable's
benchmark hook (LTKD_BENCHMARK_FIT, orchestrator/tune_glue.py): it sleeps each epoch for the
run's epoch compute (its models' multiply-accumulates over its training and evaluation images,
`orchestrator/dry_run.epoch_macs`) times one scale for the whole grid, chosen so that the grid's
compute fills --compute-minutes of the node's slots, and writes what the engine writes (run.json,
data.json, metrics.jsonl, a placeholder checkpoint). Counts are the paper's; epochs per run are
--epochs instead of 100-240, and the sleep is scaled down. --cpus defaults to 64, or to as many trial
processes as this machine's memory holds (each imports torch, ~0.4 GB; 49 on a 24 GB machine). On a
2-core machine the pace is set by the worker processes' starts (see `worker processes:` in the
output): all six tables took 20 min at 49 CPUs; --tables runs a part.

It prints, each as a number and a ratio:
  - trials and epochs simulated;
  - orchestration overhead: the drivers' wall time against the ideal (the simulated trials laid
    out on the slots in the driver's own order, each as soon as its inputs are ready), per trial,
    and the trial length at which it would be 5%; the worker processes Tune started;
  - the drivers' CPU seconds and peak memory (os.wait4's rusage of each driver), and how busy the
    machine's cores were (the simulated slots share this machine's cores with Ray and the drivers);
  - each table's Optuna journal: size, bytes per search trial (constant across tables of 279 to
    1,428 trials = linear growth), the time to open it and read every study;
  - the storage's bytes per trial (what an object store would be pushed: linear if constant);
  - resume: at about --kill-at of all trials the driver and every process of the Ray node are
    SIGKILLed; `ltkd resume` on a fresh node, its time until trials run again, and the time of
    `ltkd resume` over every finished table (nothing to do but check: the whole paper sweep resumed);
  - `ltkd status` over each sweep and `ltkd report` over all of them.
It checks that every table ends with exactly its planned trials in the store and that no finished
run was trained again, and exits non-zero otherwise.
"""
from __future__ import annotations

import argparse
import functools
import heapq
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainables.run_files import (CHECKPOINT_NAME, CONFIG_NAME, DATA_NAME, METRICS_NAME,  # noqa: E402
                                  data_summary_text, metrics_lines, read_metrics)
from trainables.storage import Location  # noqa: E402
from trainables.console import span  # noqa: E402

STAND_IN_ENV = "LTKD_SCALE_STAND_IN"  # the stand-in's settings file: epoch seconds per kind of run, class counts
STAND_IN = "benchmarks.scale:simulated_fit"
LTKD = [sys.executable, "-m", "orchestrator.cli"]
PLACEHOLDER_CHECKPOINT_BYTES = 4096


# ------------------------------------------------------------------------------------ the stand-in
# Runs in the Ray workers, once per trial, in place of trainables.engine.fit: no torch of its own.


@dataclass
class SimulatedResult:
    metrics: dict
    history: list


@functools.lru_cache(maxsize=1)
def _settings() -> dict:
    return json.loads(Path(os.environ[STAND_IN_ENV]).read_text())


def run_kind(dataset: str, imbalance_factor: float, arch: str, method: str, role: str, teacher_arch: str | None) -> str:
    """The key of a run's epoch seconds (the fields of dry_run._key)."""
    return "|".join([dataset, f"{float(imbalance_factor):g}", arch, method, role, teacher_arch or ""])


def simulated_fit(config, run_dir, callback=None, log=print, **_unused) -> SimulatedResult:
    """The engine's fit, simulated: each epoch sleeps its scaled compute and writes the run folder's files."""
    settings = _settings()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seconds = settings["epoch_seconds"][run_kind(config.dataset, config.imbalance_factor, config.arch, config.method,
                                                 config.role, config.teacher_arch)]
    counts = settings["class_counts"][f"{config.dataset}|{float(config.imbalance_factor):g}"]
    Location.parse(run_dir / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    Location.parse(run_dir / DATA_NAME).write_text(data_summary_text(counts, sum(counts), 0, 0))
    history = read_metrics(run_dir)
    if history and history[-1]["epoch"] >= config.epochs:
        return SimulatedResult(history[-1], history)
    # A result that depends on the hyperparameters, so the searches have something to rank.
    quality = random.Random(json.dumps(config.to_dict(), sort_keys=True)).uniform(30.0, 60.0)
    start_epoch = len(history)
    events = Path(settings["events"]) / f"{socket.gethostname()}-{os.getpid()}.jsonl"
    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        time.sleep(seconds)
        acc = quality + 10.0 * (epoch + 1) / config.epochs
        metrics = {
            "epoch": epoch + 1, "epochs": config.epochs, "train_loss": 1.0 / (epoch + 1), "lr": 0.1,
            "acc": acc, "acc_head": acc + 10, "acc_medium": acc, "acc_tail": acc - 10,
            "val_acc": acc - 1, "val_acc_head": acc + 9, "val_acc_medium": acc - 1, "val_acc_tail": acc - 11,
            "per_class_acc": [acc] * len(counts), "group_prob": [0.5, 0.3, 0.2], "teacher_group_prob": None,
            "distill_weight": 1.0 if config.role == "student" else 0.0,
            "epoch_seconds": time.time() - started, "train_seconds": seconds, "device": "simulated",
            "resumed_from": start_epoch,
        }
        history.append(metrics)
        placeholder = run_dir / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
        placeholder.write_bytes(bytes(PLACEHOLDER_CHECKPOINT_BYTES))
        os.replace(placeholder, run_dir / CHECKPOINT_NAME)
        with open(run_dir / METRICS_NAME, "a") as f:
            f.write(metrics_lines([metrics]))
        with open(events, "a") as f:
            f.write(json.dumps({"run": str(run_dir), "epoch": epoch + 1, "start": started, "end": time.time()}) + "\n")
        if callback is not None:
            callback(metrics, run_dir / CHECKPOINT_NAME)
    return SimulatedResult(history[-1], history)


# ------------------------------------------------------------------------------------ the grid


@dataclass
class Table:
    name: str
    config: object  # SweepConfig
    config_file: Path
    folder: Path  # the sweep folder
    stages: list = None  # dry_run.StagePlan of teachers, search, final (`refresh`)

    def refresh(self) -> None:
        """Plan again: teachers an earlier table trained on the same storage are reused, not trained."""
        from orchestrator.dry_run import stages

        self.stages = stages(self.config)

    @property
    def trials(self) -> int:
        """Trial records the sweep ends with (reused teachers are recorded too)."""
        return sum(stage.runs for stage in self.stages)

    @property
    def epochs(self) -> int:
        """Epochs it simulates."""
        return sum(stage.to_run * stage.epochs for stage in self.stages)

    def sleep_seconds(self, epoch_seconds: dict[str, float]) -> float:
        return sum(stage.epochs * epoch_seconds[run_kind(*key)] for stage in self.stages for key in stage.keys)


def fake_dataset_root(root: Path) -> Path:
    """Empty folders in each paper dataset's layout: the driver checks layouts, the stand-in reads nothing."""
    for folder in ("cifar-100-python", "tiny-imagenet-200/train", "tiny-imagenet-200/val/images",
                   "imagenet/train", "imagenet/val"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta",
                 "tiny-imagenet-200/wnids.txt", "tiny-imagenet-200/val/val_annotations.txt"):
        (root / name).touch()
    return root


def prepared_tables(args, out: Path, root: Path) -> list[Table]:
    from orchestrator.plan import sweep_dir
    from orchestrator.sweep_cli import config_path
    from orchestrator.sweep_config import load_config, validate

    tables = []
    for name in args.tables:
        config = load_config(config_path(f"paper:{name}"))
        config.storage = str(out / "sweeps")
        config.teacher_epochs = config.student_epochs = args.epochs
        config.resources.cpus_per_trial, config.resources.gpus_per_trial = 1, 0
        for entry in config.datasets:
            entry.root = str(root)
        if args.seeds:
            paired = sorted(config.teacher_seeds) == sorted(config.seeds)  # a teacher per seed (the default)
            config.seeds = config.seeds[:args.seeds]
            if paired:
                config.teacher_seeds = list(config.seeds)
        if args.n_trials:
            for method in config.methods:
                if method.search is not None and not isinstance(method.search, bool):
                    method.search.n_trials = args.n_trials
        validate(config)
        path = out / "configs" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config.to_json())
        table = Table(name, config, path, Path(sweep_dir(config).path))
        table.refresh()
        tables.append(table)
    return tables


def stand_in_settings(tables: list[Table], args, out: Path) -> tuple[dict, float]:
    """Epoch seconds per kind of run (compute at one scale for the grid), class counts; and the scale."""
    from orchestrator.dry_run import epoch_macs
    from trainables.data.long_tail import long_tail_counts
    from trainables.data.sources import get_dataset, nominal_n_max

    macs, counts, simulated_macs = {}, {}, 0.0
    for table in tables:
        for stage in table.stages:
            for key in stage.keys:
                kind = run_kind(*key)
                macs.setdefault(kind, epoch_macs(table.config, key))
                simulated_macs += stage.epochs * macs[kind]
        for entry in table.config.datasets:
            spec = get_dataset(entry.name)
            holdout = table.config.validation_per_class_for(entry)
            for factor in entry.imbalance_factors:
                counts[f"{entry.name}|{float(factor):g}"] = long_tail_counts(nominal_n_max(spec, holdout),
                                                                            spec.num_classes, factor)
    scale = args.compute_minutes * 60 * args.cpus / simulated_macs  # seconds per MAC
    settings = {"epoch_seconds": {kind: m * scale for kind, m in macs.items()}, "class_counts": counts,
                "events": str(out / "events")}
    (out / "events").mkdir(parents=True, exist_ok=True)
    return settings, scale


def ideal_seconds(config, epoch_seconds: dict[str, float], slots: int) -> float:
    """The sweep's wall time without any overhead: its trials' simulated seconds laid out on `slots` slots
    in the driver's own order (orchestrator/tune_glue.SweepSearcher): teachers first; a cell's search
    trials once its teachers have finished (round-robin over the ready cells); its finals once its
    search has ended (at once for a cell without one)."""
    from orchestrator.dry_run import _key
    from orchestrator.plan import cell_final_runs, cell_teachers, cells, teacher_runs

    def seconds(run) -> float:
        return run.epochs * epoch_seconds[run_kind(*_key(run))]

    from orchestrator.studies import run_outcome

    finished = {run.run_dir.uri for run in teacher_runs(config) if run_outcome(run.run_dir, run.epochs) is not None}
    teachers = [(run.run_dir.uri, seconds(run)) for run in teacher_runs(config) if run.run_dir.uri not in finished]
    plan = []  # per cell: its teachers, trial seconds, search trials left, finals
    for cell in cells(config):
        trial = seconds(cell_final_runs(config, cell, None)[0])  # search trials and finals: the same run kind
        n_search = cell.entry.search.n_trials if cell.entry.search is not None else 0
        plan.append({"teachers": cell_teachers(config, cell), "seconds": trial, "search": n_search, "running": 0,
                     "finals": None})
    done: set[str] = set(finished)  # an earlier table trained them (the same storage): reused
    running: list[tuple[float, int, object]] = []  # (end, order, what ended: a teacher URI or (cell, stage))
    now, free, order, turn = 0.0, slots, 0, 0

    def next_trial():
        nonlocal turn
        if teachers:
            uri, length = teachers.pop(0)
            return length, uri
        ready = [c for c in plan if c["teachers"] <= done]
        searching = [c for c in ready if c["search"]]
        if searching:
            cell = searching[turn % len(searching)]
            turn += 1
            cell["search"] -= 1
            cell["running"] += 1
            return cell["seconds"], (id(cell), "search")
        for cell in ready:
            if cell["finals"] is None and not cell["running"]:
                cell["finals"] = len(config.seeds)
            if cell["finals"]:
                cell["finals"] -= 1
                return cell["seconds"], (id(cell), "final")
        return None

    by_id = {id(c): c for c in plan}
    while True:
        while free:
            trial = next_trial()
            if trial is None:
                break
            heapq.heappush(running, (now + trial[0], order, trial[1]))
            order, free = order + 1, free - 1
        if not running:
            return now
        now, _, what = heapq.heappop(running)
        free += 1
        if isinstance(what, str):
            done.add(what)
        elif what[1] == "search":
            by_id[what[0]]["running"] -= 1


# ------------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    """A head node of --cpus logical CPUs in a session of its own (SIGKILLed with all its processes by ending
    the session; `ray stop` would stop every Ray cluster on the machine)."""

    def __init__(self, env: dict, cpus: int):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Its own temp dir (short: Ray's socket paths must fit 107 characters), where its logs count the
        # worker processes it started.
        self.temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        ray = str(Path(sys.executable).with_name("ray"))
        self.process = subprocess.Popen(
            [ray, "start", "--block", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
             f"--temp-dir={self.temp}",
             f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
             "--object-store-memory=300000000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        script = (f"import ray, time\nray.init(address='{self.address}', logging_level='ERROR')\n"
                  "while not any(n['Alive'] for n in ray.nodes()): time.sleep(0.5)\nprint('ready')")
        ready = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
        if not ready.stdout.strip().endswith("ready"):
            self.remove()
            raise SystemExit(f"the Ray node did not start: {ready.stderr.strip()[-2000:]}")

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def worker_processes(self) -> int:
        """Python worker processes this node started (each leaves a core-worker log, kept after it exits)."""
        return len({path.name for path in self.temp.glob("session_*/logs/**/python-core-worker-*.log")})

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.temp, ignore_errors=True)


@dataclass
class DriverRun:
    wall: float
    cpu: float  # user + system seconds of the driver process
    peak_mb: float
    code: int  # exit code (-9: killed here)
    output: str


def run_driver(args: list[str], env: dict, log: Path, kill_when=None) -> DriverRun:
    """`ltkd ARGS` in a session of its own; SIGKILLed when kill_when() says so (checked every second)."""
    started = time.time()
    with open(log, "w") as out:
        process = subprocess.Popen([*LTKD, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=REPO)
        killed = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if kill_when is not None and not killed and kill_when():
                os.killpg(process.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.5 if kill_when is None else 0.2)
    process.returncode = -9 if killed else os.waitstatus_to_exitcode(status)
    return DriverRun(time.time() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                     process.returncode, log.read_text())


def machine_cpu_seconds() -> float:
    """Busy CPU-seconds of the whole machine since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def results_count(table: Table) -> int:
    folder = table.folder / "results"
    return len(list(folder.glob("*.parquet"))) if folder.is_dir() else 0


def events(out: Path) -> list[dict]:
    rows = []
    for path in (out / "events").glob("*.jsonl"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def timed(command: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.time()
    result = subprocess.run([*LTKD, *command], capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    return time.time() - started, result


def journal_open_seconds(path: Path) -> tuple[float, int]:
    """Seconds to open a journal with Optuna and read every study's trials; trials read."""
    import optuna

    from orchestrator.studies import opened_storage

    started = time.time()
    with opened_storage(Location.parse(path)) as storage:
        n = sum(len(storage.get_all_trials(study._study_id, deepcopy=False))
                for study in storage.get_all_studies())
    del optuna
    return time.time() - started, n


# ------------------------------------------------------------------------------------ main


# Memory of one trial process: a Ray worker that has imported torch (Ray Tune's report imports it in every
# trial process when it is installed, the stand-in's included): 0.38 GB each in Ray's out-of-memory
# report of a 64-slot run on this 24 GB machine, which Ray's memory monitor stopped.
PROCESS_GB = 0.4
RESERVED_GB = 2.0  # the driver, Ray's daemons, this script


def processes_memory_holds() -> int:
    """Trial processes this machine's available memory holds next to the driver and Ray's daemons."""
    try:
        with open("/proc/meminfo") as f:
            available_kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return 64  # not Linux: no way to tell; the default stands
    return max(1, int((available_kb / 2**20 - RESERVED_GB) / PROCESS_GB))


def main(argv=None) -> int:
    from orchestrator.sweep_cli import packaged_configs

    tables_known = [name.split(":", 1)[1] for name in packaged_configs()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default=",".join(tables_known), help="paper tables, comma-separated (default: all)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="logical CPUs of the Ray node = trials at once (default: 64, or as many trial processes "
                             "as this machine's memory holds)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every simulated run (the paper: 100-240)")
    parser.add_argument("--compute-minutes", type=float, default=2.5,
                        help="the grid's simulated compute, in minutes of all slots busy")
    parser.add_argument("--kill-at", type=float, default=0.5, help="SIGKILL the driver and Ray at this share of trials")
    parser.add_argument("--n-trials", type=int, default=None, help="trials per search (default: the paper configs')")
    parser.add_argument("--seeds", type=int, default=None, help="final seeds per cell (default: the configs' 3)")
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one, removed at the end)")
    args = parser.parse_args(argv)
    args.tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = sorted(set(args.tables) - set(tables_known))
    if unknown:
        parser.error(f"unknown table {unknown[0]} (known: {', '.join(tables_known)})")

    held = processes_memory_holds()
    if args.cpus is None:
        args.cpus = min(64, held)
        if args.cpus < 64:
            print(f"--cpus {args.cpus}: this machine's memory holds {held} trial processes, not 64 (each imports "
                  f"torch, Ray's report does: ~{PROCESS_GB} GB a process); --cpus N sets it")
    elif args.cpus > held:
        parser.error(f"--cpus {args.cpus}: {args.cpus} trial processes at once need ~{args.cpus * PROCESS_GB:.0f} GB "
                     f"(~{PROCESS_GB} GB each: Ray's report imports torch in every one), more than this machine's "
                     f"available memory holds ({held}); give --cpus {held} or less")

    out = Path(args.out or tempfile.mkdtemp(prefix="ltkd-scale-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return benchmark(args, out)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


def benchmark(args, out: Path) -> int:
    began = time.time()
    tables = prepared_tables(args, out, fake_dataset_root(out / "data"))
    settings, scale = stand_in_settings(tables, args, out)
    settings_file = out / "stand_in.json"
    settings_file.write_text(json.dumps(settings))
    total_trials = sum(t.trials for t in tables)
    total_epochs = sum(t.epochs for t in tables)
    sleep_total = sum(t.sleep_seconds(settings["epoch_seconds"]) for t in tables)
    ideal: dict[str, float] = {}
    print(f"grid: {', '.join(t.name for t in tables)}: {total_trials} trials, up to {total_epochs} simulated epochs "
          f"({args.epochs} per run; the paper's runs have 100-240), {args.cpus} logical CPUs = trials at once")
    print(f"stand-in: {sleep_total:.0f} s of sleep in all (one scale for the grid: {scale * 1e12:.3g} s per TMAC), "
          f"epochs of {min(settings['epoch_seconds'].values()):.3f}-{max(settings['epoch_seconds'].values()):.1f} s")

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex(),
           "LTKD_BENCHMARK_FIT": STAND_IN, STAND_IN_ENV: str(settings_file),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    env.pop("RAY_ADDRESS", None)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)

    node = RayNode(env, args.cpus)
    workers_started = 0  # Ray worker processes of the nodes that ran the tables
    cpu_started, wall_started = machine_cpu_seconds(), time.time()
    failures: list[str] = []
    drivers: dict[str, DriverRun] = {}
    kill_after = int(total_trials * args.kill_at)
    killed_table, resume_latency, resume_run = None, None, None
    done_before = 0
    try:
        for table in tables:
            table.refresh()
            ideal[table.name] = ideal_seconds(table.config, settings["epoch_seconds"], args.cpus)

            def past_half(table=table, before=done_before) -> bool:
                return before + results_count(table) >= kill_after

            kill = past_half if killed_table is None and done_before + table.trials > kill_after else None
            run = run_driver(["sweep", str(table.config_file), "--address", node.address], env,
                             logs / f"{table.name}.log", kill_when=kill)
            if run.code == -9:
                killed_table = table.name
                workers_started += node.worker_processes()
                node.remove()
                print(f"killed: the {table.name} driver and every process of the Ray node, SIGKILL, at "
                      f"{done_before + results_count(table)}/{total_trials} trials")
                node = RayNode(env, args.cpus)
                launched = time.time()
                resume_run = run_driver(["resume", str(table.folder), "--address", node.address], env,
                                        logs / f"{table.name}-resume.log")
                later = [e["start"] for e in events(out) if e["start"] >= launched]
                resume_latency = (min(later) - launched) if later else None
                run = DriverRun(run.wall + resume_run.wall, run.cpu + resume_run.cpu,
                                max(run.peak_mb, resume_run.peak_mb), resume_run.code, run.output + resume_run.output)
            drivers[table.name] = run
            done_before += results_count(table)
            if run.code != 0:
                failures.append(f"{table.name}: the driver exited with {run.code}; see {logs / table.name}.log")
                print(run.output[-3000:])
                break
    finally:
        workers_started += node.worker_processes()
        node.remove()
    machine_cpu, machine_wall = machine_cpu_seconds() - cpu_started, time.time() - wall_started

    # The whole paper sweep resumed: every table's `ltkd resume` over its finished runs (a new node each time
    # would cost a Ray start each; one node serves them all, as a user's cluster would).
    epochs_before = len(events(out))
    node = RayNode(env, args.cpus)
    try:
        noop = {t.name: run_driver(["resume", str(t.folder), "--address", node.address], env,
                                   logs / f"{t.name}-resume-finished.log") for t in tables if t.name in drivers}
    finally:
        node.remove()
    retrained = len(events(out)) - epochs_before

    status = {t.name: timed(["status", str(t.folder)], env) for t in tables if t.name in drivers}
    report_seconds, report = timed(["report", *(str(t.folder) for t in tables if t.name in drivers)], env)
    figures_seconds, figures = timed(["report", *(str(t.folder) for t in tables if t.name in drivers), "--out",
                                      str(out / "report"), "--figures"], env)

    # ---- checks: the store holds exactly the planned trials; nothing finished was trained again
    for table in tables:
        if table.name in drivers and results_count(table) != table.trials:
            failures.append(f"{table.name}: {results_count(table)} trial records, {table.trials} planned")
    trained = {}
    for e in events(out):
        trained.setdefault((e["run"], e["epoch"]), 0)
        trained[(e["run"], e["epoch"])] += 1
    twice = sum(1 for n in trained.values() if n > 1)
    # An epoch the kill interrupted after its sleep but before its checkpoint is trained again: that is
    # what a resume must do. More than the node's slots of them would mean finished work was redone.
    if twice > args.cpus:
        failures.append(f"{twice} run epochs were trained more than once")
    if retrained:
        failures.append(f"resuming finished tables trained {retrained} epochs again")
    for name, (seconds, result) in status.items():
        if result.returncode != 0:
            failures.append(f"ltkd status {name} exited {result.returncode}: {result.stderr.strip()[-300:]}")
    for what, result in (("report", report), ("report --figures", figures)):
        if result.returncode != 0:
            failures.append(f"ltkd {what} exited {result.returncode}: {result.stderr.strip()[-300:]}")

    # ---- figures
    total_epochs = sum(t.epochs for t in tables if t.name in drivers)  # as planned when each table started
    print()
    print("| table | trials | simulated epochs | driver wall | ideal | overhead | driver CPU | driver peak memory |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for table in tables:
        if table.name not in drivers:
            continue
        run = drivers[table.name]
        print(f"| {table.name}{' (killed, resumed)' if table.name == killed_table else ''} | {table.trials} | "
              f"{table.epochs} | {run.wall:.1f} s | {ideal[table.name]:.1f} s | {run.wall / ideal[table.name] - 1:+.0%} | "
              f"{run.cpu:.1f} s | {run.peak_mb:.0f} MB |")
    wall = sum(run.wall for run in drivers.values())
    ideal_total = sum(ideal[name] for name in drivers)
    overhead = wall - ideal_total
    print(f"\norchestration overhead: {overhead:.0f} s over an ideal {ideal_total:.0f} s = {overhead / ideal_total:.0%} "
          f"of the simulated compute at {args.cpus} trials at once (target <= 5%); {overhead * args.cpus / total_trials:.2f} "
          f"slot-seconds per trial")
    per_trial = overhead * args.cpus / total_trials
    print(f"at this machine's overhead a trial must compute {span(per_trial / 0.05)} for the overhead to be <= 5% of "
          f"it (a paper CIFAR trial: 240 epochs)")
    ran_trials = len(list((out / "events").glob("*.jsonl")))
    print(f"worker processes: {workers_started} started by Ray for {total_trials} trials, {ran_trials} of them ran trials "
          "(Tune gives a finished trial's process the next trial; the rest never ran one: Ray's idle pool, and "
          "processes Tune started for a trial on a free slot and stopped when another trial's process came free first)")
    driver_cpu = sum(r.cpu for r in drivers.values())
    print(f"drivers: {driver_cpu:.0f} CPU-seconds in all ({driver_cpu / total_trials * 1000:.0f} ms per trial), "
          f"peak memory {max(r.peak_mb for r in drivers.values()):.0f} MB (largest table)")
    cores = os.cpu_count() or 1
    print(f"this machine: {machine_cpu:.0f} CPU-seconds busy over {machine_wall:.0f} s = {machine_cpu / machine_wall:.2f} "
          f"of its {cores} cores ({(machine_cpu - driver_cpu) / total_trials:.2f} CPU-seconds per trial outside the "
          f"drivers: Ray, Tune's trial actors, the trials' own files and records); where that is near {cores}, the "
          f"{args.cpus} simulated slots wait for {cores} real cores and the overhead above is this machine's, not "
          "the orchestration's alone")

    print("\n| table | search trials | journal | bytes per search trial | open and read | storage | bytes per trial |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    per_trial_journal, per_trial_storage = [], []
    for table in tables:
        if table.name not in drivers:
            continue
        journal = table.folder / "optuna.journal"
        searched = table.stages[1].to_run
        size = journal.stat().st_size if journal.exists() else 0
        seconds, read = journal_open_seconds(journal) if journal.exists() else (0.0, 0)
        stored = folder_bytes(table.folder)
        if searched:
            per_trial_journal.append(size / searched)
        per_trial_storage.append(stored / table.trials)
        print(f"| {table.name} | {searched} | {size / 1e6:.1f} MB | {size / max(searched, 1):.0f} | {seconds:.2f} s "
              f"({read} trials) | {stored / 1e6:.0f} MB | {stored / table.trials:.0f} |")
    if len(per_trial_journal) > 1:
        print(f"journal bytes per search trial, largest / smallest table: "
              f"{max(per_trial_journal) / min(per_trial_journal):.2f} (1.00 = linear in trials)")
    if len(per_trial_storage) > 1:
        print(f"storage bytes per trial, largest / smallest table: "
              f"{max(per_trial_storage) / min(per_trial_storage):.2f} (1.00 = linear in trials)")

    if killed_table is not None:
        print(f"\nresume after SIGKILL ({killed_table}): trials ran again {resume_latency:.1f} s after `ltkd resume` "
              f"started (target <= 60 s); that driver then ran {resume_run.wall:.0f} s to its end"
              if resume_latency is not None else f"\nresume after SIGKILL ({killed_table}): no trial ran again")
    noop_total = sum(r.wall for r in noop.values())
    print(f"resume of the whole finished grid (`ltkd resume` per table, nothing left to run): {noop_total:.1f} s in all "
          f"(target <= 60 s), slowest {max(noop.values(), key=lambda r: r.wall).wall:.1f} s; "
          f"{retrained} epochs trained again")
    slowest = max(status.items(), key=lambda item: item[1][0])
    print(f"ltkd status: {slowest[1][0]:.2f} s for the slowest table ({slowest[0]}; target <= 2 s), "
          f"{sum(s for s, _ in status.values()) / len(status):.2f} s on average")
    print(f"ltkd report over all tables: {report_seconds:.1f} s (target <= 10 s); with --figures: {figures_seconds:.1f} s")
    print(f"benchmark wall time: {(time.time() - began) / 60:.1f} min")
    if failures:
        print("\nFAILED:\n" + "\n".join(f"  {line}" for line in failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
