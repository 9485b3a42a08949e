"""`ltkd unlock PATH`: remove a lock (a run folder's, a teacher logit cache's, a sweep driver's) by hand.

For a lock whose holder the user knows is dead but that waiters would still watch (a holder on
another machine is presumed dead only after up to MAX_STALE_AFTER_SECONDS of heartbeat silence).
A holder that looks alive (its pid runs on this machine, or its heartbeat is recent by the two
machines' clocks) is only removed with --yes: removing a live holder's lock lets a second
process train the same run folder or build the same cache.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from trainables.console import printable
from trainables.errors import UserError


def lock_names() -> tuple[str, ...]:
    """The file names of every lock ltkd writes."""
    from orchestrator.layout import LOCK_FILE
    from trainables.run_files import RUN_LOCK_NAME
    from trainables.teacher_cache import LOCK_NAME as CACHE_LOCK_NAME

    return RUN_LOCK_NAME, CACHE_LOCK_NAME, LOCK_FILE


def find_lock(text: str):
    """The lock file PATH names: PATH itself when it is named like a lock, else the one lock directly in it."""
    from trainables.storage import Location

    location = Location.parse(text)
    names = lock_names()
    if location.name in names:
        found = [location] if location.exists() else []
    else:
        found = [location / name for name in names if (location / name).exists()]
    if not found:
        raise UserError(f"{text} holds no lock (none of {', '.join(names)}); name a run folder, a teacher's "
                        "logit-cache folder (<teacher run>/logit_cache/<arch>-<digest>), a sweep folder or a lock file")
    if len(found) > 1:
        raise UserError(f"{text} holds {len(found)} locks ({', '.join(lock.name for lock in found)}); "
                        "name the lock file to remove")
    return found[0]


def holder_line(record: dict[str, Any], where: str) -> str:
    """Who held a lock, in words: what, where, since when (by the holder's clock)."""
    if not record:
        return "an unreadable lock record"
    since = record.get("since")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
            if isinstance(since, (int, float)) and not isinstance(since, bool) and 0 <= since < 1e11 else "?")
    return f"{printable(record.get('what', 'a process'))}, {printable(where, 200)}, since {when}"


def cmd_unlock(args: argparse.Namespace) -> int:
    from trainables.locks import Lease

    lease = Lease(find_lock(args.path))
    holder, alive, where = lease.holder_state()
    if holder is None:
        raise UserError(f"{args.path} holds no lock (it was released meanwhile)")
    held_by = holder_line(holder, where)
    if alive and not args.yes:
        raise UserError(f"{lease.location} looks held by a live process ({held_by}); stop it first, or add --yes "
                        "if you know it is dead")
    print(f"{lease.location} was held by {held_by}")
    lease.force_break()
    print(f"removed {lease.location}")
    return 0


def add_commands(commands) -> None:
    unlock = commands.add_parser("unlock", help="remove the lock of a run folder, a teacher logit cache or a sweep "
                                 "driver whose holder you know is dead (prints who held it)")
    unlock.add_argument("path", metavar="PATH", help="a run folder, a teacher's logit-cache folder, a sweep folder or a "
                        "lock file (a local path or a storage URI)")
    unlock.add_argument("--yes", action="store_true", help="remove it even when its holder looks alive")
    unlock.set_defaults(handler=cmd_unlock)
