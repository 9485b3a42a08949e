"""Exclusive leases (trainables/locks.py): one driver per sweep, one trial per run folder.

The races are real: forked processes contend for one lock file; holders are SIGKILLed; a holder
on "another machine" is a record naming another host, kept alive (or not) by a heartbeat thread.
No test here depends on how fast anything runs: outcomes are decided by pids, tokens and
heartbeat changes, and the only waits are for a state to be reached.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

import pytest

from trainables.locks import Lease, LeaseHeld, ProcessIdentity, process_start_ticks
from trainables.storage import LocalCopy, Location


def _read_byte(fd: int) -> bytes:
    data = os.read(fd, 1)
    assert data, "pipe closed"
    return data


def test_one_of_eight_forked_drivers_holds_the_lock_each_round(tmp_path):
    """8 processes start together, 200 rounds; every other round the winner dies holding the lock.

    The rounds run in a fresh interpreter: forking this one (torch and Ray loaded) is slow.
    """
    script = f"from tests.test_locks import contend; contend({str(tmp_path)!r}, rounds=200, contenders=8)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["W"] * 200, result.stdout  # one winner each round


def contend(folder: str, rounds: int, contenders: int) -> None:
    """Fork `contenders` processes per round that contend for one lock; print W when exactly one won."""
    tmp_path = Path(folder)
    lock = tmp_path / "driver.lock"
    for round_number in range(rounds):
        crash = round_number % 2 == 1
        go_read, go_write = os.pipe()
        end_read, end_write = os.pipe()
        result_read, result_write = os.pipe()
        children = []
        for _ in range(contenders):
            pid = os.fork()
            if pid == 0:  # the child: contend, say whether it won, then hold until told
                code = 0
                try:
                    os.close(go_write), os.close(end_write), os.close(result_read)
                    _read_byte(go_read)
                    lease = Lease(lock, heartbeat=3600.0, stale_after=3600.0)
                    try:
                        lease.acquire(wait_for_live_holder=False, poll=0.01)
                    except LeaseHeld:
                        os.write(result_write, b"L")
                    else:
                        os.write(result_write, b"W")
                        _read_byte(end_read)
                        if not crash:
                            lease.release()
                except BaseException:
                    traceback.print_exc()
                    sys.stderr.flush()
                    os.write(result_write, b"E")
                    code = 1
                finally:
                    os._exit(code)  # a crash round's winner ends without releasing: as if SIGKILLed
            children.append(pid)
        os.close(go_read), os.close(end_read), os.close(result_write)
        os.write(go_write, b"g" * contenders)  # all start at once
        outcomes = b"".join(_read_byte(result_read) for _ in range(contenders))
        os.write(end_write, b"e" * contenders)
        for pid in children:
            os.waitpid(pid, 0)
        for fd in (go_write, end_write, result_read):
            os.close(fd)
        assert outcomes.count(b"W") == 1 and b"E" not in outcomes, (round_number, outcomes)
        if not crash:
            assert not lock.exists(), "the winner released its lock"
        print("W", flush=True)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "driver.lock")
    assert all(name.endswith(".beat") for name in leftovers), leftovers  # no takeover marker is left behind


def test_a_process_identity_tells_a_reused_pid_from_its_holder():
    me = ProcessIdentity.current()
    assert me.alive() is True
    assert ProcessIdentity(**{**me.__dict__, "start_ticks": (me.start_ticks or 0) + 1}).alive() is False
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert ProcessIdentity(**{**me.__dict__, "pid": child.pid, "start_ticks": None}).alive() is False
    assert ProcessIdentity(**{**me.__dict__, "boot_id": "another-boot"}).alive() is None  # cannot tell from here
    assert ProcessIdentity(**{**me.__dict__, "host": "elsewhere"}).alive() is None
    assert process_start_ticks(os.getpid()) == me.start_ticks


def test_a_stale_holder_never_rewrites_or_deletes_the_new_owners_lock(tmp_path):
    lock = tmp_path / "driver.lock"
    old = Lease(lock, heartbeat=0.02)
    assert old.try_acquire()
    new = Lease(lock)
    assert new.force_break()["token"] == old.token  # the user said the old holder is dead
    assert new.try_acquire()
    owned = lock.read_bytes()
    assert old.lost.wait(timeout=60), "the old holder noticed it lost the lock"
    old.release()  # what its exit would do
    assert lock.read_bytes() == owned and new.still_held()
    assert not (tmp_path / f".driver.lock.{old.token}.beat").exists()
    new.release()
    assert not lock.exists()


def _remote_holder(lock: Path, stale_after: float) -> dict:
    record = {"token": uuid.uuid4().hex, "host": "head-node", "boot_id": "b", "pid_namespace": "p", "pid": 1,
              "start_ticks": 1, "since": 0, "stale_after": stale_after}
    lock.write_text(json.dumps(record))
    return record


def test_a_holder_on_another_machine_is_judged_by_its_heartbeat_on_our_own_clock(tmp_path):
    lock = tmp_path / "driver.lock"
    # Its clock is far behind ours (a heartbeat "from 1970"), but it beats: it is alive.
    record = _remote_holder(lock, stale_after=60.0)
    beat = tmp_path / f".driver.lock.{record['token']}.beat"
    stop = threading.Event()

    def beating():
        seq = 0
        while not stop.wait(0.05):
            seq += 1
            beat.write_text(json.dumps({"token": record["token"], "seq": seq, "time": 0}))
    thread = threading.Thread(target=beating)
    thread.start()
    try:
        with pytest.raises(LeaseHeld, match="held by pid 1 on head-node"):
            Lease(lock).acquire(wait_for_live_holder=False, poll=0.05)
    finally:
        stop.set()
        thread.join()
    # Silent (its machine died): taken over once no heartbeat was seen for its declared stale_after.
    record = _remote_holder(lock, stale_after=0.3)
    lines = []
    lease = Lease(lock, log=lines.append)
    waited = []
    lease.acquire(wait_for_live_holder=False, poll=0.05, on_wait=lambda state, holder: waited.append(state))
    assert lease.still_held() and waited == ["unknown"]
    assert any("no heartbeat for" in line for line in lines)
    lease.release()


def test_a_lease_on_an_object_store_is_exclusive_and_fenced(s3_storage):
    location = Location.parse(s3_storage) / "sweep" / "driver.lock"
    first, second = Lease(location, settle=0.0), Lease(location, settle=0.0)
    assert first.try_acquire()
    assert not second.try_acquire()
    assert second.judge()[0] == "alive"  # same machine: its pid is checked
    first.release()
    assert not location.exists()
    assert second.try_acquire()
    first_beats = [name for name in location.parent.files() if name.endswith(".beat")]
    assert first_beats == [f".driver.lock.{second.token}.beat"]
    second.release()
    assert location.parent.files() == {}


def test_two_trials_on_one_run_folder_take_turns(tmp_path):
    """Two processes train the same run folder (two search trials drew the same hyperparameters)."""
    script = (
        "import sys; from trainables.config import RunConfig; from trainables.engine import fit\n"
        "from trainables.storage import LocalCopy, Location\n"
        "config = RunConfig(dataset='digits', imbalance_factor=10, arch='resnet8', role='teacher', method='ce',\n"
        "                   epochs=3, batch_size=128, progress=False, device='cpu')\n"
        "with LocalCopy(Location.parse(sys.argv[1])) as run:\n"
        "    result = fit(config, run.path, log=None)\n"
        "print('acc', result.metrics['acc'])\n"
    )
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with LocalCopy(Location.parse(run_dir)):  # both start while the folder is taken, then race for it
        processes = [subprocess.Popen([sys.executable, "-u", "-c", script, str(run_dir)], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
        first_lines = [p.stdout.readline() for p in processes]
    assert all("trains it; waiting for it to finish" in line for line in first_lines), first_lines
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]  # one history, not two interleaved
    accs = {line for out in outputs for line in out.splitlines() if line.startswith("acc ")}
    assert len(accs) == 1  # the second found the first's finished run
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # lock and beats are gone


def test_a_run_folder_lock_of_a_killed_trial_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-u", "-c",
                               "import sys, time; from trainables.storage import LocalCopy, Location\n"
                               "with LocalCopy(Location.parse(sys.argv[1])):\n"
                               "    print('holding', flush=True); time.sleep(600)\n", str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        lock = json.loads((run_dir / ".trial.lock").read_text())
        assert lock["pid"] == holder.pid and lock["what"] == "training run"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lines = []
    with LocalCopy(Location.parse(run_dir), log=lines.append) as run:
        assert run.lease.still_held()
    assert any("is dead" in line for line in lines)
    assert not (run_dir / ".trial.lock").exists()


def test_time_is_not_compared_across_machines(tmp_path):
    """A remote holder whose heartbeat clock runs 2 hours ahead or behind is judged by silence alone."""
    lock = tmp_path / "driver.lock"
    record = _remote_holder(lock, stale_after=0.2)
    (tmp_path / f".driver.lock.{record['token']}.beat").write_text(json.dumps({"seq": 9, "time": time.time() + 7200}))
    lease = Lease(lock)
    assert lease.judge()[0] == "unknown"  # one look says nothing about a machine we cannot see
    deadline = time.monotonic() + 60
    while lease.judge()[0] != "dead":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_driver_whose_lock_is_taken_over_stops(tmp_path, monkeypatch, capsys):
    """`ltkd resume --force` elsewhere while this driver runs: its heartbeat sees the new owner, the
    running stage is ended from Tune's loop, and the driver stops with one line naming the new owner."""
    from orchestrator import sweep as driver
    from orchestrator.sweep import SweepError
    from orchestrator.tune_glue import Progress, StageStopped

    monkeypatch.setattr(driver, "HEARTBEAT_SECONDS", 0.05)
    folder = Location.parse(tmp_path)
    newcomer = Lease(folder / "driver.lock")
    with driver.DriverLock(folder, log=lambda line: None) as lock:
        assert lock.taken_over() is None
        lock.stop_if_taken_over()  # nothing to stop for
        newcomer.force_break()
        assert newcomer.try_acquire()
        assert lock.lease.lost.wait(timeout=60), "the heartbeat noticed the takeover"
        reason = lock.taken_over()
        assert reason.startswith(f"another driver (pid {os.getpid()} on ") and "this driver stopped" in reason
        with pytest.raises(SweepError, match="took over this sweep's lock"):
            lock.stop_if_taken_over()
        progress = Progress("search", 3, "val_acc", stop_check=lock.taken_over)
        with pytest.raises(StageStopped, match="took over this sweep's lock"):
            progress.on_step_end(iteration=1, trials=[])
        import ray.cloudpickle

        with capsys.disabled():  # the real stdout, as under `ltkd sweep` (cloudpickle keeps it by reference)
            progress.stream = sys.stdout
            ray.cloudpickle.dumps(progress)  # Tune pickles its callbacks with the experiment state
    assert newcomer.still_held()  # the stopped driver left the new owner's lock alone
    newcomer.release()
