"""A stand-in for `mlflow`: what Ray's MLflowLoggerCallback and the driver's check call, recorded
(tests/fake_trackers/README.md)."""
from types import SimpleNamespace

__version__ = "2.20.0"
_uris = {"tracking": None, "registry": None}
_experiments = {}


def set_tracking_uri(uri):
    _uris["tracking"] = uri


def set_registry_uri(uri):
    _uris["registry"] = uri


def get_tracking_uri():
    return _uris["tracking"]


def get_registry_uri():
    return _uris["registry"]


def get_experiment_by_name(name):
    return SimpleNamespace(experiment_id=_experiments[name], name=name) if name in _experiments else None


def create_experiment(name, **kwargs):
    _experiments[name] = str(len(_experiments) + 1)
    return _experiments[name]


def get_experiment(experiment_id):
    return SimpleNamespace(experiment_id=experiment_id)


def active_run():
    return None


def get_run(run_id):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id))


from mlflow import tracking  # noqa: E402 (the submodules, as the real package has them)
