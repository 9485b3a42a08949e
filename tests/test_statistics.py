"""Statistics and captions of the report tables (issue 13).

Every expected number here is computed independently from the raw records this file builds
(not from the store or the tables' code) and compared with scipy.stats: the 95% Student-t
interval with `scipy.stats.t.interval`, the gain row's paired test with `scipy.stats.ttest_rel`.
"""
from __future__ import annotations

import csv
import io
import math
import re
import statistics

import pytest
from scipy import stats

from results.render import to_csv, to_html, to_latex, to_markdown
from results.store import TrialRecord, read_results, write_trial
from results.tables import main_table

TEACHER, STUDENT = "resnet32x4", "resnet8x4"
FACTOR = 10.0
SEEDS = (0, 1, 2, 3, 4)

# Per seed: a strong seed effect shared by every method (the same data order and initialisation),
# small method effects. Paired by seed, LTKD's tail gain over DKD is consistent; unpaired, the
# seed effect would swamp it.
SEED_EFFECT = {0: -4.0, 1: 3.0, 2: 0.5, 3: 5.5, 4: -2.0, 5: 1.0, 6: -1.0}
TAIL = {"teacher": 50.0, "ce": 38.0, "kd": 41.0, "dkd": 43.0, "ltkd": 45.0}
TAIL_NOISE = {"ltkd": (0.3, -0.2, 0.1, 0.4, -0.3, 0.0, 0.2), "dkd": (0.0, 0.1, -0.1, 0.2, 0.0, 0.3, -0.2)}
ALL = {"teacher": 62.0, "ce": 54.0, "kd": 56.0, "dkd": 57.0, "ltkd": 57.4}
ALL_NOISE = {"ltkd": (1.5, -1.8, 0.9, -1.1, 2.0, 0.0, 0.5), "dkd": (-0.4, 0.6, -1.2, 1.4, -0.9, 0.2, 0.1)}


def _values(method: str, seed: int) -> tuple[float, float]:
    tail = TAIL[method] + SEED_EFFECT.get(seed, 0.0) + TAIL_NOISE.get(method, (0.0,) * 7)[seed % 7]
    acc = ALL[method] + SEED_EFFECT.get(seed, 0.0) + ALL_NOISE.get(method, (0.0,) * 7)[seed % 7]
    return round(acc, 4), round(tail, 4)


def make_record(method: str, seed: int, *, teacher_seed: int | None = 0, selection: str | None = "val",
                objective: str | None = "val_acc", trials: int | None = 4, stage: str = "final",
                values: tuple[float, float] | None = None, sweep: str = "stats", hparams: dict | None = None,
                status: str = "completed", val_shift: float | None = -1.0) -> TrialRecord:
    """One trial's record; its validation accuracy is its test accuracy + val_shift (None: no holdout)."""
    role = "teacher" if method == "teacher" else "student"
    acc, tail = values if values is not None else _values(method, seed)
    if role == "teacher":
        cell = f"cifar100/if{FACTOR:g}/{TEACHER}"
        teacher_seed, selection, objective, trials = None, None, None, None
    else:
        cell = f"cifar100/if{FACTOR:g}/{TEACHER}->{STUDENT}/{method}"
        if method == "ce":
            teacher_seed = None
    hp = dict(hparams or {})
    if method == "ltkd":
        hp = {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "n_groups": 3, "rebalance": True,
              "uniform_within": True, "within_norm": "sum", **hp}
    config = {
        "dataset": "cifar100", "imbalance_factor": FACTOR, "data_seed": 0, "role": role,
        "arch": TEACHER if role == "teacher" else STUDENT, "method": "ce" if role == "teacher" else method,
        "teacher_arch": None if method in ("teacher", "ce") else TEACHER,
        "teacher": None if method in ("teacher", "ce") else f"/teachers/seed{teacher_seed}",
        "seed": seed, "epochs": 1, "hparams": hp, "validation_per_class": 10,
    }
    history = [{"epoch": 1, "epochs": 1, "acc": acc, "acc_tail": tail, "acc_head": acc + 10, "acc_medium": acc,
                "device": "cpu"}]
    if val_shift is not None:
        history[0].update(val_acc=acc + val_shift, val_acc_head=acc + 10 + val_shift, val_acc_medium=acc + val_shift,
                          val_acc_tail=tail + val_shift)
    suffix = f":t{teacher_seed}" if teacher_seed is not None else ""
    if stage == "search":
        suffix += ":" + repr(sorted(hp.items()))
    return TrialRecord(
        sweep=sweep, trial_id=f"{stage}/{cell}/seed{seed}{suffix}",
        stage=stage, cell=cell, config=config, history=history, status=status, wall_seconds=1.0, device="cpu",
        code_version="test", selection=selection, teacher_seed=teacher_seed, search_trials=trials,
        objective_metric=objective, study=f"{sweep}:{cell}" if stage == "search" else None,
        optuna_trial=0 if stage == "search" else None)


