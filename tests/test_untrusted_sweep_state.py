"""A sweep's folder on shared storage is untrusted: nothing Ray Tune pickles is read from it."""
from __future__ import annotations

import json
import pathlib

import pytest
from ray import cloudpickle

from orchestrator.layout import RAY_DIR
from tests.sweep_helpers import run_ltkd, tiny_config, write_config


class Plant:
    """Unpickling this creates `marker`: what a planted file could do instead (run any code)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def plant_tune_state(sweep: pathlib.Path, marker: pathlib.Path) -> list[pathlib.Path]:
    """Tune's experiment state (newer than any real one) and an errored trial's error.pkl, both carrying a Plant,
    in the folder where Tune kept a sweep's state on its storage before; returns the planted files."""
    trials = sweep / RAY_DIR / "trials"
    (trials / "ltkd_trial_planted").mkdir(parents=True, exist_ok=True)
    blob = {"_type": "CLOUDPICKLE_FALLBACK", "value": cloudpickle.dumps(Plant(marker)).hex()}
    state = trials / "experiment_state-2099-01-01_00-00-00.json"
    state.write_text(json.dumps({"trial_data": [], "runner_data": blob, "stats": {}}))
    error = trials / "ltkd_trial_planted" / "error.pkl"
    error.write_bytes(cloudpickle.dumps(Plant(marker)))
    return [state, error]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted-sweep")
    config = write_config(root / "tiny.json", tiny_config(root / "store", methods=[{"method": "ce"}]))
    result = run_ltkd("sweep", config)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, config


@pytest.mark.parametrize("command", ["resume", "sweep"])
def test_resuming_or_rerunning_a_finished_sweep_unpickles_nothing_planted(finished, command):
    root, config = finished
    sweep = root / "store" / "tiny"
    marker = root / f"marker-{command}"
    planted = plant_tune_state(sweep, marker)
    result = run_ltkd(command, sweep if command == "resume" else config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing left to run" in result.stdout
    assert not marker.exists(), "a planted Tune state file was unpickled"
    assert all(path.is_file() for path in planted)  # nothing on the storage is deleted either
