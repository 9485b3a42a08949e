"""The comparison protocol of a sweep (issue 13), tested on its plan: no Ray, no training.

What a search reads (validation, never test, with selection = "val"), fresh seeds for finals,
teacher pairing, equal budgets, bad input to the new keys, and a sweep.json that plans the same
runs when read back.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.cli import main as ltkd_main
from orchestrator.layout import SWEEP_FILE
from orchestrator.plan import cells, final_runs, search_run, sweep_dir, teacher_run, teacher_runs
from orchestrator.studies import HPARAMS_ATTR, CellSearch, MissingObjectiveError, trial_value
from orchestrator.sweep_config import ConfigError, SearchEntry, parse_config
from tests.sweep_helpers import LTKD

optuna.logging.set_verbosity(optuna.logging.WARNING)
EPOCHS = 3


def config_dict(storage: Path, **overrides) -> dict:
    values = {
        "name": "proto", "storage": str(storage), "seeds": [0, 1, 2], "teacher_epochs": 2, "student_epochs": EPOCHS,
        "datasets": [{"name": "digits", "imbalance_factors": [10, 100]}],
        "pairs": [{"teacher": "resnet8", "student": "resnet8"}],
        "methods": [{"method": "ce"}, {"method": "kd"}, {"method": "ltkd", "search": {"n_trials": 4}}],
    }
    values.update(overrides)
    return values


def make(tmp_path: Path, **overrides):
    return parse_config(config_dict(tmp_path / "store", **overrides))


def cell_of(config, label: str, factor: float = 100.0):
    return next(c for c in cells(config) if c.entry.label == label and c.setting.imbalance_factor == factor)


# ------------------------------------------------------------------------------------ what a search reads


def write_history(run, val: list[float], test: list[float]) -> None:
    """A finished run's metrics.jsonl, its validation and test accuracies deliberately different."""
    rows = [{"epoch": e + 1, "epochs": len(val), "acc": t, "acc_head": t, "acc_medium": t, "acc_tail": t,
             "val_acc": v, "val_acc_head": v, "val_acc_medium": v, "val_acc_tail": v}
            for e, (v, t) in enumerate(zip(val, test))]
    (run.run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def one_search(config):
    return CellSearch(config, cell_of(config, "ltkd"), optuna.storages.InMemoryStorage())


@pytest.mark.parametrize("selection,objective,metric", [
    ("val", "acc", "val_acc"), ("val", "acc_tail", "val_acc_tail"), ("test", "acc", "acc"), ("test", "acc_head", "acc_head"),
])
def test_the_objective_metric_follows_the_selection(tmp_path, selection, objective, metric):
    datasets = [{"name": "digits", "imbalance_factors": [100], "validation_per_class": 0 if selection == "test" else 10}]
    config = make(tmp_path, selection=selection, objective=objective, datasets=datasets)
    assert config.objective_metric == metric
    assert one_search(config).objective == metric
    [run] = final_runs(config, {})[:1]
    trial = run.trial_config(config)
    assert trial["objective_metric"] == metric and trial["selection"] == selection


@pytest.mark.parametrize("selection", ["val", "test"])
def test_a_search_tells_optuna_the_selected_split_never_the_other(tmp_path, selection):
    """val: the validation accuracy of the run's last epoch reaches Optuna; test: the test accuracy."""
    config = make(tmp_path, selection=selection)
    search = one_search(config)
    run = search.next_run()
    assert run.stage == "search" and run.optuna_trial == 0
    run.run_dir.local_path.mkdir(parents=True)
    write_history(run, val=[20.0, 30.0, 41.0], test=[50.0, 60.0, 77.0])
    # Tune's last result holds other numbers still: the value comes from the run's own history.
    reported = {"epoch": EPOCHS, "epochs": EPOCHS, "acc": 99.0, "val_acc": 98.0}
    assert search.finish(run.optuna_trial, reported, False, run) == "completed"
    [trial] = search.study.trials
    assert trial.value == (41.0 if selection == "val" else 77.0)
    assert search.best_hparams() == trial.user_attrs[HPARAMS_ATTR]


def test_a_resumed_search_tells_the_validation_value_of_a_trial_finished_meanwhile(tmp_path):
    config = make(tmp_path)
    storage = optuna.storages.InMemoryStorage()
    first = CellSearch(config, cell_of(config, "ltkd"), storage)
    run = first.next_run()  # asked and launched, then the driver died; the run finished without it
    run.run_dir.local_path.mkdir(parents=True)
    write_history(run, val=[10.0, 11.0, 12.5], test=[70.0, 80.0, 90.0])
    again = CellSearch(config, cell_of(config, "ltkd"), storage)
    [(told, outcome)] = again.reconcile()
    assert told.run_dir == run.run_dir and outcome["acc"] == 90.0
    [trial] = again.study.trials
    assert trial.state == TrialState.COMPLETE and trial.value == 12.5


def test_a_run_without_the_validation_metric_is_never_scored_by_a_test_metric(tmp_path):
    config = make(tmp_path)
    with pytest.raises(MissingObjectiveError, match="'val_acc' is missing"):
        trial_value({"epoch": 3, "acc": 80.0, "val_acc": None}, config.objective_metric)
    search = one_search(config)
    run = search.next_run()
    run.run_dir.local_path.mkdir(parents=True)
    (run.run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "epochs": EPOCHS, "acc": 80.0}) + "\n" for e in range(1, EPOCHS + 1)))
    assert search.finish(run.optuna_trial, {"epoch": EPOCHS, "acc": 80.0}, False, run) == "errored"
    [trial] = search.study.trials
    assert trial.state == TrialState.FAIL and trial.value is None