def standard_records(**kwargs) -> list[TrialRecord]:
    """Teachers, the student alone, KD, DKD and LTKD over SEEDS; DKD also ran seed 5 and LTKD seed 6
    (unpaired runs: in the means, not in the paired test)."""
    records = [make_record("teacher", 0)]
    for seed in SEEDS:
        for method in ("ce", "kd", "dkd", "ltkd"):
            trials = 0 if method == "ce" else kwargs.get("trials", 4)
            records.append(make_record(method, seed, **{**kwargs, "trials": trials}))
    records.append(make_record("dkd", 5, **{k: v for k, v in kwargs.items() if k != "trials"}))
    records.append(make_record("ltkd", 6, **{k: v for k, v in kwargs.items() if k != "trials"}))
    return records


def build(tmp_path, records, name="sweep"):
    folder = tmp_path / name
    for record in records:
        write_trial(str(folder), record)
    return main_table(read_results([str(folder)]))


def raw(records, method: str, metric: str) -> dict[tuple, float]:
    """(seed, teacher seed) -> the metric, straight from the records (no store, no tables code)."""
    out = {}
    for r in records:
        if r.stage == "final" and r.config["method"] == method and r.config["role"] == "student":
            out[(r.config["seed"], r.teacher_seed)] = r.history[-1][metric]
    return out


def col(table, metric: str) -> int:
    return next(j for j, c in enumerate(table.columns) if c.metric == metric)


def row(table, key: str) -> int:
    return table.row_keys.index(key)


# ------------------------------------------------------------------------------ intervals


def test_confidence_intervals_match_scipy(tmp_path):
    records = standard_records()
    table = build(tmp_path, records)
    checked = 0
    for key in ("ce", "kd", "dkd", "ltkd"):
        for metric in ("acc", "acc_tail"):
            values = list(raw(records, key, metric).values())
            n = len(values)
            mean = statistics.mean(values)
            sem = statistics.stdev(values) / math.sqrt(n)
            low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
            cell = table.cells[row(table, key)][col(table, metric)]
            assert cell.n == n and cell.mean == pytest.approx(mean)
            assert cell.ci == pytest.approx((low, high), rel=1e-9), (key, metric)
            # a normal-quantile interval would be narrower: the t quantile with n - 1 df is used
            assert high - low > 2 * 1.96 * sem
            checked += 1
    assert checked == 8
    # the CSV carries the same interval
    lines = list(csv.DictReader(io.StringIO(to_csv(table))))
    line = next(r for r in lines if r["row_key"] == "dkd" and r["metric"] == "acc_tail")
    values = list(raw(records, "dkd", "acc_tail").values())
    low, high = stats.t.interval(0.95, len(values) - 1, loc=statistics.mean(values),
                                 scale=statistics.stdev(values) / math.sqrt(len(values)))
    assert float(line["ci_low"]) == pytest.approx(low, abs=1e-5)
    assert float(line["ci_high"]) == pytest.approx(high, abs=1e-5)
    assert line["n"] == "6" and line["ci_note"] == ""
    # and the HTML shows it under the cell
    assert f"95% CI [{low:.2f}, {high:.2f}]" in to_html(table)


