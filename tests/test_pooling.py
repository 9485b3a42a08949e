"""Cells never pool runs of different protocols, and n counts distinct seeds. Written as real
Parquet results and read back through the store."""
from __future__ import annotations

import statistics

import pytest

from results.pooling import pooling_conflict, per_seed
from tests.test_statistics import build, col, make_record, row


def _kd_and_ltkd(sweep: str, epochs: int = 1, data_seed: int = 0, seeds=(0, 1, 2)):
    records = []
    for seed in seeds:
        for method, base in (("kd", 40.0), ("ltkd", 42.0)):
            record = make_record(method, seed, sweep=sweep, values=(base + 20 + seed, base + seed + 0.3 * (seed % 2)))
            record.config["epochs"] = epochs
            record.config["data_seed"] = data_seed
            records.append(record)
    return records


@pytest.mark.parametrize("change,needle", [
    ({"sweep": "other"}, "sweep other, stats"),
    ({"epochs": 3}, "epochs 1, 3"),
    ({"data_seed": 5}, "data seed 0, 5"),
])
def test_runs_of_another_protocol_are_never_pooled(tmp_path, change, needle):
    first = [make_record("teacher", 0)] + _kd_and_ltkd("stats")
    second = _kd_and_ltkd(change.get("sweep", "stats"), epochs=change.get("epochs", 1),
                          data_seed=change.get("data_seed", 0), seeds=(3, 4))
    table = build(tmp_path, first + [r for r in second if r.config["method"] == "ltkd"])
    assert "ltkd" not in table.row_keys and "gain" not in table.row_keys  # its only cell refused: no row, no Δ
    refusal = [n for n in table.notes if n.startswith("Not pooled: LTKD")]
    assert len(refusal) == 1 and needle in refusal[0], table.notes
    # KD ran one protocol: its cell stands, from its own three seeds
    kd = table.cells[row(table, "kd")][col(table, "acc")]
    assert kd.n == 3 and kd.mean == pytest.approx(statistics.mean(60.0 + s for s in (0, 1, 2)))


def test_the_holdout_and_the_selection_are_protocol_too():
    import pandas as pd

    frame = pd.DataFrame({"sweep": ["a", "a"], "validation_per_class": [10, 0], "selection": ["val", "test"]})
    assert pooling_conflict(frame) == "selection test, val; holdout per class 0, 10"
    assert pooling_conflict(frame.iloc[:1]) is None


def test_n_is_the_number_of_distinct_seeds(tmp_path):
    """Seed 0 run with two teacher seeds: averaged into one value, n = 2 seeds, not 3 runs."""
    records = [make_record("teacher", 0)]
    records.append(make_record("kd", 0, teacher_seed=0, values=(60.0, 40.0)))
    records.append(make_record("kd", 0, teacher_seed=1, values=(64.0, 44.0)))
    records.append(make_record("kd", 1, teacher_seed=0, values=(70.0, 50.0)))
    table = build(tmp_path, records)
    cell = table.cells[row(table, "kd")][col(table, "acc")]
    by_seed = [statistics.mean([60.0, 64.0]), 70.0]
    assert cell.n == 2 and cell.mean == pytest.approx(statistics.mean(by_seed))
    assert cell.std == pytest.approx(statistics.stdev(by_seed))
    import pandas as pd

    assert per_seed(pd.DataFrame({"seed": [1, 0, 0], "acc": [3.0, 1.0, 2.0]}), "acc") == [1.5, 3.0]
