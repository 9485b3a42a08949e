"""benchmarks/scale.py on a tiny grid: the benchmark hook (LTKD_BENCHMARK_FIT) replaces training in the
real driver, Ray Tune, Optuna journal, run folders and Parquet store; the benchmark's kill, resume,
status and report steps run and its own checks pass. Its figures are not asserted (no timing in tests)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent


def test_the_scale_benchmark_runs_a_tiny_grid_through_the_real_orchestration(tmp_path):
    out = tmp_path / "scale"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--tables", "table4", "--n-trials", "2", "--seeds", "1",
         "--cpus", "4", "--epochs", "2", "--compute-minutes", "0.1", "--out", str(out)],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    text = result.stdout
    # Table 4 at 2 trials per search and 1 seed: 3 teachers, 6 pairs x 2 LTKD variants x (2 search trials + 1 final).
    assert "grid: table4: 39 trials" in text
    assert "killed: the table4 driver and every process of the Ray node, SIGKILL" in text
    assert "resume after SIGKILL (table4): trials ran again" in text
    for line in ("orchestration overhead:", "drivers:", "worker processes:", "| table4 |", "ltkd status:",
                 "ltkd report over all tables:", "0 epochs trained again"):
        assert line in text, line
    assert "FAILED" not in text

    sweep = out / "sweeps" / "paper-table4"
    frames = [pd.read_parquet(path) for path in (sweep / "results").glob("*.parquet")]
    rows = pd.concat(frames)
    final = rows[rows["row_kind"] == "final"]
    assert len(final) == 39 and final["trial_id"].is_unique and set(final["status"]) == {"completed"}
    # Every run was trained by the stand-in (the hook), none by the engine.
    assert set(rows[rows["row_kind"] == "epoch"]["device"]) == {"simulated"}
    assert set(final["stage"]) == {"teacher", "search", "final"}
    # The records read their class counts from data.json, written by the stand-in as by the engine.
    some_run = next((sweep / "runs").glob("*/*"))
    summary = json.loads((some_run / "data.json").read_text())
    assert summary["num_classes"] == 100 and summary["class_counts"][0] > summary["class_counts"][-1]
    assert all(len(counts) == 100 for counts in final["class_counts"])


def test_the_stand_in_is_installed_only_by_the_benchmark_hook(monkeypatch):
    from orchestrator.tune_glue import BENCHMARK_FIT_ENV, benchmark_fit

    monkeypatch.delenv(BENCHMARK_FIT_ENV, raising=False)
    assert benchmark_fit() is None  # outside the benchmark: the engine's fit
    monkeypatch.setenv(BENCHMARK_FIT_ENV, "benchmarks.scale:simulated_fit")
    monkeypatch.syspath_prepend(str(REPO))
    fit = benchmark_fit()
    assert fit.__name__ == "simulated_fit" and fit.__module__ == "benchmarks.scale"


@pytest.mark.parametrize("slots,expected", [(1, 1 * 10 + 2 * 3 + 1 * 3), (8, 10 + 3 + 3)])
def test_the_ideal_wall_time_follows_the_drivers_order(tmp_path, slots, expected):
    """One teacher of 10 s; one searched cell (2 trials of 3 s), then its 1 final of 3 s."""
    sys.path.insert(0, str(REPO))
    from benchmarks.scale import ideal_seconds, run_kind
    from orchestrator.sweep_config import parse_config

    config = parse_config({"name": "i", "storage": str(tmp_path), "seeds": [0], "teacher_epochs": 1, "student_epochs": 1,
                           "datasets": [{"name": "digits", "imbalance_factors": [10]}],
                           "pairs": [{"teacher": "resnet8", "student": "resnet8"}],
                           "methods": [{"method": "ltkd", "search": {"n_trials": 2}}]})
    seconds = {run_kind("digits", 10, "resnet8", "ce", "teacher", None): 10.0,
               run_kind("digits", 10, "resnet8", "ltkd", "student", "resnet8"): 3.0}
    assert ideal_seconds(config, seconds, slots) == pytest.approx(expected)


def test_more_trial_processes_than_memory_holds_is_a_clear_error(capsys):
    sys.path.insert(0, str(REPO))
    from benchmarks.scale import PROCESS_GB, main, processes_memory_holds

    too_many = processes_memory_holds() + 1000  # memory other processes take meanwhile moves it by a few at most
    with pytest.raises(SystemExit) as stop:
        main(["--cpus", str(too_many), "--tables", "table4"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--cpus {too_many}: {too_many} trial processes at once need ~{too_many * PROCESS_GB:.0f} GB" in error
    assert re.search(r"give --cpus \d+ or less$", error)