def test_one_seed_gives_no_interval(tmp_path):
    records = [make_record("teacher", 0)] + [make_record(m, 0) for m in ("ce", "kd", "ltkd")]
    table = build(tmp_path, records)
    for i, kind in enumerate(table.kinds):
        for cell in table.cells[i]:
            assert cell.ci is None and cell.std is None
            if kind != "gain":
                assert cell.n == 1
    html = to_html(table)
    assert "n = 1: no interval" in html and "95% CI" not in html
    body = html.split("<tbody>")[1]
    assert "±" not in body  # no spread anywhere, not even a zero one
    lines = list(csv.DictReader(io.StringIO(to_csv(table))))
    cells = [r for r in lines if r["row_kind"] != "gain"]
    assert cells and all(r["ci_low"] == r["ci_high"] == r["std"] == "" for r in cells)
    assert all(r["ci_note"] == "n = 1: no interval" for r in cells)
    assert "from one seed shows its mean alone: no spread and no interval" in table.caption
    # one pair: no paired test either, and the gain is not shown as significant
    gain = table.cells[row(table, "gain")][0]
    assert gain.p_value is None and gain.n_pairs == 1
    gains = [r for r in lines if r["row_kind"] == "gain"]
    assert gains and all(r["significant"] == "no test" and r["p_value"] == "" for r in gains)
    markdown = to_markdown(table)
    assert "† (no test)" in markdown and "No test (one pair): fewer than two pairs" in table.caption


# ------------------------------------------------------------------------------ paired test


def test_gain_row_paired_test_matches_scipy(tmp_path):
    records = standard_records()
    table = build(tmp_path, records)
    gain_row = table.cells[row(table, "gain")]
    lines = list(csv.DictReader(io.StringIO(to_csv(table))))
    markdown = to_markdown(table)
    gain_line = next(line for line in markdown.splitlines() if line.startswith("| Δ"))
    raw_p = {}
    for metric in ("acc_tail", "acc"):
        ours, theirs = raw(records, "ltkd", metric), raw(records, "dkd", metric)
        common = sorted(set(ours) & set(theirs))
        raw_p[metric] = float(stats.ttest_rel([ours[k] for k in common], [theirs[k] for k in common]).pvalue)
    low_metric, high_metric = sorted(raw_p, key=raw_p.get)
    holm_by_hand = {low_metric: min(1.0, 2 * raw_p[low_metric])}
    holm_by_hand[high_metric] = max(holm_by_hand[low_metric], raw_p[high_metric])
    for metric in ("acc_tail", "acc"):
        j = col(table, metric)
        means = {key: statistics.mean(raw(records, key, metric).values()) for key in ("ce", "kd", "dkd")}
        best = max(means, key=means.get)
        assert best == "dkd"
        ours, theirs = raw(records, "ltkd", metric), raw(records, best, metric)
        common = sorted(set(ours) & set(theirs))
        assert [k[0] for k in common] == list(SEEDS)  # DKD's seed 5 and LTKD's seed 6 have no partner
        expected = stats.ttest_rel([ours[k] for k in common], [theirs[k] for k in common])
        gain = gain_row[j]
        assert gain.mean == pytest.approx(statistics.mean(ours.values()) - means[best])
        assert gain.compared_to == "dkd" and gain.n_pairs == len(SEEDS)
        assert gain.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)
        # two tested gains in the table: Holm multiplies the smaller p by 2, the larger by 1 (then monotone)
        assert gain.p_holm == pytest.approx(holm_by_hand[metric], rel=1e-9)
        # pairing matters here: an unpaired test on the same runs gives another p-value
        unpaired = stats.ttest_ind(list(ours.values()), list(theirs.values()))
        assert abs(float(unpaired.pvalue) - gain.p_value) > 0.05
        differences = [ours[k] - theirs[k] for k in common]
        low, high = stats.t.interval(0.95, len(common) - 1, loc=statistics.mean(differences),
                                     scale=stats.sem(differences))
        assert gain.ci == pytest.approx((low, high), rel=1e-9)
        line = next(r for r in lines if r["row_kind"] == "gain" and r["metric"] == metric)
        assert float(line["p_value"]) == pytest.approx(float(expected.pvalue), rel=1e-5)
        assert float(line["p_holm"]) == pytest.approx(holm_by_hand[metric], rel=1e-5)
        assert line["compared_to"] == "dkd" and line["compared_on"] == "validation"
        assert line["n_pairs"] == str(len(SEEDS))
        significant = holm_by_hand[metric] < 0.05
        assert line["significant"] == ("yes" if significant else "no")
        assert gain.significant is significant
        p = holm_by_hand[metric]
        p_shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"  # the caption says the shown p is Holm's
        mark = "" if significant else "†"
        assert f"{gain.mean:+.2f}{mark} ({p_shown})" in gain_line, (metric, gain_line)
    # this data: the tail gain is consistent across seeds, the overall gain is noise
    assert gain_row[col(table, "acc_tail")].significant is True
    assert gain_row[col(table, "acc")].significant is False
    assert "†: not significant at 0.05 after Holm" in table.caption
    assert "paired t-test" in table.caption and "Holm-adjusted over the 2 tested Δ comparisons" in table.caption
    assert "highest mean validation accuracy (val_acc)" in table.caption
    tex = to_latex(table)
    assert r"$^\dagger$" in tex and "p = " in tex


