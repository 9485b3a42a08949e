"""The search figures mark and trace only trials that ran every epoch: an early-stopped trial's last
value is never the search's choice (the cell's best is chosen among completed trials)."""
from __future__ import annotations

from results.figures import _optuna_history, search_outcomes, sensitivity_figure
from results.store import read_results
from tests.test_report_polish import _search, _write


def _search_with_a_high_stopped_trial(tmp_path):
    records = _search("ltkd", [{"alpha": a, "beta": 2.0} for a in (0.5, 1.0, 2.0, 3.0)],
                      statuses={2: "early_stopped"})
    for number, record in enumerate(records):
        value = {0: 40.0, 1: 55.0, 2: 90.0, 3: 50.0}[number]
        for key in ("acc", "val_acc"):
            record.history[-1][key] = value
        record.history[-1]["acc_tail"] = value - 10
    return read_results([str(_write(tmp_path, records))])


def test_the_sensitivity_star_is_the_best_completed_trial(tmp_path):
    df = _search_with_a_high_stopped_trial(tmp_path)
    fig = sensitivity_figure(search_outcomes(df))
    stars = [c for ax in fig.axes for c in ax.collections
             if hasattr(c, "get_sizes") and len(c.get_sizes()) and c.get_sizes()[0] == 200]
    assert stars
    starred = {round(float(y), 6) for c in stars for _, y in c.get_offsets()}
    assert starred == {55.0, 45.0}  # trial 1 (All 55, Tail 45), not the stopped trial 2 at 90


def test_the_best_so_far_curve_follows_completed_trials(tmp_path):
    df = _search_with_a_high_stopped_trial(tmp_path)
    (_, fig), = list(_optuna_history(df, None))
    lines = [line for ax in fig.axes for line in ax.get_lines() if line.get_label().startswith("best so far")]
    assert len(lines) == 1 and lines[0].get_label() == "best so far (55.00%)"
    assert max(lines[0].get_ydata()) == 55.0
