"""Files planted in (or torn on) a real sweep's folder, read through the real `ltkd status`, `report` and `resume`.

One tiny sweep (a teacher and one CE student on the embedded digits data) runs once; each test
works on its own copy of the sweep's folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from results.store import META_VERSION_KEY
from tests.sweep_helpers import run_ltkd, tiny_config, write_config
from trainables.locks import Lease


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unreadable")
    config = write_config(root / "tiny.json", tiny_config(root / "store", methods=[{"method": "ce"}]))
    result = run_ltkd("sweep", config)
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "store"


@pytest.fixture
def sweep(finished, tmp_path) -> Path:
    """A copy of the finished sweep's storage; returns its sweep folder."""
    shutil.copytree(finished, tmp_path / "store")
    return tmp_path / "store" / "tiny"


def plant_unreadable_results(sweep: Path) -> list[str]:
    """A truncated file, a text file, a file of a newer schema and one whose metadata lies; their names."""
    results = sweep / "results"
    real = sorted(results.glob("final_*.parquet"))[0]
    data = real.read_bytes()
    (results / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (results / "planted.parquet").write_text("not a Parquet file\n")
    table = pq.read_table(real)
    newer = table.replace_schema_metadata({**table.schema.metadata, META_VERSION_KEY: b"99"})
    pq.write_table(newer, results / "newer.parquet")
    lying = pq.read_table(real, columns=["sweep", "trial_id"])
    pq.write_table(lying.replace_schema_metadata({META_VERSION_KEY: b"2"}), results / "lying.parquet")
    return ["lying.parquet", "newer.parquet", "planted.parquet", "truncated.parquet"]


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ltkd: error: "), result.stderr
    return lines[0]


def test_status_counts_the_result_files_it_could_not_read(sweep):
    names = plant_unreadable_results(sweep)
    result = run_ltkd("status", sweep)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "final: 1/1 trials ended (1 completed" in result.stdout
    assert f"4 result files could not be read: {', '.join(names)}" in result.stdout, result.stdout


def test_status_works_when_no_result_file_can_be_read(sweep):
    for real in (sweep / "results").glob("*.parquet"):
        real.unlink()
    (sweep / "results" / "planted.parquet").write_text("not a Parquet file\n")
    result = run_ltkd("status", sweep)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "final: 0/1 trials ended" in result.stdout
    assert "1 result files could not be read: planted.parquet" in result.stdout, result.stdout


def test_report_and_the_end_of_sweep_table_skip_each_unreadable_file_naming_it(sweep):
    names = plant_unreadable_results(sweep)
    report = run_ltkd("report", sweep)
    resumed = run_ltkd("resume", sweep)
    for result in (report, resumed):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and "ResultsWarning" not in result.stderr, result.stderr
        warned = [line for line in result.stderr.splitlines() if "warning: skipping" in line]
        assert sorted(Path(line.split()[3].rstrip(":")).name for line in warned) == names, result.stderr
        assert "Main results" in result.stdout
    assert "nothing left to run" in resumed.stdout


# ------------------------------------------------------------------------------ metrics.jsonl


def _teacher(sweep: Path) -> Path:
    return next((sweep.parent / "teachers").iterdir())


def test_a_torn_last_metrics_line_makes_status_count_the_run_unfinished(sweep):
    teacher = _teacher(sweep)
    metrics = teacher / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    metrics.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # the crash cut the second epoch's append
    holder = Lease(teacher / ".trial.lock", describe={"what": "training run"})
    assert holder.try_acquire()  # as if its trial were training it now
    try:
        result = run_ltkd("status", sweep)
    finally:
        holder.release()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "teachers: 0/1 finished" in result.stdout
    assert "running: 1 trials" in result.stdout and "epoch 1/2" in result.stdout, result.stdout


@pytest.mark.parametrize("bad", [b"{not json\n", b"\xff\xfe not text\n", b"[1, 2]\n"])
def test_a_bad_middle_metrics_line_is_one_error_line_naming_the_file(sweep, bad):
    metrics = _teacher(sweep) / "metrics.jsonl"
    first, second = metrics.read_bytes().splitlines(keepends=True)
    metrics.write_bytes(first + bad + second)
    line = _one_error_line(run_ltkd("status", sweep))
    assert str(metrics) in line and "line 2" in line, line