def test_tune_reads_the_selected_metric(tmp_path):
    """Ray's side: the searcher's per-epoch reports and the progress view's best read objective_metric."""
    pytest.importorskip("ray")
    from orchestrator.plan import cell_final_runs
    from orchestrator.tune_glue import Progress, SweepSearcher

    config = make(tmp_path)
    search = one_search(config)
    searcher = SweepSearcher(config, [], set(), [search.cell], [search], teachers_of=lambda cell: set(),
                             final_runs=lambda cell, chosen: cell_final_runs(config, cell, chosen))
    assert searcher.metric == "val_acc"
    suggested = searcher.suggest("tune-1")
    searcher.on_trial_result("tune-1", {"epoch": 1, "acc": 90.0, "val_acc": 15.0})
    assert search.study.trials[0].intermediate_values == {1: 15.0}

    class Trial:
        trial_id = "tune-1"
        config = suggested

    lines = []
    stream = type("S", (), {"write": lambda self, text: lines.append(text), "flush": lambda self: None,
                            "isatty": lambda self: False})()
    progress = Progress("search", 1, config.objective_metric, stream=stream)
    progress.on_trial_start(0, [], Trial)
    progress.on_trial_result(0, [], Trial, {"epoch": EPOCHS, "epochs": EPOCHS, "acc": 90.0, "val_acc": 33.0})
    progress.on_trial_complete(0, [], Trial)
    assert "(val_acc 33.00, best so far 33.00)" in "".join(lines)


def test_asha_stops_on_the_selected_metric(tmp_path):
    pytest.importorskip("ray")
    from ray.tune.search import ConcurrencyLimiter

    from orchestrator.plan import cell_final_runs
    from orchestrator.sweep import tune_config
    from orchestrator.tune_glue import SearchTrialsASHA, SweepScheduler, SweepSearcher

    config = make(tmp_path)
    search = one_search(config)
    searcher = SweepSearcher(config, [], set(), [search.cell], [search], teachers_of=lambda cell: set(),
                             final_runs=lambda cell, chosen: cell_final_runs(config, cell, chosen))
    asha = SearchTrialsASHA(time_attr="epoch", max_t=EPOCHS)
    settings = tune_config(config, 1, searcher, 3, asha)
    assert settings.metric == "val_acc" and settings.mode == "max" and settings.scheduler is asha
    # Every trial handed over only when one of the 3 slots is free; a finished trial's worker takes the next.
    assert isinstance(settings.search_alg, ConcurrencyLimiter) and settings.search_alg.searcher is searcher
    assert settings.search_alg.max_concurrent == 3 and settings.reuse_actors
    without = tune_config(config, 1, searcher, 3)  # no ASHA: every trial to its end, no metric to schedule on
    assert isinstance(without.scheduler, SweepScheduler) and without.metric is None and without.mode is None


# ------------------------------------------------------------------------------------ seeds and teachers


