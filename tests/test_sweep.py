"""Sweeps on Ray Tune with Optuna: config validation, teacher reuse, SIGKILL resume, retries, a real cluster.

The sweeps here are real: `ltkd sweep` in a subprocess starts a local Ray cluster (or joins one
started with `ray start`), trains on the embedded digits data and writes Optuna journals and
Parquet results that the tests read back.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.cli import main as ltkd_main
from orchestrator.sweep_config import ConfigError, load_config, parse_config
from trainables.storage import Location
from tests.sweep_helpers import LTKD, tiny_config, write_config, run_ltkd

RAY = str(Path(sys.executable).with_name("ray"))








def read_final_rows(sweep: Path):
    from results.store import read_results

    frame = read_results([str(sweep)])
    return frame[frame["row_kind"] == "final"]


def study_trials(sweep: Path):
    """Every study's launched trials (a trial asked just before a SIGKILL, never launched, is told FAIL
    on resume without counting: left out here)."""
    import optuna

    from orchestrator.studies import HPARAMS_ATTR, open_storage

    storage = open_storage(Location.parse(sweep) / "optuna.journal")
    return {s.study_name: [t for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials(
                deepcopy=False) if HPARAMS_ATTR in t.user_attrs or t.state.name != "FAIL"]
            for s in optuna.get_all_study_summaries(storage)}


def history(run_dir: Path | Location) -> list[dict]:
    metrics = run_dir / "metrics.jsonl"
    text = metrics.read_text() if metrics.exists() else None  # a run folder exists from its trial's start
    return [json.loads(line) for line in text.splitlines()] if text else []


def trial_workers(session: int) -> list[int]:
    """The Ray trial workers of the sweep whose driver leads `session` (other Ray clusters may run here)."""
    out = subprocess.run(["pgrep", "-s", str(session), "-f", "ray::"], capture_output=True, text=True).stdout

    def command(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_text(errors="ignore")
        except OSError:  # ended meanwhile
            return ""
    return [pid for pid in map(int, out.split()) if "ImplicitFunc" in command(pid)]


def kill_driver(process: subprocess.Popen) -> None:
    """SIGKILL the sweep's driver, then wait until its trials' workers have died with it.

    The driver was started in a session of its own; Ray's dashboard and runtime-env agents outlive
    it as orphans in that session (the trial workers do not): they are removed too, so they do not
    pile up across tests, and nothing outside the session is touched.
    """
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.time() + 60
    while trial_workers(process.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert not trial_workers(process.pid), "a trial worker outlived its killed driver"
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_auth_env() -> dict:
    """Ray >= 2.59 turns token authentication on for local clusters: nodes and drivers share one token."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}


@contextlib.contextmanager
def ray_node(env: dict, *args: str):
    """A node started with `ray start --block` in a session of its own, stopped by ending that session
    (`ray stop` would stop every Ray cluster on the machine, other users' too)."""
    process = subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                                "--disable-usage-stats", *args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


def wait_for_nodes(address: str, env: dict, count: int) -> None:
    script = (f"import ray, time\nray.init(address='{address}', logging_level='ERROR')\n"
              f"while sum(n['Alive'] for n in ray.nodes()) < {count}: time.sleep(0.5)\nprint('ready')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert result.stdout.strip().endswith("ready"), result.stderr


# ------------------------------------------------------------------------------------ config validation


def test_toml_and_yaml_configs_load_to_the_same_sweep(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('name = "a"\nseeds = [0, 1]\n[[datasets]]\nname = "digits"\nimbalance_factors = [10]\n'
                    '[[pairs]]\nteacher = "resnet20"\nstudent = "resnet8"\n[[methods]]\nmethod = "ltkd"\n'
                    '[methods.search]\nn_trials = 5\n[methods.search.space]\nalpha = {low = 0.5, high = 2}\n')
    yaml = tmp_path / "s.yaml"
    yaml.write_text("name: a\nseeds: [0, 1]\ndatasets:\n  - {name: digits, imbalance_factors: [10]}\n"
                    "pairs:\n  - {teacher: resnet20, student: resnet8}\nmethods:\n  - method: ltkd\n"
                    "    search: {n_trials: 5, space: {alpha: {low: 0.5, high: 2}}}\n")
    a, b = load_config(toml), load_config(yaml)
    assert a.to_dict() == b.to_dict()
    assert a.methods[0].search.n_trials == 5 and a.datasets[0].imbalance_factors == [10]


@pytest.mark.parametrize("change,message", [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"methods": [{"method": "ltkd", "search": {"n_trails": 3}}]}, "unknown key 'methods[0].search.n_trails'"),
    ({"scheduler": {"asha": True, "grace": 1}}, "unknown key 'scheduler.grace'"),
    ({"methods": [{"method": "ltkd", "search": {"n_trials": 0}}]}, "methods[0].search.n_trials must be >= 1"),
    ({"methods": [{"method": "fancykd"}]}, "methods[0].method: unknown method 'fancykd'"),
    ({"methods": [{"method": "ltkd", "hparams": {"beta": -1}}]}, "methods[0].hparams: ltkd: hyperparameter 'beta' must be >= 0"),
    ({"methods": [{"method": "ltkd", "search": {"space": {"n_groups": {"choices": [3, 20]}}}}]},
     "n_groups 20 is more than the 10 classes"),
    ({"methods": [{"method": "ltkd", "search": {"space": {"alpha": {"low": 2, "high": 1}}}}]}, "alpha: need low < high"),
    ({"methods": [{"method": "ltkd", "search": {"space": {"gamma": 1}}}]}, "'gamma' is not a hyperparameter of ltkd"),
    ({"methods": [{"method": "ce"}, {"method": "ce"}]}, "the name 'ce' is used twice"),
    ({"datasets": [{"name": "mnist"}]}, "datasets[0].name: unknown dataset 'mnist'"),
    ({"datasets": [{"name": "digits", "imbalance_factors": [0.5]}]}, "each factor must be >= 1"),
    ({"pairs": [{"teacher": "resnet34", "student": "resnet8"}]}, "pair models of the same input style"),
    ({"pairs": [{"teacher": "resnet20"}]}, "missing key 'pairs[0].student'"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"resources": {"gpus_per_trial": 1.5}}, "resources.gpus_per_trial must be 0, a fraction of a GPU or 1"),
    ({"resources": {"max_concurrent_trials": -2}}, "resources.max_concurrent_trials must be a whole number >= 0"),
    ({"objective": "loss"}, "objective must be one of"),
])
def test_impossible_configs_name_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as error:
        parse_config({**tiny_config(tmp_path), **change})
    assert message in str(error.value)


