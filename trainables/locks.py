"""Exclusive leases on a sweep's storage: one driver per sweep, one trial per run folder, one cache build.

A lease is a small lock file naming its holder, created only if absent (O_CREAT | O_EXCL on a
POSIX folder, NFS included; a conditional write on S3 with boto3; write-then-verify on other
object stores, which offer no exclusive create through pyarrow). The lock file is never rewritten: the holder proves it is alive by a
separate heartbeat file named after its token, so a holder that was wrongly presumed dead can
never overwrite or delete the lock of the owner that replaced it (the token fences it out).

Whether a holder still runs is decided without comparing two machines' clocks:
- on the holder's own machine (same host name, boot and pid namespace): its pid is alive and
  was started at the recorded time (a reused pid has another start time);
- anywhere else: the observer watches the lock and heartbeat with its own monotonic clock; a
  holder whose heartbeat does not change for `stale_after` seconds is dead (the period its lock
  claims, at most MAX_STALE_AFTER_SECONDS: a record may be planted; a heartbeat interval it
  claims is never used).
A dead holder's lock is removed by exactly one of the processes that noticed (an exclusive
takeover marker per dead token), and the lease is then contended for again from scratch.

All of this is exact on POSIX folders (NFS included). On an object store it is best effort:
pyarrow offers no conditional write, so create-if-absent is a write, a `settle` pause and a
read-back (the last writer wins), and a check-then-delete is two requests. On S3 with boto3
installed (the `s3` extra) the create is a conditional write (trainables/s3_conditional.py):
exact; the read-back stays, for a store that ignores the condition.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from trainables.errors import UserError
from trainables.s3_conditional import create_if_absent
from trainables.storage import Location, StorageError


# The longest heartbeat silence a lock record may ask waiters to sit out before they presume its
# holder dead. A record is written by whoever can write the storage, so its claim is capped: a
# planted `stale_after` of a century would otherwise make every waiter wait a century. ltkd's own
# holders beat every 5 to 30 s and claim 120 to 300 s; ten minutes leaves room for a slow store
# and still ends a stall caused by a planted record. Read at each judgement (tests lower it).
MAX_STALE_AFTER_SECONDS = 600.0


class LeaseHeld(UserError):
    pass


def claimed_stale_after(record: dict[str, Any], default: float) -> float:
    """The silence after which `record`'s holder is presumed dead: its claim, else `default`, at most the cap."""
    claim = record.get("stale_after")
    if not isinstance(claim, (int, float)) or isinstance(claim, bool) or not claim > 0:
        claim = default
    return min(float(claim), MAX_STALE_AFTER_SECONDS)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def _read_first_line(path: str) -> str:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return ""