def test_finals_never_share_a_run_folder_with_a_search_trial(tmp_path):
    config = make(tmp_path)
    assert config.search_seed_list == [3]  # default: one seed no final uses
    ltkd = cell_of(config, "ltkd")
    chosen = {"alpha": 1.5, "beta": 2.0, "temperature": 4.0, "n_groups": 3}
    searched = {search_run(config, ltkd, chosen, "study", n).run_dir for n in range(4)}
    finals = final_runs(config, {ltkd.key: chosen})
    assert len(finals) == len(cells(config)) * 3 and {r.stage for r in finals} == {"final"}
    assert sorted({r.run.seed for r in finals}) == [0, 1, 2]
    assert {r.run_dir for r in finals}.isdisjoint(searched)
    # The same hyperparameters at the same seed would be the same folder: the seeds keep them apart.
    assert search_run(config, ltkd, chosen, "study", 0).run.seed == 3
    explicit = make(tmp_path, search_seeds=[9])
    assert {search_run(explicit, cell_of(explicit, "ltkd"), chosen, "s", 0).run.seed} == {9}


@pytest.mark.parametrize("teacher_seeds,expected", [
    ([0], {0: 0, 1: 0, 2: 0}), ([7], {0: 7, 1: 7, 2: 7}),
    ([0, 1, 2], {0: 0, 1: 1, 2: 2}), ([2, 0, 1], {0: 0, 1: 1, 2: 2}),
])
def test_teacher_pairing(tmp_path, teacher_seeds, expected):
    config = make(tmp_path, teacher_seeds=teacher_seeds)
    teachers = teacher_runs(config)
    assert sorted({t.run.seed for t in teachers}) == sorted(teacher_seeds)
    assert len(teachers) == 2 * len(teacher_seeds)  # per imbalance factor (one teacher architecture)
    by_dir = {t.run_dir: t.run.seed for t in teachers}
    for run in final_runs(config, {}):
        if run.run.method == "ce":
            assert run.teacher_dir is None and run.teacher_seed is None
            continue
        assert run.teacher_seed == expected[run.run.seed] == by_dir[run.teacher_dir]
        assert run.run.teacher == str(run.teacher_dir)
    # Search trials distil from the first teacher seed.
    trial = search_run(config, cell_of(config, "ltkd"), {}, "s", 0)
    assert trial.teacher_seed == teacher_seeds[0] == by_dir[trial.teacher_dir]


def test_teacher_seeds_default_to_the_seeds(tmp_path):
    """Each student seed distils from its own teacher unless the config names one teacher seed."""
    config = make(tmp_path, seeds=[4, 5, 6])
    assert config.teacher_seeds == [4, 5, 6]
    assert {r.run.seed: r.teacher_seed for r in final_runs(config, {}) if r.run.method != "ce"} == {4: 4, 5: 5, 6: 6}
    assert json.loads(config.to_json())["teacher_seeds"] == [4, 5, 6]  # sweep.json states it
    assert make(tmp_path, teacher_seeds=[0]).teacher_seeds == [0]
    from orchestrator.sweep_cli import config_path, packaged_configs
    from orchestrator.sweep_config import load_config

    for name in ["quickstart", *packaged_configs()]:  # the quickstart and the paper's tables use the default
        shipped = load_config(config_path(None if name == "quickstart" else name))
        assert shipped.teacher_seeds == shipped.seeds, name


def test_teacher_and_student_share_the_validation_split(tmp_path):
    config = make(tmp_path, datasets=[{"name": "digits", "imbalance_factors": [10], "validation_per_class": 7},
                                      {"name": "cifar100", "root": str(tmp_path), "imbalance_factors": [100]}])
    for run in [*teacher_runs(config), *final_runs(config, {})]:
        want = 7 if run.run.dataset == "digits" else 50
        assert run.run.validation_per_class == want and run.run.resolved().validation_per_class == want
    paper = make(tmp_path, selection="test")
    assert {r.run.validation_per_class for r in [*teacher_runs(paper), *final_runs(paper, {})]} == {0}
    # A different split is a different teacher: students never validate on their teacher's training images.
    setting = cell_of(config, "kd", 10.0).setting
    assert teacher_run(config, setting, 0).run_dir != teacher_run(paper, cell_of(paper, "kd", 10.0).setting, 0).run_dir


