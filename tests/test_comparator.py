"""The Δ row: its comparator is chosen on validation (one per block), its p-values are Holm-adjusted,
and a paired test without spread is no test. Expected values are computed here by hand or with
scipy, never with the tables' code."""
from __future__ import annotations

import csv
import io
import statistics

import pytest
from scipy import stats

from results.render import to_csv, to_latex, to_markdown
from results.statistics import holm, paired_test
from tests.test_statistics import SEEDS, build, col, make_record, raw, row


def test_holm_matches_a_hand_computation():
    # m = 4 tested, one untested. Sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06),
    # 0.20 (x1 = 0.20); already monotone.
    assert holm([0.03, None, 0.01, 0.20, 0.02]) == pytest.approx([0.06, None, 0.04, 0.20, 0.06])
    # step-down monotonicity: 0.04 x 3 = 0.12 < 0.05 x 2 = 0.10? no: the max carries 0.12 forward
    assert holm([0.04, 0.05, 0.5]) == pytest.approx([0.12, 0.12, 0.5])
    # capped at 1
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]) == [] and holm([None]) == [None]


@pytest.mark.parametrize("offset", [0.0, 0.1])  # 0.1: differences equal only up to float rounding
def test_equal_nonzero_differences_are_no_test(offset):
    ours = {(s, 0): 50.0 + offset + s for s in range(3)}
    theirs = {(s, 0): 48.0 + s for s in range(3)}
    scipy_says = stats.ttest_rel(list(ours.values()), list(theirs.values()))
    assert float(scipy_says.pvalue) == 0.0 and abs(float(scipy_says.statistic)) == float("inf")
    test = paired_test(ours, theirs)
    assert test.p_value is None and test.statistic is None and test.significant is None
    assert test.mean_difference == pytest.approx(2.0 + offset) and test.ci is None
    assert test.reason == "all 3 differences equal: no test"


def test_a_constant_gain_is_not_reported_significant(tmp_path):
    records = [make_record("teacher", 0)]
    for seed in (0, 1, 2):
        records.append(make_record("kd", seed, values=(60.0 + seed, 40.0 + seed)))
        records.append(make_record("ltkd", seed, values=(62.0 + seed, 43.0 + seed)))
    table = build(tmp_path, records)
    for j in range(len(table.columns)):
        gain = table.cells[row(table, "gain")][j]
        assert gain.p_value is None and gain.p_holm is None and gain.significant is None
    gain_line = next(line for line in to_markdown(table).splitlines() if line.startswith("| Δ"))
    assert "+3.00† (all 3 differences equal: no test)" in gain_line
    assert "+2.00† (all 3 differences equal: no test)" in gain_line
    assert "p = 0" not in gain_line and "p < 0.001" not in gain_line
    assert "Holm-adjusted over the 0 tested Δ comparisons" in table.caption
    lines = [r for r in csv.DictReader(io.StringIO(to_csv(table))) if r["row_kind"] == "gain"]
    assert lines and all(r["significant"] == "no test" and r["p_value"] == "" for r in lines)


def _ranked_records(val_shift: float | None, selection: str = "val"):
    """DKD is best on the test set (both columns), KD on validation; the student alone between."""
    records = [make_record("teacher", 0)]
    effect = {0: -1.0, 1: 0.5, 2: 2.0, 3: 0.0}
    noise = {0: 0.4, 1: -0.3, 2: 0.1, 3: -0.2}
    shifts = {"ce": 0.0, "kd": 6.0, "dkd": -4.0, "ltkd": 0.0}
    for seed in range(4):
        for method, tail, acc in (("ce", 30.0, 60.0), ("kd", 33.0, 61.0), ("dkd", 38.0, 64.0), ("ltkd", 37.0, 63.0)):
            wobble = noise[seed] * (1 if method == "ltkd" else -1 if method == "kd" else 0.5)
            shift = None if val_shift is None else val_shift + shifts[method]
            records.append(make_record(method, seed, selection=selection,
                                       values=(acc + effect[seed] + wobble, tail + effect[seed] - wobble),
                                       val_shift=shift, trials=0 if method == "ce" else 4))
    return records


def test_the_comparator_is_chosen_on_validation_for_every_column(tmp_path):
    records = _ranked_records(val_shift=0.0)
    table = build(tmp_path, records)
    test_means = {m: statistics.mean(raw(records, m, "acc").values()) for m in ("ce", "kd", "dkd")}
    assert max(test_means, key=test_means.get) == "dkd"  # the old rule would pick DKD
    val = {m: statistics.mean(r.history[-1]["val_acc"] for r in records
                              if r.config["method"] == m and r.config["role"] == "student") for m in ("ce", "kd", "dkd")}
    assert max(val, key=val.get) == "kd"
    gains = table.cells[row(table, "gain")]
    for metric in ("acc_tail", "acc"):
        gain = gains[col(table, metric)]
        assert gain.compared_to == "kd" and gain.compared_on == "validation"
        ours, theirs = raw(records, "ltkd", metric), raw(records, "kd", metric)
        assert gain.mean == pytest.approx(statistics.mean(ours.values()) - statistics.mean(theirs.values()))
        keys = sorted(ours)
        expected = stats.ttest_rel([ours[k] for k in keys], [theirs[k] for k in keys])
        assert gain.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)
    assert "‡" not in to_markdown(table)