def test_trials_at_once_are_the_slots_the_cluster_holds_unless_the_config_says(tmp_path):
    from orchestrator.sweep import trial_slots

    def slots(resources: dict, cluster: dict) -> int:
        return trial_slots(parse_config({**tiny_config(tmp_path), "resources": resources}), cluster)

    assert slots({"cpus_per_trial": 1}, {"CPU": 64.0}) == 64
    assert slots({"cpus_per_trial": 3}, {"CPU": 64.0}) == 21  # whole trials only
    assert slots({"cpus_per_trial": 0.5}, {"CPU": 3.0}) == 6
    assert slots({"cpus_per_trial": 4, "gpus_per_trial": 0.25}, {"CPU": 64.0, "GPU": 2.0}) == 8  # GPUs bind
    assert slots({"cpus_per_trial": 4, "gpus_per_trial": 1}, {"CPU": 64.0}) == 1  # none yet: one, not zero
    assert slots({"cpus_per_trial": 1, "max_concurrent_trials": 200}, {"CPU": 64.0}) == 200  # autoscaling


def test_bad_sweep_input_fails_before_any_trial(tmp_path, capsys, monkeypatch):
    def fails(args, message):
        code = ltkd_main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err

    config = tiny_config(tmp_path / "store", datasets=[{"name": "cifar100", "root": str(tmp_path / "nope")}])
    fails(["sweep", str(write_config(tmp_path / "a.json", config))], "does not exist")
    assert not (tmp_path / "store").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    fails(["sweep", str(write_config(tmp_path / "b.json", tiny_config(blocker / "sub")))], "cannot be written")
    # (the token in the environment: Ray's token file on this machine may be anyone's to read, which is refused)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 32)
    fails(["sweep", str(write_config(tmp_path / "c.json", tiny_config(tmp_path / "s2"))), "--address", "127.0.0.1:1"],
          "cannot reach the Ray cluster at 127.0.0.1:1")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    fails(["sweep", str(write_config(tmp_path / "d.json", tiny_config("s3://KEY:SECRET@bucket/sweeps")))],
          "carries credentials; pass them in the environment instead")
    fails(["resume", str(tmp_path)], "is not a sweep folder")
    fails(["status", str(tmp_path / "missing")], "does not exist")
    fails(["sweep", str(tmp_path / "missing.toml")], "not found")


# ------------------------------------------------------------------------------------ a whole sweep


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    config = write_config(root / "tiny.json", tiny_config(root / "store"))
    result = run_ltkd("sweep", config)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