def test_pairs_are_seed_and_teacher_seed(tmp_path):
    """Two teachers per student seed: six pairs (seed, teacher seed), not three averaged seeds."""
    records = [make_record("teacher", t) for t in (0, 1)]
    effect = {0: -2.0, 1: 1.5}
    for seed in (0, 1, 2):
        for teacher in (0, 1):
            for method, base in (("kd", 40.0), ("ltkd", 42.0)):
                noise = 0.7 * math.sin(3 * seed + 5 * teacher + (1 if method == "ltkd" else 0))
                tail = base + effect[teacher] + seed + noise
                records.append(make_record(method, seed, teacher_seed=teacher, values=(tail + 10, tail)))
    table = build(tmp_path, records)
    gain = table.cells[row(table, "gain")][col(table, "acc_tail")]
    ours, theirs = raw(records, "ltkd", "acc_tail"), raw(records, "kd", "acc_tail")
    keys = sorted(ours)
    assert len(keys) == 6 and gain.n_pairs == 6
    expected = stats.ttest_rel([ours[k] for k in keys], [theirs[k] for k in keys])
    assert gain.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)
    by_seed = stats.ttest_rel([statistics.mean(ours[(s, t)] for t in (0, 1)) for s in (0, 1, 2)],
                              [statistics.mean(theirs[(s, t)] for t in (0, 1)) for s in (0, 1, 2)])
    assert gain.p_value != pytest.approx(float(by_seed.pvalue), rel=1e-3)
    assert "teacher seeds 0, 1 (each student seed its own teacher: the spread includes the teacher's)" in table.caption


def test_student_alone_pairs_by_seed(tmp_path):
    """The CE student has no teacher: LTKD pairs with it by seed."""
    records = [make_record("teacher", 0)]
    for seed in SEEDS:
        records.append(make_record("ce", seed, values=(60.0 + SEED_EFFECT[seed], 50.0 + SEED_EFFECT[seed])))
        records.append(make_record("ltkd", seed, values=(59.0 + SEED_EFFECT[seed] + 0.5 * (seed % 2),
                                                         51.0 + SEED_EFFECT[seed] + 0.3 * (seed % 3))))
    table = build(tmp_path, records)
    gain = table.cells[row(table, "gain")][col(table, "acc_tail")]
    assert gain.compared_to == "ce" and gain.n_pairs == len(SEEDS)
    ours = {r.config["seed"]: r.history[-1]["acc_tail"] for r in records if r.config["method"] == "ltkd"}
    theirs = {r.config["seed"]: r.history[-1]["acc_tail"] for r in records
              if r.config["method"] == "ce" and r.config["role"] == "student"}
    expected = stats.ttest_rel([ours[s] for s in SEEDS], [theirs[s] for s in SEEDS])
    assert gain.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)


# ------------------------------------------------------------------------------ captions


