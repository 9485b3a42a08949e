"""How console and log lines say times: the time of day a line is about, and a span of seconds.

Torch-free: the driver, `ltkd status` and the trainables' logs all use it.
"""
from __future__ import annotations

import sys
import time


def stamp(when: float | None = None) -> str:
    """The time of day a console line is about (local time, to the second)."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() if when is None else when))


def say(text: str, stream=None) -> None:
    """A driver's console line, with its time."""
    print(f"{stamp()} {text}", file=stream or sys.stdout, flush=True)


def span(seconds: float) -> str:
    """A duration as people read it: "45 s", "12 min", "3.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def warning(message: str) -> None:
    """A warning line on stderr, as `ltkd` prints them."""
    print(f"ltkd: warning: {message}", file=sys.stderr, flush=True)


def printable(value: object, limit: int = 80) -> str:
    """Text from a file on shared storage, safe to print: control characters become '?', at most `limit` long."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= limit else text[:limit] + "..."