def test_without_validation_the_comparator_is_chosen_on_test_and_marked(tmp_path):
    records = _ranked_records(val_shift=None, selection="test")
    table = build(tmp_path, records)
    for metric in ("acc_tail", "acc"):
        gain = table.cells[row(table, "gain")][col(table, metric)]
        assert gain.compared_to == "dkd" and gain.compared_on == "test"
    assert "comparator (DKD) was chosen on the test set's overall accuracy" in table.caption
    gain_line = next(line for line in to_markdown(table).splitlines() if line.startswith("| Δ"))
    assert gain_line.count("‡") == 2
    assert r"$^\ddagger$" in to_latex(table)
    lines = [r for r in csv.DictReader(io.StringIO(to_csv(table))) if r["row_kind"] == "gain"]
    assert {r["compared_on"] for r in lines} == {"test"}


def test_holm_runs_over_every_gain_of_the_table(tmp_path):
    """Two blocks (factors 10 and 100) x two columns: one family of four tests."""
    first, second = _ranked_records(0.0), _ranked_records(0.0)
    # the second copy at another imbalance factor, with slightly other numbers
    moved = []
    for r in second:
        r.config["imbalance_factor"] = 100.0
        r.cell = r.cell.replace("if10", "if100")
        r.trial_id = r.trial_id.replace("if10", "if100")
        r.history[-1]["acc_tail"] -= 0.7 * (r.config["seed"] % 2) if r.config["method"] == "ltkd" else 0.0
        moved.append(r)
    table = build(tmp_path, first + moved)
    gains = table.cells[row(table, "gain")]
    raw_p = [g.p_value for g in gains]
    assert len(raw_p) == 4 and all(p is not None for p in raw_p)
    order = sorted(range(4), key=lambda i: raw_p[i])
    expected, running = [0.0] * 4, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * raw_p[i]))
        expected[i] = running
    assert [g.p_holm for g in gains] == pytest.approx(expected)
    assert "Holm-adjusted over the 4 tested Δ comparisons" in table.caption


def test_caption_counts_search_trials_asha_and_unequal_budgets(tmp_path):
    records = [make_record("teacher", 0)]
    for seed in (0, 1):
        records.append(make_record("kd", seed, trials=3))
        records.append(make_record("ltkd", seed, trials=5))
    for alpha, status in ((0.5, "completed"), (1.5, "completed"), (2.5, "early_stopped")):
        records.append(make_record("ltkd", 9, stage="search", hparams={"alpha": alpha}, status=status))
    records.append(make_record("kd", 9, stage="search", hparams={"temperature": 2.0}, status="errored"))
    table = build(tmp_path, records)
    assert ("LTKD 2/5 (1 stopped early by ASHA, 3 search epochs)" in table.caption
            and "KD 0/3 (1 errored, 1 search epochs)" in table.caption), table.caption
    assert "ASHA stopped weak search trials early." in table.caption
    assert "Unequal search budgets: KD 3, LTKD 5 planned trials" in table.caption


def test_paper_captions_state_the_protocol_differences(tmp_path):
    from results.store import read_results, write_trial
    from results.tables import main_table

    records = [make_record("teacher", 0)]
    for seed in (0, 1):
        for method in ("kd", "ltkd"):
            record = make_record(method, seed)
            record.config["validation_per_class"] = 50
            records.append(record)
    folder = tmp_path / "p"
    for record in records:
        write_trial(str(folder), record)
    df = read_results([str(folder)])
    caption = main_table(df, paper=True).caption
    assert ("CIFAR-100-LT holds out 50 validation images per class before the long-tailed draw, so its largest "
            "class has 450 images, not the paper's 500 (500 -> 450)") in caption
    assert "selected on that validation split, where the paper tuned on the test set" in caption
    assert "Protocol differences" not in main_table(df).caption  # only beside the paper's numbers


def test_a_teacher_below_the_student_alone_is_flagged(tmp_path):
    records = [make_record("teacher", 0, values=(58.0, 30.0))]  # val_acc 57
    for seed in (0, 1):
        records.append(make_record("ce", seed, values=(60.0 + seed, 40.0), trials=0))  # val 59, 60: mean 59.5
        records.append(make_record("ltkd", seed, values=(59.0 + 2 * seed, 41.0)))
    table = build(tmp_path, records)
    expected = "CIFAR-100-LT resnet32x4→resnet8x4 γ=10: teacher 57.00 vs student alone 59.50"
    assert expected in table.caption and "expected to hurt" in table.caption
    assert table.caption.index("Weak teacher") < table.caption.index("Δ: ")  # read before the Δ row's rule
    assert any(expected in note for note in table.notes)
    strong = [make_record("teacher", 0, values=(70.0, 50.0))] + records[1:]
    assert "Weak teacher" not in build(tmp_path, strong, name="strong").caption