def test_planned_runs_carry_the_protocol_keys(tmp_path):
    config = make(tmp_path)
    teacher = teacher_runs(config)[0].trial_config(config)
    assert (teacher["teacher_seed"], teacher["search_trials"], teacher["selection"]) == (None, 0, "val")
    chosen = {cell.key: {"temperature": 3.0} for cell in cells(config) if cell.entry.search is not None}
    finals = {(r.run.method, r.run.seed): r.trial_config(config) for r in final_runs(config, chosen)}
    # teacher_seeds defaults to seeds: student seed 1 distils from teacher seed 1
    assert finals[("ltkd", 1)]["search_trials"] == 4 and finals[("ltkd", 1)]["teacher_seed"] == 1
    assert finals[("kd", 1)]["search_trials"] == 4  # equal budgets
    assert finals[("ce", 1)]["search_trials"] == 0 and finals[("ce", 1)]["teacher_seed"] is None
    assert {t["objective_metric"] for t in finals.values()} == {"val_acc"}


def test_test_every_the_cache_dtype_and_the_checkpoint_interval_reach_every_planned_run_but_not_its_identity(tmp_path):
    config = make(tmp_path, test_every=5, teacher_cache_dtype="float16", checkpoint_every_seconds=30)
    chosen = {cell.key: {"temperature": 3.0} for cell in cells(config) if cell.entry.search is not None}
    planned = [*teacher_runs(config), search_run(config, cell_of(config, "ltkd"), {}, None, None),
               *final_runs(config, chosen)]
    assert {(r.run.test_every, r.run.teacher_cache_dtype, r.run.checkpoint_every_seconds)
            for r in planned} == {(5, "float16", 30)}
    assert {(r.resolved.test_every, r.resolved.teacher_cache_dtype, r.resolved.checkpoint_every_seconds)
            for r in planned} == {(5, "float16", 30)}
    # neither changes what a run computes: the same run folders as with the defaults
    default = make(tmp_path)
    assert [r.run_dir for r in teacher_runs(config)] == [r.run_dir for r in teacher_runs(default)]
    assert [r.run_dir for r in final_runs(config, chosen)] == [r.run_dir for r in final_runs(default, chosen)]
    # the paper's protocol reads the test metric every epoch: there it stays 1
    assert make(tmp_path, selection="test", test_every=1).test_every == 1


def test_a_search_that_chose_nothing_is_recorded_as_defaults(tmp_path):
    """No trial of a cell completed: its finals run at the defaults and never claim a selection."""
    config = make(tmp_path)
    finals = {(r.run.method, r.run.seed): r for r in final_runs(config, {})}
    assert finals[("ltkd", 0)].trial_config(config)["search_trials"] == 0
    assert finals[("ltkd", 0)].run.hparams == {}  # the method's defaults


# ------------------------------------------------------------------------------------ equal budgets


def test_search_baselines_gives_every_searchable_method_the_same_budget(tmp_path):
    config = make(tmp_path, methods=[
        {"method": "ce"}, {"method": "kd"}, {"method": "dkd", "search": False},
        {"method": "ltkd", "search": {"n_trials": 4}}, {"method": "ltkd", "name": "ltkd_wide", "search": {"n_trials": 6}},
        {"method": "ltkd", "name": "ltkd_no_rebalance", "hparams": {"rebalance": False, "alpha": 2.0}},
    ])
    searches = {c.entry.label: c.entry.search for c in cells(config) if c.setting.imbalance_factor == 100}
    assert searches["ce"] is None  # no search space: the student alone
    assert searches["kd"] == SearchEntry(n_trials=6)  # the searched entries' budget (the largest)
    assert searches["dkd"] is None  # search = false: its defaults
    assert searches["ltkd"].n_trials == 4 and searches["ltkd_wide"].n_trials == 6
    # An ablation searched for equal budgets keeps its own fixed hyperparameters.
    ablation = searches["ltkd_no_rebalance"]
    assert ablation.n_trials == 6 and ablation.space == {"rebalance": False, "alpha": 2.0}
    search = CellSearch(config, cell_of(config, "ltkd_no_rebalance"), optuna.storages.InMemoryStorage())
    hparams = search.next_run().run.hparams
    assert hparams["rebalance"] is False and hparams["alpha"] == 2.0 and "beta" in hparams
    # The config keeps what was written: absent stays absent, false stays false.
    assert [m.search for m in config.methods][:3] == [None, None, False]


@pytest.mark.parametrize("search_baselines", [True, False])
def test_search_true_gets_the_budget_of_the_other_searches(tmp_path, search_baselines):
    config = make(tmp_path, search_baselines=search_baselines, methods=[
        {"method": "ce"}, {"method": "kd", "search": True}, {"method": "ltkd", "search": {"n_trials": 5}}])
    budgets = {c.entry.label: c.entry.search.n_trials for c in cells(config) if c.entry.search is not None}
    assert budgets == {"kd": 5, "ltkd": 5}
    assert config.budget_warning() is None
    assert json.loads(config.to_json())["methods"][1]["search"] is True  # sweep.json keeps what was written


