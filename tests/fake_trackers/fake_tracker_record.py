"""One JSON line per tracker call, appended to $FAKE_TRACKER_LOG (from the driver and Ray's actors)."""
import json
import os


def record(tracker: str, call: str, **values) -> None:
    with open(os.environ["FAKE_TRACKER_LOG"], "a") as out:
        out.write(json.dumps({"tracker": tracker, "call": call, **values}, default=str) + "\n")
