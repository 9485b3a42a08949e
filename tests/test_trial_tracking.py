"""W&B and MLflow get each trial's own stage and cell: a real sweep with stand-in tracker packages
(tests/fake_trackers: their services cannot run here) records what every trial's tracker received."""
from __future__ import annotations

import json
import os
from pathlib import Path

from tests.sweep_helpers import run_ltkd, tiny_config, write_config

FAKES = Path(__file__).resolve().parent / "fake_trackers"


def test_each_trial_is_tracked_under_its_own_stage_and_cell(tmp_path):
    log = tmp_path / "tracker.jsonl"
    config = tiny_config(tmp_path / "store", teacher_epochs=1, student_epochs=1,
                         methods=[{"method": "ce"}, {"method": "ltkd", "search": {"n_trials": 1}}],
                         tracking={"wandb_project": "ltkd", "mlflow_experiment": "ltkd",
                                   "mlflow_tracking_uri": "sqlite:///unused.db"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKES), os.environ.get("PYTHONPATH", "")]),
           "FAKE_TRACKER_LOG": str(log), "WANDB_API_KEY": "fake"}
    result = run_ltkd("sweep", write_config(tmp_path / "c.json", config), env=env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]

    setting, cell = "digits/if100/resnet8", "digits/if100/resnet8->resnet8"
    expected = {("teacher", setting), ("search", f"{cell}/ltkd"), ("final", f"{cell}/ltkd"), ("final", f"{cell}/ce")}
    wandb = [c for c in calls if c["tracker"] == "wandb" and c["call"] == "init"]
    assert sorted((c["job_type"], c["group"]) for c in wandb) == sorted((s, f"tiny/{c}") for s, c in expected)
    assert all(c["project"] == "ltkd" for c in wandb)
    mlflow = [c for c in calls if c["tracker"] == "mlflow" and c["call"] == "create_run"]
    assert sorted((c["tags"]["stage"], c["tags"]["cell"]) for c in mlflow) == sorted(expected)
    assert {c["tags"]["sweep"] for c in mlflow} == {"tiny"}
    # Every trial's W&B run is the one its metrics were logged to.
    logged = {c["id"] for c in calls if c["tracker"] == "wandb" and c["call"] == "log"}
    assert logged == {c["id"] for c in wandb}