def test_plan_warns_about_unequal_search_budgets(tmp_path, capsys):
    from orchestrator.cli import main as ltkd_main

    config = config_dict(tmp_path / "store", methods=[
        {"method": "ce"}, {"method": "kd", "search": {"n_trials": 2}}, {"method": "ltkd", "search": {"n_trials": 5}}])
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(config))
    assert ltkd_main(["plan", str(path), "--no-estimate"]) == 0
    out = capsys.readouterr().out
    assert "warning: the searches have different budgets (kd 2, ltkd 5 trials)" in out
    equal = config_dict(tmp_path / "store", methods=[{"method": "kd", "search": {"n_trials": 5}},
                                                     {"method": "ltkd", "search": {"n_trials": 5}}])
    path.write_text(json.dumps(equal))
    assert ltkd_main(["plan", str(path), "--no-estimate"]) == 0
    assert "different budgets" not in capsys.readouterr().out


def test_without_search_baselines_baselines_run_at_their_defaults(tmp_path):
    config = make(tmp_path, search_baselines=False)
    searched = {c.entry.label for c in cells(config) if c.entry.search is not None}
    assert searched == {"ltkd"}
    nothing_searched = make(tmp_path, methods=[{"method": "ce"}, {"method": "kd"}])
    assert all(c.entry.search is None for c in cells(nothing_searched))


def test_the_default_ltkd_space_keeps_three_groups_and_the_sum(tmp_path):
    config = make(tmp_path)
    search = one_search(config)
    for _ in range(3):
        hparams = search.next_run().run.hparams
        assert hparams["n_groups"] == 3 and "within_norm" not in hparams
    study = make(tmp_path, methods=[{"method": "ltkd", "search": {
        "n_trials": 8, "space": {"n_groups": {"choices": [3, 5, 10]}, "within_norm": {"choices": ["sum", "mean"]}}}}])
    group_search = CellSearch(study, cell_of(study, "ltkd"), optuna.storages.InMemoryStorage())
    drawn = [group_search.next_run().run.hparams for _ in range(8)]
    assert {h["n_groups"] for h in drawn} <= {3, 5, 10} and len({h["n_groups"] for h in drawn}) > 1
    assert {h["within_norm"] for h in drawn} <= {"sum", "mean"}


# ------------------------------------------------------------------------------------ bad input


def fails(capsys, path: Path, needle: str) -> None:
    code = ltkd_main(["sweep", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("ltkd: error: ") and needle in err[0], err


@pytest.mark.parametrize("change,needle", [
    ({"selection": "train"}, "selection must be val (searches maximise the validation split) or test"),
    ({"selection": ["val"]}, "selection must be a string, got list"),
    ({"search_seeds": [2]}, "search_seeds must not overlap seeds (a search trial is never reported as a final run): 2"),
    ({"search_seeds": [5, 6]}, "search_seeds must hold exactly one seed"),
    ({"search_seeds": []}, "search_seeds must be a non-empty list of distinct integers"),
    ({"search_seeds": 5}, "search_seeds must be a list, got 5"),
    ({"teacher_seeds": [0, 1]}, "teacher_seeds must be one seed (one teacher serves every student seed) or the same seeds"),
    ({"teacher_seeds": []}, "teacher_seeds must be a non-empty list"),
    ({"teacher_seeds": [0, 0]}, "teacher_seeds must be a non-empty list of distinct integers"),
    ({"search_baselines": "yes"}, "search_baselines must be true or false, got 'yes'"),
    ({"datasets": [{"name": "digits", "imbalance_factors": [100], "validation_per_class": 30}]},
     "datasets[0].validation_per_class 30 leaves the tail class no training image"),
    ({"datasets": [{"name": "digits", "imbalance_factors": [10], "validation_per_class": 124}]},
     "datasets[0].validation_per_class must be between 0 and 123 for digits"),
    ({"datasets": [{"name": "digits", "imbalance_factors": [10], "validation_per_class": -1}]},
     "datasets[0].validation_per_class must be between 0 and 123"),
    ({"datasets": [{"name": "digits", "imbalance_factors": [10], "validation_per_class": 2.5}]},
     "datasets[0].validation_per_class must be an integer, got 2.5"),
    ({"datasets": [{"name": "digits", "imbalance_factors": [10], "validation_per_class": 0}]},
     "datasets[0].validation_per_class must be >= 1 with selection = \"val\""),
    ({"methods": [{"method": "ltkd", "search": 3}]}, "methods[0].search must be a table/mapping or true or false, got 3"),
    ({"methods": [{"method": "ltkd", "hparams": {"within_norm": "max"}}]},
     "methods[0].hparams: ltkd: hyperparameter 'within_norm' must be one of sum, mean, got 'max'"),
    ({"selection": "test", "test_every": 5},
     "test_every = 5 with selection = \"test\": searches read the test metric every epoch; set test_every = 1, "
     "or use selection = \"val\""),
    ({"test_every": 0}, "test_every must be an integer >= 1"),
    ({"test_every": 2.5}, "test_every must be an integer, got 2.5"),
    ({"teacher_cache_dtype": "bfloat16"}, "teacher_cache_dtype must be one of float32, float16, got 'bfloat16'"),
])
def test_bad_protocol_keys_are_one_line_naming_the_key(capsys, tmp_path, change, needle):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config_dict(tmp_path / "store", **change)))
    fails(capsys, path, needle)
    assert not (tmp_path / "store").exists()


