"""LTKD's Δ per column across repeats, read from Parquet recorded by a tiny sweep repeated twice.

tests/data/repeats/repeat-K/results/ holds the teacher and final runs (final rows only) of
`python benchmarks/quickstart.py --repeats 2 --config tiny.json`, tiny.json being two digits factors,
resnet8 -> resnet8, 2 teacher and 3 student epochs, CE, KD at its defaults and a 2-trial LTKD search.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from results.repeats import Gain, summarize, summary_lines, sweep_gains

REPO = Path(__file__).resolve().parent.parent
RECORDED = Path(__file__).resolve().parent / "data" / "repeats"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("quickstart_benchmark", REPO / "benchmarks" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def per_repeat():
    return [sweep_gains(str(RECORDED / f"repeat-{k}")) for k in (0, 1)]


def test_each_repeat_reads_the_main_tables_gain_cells(per_repeat):
    first, second = per_repeat
    assert list(first) == ["γ=10 Tail", "γ=10 All", "γ=100 Tail", "γ=100 All"]
    assert first["γ=10 All"].comparator == "Student"
    assert first["γ=10 All"].delta == pytest.approx(-10.7333, abs=1e-3)
    assert first["γ=10 All"].p_holm == pytest.approx(0.02193, abs=1e-4) and first["γ=10 All"].significant
    assert first["γ=100 All"].comparator == "KD" and not first["γ=100 All"].significant
    assert first["γ=10 Tail"].p_holm is None and "no test" in first["γ=10 Tail"].no_test
    assert second["γ=100 All"].comparator == "Student"  # each repeat chooses its own comparator


def test_the_summary_counts_positive_and_significant_repeats(per_repeat):
    by_column = {s.column: s for s in summarize(per_repeat)}
    all10 = by_column["γ=10 All"]
    assert (all10.positive, all10.significant, all10.significant_positive) == (0, 2, 0)
    assert by_column["γ=10 Tail"].positive == 1 and by_column["γ=10 Tail"].significant == 0
    lines = summary_lines(summarize(per_repeat))
    row = next(line for line in lines if line.startswith("| γ=10 All |"))
    assert "-10.73 vs Student (p = 0.022)" in row
    assert row.endswith("| -10.87..-10.73 | 0/2 | 2/2 (2 negative) |")
    assert "no test †" in next(line for line in lines if line.startswith("| γ=10 Tail |"))


def test_a_repeat_without_a_column_shows_a_dash_and_is_not_counted():
    summaries = summarize([{"γ=10 All": Gain(2.0, "KD", 0.01)}, {}])
    assert summaries[0].positive == 1 and summaries[0].significant == 1 and len(summaries[0].present) == 1
    assert "| +2.00 vs KD (p = 0.010) | - | +2.00..+2.00 | 1/1 | 1/1 |" in summary_lines(summaries)[2]


def test_repeat_k_sets_its_data_seed_and_its_own_seeds():
    benchmark = load_benchmark()
    assert benchmark.repeat_overrides(0) == ["--set", "data_seed=0", "--set", "seeds=[0, 1, 2]"]
    assert benchmark.repeat_overrides(2) == ["--set", "data_seed=2", "--set", "seeds=[6, 7, 8]"]