def test_caption_validation_selection(tmp_path):
    records = standard_records()
    records += [make_record("ltkd", 7, stage="search", hparams={"alpha": a}) for a in (0.5, 2.0)]
    table = build(tmp_path, records)
    caption = table.caption
    assert "Hyperparameters selected on the validation split (searches maximised val_acc" in caption
    assert "10 images per class held out" in caption
    assert "test set, the paper's protocol" not in caption and "Mixed selection" not in caption
    assert "no selection on the test set" not in caption
    # planned: the finals' search_trials (4 per cell); completed: LTKD's two search records of 1 epoch each
    assert ("Search trials per method, completed/planned (the best is chosen among completed ones): "
            "KD 0/4 (0 search epochs); DKD 0/4 (0 search epochs); LTKD 2/4 (2 search epochs); "
            "at their defaults (no search): Student.") in caption
    assert "ASHA" not in caption and "Unequal search budgets" not in caption
    assert "Student seeds 0, 1, 2, 3, 4, 5, 6, teacher seed 0 (one teacher: the spread is student-seed noise only)" \
        in caption
    assert "data seed 0 (the long-tailed draw)" in caption
    assert "search trials used seed 7, none of them reported" in caption
    assert "Accuracy at each run's last epoch." in caption
    assert "chosen_hparams" in caption and "best_config.json" in caption


def test_caption_test_selection_says_so(tmp_path):
    records = standard_records(selection="test", objective="acc")
    records.append(make_record("ltkd", 0, stage="search", selection="test", objective="acc", hparams={"alpha": 3.0}))
    table = build(tmp_path, records)
    caption = table.caption
    assert "Hyperparameters selected on the test set, the paper's protocol (searches maximised acc)" in caption
    assert "validation split" not in caption
    assert "seed 0 is also reported here (not fresh)" in caption
    for text in (to_markdown(table), to_html(table), to_latex(table)):
        assert "the paper" in text and "test set" in text


def test_caption_mixed_selection_names_the_methods(tmp_path):
    records = [make_record("teacher", 0)]
    for seed in (0, 1, 2):
        records.append(make_record("kd", seed, selection="test", objective="acc"))
        records.append(make_record("ltkd", seed, selection="val", objective="val_acc"))
    table = build(tmp_path, records)
    assert "Mixed selection" in table.caption
    assert "LTKD selected on the validation split" in table.caption
    assert "KD on the test set (the paper's protocol)" in table.caption


def test_caption_without_search(tmp_path):
    records = [make_record("teacher", 0)] + [make_record(m, s, trials=0) for m in ("ce", "kd", "ltkd") for s in (0, 1)]
    table = build(tmp_path, records)
    assert "No hyperparameter search: every method ran at fixed hyperparameters." in table.caption
    assert "selected on" not in table.caption
    assert "Student defaults, KD defaults, LTKD defaults" in table.caption


def test_caption_of_unrecorded_protocol(tmp_path):
    records = [make_record("teacher", 0)] + [make_record(m, s, selection=None, objective=None, trials=None,
                                                         teacher_seed=None) for m in ("kd", "ltkd") for s in (0, 1)]
    table = build(tmp_path, records)
    assert "KD, LTKD: how the hyperparameters were chosen is not recorded" in table.caption
    assert "teacher seeds not recorded" in table.caption
    assert "selected on the validation split" not in table.caption
    assert "selected on the test set" not in table.caption


def test_best_epoch_caption_keeps_its_warning(tmp_path):
    folder = tmp_path / "s"
    for record in standard_records():
        write_trial(str(folder), record)
    table = main_table(read_results([str(folder)]), select="best-epoch")
    assert "test-selected" in table.caption and "selected on the validation split" in table.caption


def test_statistics_module_edge_cases():
    from results.statistics import paired_test, summary

    assert summary([]).mean is None and summary([None, float("nan")]).n == 0
    one = summary([3.0])
    assert one.n == 1 and one.std is None and one.ci is None
    assert paired_test({(0,): 1.0}, {(1,): 2.0}).p_value is None  # no common pair
    same = paired_test({(0,): 1.0, (1,): 2.0}, {(0,): 1.0, (1,): 2.0})
    assert same.p_value is None and same.significant is None
    a, b = [70.1, 71.3, 69.8, 72.0], [69.0, 70.9, 69.9, 70.2]
    test = paired_test(dict(enumerate(a)), dict(enumerate(b)))
    assert test.p_value == pytest.approx(float(stats.ttest_rel(a, b).pvalue), rel=1e-12)
    assert re.fullmatch(r"\d\.\d+", f"{test.p_value:.3f}")