def test_sweep_runs_all_stages_and_keeps_optuna_and_parquet_consistent(finished_sweep):
    root, result = finished_sweep
    sweep = root / "store" / "tiny"
    assert "teachers: 1 runs, 0 already finished (reused), 1 to run" in result.stdout
    import ray._private.utils

    # A private Ray instance has this machine's CPUs; one per trial.
    assert f"trials at once: at most {ray._private.utils.get_num_cpus()} (the cluster's CPUs and GPUs" in result.stdout
    final = read_final_rows(sweep)
    # The final LTKD run is a fresh run (seed 0), never a search trial (search seed 1) reused.
    assert sorted(final["stage"].value_counts().items()) == [("final", 2), ("search", 3), ("teacher", 1)]
    assert final["trial_id"].is_unique and set(final["status"]) == {"completed"}
    assert set(final[final["stage"] == "search"]["seed"]) == {1} and set(final[final["stage"] == "final"]["seed"]) == {0}
    assert len(list((sweep / "runs").glob("*/*"))) == 3 + 2  # three search folders, two final ones
    trials = study_trials(sweep)
    assert list(trials) == ["tiny:digits/if100/resnet8->resnet8/ltkd"]
    [study] = trials.values()
    assert [t.state.name for t in study] == ["COMPLETE"] * 3
    searched = final[final["stage"] == "search"].set_index("optuna_trial")
    # Selection on validation (the default): Optuna holds val_acc, never the test accuracy.
    assert set(searched["objective_metric"]) == {"val_acc"} and set(searched["selection"]) == {"val"}
    for trial in study:
        assert trial.value == pytest.approx(searched.loc[trial.number, "val_acc"])
        assert len(trial.intermediate_values) == 4  # every epoch's value was reported
    # the final LTKD run uses the best trial's hyperparameters
    best = max(study, key=lambda t: t.value)
    final_ltkd = final[(final["stage"] == "final") & (final["method"] == "ltkd")].iloc[0]
    assert final_ltkd["alpha"] == pytest.approx(best.params["alpha"])
    assert final_ltkd["temperature"] == pytest.approx(best.params["temperature"])
    assert int(final_ltkd["n_groups"]) == 3 and "n_groups" not in best.params  # the default space keeps 3 groups
    # The progress view: each search trial's line carries its cell's best final value so far.
    lines = re.findall(r"completed: search (\S+) \(val_acc ([\d.]+), best so far ([\d.]+)\)", result.stdout)
    assert len(lines) == 3
    for i, (cell, _, best_so_far) in enumerate(lines):
        assert float(best_so_far) == max(float(value) for c, value, _ in lines[:i + 1] if c == cell)
    assert max(float(value) for _, value, _ in lines) == pytest.approx(max(t.value for t in study), abs=0.005)
    status = run_ltkd("status", sweep)
    assert status.returncode == 0 and "search: 3/3 trials ended (3 completed" in status.stdout
    assert "teachers: 1/1 finished" in status.stdout and "best val_acc" in status.stdout


def test_second_sweep_on_the_same_storage_reuses_the_teacher(finished_sweep):
    root, _ = finished_sweep
    [teacher] = (root / "store" / "teachers").iterdir()
    before = (teacher / "checkpoint.pt").stat().st_mtime_ns
    config = tiny_config(root / "store", name="again", methods=[{"method": "kd"}])
    result = run_ltkd("sweep", write_config(root / "again.json", config))
    assert result.returncode == 0, result.stderr
    assert "teachers: 1 runs, 1 already finished (reused), 0 to run" in result.stdout
    assert (teacher / "checkpoint.pt").stat().st_mtime_ns == before


def replay_asha(curves: dict[int, list[float]], grace_period: int, reduction_factor: int, max_t: int) -> dict[int, int]:
    """The epoch each trial ends at under asynchronous successive halving, trials run one after another.

    An independent reading of ASHA: rungs at grace_period * rf^k; a trial reaching a rung stops if its
    value is below the (1 - 1/rf) quantile of the values recorded there before it (Li et al. 2020).
    """
    import numpy as np

    rungs = {}
    milestone = grace_period
    while milestone <= max_t:
        rungs[milestone] = []
        milestone *= reduction_factor
    ends = {}
    for number in sorted(curves):
        ends[number] = max_t
        for epoch, value in enumerate(curves[number], start=1):
            if epoch not in rungs:
                continue
            seen = rungs[epoch]
            stop = bool(seen) and value < np.percentile(seen, (1 - 1 / reduction_factor) * 100)
            seen.append(value)
            if stop and epoch < max_t:
                ends[number] = epoch
                break
    return ends


