"""Lock records planted on shared storage: what they may claim is capped, and `ltkd unlock` removes them.

A planted record names another host (so no pid can be checked) and claims a stale period and a
heartbeat interval of about 30,000 years. Waiters must still take over once its heartbeat has been
silent for the cap (lowered here so that the tests finish; the default is checked by what a waiter
reports). Waits run in a thread with a generous bound only so that a regression fails instead of
hanging the suite.
"""
from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from trainables import locks
from trainables.locks import Lease
from trainables.storage import LocalCopy, Location

HUGE = 1e12  # seconds


def plant_lock(path: Path, **extra) -> dict:
    """Write a lock record claiming another host and a practically endless stale period."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"token": uuid.uuid4().hex, "host": "elsewhere", "boot_id": "b", "pid_namespace": "p", "pid": 4242,
              "start_ticks": 1, "since": 1.7e9, "heartbeat_seconds": HUGE, "stale_after": HUGE, **extra}
    path.write_text(json.dumps(record))
    return record


def finishes(work, bound: float = 300.0):
    """Run `work()` in a thread; its result, or a failure when it is still waiting after `bound` seconds."""
    out: dict = {}

    def run():
        try:
            out["value"] = work()
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), "still waiting for a planted lock"
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.fixture
def short_cap(monkeypatch):
    monkeypatch.setattr(locks, "MAX_STALE_AFTER_SECONDS", 0.3)


def test_a_waiter_watches_a_planted_holder_for_at_most_the_cap(tmp_path):
    lock = tmp_path / "driver.lock"
    plant_lock(lock)
    lease = Lease(lock)
    assert lease.judge()[0] == "unknown"
    state, reason = lease.judge()
    assert state == "unknown" and reason.endswith(f"of {locks.MAX_STALE_AFTER_SECONDS:.0f} s)"), reason
    assert locks.MAX_STALE_AFTER_SECONDS <= 600


def test_a_planted_driver_lock_is_taken_over_after_the_cap(tmp_path, monkeypatch, short_cap):
    from orchestrator import sweep as driver

    monkeypatch.setattr(driver, "HEARTBEAT_SECONDS", 0.05)  # the driver polls no slower than it beats
    plant_lock(tmp_path / "driver.lock")
    lines = []

    def take():
        with driver.DriverLock(Location.parse(tmp_path), log=lines.append) as lock:
            return lock.lease.still_held()
    assert finishes(take)
    assert any("no heartbeat for" in line for line in lines), lines
    assert not any("1000000000000" in line for line in lines), lines  # the claim is not repeated as a promise


def test_a_planted_run_folder_lock_is_taken_over_after_the_cap(tmp_path, short_cap):
    run_dir = tmp_path / "run"
    plant_lock(run_dir / ".trial.lock")
    lines = []

    def take():
        with LocalCopy(Location.parse(run_dir), log=lines.append) as run:
            return run.lease.still_held()
    assert finishes(take)
    assert any("no heartbeat for" in line for line in lines), lines


def test_a_planted_cache_build_lock_is_taken_over_after_the_cap(tmp_path, short_cap):
    from tests.test_fast_path import KEY, SHAPE, toy_builder, toy_logits
    from trainables import teacher_cache as tcache

    plant_lock(tmp_path / tcache.LOCK_NAME)
    lines = []
    cache = finishes(lambda: tcache.open_or_build(tmp_path, KEY, SHAPE, toy_builder(toy_logits()), log=lines.append,
                                                  chunk_rows=4, poll_seconds=0.05))
    assert cache is not None
    assert any("broke the stale lock" in line for line in lines), lines


# ------------------------------------------------------------------------------ ltkd unlock


def test_unlock_removes_a_run_folder_lock_and_says_who_held_it(tmp_path):
    from tests.sweep_helpers import run_ltkd

    run_dir = tmp_path / "run"
    record = plant_lock(run_dir / ".trial.lock", host="elsewhere\x1b[2J", what="training run")
    (run_dir / f"..trial.lock.{record['token']}.beat").write_text("{}")
    done = run_ltkd("unlock", run_dir, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "training run, pid 4242 on elsewhere" in done.stdout and "since 20" in done.stdout, done.stdout
    assert "\x1b" not in done.stdout  # a planted record cannot drive the terminal
    assert sorted(p.name for p in run_dir.iterdir()) == []  # the lock and its heartbeat are gone


def test_unlock_refuses_a_path_without_a_lock_in_one_line(tmp_path):
    from tests.sweep_helpers import run_ltkd

    (tmp_path / "run").mkdir()
    done = run_ltkd("unlock", tmp_path / "run", timeout=600)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("ltkd: error: ") and "holds no lock" in done.stderr


def test_unlock_asks_for_yes_before_removing_a_live_holders_lock(tmp_path):
    from tests.sweep_helpers import run_ltkd

    lock = tmp_path / "logit_cache" / "resnet8-abc" / "build.lock"
    holder = Lease(lock, describe={"what": "teacher logit cache build"})
    assert holder.try_acquire()  # this process: alive, on this machine
    try:
        refused = run_ltkd("unlock", lock.parent, timeout=600)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "looks held by a live process" in refused.stderr and "--yes" in refused.stderr
        assert holder.still_held()
        done = run_ltkd("unlock", lock, "--yes", timeout=600)
        assert done.returncode == 0, done.stderr
        assert "teacher logit cache build" in done.stdout and not lock.exists()
    finally:
        holder.release()


def test_unlock_removes_a_lock_on_an_object_store(s3_storage):
    from tests.sweep_helpers import run_ltkd

    base, _, query = s3_storage.partition("?")
    run = Location.parse(s3_storage) / "tiny" / "runs" / "a"
    run_lock = run / ".trial.lock"
    run_lock.write_text(json.dumps({"token": uuid.uuid4().hex, "host": "elsewhere", "pid": 7, "since": 1.7e9}))
    done = run_ltkd("unlock", f"{base}/tiny/runs/a?{query}", timeout=600)
    assert done.returncode == 0, done.stderr
    assert "pid 7 on elsewhere" in done.stdout and not run_lock.exists()


def test_shell_completion_knows_unlock():
    from orchestrator.cli import build_parser

    import shtab

    assert "unlock" in shtab.complete(build_parser(), shell="bash")