def test_bad_protocol_key_from_the_command_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config_dict(tmp_path / "store", search_seeds=[0])))
    result = subprocess.run([*LTKD, "sweep", str(path)], capture_output=True, text=True, timeout=300)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert err[0].startswith("ltkd: error: search_seeds must not overlap seeds")
    assert not (tmp_path / "store").exists()


def test_a_paper_protocol_config_needs_no_split(tmp_path):
    config = make(tmp_path, selection="test")
    assert config.objective_metric == "acc"
    assert {t.run.validation_per_class for t in teacher_runs(config)} == {0}
    held = make(tmp_path, selection="test", datasets=[{"name": "digits", "imbalance_factors": [10],
                                                        "validation_per_class": 10}])
    assert {t.run.validation_per_class for t in teacher_runs(held)} == {10}


# ------------------------------------------------------------------------------------ sweep.json


def plan(config) -> list:
    """Everything a sweep plans, as plain values (search trials for fixed hyperparameters)."""
    out = [(t.trial_id, t.run_dir.uri, t.trial_config(config)) for t in teacher_runs(config)]
    out += [(c.key, repr(c.entry)) for c in cells(config)]
    for c in cells(config):
        if c.entry.search is not None:
            r = search_run(config, c, {"ce_weight": 0.5}, c.study_name(config.name), 0)
            out.append((r.trial_id, r.run_dir.uri, r.trial_config(config)))
    out += [(r.trial_id, r.run_dir.uri, r.trial_config(config)) for r in final_runs(config, {})]
    return out


def test_sweep_json_plans_exactly_the_same_runs(tmp_path):
    from orchestrator.sweep import _write_sweep_file, load_sweep_folder

    config = make(tmp_path, teacher_seeds=[0, 1, 2], methods=[
        {"method": "ce"}, {"method": "kd"}, {"method": "dkd", "search": False}, {"method": "dist", "search": True},
        {"method": "ltkd", "search": {"n_trials": 4, "space": {"n_groups": {"choices": [3, 5]}}}},
    ], datasets=[{"name": "digits", "imbalance_factors": [10, 100], "validation_per_class": 12}])
    before = plan(config)
    _write_sweep_file(config)
    stored = json.loads((tmp_path / "store" / "proto" / SWEEP_FILE).read_text())
    assert [m["search"] for m in stored["methods"]][:3] == [None, None, False]
    again = load_sweep_folder(sweep_dir(config).uri)
    assert again.to_dict() == config.to_dict()
    assert plan(again) == before
    labels = {c.entry.label: c.entry.search for c in cells(again)}
    # search = true and no search key both get LTKD's explicit budget (not SearchEntry's default of 8)
    assert labels["dkd"] is None and labels["kd"].n_trials == 4 == labels["dist"].n_trials == labels["ltkd"].n_trials