def test_asha_stops_search_trials_early_and_every_record_agrees(finished_sweep):
    import ray._private.utils

    root, _ = finished_sweep
    config = tiny_config(root / "store", name="asha", methods=[{"method": "ltkd", "search": {"n_trials": 6}}],
                         scheduler={"asha": True, "grace_period": 1, "reduction_factor": 2},
                         # every CPU to one trial: trials run one after another, so ASHA's choices can be replayed
                         resources={"cpus_per_trial": ray._private.utils.get_num_cpus()})
    result = run_ltkd("sweep", write_config(root / "asha.json", config))
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = root / "store" / "asha"
    from results.store import read_results

    frame = read_results([str(sweep)])
    search = frame[frame["stage"] == "search"]
    final = search[search["row_kind"] == "final"].set_index("optuna_trial").sort_index()
    assert list(final.index) == list(range(6)), "every search trial has its record"
    curves = {number: list(rows.sort_values("epoch")["val_acc"])  # ASHA reads the searched metric
              for number, rows in search[search["row_kind"] == "epoch"].groupby("optuna_trial")}
    # The rule, not an outcome: which trials ASHA stops depends on the values training gives (ties
    # stop nobody); whatever they are, every trial ends where ASHA's rule says, with matching records.
    expected = replay_asha(curves, grace_period=1, reduction_factor=2, max_t=4)
    assert dict(final["epoch"]) == expected
    assert dict(final["status"]) == {n: "completed" if e == 4 else "early_stopped" for n, e in expected.items()}
    [trials] = study_trials(sweep).values()
    for trial in trials:
        if expected[trial.number] == 4:
            assert trial.state.name == "COMPLETE" and trial.value == pytest.approx(final.loc[trial.number, "val_acc"])
        else:
            assert trial.state.name == "PRUNED"
    stopped = sum(e < 4 for e in expected.values())
    assert f"search: 6/6 trials ended ({6 - stopped} completed, {stopped} early-stopped, 0 errored)" in \
        run_ltkd("status", sweep).stdout
    # The final run uses the best completed trial, never an early-stopped one.
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    final_run = frame[(frame["stage"] == "final") & (frame["row_kind"] == "final")].iloc[0]
    assert final_run["alpha"] == pytest.approx(best.params["alpha"]) and final_run["status"] == "completed"


