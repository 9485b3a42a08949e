"""A stand-in for `wandb`: what Ray's WandbLoggerCallback calls, recorded (tests/fake_trackers/README.md)."""
from types import SimpleNamespace

from fake_tracker_record import record

api = SimpleNamespace(api_key="fake")
_run = {}


class _Config:
    def update(self, values, allow_val_change=False):
        pass


config = _Config()


def ensure_configured():
    pass


def init(*args, **kwargs):
    _run.update(id=kwargs.get("id"))
    record("wandb", "init", **{k: kwargs.get(k) for k in ("id", "name", "group", "job_type", "project")})
    return SimpleNamespace(id=kwargs.get("id"), config=SimpleNamespace())


def log(values, step=None):
    record("wandb", "log", id=_run.get("id"), step=step)


def finish(*args, **kwargs):
    record("wandb", "finish", id=_run.get("id"))


class Artifact:
    def __init__(self, *args, **kwargs):
        pass

    def add_dir(self, *args, **kwargs):
        pass


def log_artifact(*args, **kwargs):
    pass