def test_a_sweep_json_from_before_the_protocol_is_refused_in_one_line(tmp_path, capsys):
    folder = tmp_path / "store" / "old"
    folder.mkdir(parents=True)
    values = config_dict(tmp_path / "store", name="old")
    (folder / SWEEP_FILE).write_text(json.dumps(values))
    code = ltkd_main(["status", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "without the comparison protocol (no 'selection' key)" in err[0], err


def test_config_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="search_seeds must not overlap seeds"):
        make(tmp_path, seeds=[4, 5], search_seeds=[5])


# ------------------------------------------------------------------------------------ defaults no study backs


def test_ltkd_defaults_on_digits_are_the_studys_and_elsewhere_dkds():
    from trainables.config import RunConfig
    from trainables.methods.ltkd import DIGITS_STUDY

    def resolved(dataset: str) -> dict:
        return RunConfig(dataset=dataset, role="student", method="ltkd", arch="resnet8", teacher="/t",
                         teacher_arch="resnet20", validation_per_class=0).resolved().hparams
    assert {k: resolved("digits")[k] for k in DIGITS_STUDY} == DIGITS_STUDY
    assert (resolved("cifar100")["alpha"], resolved("cifar100")["beta"], resolved("cifar100")["temperature"]) == \
        (1.0, 8.0, 4.0)


def test_a_run_on_defaults_no_study_backs_is_warned_in_one_line(capsys):
    from orchestrator.train_cli import _warn_guessed_defaults
    from trainables.config import RunConfig

    def warned(**fields) -> str:
        _warn_guessed_defaults(RunConfig(role="student", arch="resnet8", teacher="/t", **fields))
        return capsys.readouterr().err
    err = warned(dataset="cifar100", method="ltkd")
    assert err.count("\n") == 1 and err.startswith("ltkd: warning: LTKD's defaults for alpha, beta, temperature, "
                                                   "warmup_epochs, ce_weight on cifar100 are guesses no study backs")
    assert warned(dataset="cifar100", method="ltkd", hparams={"beta": 2.0}).startswith(
        "ltkd: warning: LTKD's defaults for alpha, temperature, warmup_epochs, ce_weight on cifar100")
    assert warned(dataset="cifar100", method="ltkd", hparams={"alpha": 1.0, "beta": 2.0, "temperature": 4.0,
                                                              "warmup_epochs": 5, "ce_weight": 1.0}) == ""
    # the study backs alpha, beta and T on digits; not the warm-up or the CE weight
    assert warned(dataset="digits", method="ltkd").startswith(
        "ltkd: warning: LTKD's defaults for warmup_epochs, ce_weight on digits")
    assert warned(dataset="cifar100", method="kd") == ""  # KD's are published for CIFAR-100
    assert "(cifar100's, borrowed for tinyimagenet)" in warned(dataset="tinyimagenet", method="kd")


def test_a_sweep_warns_once_for_unsearched_guessed_defaults(tmp_path, capsys):
    from orchestrator.sweep import _warn_guessed_defaults

    config = make(tmp_path, datasets=[{"name": "cifar100", "imbalance_factors": [10, 100]}],
                  pairs=[{"teacher": "resnet32x4", "student": "resnet8x4"}],
                  methods=[{"method": "ltkd", "search": {"n_trials": 2}},
                           {"method": "ltkd", "name": "ltkd_fixed", "search": False}])
    _warn_guessed_defaults(config)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["warning: ltkd_fixed: LTKD's defaults for alpha, beta, temperature, warmup_epochs, ce_weight on "
                     "cifar100 are guesses no study backs (DKD's values, since the paper's were lost (on digits beta "
                     "8 was the worst of a study); DKD's warm-up, the paper gives none; DKD's CE weight, the paper "
                     "gives none); search them or set them"]


# ------------------------------------------------------------------------------------ one Tune run for every stage


def test_the_sweep_searcher_hands_out_stages_as_their_inputs_are_ready(tmp_path):
    """Teachers first; a cell's search once its teacher finished; its finals once its search ended;
    a cell without a search at once after its teacher; nothing of a cell whose teacher failed."""
    pytest.importorskip("ray")
    from ray.tune.search import Searcher

    from orchestrator.plan import cell_final_runs, cell_teachers
    from orchestrator.tune_glue import SweepSearcher

    config = make(tmp_path, datasets=[{"name": "digits", "imbalance_factors": [10, 100]}], seeds=[0],
                  methods=[{"method": "ce"}, {"method": "ltkd", "search": {"n_trials": 2}}])
    storage = optuna.storages.InMemoryStorage()
    all_cells = cells(config)
    searches = [CellSearch(config, cell, storage) for cell in all_cells if cell.entry.search is not None]
    teachers = teacher_runs(config)
    by_factor = {run.run.imbalance_factor: run for run in teachers}
    searcher = SweepSearcher(config, teachers, set(), all_cells, searches,
                             teachers_of=lambda cell: cell_teachers(config, cell),
                             final_runs=lambda cell, chosen: cell_final_runs(config, cell, chosen))
    counter = iter(range(1000))

    def ask():
        trial_id = f"t{next(counter)}"
        suggested = searcher.suggest(trial_id)
        if suggested in (None, Searcher.FINISHED):
            return trial_id, suggested
        return trial_id, suggested["trial"]

    def complete(trial_id, spec, value=50.0, error=False):
        run_dir = Path(spec["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        epochs = spec["run"]["epochs"]
        (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": epochs, "epochs": epochs, "val_acc": value}) + "\n")
        searcher.on_trial_complete(trial_id, None if error else {"epoch": epochs, "val_acc": value}, error=error)

    # The two teachers come first; the CE cells need no teacher, so their finals may follow at once.
    first = [ask() for _ in range(2)]
    assert {spec["stage"] for _, spec in first} == {"teacher"}
    ce_finals = [ask() for _ in range(2)]
    assert {(spec["stage"], spec["run"]["method"]) for _, spec in ce_finals} == {("final", "ce")}
    assert ask()[1] is None  # the LTKD cells wait for their teachers
    # The factor-100 teacher fails; the factor-10 one finishes: only the factor-10 LTKD cell goes on.
    for trial_id, spec in first:
        complete(trial_id, spec, error=spec["run"]["imbalance_factor"] == 100.0)
    assert searcher.blocked() == [c for c in all_cells if c.entry.label == "ltkd" and c.setting.imbalance_factor == 100]
    search_trials = [ask(), ask()]
    assert [(spec["stage"], spec["run"]["imbalance_factor"]) for _, spec in search_trials] == [("search", 10.0)] * 2
    assert ask()[1] is None  # its finals wait for the search to end
    for (trial_id, spec), value in zip(search_trials, (40.0, 60.0)):
        searcher.on_trial_result(trial_id, {"epoch": 1, "val_acc": value})
        complete(trial_id, spec, value)
    trial_id, final = ask()
    best = searches[0].best_hparams() if searches[0].cell.setting.imbalance_factor == 10 else searches[1].best_hparams()
    [winner] = [s["run"]["hparams"] for _, s in search_trials
                if json.loads((Path(s["run_dir"]) / "metrics.jsonl").read_text())["val_acc"] == 60.0]
    assert final["stage"] == "final" and best.items() <= final["run"]["hparams"].items()
    assert best.items() <= winner.items()
    assert ask()[1] is None  # the last final is running
    for done_id, spec in [*ce_finals, (trial_id, final)]:
        complete(done_id, spec)
    assert ask()[1] == Searcher.FINISHED
    assert by_factor[100.0].run_dir.uri in searcher.failed_teachers


def test_a_sweep_file_from_before_new_keys_is_the_same_sweep(tmp_path):
    """Keys added to the config since a sweep.json was written take their defaults: resuming it works."""
    import orchestrator.sweep as sweep

    config = make(tmp_path)
    folder = sweep_dir(config).local_path
    folder.mkdir(parents=True)
    older = json.loads(config.to_json())
    for key in ("test_every", "teacher_cache_dtype"):  # added by issue 17
        del older[key]
    (folder / SWEEP_FILE).write_text(json.dumps(older))
    sweep._write_sweep_file(make(tmp_path))  # the same sweep: no error
    with pytest.raises(sweep.SweepError, match=r"differs in: seeds"):
        sweep._write_sweep_file(make(tmp_path, seeds=[0, 1]))


def test_a_trial_asked_but_never_launched_does_not_use_up_the_budget(tmp_path):
    """A driver killed between Optuna's ask and the trial's launch: the resumed search still runs n_trials."""
    config = make(tmp_path)
    storage = optuna.storages.InMemoryStorage()
    first = CellSearch(config, cell_of(config, "ltkd"), storage)
    launched = first.next_run()  # asked and launched (its hyperparameters recorded)
    first.study.ask()  # asked, then the driver died before recording its hyperparameters
    again = CellSearch(config, cell_of(config, "ltkd"), storage)
    assert again.reconcile() == []
    states = {t.number: t.state for t in again.study.get_trials(deepcopy=False)}
    assert states == {launched.optuna_trial: TrialState.RUNNING, 1: TrialState.FAIL}
    assert again.ended() == 0 and again.remaining() == 4  # the interrupted one again, and 3 new