def process_start_ticks(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (Linux), or None where that cannot be read."""
    stat = _read_first_line(f"/proc/{pid}/stat")
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces: skip past it
    try:
        return int(fields[19])  # field 22 of proc(5)
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessIdentity:
    """A process, named so that another process can tell whether it still runs."""

    host: str
    boot_id: str | None  # None: not recorded (a lock from an older ltkd-sweep): the host name alone decides
    pid_namespace: str | None
    pid: int
    start_ticks: int | None

    @staticmethod
    def current() -> "ProcessIdentity":
        return ProcessIdentity(socket.gethostname(), _read_first_line("/proc/sys/kernel/random/boot_id"),
                               _pid_namespace(), os.getpid(), process_start_ticks(os.getpid()))

    @staticmethod
    def from_record(record: dict[str, Any]) -> "ProcessIdentity | None":
        try:
            pid = record["pid"]
            if not isinstance(pid, int) or isinstance(pid, bool):
                return None
            ticks = record.get("start_ticks")
            optional = {name: str(record[name]) if name in record else None for name in ("boot_id", "pid_namespace")}
            return ProcessIdentity(str(record["host"]), pid=pid, start_ticks=ticks if isinstance(ticks, int) else None,
                                   **optional)
        except KeyError:
            return None

    def alive(self) -> bool | None:
        """True or False when this machine can tell, None when the process runs elsewhere (or may)."""
        me = ProcessIdentity.current()
        mine = [(self.host, me.host), (self.boot_id, me.boot_id), (self.pid_namespace, me.pid_namespace)]
        if any(theirs is not None and theirs != ours for theirs, ours in mine):
            return None
        if not pid_alive(self.pid):
            return False
        if self.start_ticks is None:
            return True
        ticks = process_start_ticks(self.pid)
        if ticks is None:  # alive, but /proc hides it (another user's, under hidepid): judge by heartbeat
            return None
        return ticks == self.start_ticks


def _as_location(where: Location | str | Path) -> Location:
    return where if isinstance(where, Location) else Location.parse(where)


class Lease:
    """An exclusive lease on `location` (see the module docstring).

    `try_acquire` takes a free lease; `break_if_stale` removes a dead holder's; `acquire` combines
    them with a waiting policy. The holder beats every `heartbeat` seconds and declares in its lock
    after how many seconds of silence others may presume it dead (`stale_after`).
    """

    def __init__(self, location: Location | str | Path, *, stale_after: float = 120.0, heartbeat: float = 30.0,
                 settle: float = 1.0, log: Callable[[str], None] | None = None, describe: dict | None = None):
        self.location = _as_location(location)
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self.settle = settle  # object stores: how long a racing writer has to land before we read back
        self.log = log or (lambda line: None)
        self.describe = describe or {}  # extra fields for the record (what holds it)
        self.token = uuid.uuid4().hex
        self.held = False
        self.lost = threading.Event()  # set when a held lease was found taken over
        self._written: dict[str, Any] | None = None  # the record this process wrote, while it holds the lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pulse: tuple | None = None  # what the holder's lock and heartbeat looked like when last seen
        self._pulse_at = 0.0  # monotonic time that look was first seen
        self._markers_seen: dict[str, float] = {}

    @property
    def path(self) -> Path:
        return self.location.local_path

    def _sibling(self, token: str, suffix: str) -> Location:
        return self.location.parent / f".{self.location.name}.{token}.{suffix}"

    # -------------------------------------------------------------- reading

    def info(self) -> dict[str, Any] | None:
        """The holder's record; {} when the lock exists but cannot be read as one; None when free."""
        try:
            text = self.location.read_text()
        except (UnicodeDecodeError, StorageError):
            return {}
        if text is None:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def heartbeat_of(self, record: dict[str, Any]) -> dict[str, Any] | None:
        token = record.get("token")
        if not isinstance(token, str):
            return None
        try:
            text = self._sibling(token, "beat").read_text()
            beat = json.loads(text) if text else None
        except (ValueError, UnicodeDecodeError, StorageError):
            return None
        return beat if isinstance(beat, dict) else None

    def holder_state(self) -> tuple[dict[str, Any] | None, bool, str]:
        """(holder record or None, whether it looks alive, where it is) for someone only looking (`ltkd status`).

        On the holder's machine this is exact. From elsewhere one look cannot watch a heartbeat change,
        so the heartbeat's age is read by the two machines' wall clocks (which may differ; the text
        says so); taking a lease over never relies on that (see `judge`).
        """
        holder = self.info()
        if holder is None:
            return None, False, ""
        identity = ProcessIdentity.from_record(holder)
        alive = identity.alive() if identity is not None else None
        where = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        if alive is None:
            beat = self.heartbeat_of(holder) or {}
            stamp = beat.get("time", holder.get("since"))
            age = time.time() - stamp if isinstance(stamp, (int, float)) else float("inf")
            alive = age < claimed_stale_after(holder, self.stale_after)
            where += f" (another machine; last heartbeat {age:.0f} s ago by the two machines' clocks)"
        return holder, bool(alive), where

    def still_held(self) -> bool:
        return (self.info() or {}).get("token") == self.token

    def judge(self, record: dict[str, Any] | None = None) -> tuple[str, str]:
        """("free" | "alive" | "dead" | "unknown", why): the holder's state as this process sees it.

        "unknown" means a holder on another machine whose heartbeat this process has not yet seen
        change, nor seen silent for its stale_after: call again later (each call is an observation).
        """
        record = self.info() if record is None else record
        if record is None:
            return "free", ""
        identity = ProcessIdentity.from_record(record)
        if identity is not None:
            alive = identity.alive()
            if alive is not None:
                return ("alive", "it runs on this machine") if alive else \
                    ("dead", f"its holder, pid {identity.pid} on this machine, is dead")
        pulse = (json.dumps(record, sort_keys=True), json.dumps(self.heartbeat_of(record), sort_keys=True))
        now = time.monotonic()
        if pulse != self._pulse:
            beat_changed = self._pulse is not None and self._pulse[0] == pulse[0]  # same holder, new beat
            self._pulse, self._pulse_at = pulse, now
            if beat_changed:
                return "alive", "its heartbeat changed while watched"
            return "unknown", "watching its heartbeat"
        stale_after = claimed_stale_after(record, self.stale_after)
        silent = now - self._pulse_at
        if silent >= stale_after:
            return "dead", f"no heartbeat for {silent:.0f} s"
        return "unknown", f"watching its heartbeat ({silent:.0f} of {stale_after:.0f} s)"

    # -------------------------------------------------------------- taking and giving back

    def _record(self) -> dict[str, Any]:
        return {"token": self.token, **asdict(ProcessIdentity.current()), "since": time.time(),
                "heartbeat_seconds": self.heartbeat, "stale_after": self.stale_after, **self.describe}

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it. Never waits (beyond `settle` on an object store)."""
        data = json.dumps(self._record())
        if self.location.remote:
            created = create_if_absent(self.location, data.encode())  # S3 with boto3: exactly one creator wins
            if created is False:
                return False
            if created is None:  # no conditional write here: a check, then a write
                if self.location.exists():
                    return False
                self.location.write_text(data)
            time.sleep(self.settle)  # a racing writer's lock lands meanwhile (a store that ignored the condition)
            if not self.still_held():  # the last one written wins
                return False
        else:
            path = self.path
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        self.held = True
        self._written = json.loads(data)
        self.lost.clear()
        self._stop.clear()
        self._write_beat(0)
        self._thread = threading.Thread(target=self._beat, name=f"lease-heartbeat-{self.location.name}", daemon=True)
        self._thread.start()
        return True

    def _write_beat(self, seq: int) -> None:
        self._sibling(self.token, "beat").write_text(json.dumps({"token": self.token, "seq": seq, "time": time.time()}))

    def _beat(self) -> None:
        seq = 0
        while not self._stop.wait(self.heartbeat):
            try:
                if not self.still_held():  # taken over: never touch the new owner's files
                    self.lost.set()
                    self.log(f"lost the lock {self.location}: another process took it over")
                    return
                seq += 1
                self._write_beat(seq)
            except (OSError, StorageError):  # the storage hiccuped: the next beat tries again
                pass

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.held = False
        try:
            self._delete_if(self._written or {})  # the token fences: a lock taken over by another owner stays
            self._sibling(self.token, "beat").delete()
        except (OSError, StorageError):
            pass

    def break_if_stale(self) -> bool:
        """Remove the lock if its holder is dead (as `judge` sees it). True when it was removed."""
        record = self.info()
        state, reason = self.judge(record)
        if state != "dead" or not self._remove(record):
            return False
        self.log(f"broke the stale lock {self.location} ({reason})")
        return True

    def _remove(self, record: dict[str, Any]) -> bool:
        """Delete the lock `record` was read from, unless it changed meanwhile; one remover per dead token."""
        token = record.get("token") if isinstance(record.get("token"), str) else "unnamed"
        marker = self._sibling(token, "takeover")
        if not self.location.remote:
            try:
                fd = os.open(marker.local_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                self._clear_abandoned_marker(marker)
                return False
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(asdict(ProcessIdentity.current())))
        try:
            if not self._delete_if(record):  # replaced since we judged it
                return False
            self._sibling(token, "beat").delete()
            return True
        finally:
            if not self.location.remote:
                marker.delete()

    def _delete_if(self, expected: dict[str, Any]) -> bool:
        """Delete the lock only if it still holds `expected` (as `info` read it). True when deleted.

        On a POSIX folder the lock, once read as `expected`, is renamed to a name of our own,
        atomically, so no other process's lock is deleted by mistake: if what was moved is not
        `expected` after all (replaced in the instant between the read and the rename), it is
        linked back. An object store has no atomic rename: there the check and the delete are two
        requests.
        """
        if self.info() != expected:  # the common case of a lock replaced meanwhile: leave it untouched
            return False
        if self.location.remote:
            self.location.delete()
            return True
        tomb = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tomb")
        try:
            os.rename(self.path, tomb)
        except FileNotFoundError:
            return False
        try:
            moved = json.loads(tomb.read_text())
        except ValueError:
            moved = {}
        if not isinstance(moved, dict) or moved != expected:
            try:
                os.link(tomb, self.path)
            except OSError:
                pass
            tomb.unlink(missing_ok=True)
            return False
        tomb.unlink(missing_ok=True)
        return True

    def _clear_abandoned_marker(self, marker: Location) -> None:
        """A takeover marker whose maker died before removing it would block every later takeover."""
        try:
            maker = ProcessIdentity.from_record(json.loads(marker.read_text() or "{}"))
        except (ValueError, UnicodeDecodeError, StorageError):
            maker = None
        alive = maker.alive() if maker is not None else None
        first_seen = self._markers_seen.setdefault(marker.path, time.monotonic())
        if alive is False or (alive is None and time.monotonic() - first_seen > self.stale_after):
            marker.delete()

    def force_break(self) -> dict[str, Any] | None:
        """Remove the lock whoever holds it (`--force`: the user knows its holder is dead)."""
        record = self.info()
        if record is not None:
            self.location.delete()
            token = record.get("token")
            if isinstance(token, str):
                self._sibling(token, "beat").delete()
                self._sibling(token, "takeover").delete()
        return record

    def acquire(self, *, wait_for_live_holder: bool, poll: float = 1.0,
                on_wait: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        """Take the lease, taking over a dead holder's. A live holder is waited for (a duplicate
        trial waits for its twin) or refused at once with LeaseHeld; a holder on another machine
        is watched until its heartbeat shows it alive or silent."""
        announced = False
        while True:
            if self.try_acquire():
                return
            record = self.info()
            state, reason = self.judge(record)
            if state == "free":
                continue
            if state == "dead":
                if self._remove(record):
                    self.log(f"broke the stale lock {self.location} ({reason})")
                    continue
            elif state == "alive" and not wait_for_live_holder:
                raise LeaseHeld(f"{self.location} is held by pid {record.get('pid', '?')} on "
                                f"{record.get('host', '?')} ({reason})")
            if not announced and on_wait is not None:
                on_wait(state, record or {})
                announced = True
            time.sleep(poll)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
