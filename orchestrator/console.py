"""The driver's console lines: each starts with the time of day, so a log of a long sweep reads as a timeline."""
from __future__ import annotations

import sys
import time


def stamp(when: float | None = None) -> str:
    """The time of day a console line is about (local time, to the second)."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() if when is None else when))


def say(text: str, stream=None) -> None:
    """A driver's console line, with its time."""
    print(f"{stamp()} {text}", file=stream or sys.stdout, flush=True)