def test_a_driver_on_another_machine_holds_the_sweep_while_its_heartbeat_beats(finished_sweep):
    root, _ = finished_sweep
    sweep = root / "store" / "tiny"
    lock = sweep / "driver.lock"
    sweep_file = (sweep / "sweep.json").read_bytes()
    token = "0" * 32
    beat = sweep / f".driver.lock.{token}.beat"
    stop = threading.Event()

    def beating():  # the remote driver's heartbeat, its clock an hour behind ours
        seq = 0
        while not stop.wait(0.1):
            seq += 1
            beat.write_text(json.dumps({"token": token, "seq": seq, "time": time.time() - 3600}))
    thread = threading.Thread(target=beating)
    try:
        lock.write_text(json.dumps({"token": token, "host": "head-node", "boot_id": "x", "pid_namespace": "y",
                                    "pid": 1, "start_ticks": 5, "since": time.time(), "stale_after": 60}))
        thread.start()
        refused = run_ltkd("resume", sweep)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.strip() == "ltkd: error: another driver (pid 1 on head-node) is running this sweep; " \
                                         "wait for it or stop it (`ltkd resume --force` if you know it is dead)"
        assert (sweep / "sweep.json").read_bytes() == sweep_file
        stop.set()
        thread.join()
        # One look from another machine reads the heartbeat's age by both clocks: an hour old, so not running.
        assert "driver: pid 1 on head-node (another machine; last heartbeat 3" in run_ltkd("status", sweep).stdout
        assert "not running" in run_ltkd("status", sweep).stdout

        forced = run_ltkd("resume", sweep, "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "driver lock: removed the lock of pid 1 on head-node (--force)" in forced.stdout
        assert not lock.exists() and not beat.exists()
        assert "driver: none" in run_ltkd("status", sweep).stdout
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        lock.unlink(missing_ok=True)
        beat.unlink(missing_ok=True)


def test_a_different_config_never_damages_an_existing_sweep(finished_sweep):
    root, _ = finished_sweep
    sweep_file = root / "store" / "tiny" / "sweep.json"
    before = sweep_file.read_bytes()
    changed = tiny_config(root / "store", seeds=[0, 1])
    result = run_ltkd("sweep", write_config(root / "changed.json", changed))
    assert result.returncode == 2 and "already holds a different sweep (differs in: seeds, teacher_seeds)" in result.stderr
    assert sweep_file.read_bytes() == before


# ------------------------------------------------------------------------------------ resume after SIGKILL


def _wait_until(predicate, timeout: float, process: subprocess.Popen):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError("the sweep ended before the condition was met:\n" + process.stdout.read())
        time.sleep(0.3)
    raise AssertionError("timed out waiting for the sweep")


def kill_driver_once_a_run_finished_and_another_is_halfway(process: subprocess.Popen, histories, epochs: int) -> None:
    """SIGKILL the sweep's driver at a moment its run folders hold a finished run and an interrupted one."""
    def finished_and_interrupted():
        ends = [h[-1]["epoch"] for h in histories() if h]
        return any(end == epochs for end in ends) and any(1 <= end < epochs - 1 for end in ends)

    try:
        _wait_until(finished_and_interrupted, 900, process)
        kill_driver(process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_sigkilled_driver_resumes_without_rerunning_or_losing_anything(tmp_path):
    """Killed with all its Ray processes while another user's `ray start` cluster runs on the machine:
    `ltkd resume` alone starts a private Ray instance (never joins that cluster) and finishes."""
    port, stranger_env = _free_port(), ray_auth_env()
    with ray_node(stranger_env, "--head", f"--port={port}", "--include-dashboard=false") as stranger:
        wait_for_nodes(f"127.0.0.1:{port}", stranger_env, 1)
        _sigkill_then_resume(tmp_path)
        assert stranger.poll() is None, "the other cluster was left alone"


def _sigkill_then_resume(tmp_path):
    config = tiny_config(tmp_path / "store", student_epochs=6,
                         methods=[{"method": "ltkd", "search": {"n_trials": 4}}])
    path = write_config(tmp_path / "kill.json", config)
    sweep = tmp_path / "store" / "tiny"
    runs = sweep / "runs"
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    process = subprocess.Popen([*LTKD, "sweep", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, env=env)

    kill_driver_once_a_run_finished_and_another_is_halfway(
        process, lambda: [history(d) for d in runs.glob("*/*")] if runs.exists() else [], epochs=6)
    snapshot = {d: (history(d), (d / "checkpoint.pt").read_bytes() if (d / "checkpoint.pt").exists() else None)
                for d in runs.glob("*/*")}
    finished = {d for d, (h, _) in snapshot.items() if h and h[-1]["epoch"] == 6}
    interrupted = {d: h[-1]["epoch"] for d, (h, _) in snapshot.items() if h and h[-1]["epoch"] < 6}
    assert finished and interrupted

    status = run_ltkd("status", sweep)
    assert "not running (stopped or killed" in status.stdout

    result = run_ltkd("resume", sweep, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "joined the Ray cluster" not in result.stdout
    for run_dir in finished:  # never re-run
        assert (run_dir / "checkpoint.pt").read_bytes() == snapshot[run_dir][1]
    for run_dir, epoch in interrupted.items():  # continued from the last epoch checkpoint
        h = history(run_dir)
        assert [m["epoch"] for m in h] == list(range(1, 7))
        assert h[-1]["resumed_from"] >= epoch >= 1
    # Optuna: exactly one completed entry per trial, carrying the run's final value
    [trials] = study_trials(sweep).values()
    assert len(trials) == 4 and {t.state.name for t in trials} == {"COMPLETE"}
    rows = read_final_rows(sweep)
    assert rows["trial_id"].is_unique
    searched = rows[rows["stage"] == "search"].set_index("optuna_trial")
    # a trial asked just before the kill and never launched leaves a gap in the numbers, not a row
    assert sorted(searched.index) == sorted(t.number for t in trials)
    for trial in trials:
        assert trial.value == pytest.approx(searched.loc[trial.number, "val_acc"])
    # every finished run has exactly one results file
    files = list((sweep / "results").glob("*.parquet"))
    assert len(files) == len(rows)


# ------------------------------------------------------------------------------------ errored trials


def test_an_errored_trial_is_retried_from_its_checkpoint(tmp_path):
    config = tiny_config(tmp_path / "store", student_epochs=8, max_retries=2, methods=[{"method": "ce"}],
                         seeds=[0, 1])
    path = write_config(tmp_path / "retry.json", config)
    sweep = tmp_path / "store" / "tiny"
    process = subprocess.Popen([*LTKD, "sweep", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    runs = sweep / "runs"

    found = []

    def student_mid_run() -> bool:
        """A run folder with a checkpoint at epoch 2..6 of 8, and the pid of the worker training it."""
        for run_dir in runs.glob("*/*") if runs.exists() else []:
            h = history(run_dir)
            try:
                holder = json.loads((run_dir / ".trial.lock").read_text())
            except (OSError, ValueError):
                continue
            if h and 2 <= h[-1]["epoch"] < 7:
                found.append((run_dir, h[-1]["epoch"], holder["pid"]))
                return True
        return False

    try:
        _wait_until(student_mid_run, 900, process)
        run_dir, epoch, pid = found[-1]
        # The worker training that run dies mid-trial (as under the OOM killer): Tune retries the trial.
        assert pid in trial_workers(process.pid)
        os.kill(pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output
    rows = read_final_rows(sweep)
    assert set(rows["status"]) == {"completed"}
    histories = {d: history(d) for d in runs.glob("*/*")}
    assert all([m["epoch"] for m in h] == list(range(1, 9)) for h in histories.values())
    # The killed run continued from a checkpoint at least as late as the one seen before the kill.
    assert histories[run_dir][-1]["resumed_from"] >= epoch, "the retried trial did not resume from its checkpoint"


# ------------------------------------------------------------------------------------ a real two-node cluster


def test_sweep_on_a_two_node_cluster_with_shared_storage(tmp_path):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = ray_auth_env()
    with ray_node(env, "--head", f"--port={port}", "--include-dashboard=false"), \
            ray_node(env, f"--address={address}"):
        wait_for_nodes(address, env, 2)
        config = tiny_config(tmp_path / "shared", methods=[{"method": "ce"}, {"method": "kd"}], seeds=[0, 1])
        result = run_ltkd("sweep", write_config(tmp_path / "cluster.json", config), "--address", address, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"joined the Ray cluster at {address}" in result.stdout and ": 2 nodes, 2 CPUs" in result.stdout
        rows = read_final_rows(tmp_path / "shared" / "tiny")
        assert len(rows[rows["stage"] == "final"]) == 4 and set(rows["status"]) == {"completed"}


# ------------------------------------------------------------------------------------ object-store storage


def test_runs_with_a_checkpoint_interval_push_their_last_checkpoint_to_an_object_store(s3_storage, tmp_path,
                                                                                      monkeypatch):
    """checkpoint_every_seconds far above the runs' length: no epoch but the last writes a checkpoint, the
    epochs in between push their metrics without one, and the last one's lands on the store, so that the
    finished sweep is reused whole (nothing trained again) and reported."""
    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.chdir(tmp_path)
    config = tiny_config(s3_storage, student_epochs=3, methods=[{"method": "ce"}], checkpoint_every_seconds=3600)
    path = write_config(tmp_path / "interval.json", config)
    result = run_ltkd("sweep", path)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = Location.parse(s3_storage) / "tiny"
    names = {name.rsplit("/", 1)[0] for name in (sweep / "runs").files() if name.endswith("metrics.jsonl")}
    assert names and all(name + "/checkpoint.pt" in (sweep / "runs").files() for name in names)
    for name in names:
        assert [m["epoch"] for m in history(sweep / "runs" / name)] == [1, 2, 3]
    checkpoints = {name: (sweep / "runs" / name / "checkpoint.pt").read_bytes() for name in names}
    again = run_ltkd("resume", sweep.uri, env={**os.environ, "LTKD_SCRATCH": str(tmp_path / "node2")})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "teachers: 1 runs, 1 already finished (reused), 0 to run" in again.stdout
    assert "nothing left to run" in again.stdout and "| Student |" in again.stdout
    for name, data in checkpoints.items():  # nothing trained again
        assert (sweep / "runs" / name / "checkpoint.pt").read_bytes() == data


def test_sweep_on_an_object_store_resumes_elsewhere_after_sigkill_and_shares_teachers(s3_storage, tmp_path, monkeypatch):
    """The whole sweep on S3 (served locally): runs train in scratch copies pushed every epoch."""
    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "scratch"))  # the driver's, its workers' and this test's
    monkeypatch.chdir(tmp_path)
    config = tiny_config(s3_storage, student_epochs=6, methods=[{"method": "ce"},
                                                                {"method": "ltkd", "search": {"n_trials": 3}}])
    path = write_config(tmp_path / "s3.json", config)
    store = Location.parse(s3_storage)
    sweep = store / "tiny"
    process = subprocess.Popen([*LTKD, "sweep", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)

    def runs() -> dict[str, list[dict]]:
        names = {name.rsplit("/", 1)[0] for name in (sweep / "runs").files() if name.endswith("metrics.jsonl")}
        return {name: history(sweep / "runs" / name) for name in names}

    kill_driver_once_a_run_finished_and_another_is_halfway(process, lambda: list(runs().values()), epochs=6)
    before = runs()
    checkpoints = {name: (sweep / "runs" / name / "checkpoint.pt").read_bytes() for name, h in before.items()
                   if h and h[-1]["epoch"] == 6}
    interrupted = {name: h[-1]["epoch"] for name, h in before.items() if h and h[-1]["epoch"] < 6}
    assert checkpoints and interrupted
    # A student that trained an epoch has shared the teacher-logit cache it built.
    [teacher] = {name.split("/", 1)[0] for name in (store / "teachers").files()}
    teacher_dir = store / "teachers" / teacher
    manifests = {name: (teacher_dir / name).read_bytes() for name in teacher_dir.files()
                 if name.endswith("manifest.json")}
    assert manifests, "the student's teacher-logit cache was not shared to the store"
    status = run_ltkd("status", sweep.uri)
    assert status.returncode == 0 and "not running (stopped or killed" in status.stdout, status.stderr

    # Resumed from another machine: an empty scratch, everything comes from the store.
    result = run_ltkd("resume", sweep.uri, env={**os.environ, "LTKD_SCRATCH": str(tmp_path / "node2")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "teachers: 1 runs, 1 already finished (reused), 0 to run" in result.stdout
    assert {name: (teacher_dir / name).read_bytes() for name in manifests} == manifests  # downloaded, not rebuilt
    for name, data in checkpoints.items():  # never re-run
        assert (sweep / "runs" / name / "checkpoint.pt").read_bytes() == data
    for name, epoch in interrupted.items():  # continued from the last checkpoint the store held
        h = history(sweep / "runs" / name)
        assert [m["epoch"] for m in h] == list(range(1, 7)) and h[-1]["resumed_from"] >= epoch
    [trials] = study_trials(sweep.uri).values()
    rows = read_final_rows(sweep.uri)
    searched = rows[rows["stage"] == "search"].set_index("optuna_trial")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 and rows["trial_id"].is_unique
    # a trial asked just before the kill and never launched leaves a gap in the numbers, not a row
    assert sorted(searched.index) == sorted(t.number for t in trials)
    for trial in trials:
        assert trial.value == pytest.approx(searched.loc[trial.number, "val_acc"])
    assert len((sweep / "results").files()) == len(rows)
    assert not list((tmp_path / "node2" / "runs").rglob("*.pt"))  # scratch copies are removed
    assert not (tmp_path / "sweeps").exists()  # nothing landed in a local folder by mistake
    report = run_ltkd("report", sweep.uri)
    assert report.returncode == 0 and "| LTKD |" in report.stdout, report.stderr


def test_status_and_report_of_a_finished_sweep_load_neither_torch_nor_ray(finished_sweep, tmp_path):
    from tests.test_layering import loaded_by

    root, _ = finished_sweep
    sweep = root / "store" / "tiny"
    assert (sweep / "plan.json").is_file()  # the driver's plan: what status reads instead of planning again
    for args in (["status", sweep], ["status", sweep, "--watch"], ["report", sweep],
                 ["report", sweep, "--out", tmp_path / "report", "--figures"], ["best", sweep]):
        outcome = loaded_by(*args)
        assert outcome == {"rc": 0, "heavy": []}, f"ltkd {' '.join(map(str, args))}: {outcome}"
    assert (tmp_path / "report" / "main_table.md").is_file()


def _planned(stdout: str) -> dict[str, tuple[int, int, int]]:
    """stage -> (runs, already done, to run) from `ltkd plan`'s output."""
    found = re.findall(r"^(teachers|search|final): (\d+) runs, (\d+) already [a-z ()]+, (\d+) to run", stdout, re.M)
    return {stage: tuple(map(int, numbers)) for stage, *numbers in found}


def test_plan_writes_nothing_and_counts_what_the_sweep_runs(finished_sweep, tmp_path):
    root, result = finished_sweep
    fresh = tmp_path / "fresh-storage"
    config = write_config(tmp_path / "tiny.json", tiny_config(fresh))
    plan = run_ltkd("plan", config)
    assert plan.returncode == 0, plan.stderr
    assert not fresh.exists()  # nothing written, not even the storage folder
    assert _planned(plan.stdout) == {"teachers": (1, 0, 1), "search": (3, 0, 3), "final": (2, 0, 2)}
    assert re.search(r"estimate: [\d.]+ device-(seconds|minutes) of training on one device \(\d+ runs from the models' "
                     r"MACs", plan.stdout)
    # What the sweep then ran (the same config on its own storage): the same counts per stage.
    assert "teachers: 1 runs, 0 already finished (reused), 1 to run" in result.stdout
    assert "search: 1 cells, 0 trials already ended, 3 to run" in result.stdout
    assert "final: 2 runs, each cell's as soon as its search has ended" in result.stdout
    assert re.search(r"plan: 1 teachers, 3 search trials over 1 cells, 2 final runs", result.stdout)
    # Over the finished sweep: everything is done; a new sweep on that storage reuses its teacher and
    # estimates its students from the finished runs' epoch times.
    done = run_ltkd("plan", write_config(tmp_path / "done.json", tiny_config(root / "store")))
    assert _planned(done.stdout) == {"teachers": (1, 1, 0), "search": (3, 3, 0), "final": (2, 2, 0)}
    assert "estimate: nothing left to train" in done.stdout
    other = run_ltkd("plan", write_config(tmp_path / "other.json", tiny_config(root / "store", name="other-plan")))
    assert _planned(other.stdout)["teachers"] == (1, 1, 0)
    assert "5 runs from the median epoch_seconds of earlier runs on this storage" in other.stdout
    assert not (root / "store" / "other-plan").exists()


def test_best_exports_each_cell_and_its_command_reproduces_the_run(finished_sweep, tmp_path):
    import shlex
    import tomllib

    from orchestrator.cli import build_parser
    from orchestrator.train_cli import run_config_from_args
    from trainables.config import RunConfig

    root, _ = finished_sweep
    sweep = root / "store" / "tiny"
    toml_out = run_ltkd("best", sweep)
    assert toml_out.returncode == 0, toml_out.stderr
    cells = {c["cell"]: c for c in tomllib.loads(toml_out.stdout)["cell"]}
    as_json = run_ltkd("best", sweep, "--format", "json")
    assert {c["cell"]: c for c in json.loads(as_json.stdout)} == cells  # the two formats say the same
    ltkd = cells["digits/if100/resnet8->resnet8/ltkd"]
    assert ltkd["search_trials"] == 3 and ltkd["selection"] == "val" and ltkd["seeds"] == [0]
    final = read_final_rows(sweep)
    row = final[(final["stage"] == "final") & (final["method"] == "ltkd")].iloc[0]
    assert ltkd["hparams"] == json.loads(row["hparams_json"])
    # The command trains the same run: same identity, and on CPU the same accuracy.
    argv = shlex.split(ltkd["command"])
    assert argv[:3] == ["ltkd", "train", "student"]
    argv = [*argv[1:-1], str(tmp_path / "again")]  # --out into this test's folder
    assert argv[-2] == "--out"
    args = build_parser().parse_args(argv)
    recorded = RunConfig.from_dict(json.loads(row["config_json"]))
    assert run_config_from_args(args, "student").resolved().identity() == recorded.resolved().identity()
    # One CPU thread, as the sweep's trial had (cpus_per_trial = 1): float sums depend on the thread count.
    again = run_ltkd(*argv[:-2], "--device", "cpu", "--out", tmp_path / "again",
                     env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert again.returncode == 0, again.stderr
    history = [json.loads(line) for line in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["acc"] == pytest.approx(row["acc"], abs=1e-6)
    assert run_ltkd("best", sweep, "--cell", "no-such-cell").returncode == 2


def test_status_lists_running_trials_with_their_epoch_and_hyperparameters(finished_sweep, tmp_path):
    import shutil

    import pandas as pd

    from orchestrator.status import _time_left, sweep_status
    from trainables.locks import Lease

    root, _ = finished_sweep
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)  # a copy: this test makes one of its runs look half-way
    run = sorted((store / "tiny" / "runs").glob("*ltkd*/seed0-*"))[0]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n")
    lease = Lease(Location.parse(run / ".trial.lock"), stale_after=60, heartbeat=30)
    lease.acquire(wait_for_live_holder=False)  # this test process trains it, as far as anyone can tell
    try:
        text = sweep_status(store / "tiny")
    finally:
        lease.release()
    assert "running: 1 trials" in text, text
    [line] = [line for line in text.splitlines() if "epoch 2/4" in line]
    assert "val_acc" in line and "alpha=" in line and "temperature=" in line and f"pid {os.getpid()}" in line
    assert "running: 0 trials" in sweep_status(store / "tiny")  # the lease released: nothing runs
    # Time left: the stage's median trial duration, over what is left, at the trials running now.
    records = pd.DataFrame({"status": ["completed"] * 3, "wall_seconds": [50.0, 60.0, 70.0]})
    assert _time_left(records, left=2, running=2) == ", about 60 s left at 2 at once (median trial 60 s)"
    assert _time_left(records, left=4, running=2) == ", about 2 min left at 2 at once (median trial 60 s)"
    assert _time_left(records, left=0, running=2) == ""


def read_tensorboard(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in the TensorBoard event files under `folder`, read back
    from the files' own record framing and protobufs (not through the writer that made them)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            event = Event.FromString(data[at + 12: at + 12 + length])
            at += 12 + length + 4  # length, its crc, the record, its crc
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_every_run_folder_holds_its_log_and_tensorboard_events(finished_sweep):
    root, _ = finished_sweep
    sweep = root / "store" / "tiny"
    final = read_final_rows(sweep)
    [teacher] = (root / "store" / "teachers").iterdir()
    runs = [teacher, *sorted((sweep / "runs").glob("*/*"))]
    assert len(runs) == 6
    for run in runs:
        log = (run / "train.log").read_text()
        assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d trial \S+ \((teacher|search|final), cell ", log, re.M)
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert len(re.findall(r"epoch +\d+/\d+ ", log)) == len(history)  # every epoch's line
        scalars = read_tensorboard(run / "tensorboard")
        for name in ("acc", "acc_tail", "train_loss", "lr"):
            assert scalars[name] == {m["epoch"]: pytest.approx(m[name], rel=1e-6) for m in history}, name
        assert scalars["val/val_acc"] == {m["epoch"]: pytest.approx(m["val_acc"], rel=1e-6) for m in history}
        assert set(scalars) >= {"group_prob/head", "group_prob/medium", "group_prob/tail"}
        if json.loads((run / "run.json").read_text())["method"] != "ce":  # a distilled student logs its teacher's too
            assert scalars["teacher_group_prob/tail"][history[-1]["epoch"]] == \
                pytest.approx(history[-1]["teacher_group_prob"][2], rel=1e-6)
    # Workers are reused: the 3 search trials on 2 CPUs ran in at most 2 processes (no new process, no
    # second import of torch, per trial).
    pids = {re.search(r"trial \S+ \(search, .*, pid (\d+)$", (run / "train.log").read_text(), re.M).group(1)
            for run in runs if "seed1-" in run.name}
    assert len(pids) <= 2 or (os.cpu_count() or 1) >= 3  # a machine with 3 CPUs runs all 3 at once
    assert len(pids) >= 1
    # Tune's own state is kept in the driver's private scratch folder, never on the shared storage.
    assert not (sweep / "ray").exists()
    assert len(final) == 6
