"""The paper's tables as sweep configs shipped with the package: each plans exactly the paper's rows."""
from __future__ import annotations

import csv
import re
from importlib import resources

import pytest

from orchestrator.cli import main as ltkd_main
from orchestrator.plan import cells, teacher_runs
from orchestrator.sweep_cli import config_path, packaged_configs
from orchestrator.sweep_config import load_config
from results.tables import _paper_dataset, _paper_method, _paper_model, variant_of
from tests.dataset_builders import write_cifar100

TABLES = [f"paper:table{n}" for n in range(1, 7)]


def paper_rows(name: str, table: int) -> list[dict]:
    with resources.files("results").joinpath("paper_data", f"{name}.csv").open() as handle:
        return [row for row in csv.DictReader(handle) if int(row["table"]) == table]


def setting(row: dict) -> tuple:
    dataset = _paper_dataset(row["dataset"])
    return (dataset, float(row["imbalance_factor"]), _paper_model(row["teacher"], dataset),
            _paper_model(row["student"], dataset))


def planned(config) -> dict[tuple, set]:
    """setting -> what each of its cells is (a method, an LTKD variant, a group count)."""
    out: dict[tuple, set] = {}
    for cell in cells(config):
        s = cell.setting
        key = (s.dataset, s.imbalance_factor, s.teacher_arch, s.student_arch)
        space = cell.entry.search.space if cell.entry.search else {}
        hparams = {**cell.entry.hparams, **{k: v for k, v in space.items() if not isinstance(v, dict)}}
        if cell.entry.method == "ltkd" and "n_groups" in space:
            what = ("groups", space["n_groups"])
        elif cell.entry.method == "ltkd":
            what = ("variant", variant_of({"method": "ltkd", "alpha": hparams.get("alpha", 1.0),
                                           "beta": hparams.get("beta", 1.0), **hparams}))
        else:
            what = ("method", cell.entry.method)
        out.setdefault(key, set()).add(what)
    return out


def test_every_table_is_listed_and_found():
    assert list(packaged_configs()) == TABLES
    assert all(config_path(name).is_file() for name in TABLES)
    with pytest.raises(Exception, match=r"unknown packaged config 'paper:table9' \(known: paper:table1"):
        config_path("paper:table9")


@pytest.mark.parametrize("table", [1, 2, 3])
def test_main_tables_plan_the_papers_rows(table):
    config = load_config(config_path(f"paper:table{table}"))
    rows = paper_rows("main_results", table)
    expected: dict[tuple, set] = {}
    for row in rows:
        if row["method"] != "teacher":
            what = ("variant", "ltkd") if row["method"] == "ltkd" else ("method", _paper_method(row["method"]))
            expected.setdefault(setting(row), set()).add(what)
    assert planned(config) == expected
    teachers = {(r.run.dataset, r.run.imbalance_factor, r.run.arch) for r in teacher_runs(config)}
    assert teachers == {s[:3] for s in expected}  # the teacher row of every setting
    assert config.seeds == [0, 1, 2]


@pytest.mark.parametrize("table", [4, 5])
def test_ablation_tables_plan_the_papers_variants(table):
    config = load_config(config_path(f"paper:table{table}"))
    expected: dict[tuple, set] = {}
    for row in paper_rows("ablations", table):
        what = ("method", "kd") if row["variant"] == "baseline_kd" else ("variant", row["variant"])
        expected.setdefault(setting(row), set()).add(what)
    assert planned(config) == expected


def test_group_count_table_plans_the_papers_counts():
    config = load_config(config_path("paper:table6"))
    expected: dict[tuple, set] = {}
    for row in paper_rows("group_count", 6):
        expected.setdefault(setting(row), set()).add(("groups", int(row["n_groups"])))
    assert planned(config) == expected


def test_sweep_list_and_plan_with_a_root_override(capsys, tmp_path):
    assert ltkd_main(["sweep", "--list"]) == 0
    listed = capsys.readouterr().out
    assert [line.split()[0] for line in listed.splitlines() if not line.startswith(" ")] == TABLES
    for name, (_, summary) in packaged_configs().items():  # whole, never cut mid-phrase
        assert f"{name} {summary}" in " ".join(listed.split()) and summary.endswith(".") and len(summary) > 80
    root = tmp_path / "data"
    store = ["--storage", str(tmp_path / "store")]
    assert ltkd_main(["plan", "paper:table4", "--root", str(root), *store, "--no-estimate"]) == 2
    refused = capsys.readouterr().err
    assert refused.startswith(f"ltkd: error: cifar100: dataset root {root} does not exist") and refused.count("\n") == 1
    assert ltkd_main(["sweep", "paper:table4", "--root", str(root), *store]) == 2  # the same line as `ltkd sweep`
    assert capsys.readouterr().err == refused
    write_cifar100(root, per_class_train=2, per_class_test=1)
    assert ltkd_main(["plan", "paper:table4", "--root", str(root), "--storage", str(tmp_path / "store"),
                      "--no-estimate"]) == 0
    out = capsys.readouterr().out
    # 6 pairs, one factor: 3 teacher architectures x 3 teacher seeds (the default: teacher_seeds = seeds,
    # each student seed its own teacher); 2 variants x 6 settings x 20 trials.
    assert re.search(r"^teachers: 9 runs, 0 already finished \(reused\), 9 to run, 240 epochs", out, re.M)
    assert re.search(r"^search: 240 runs", out, re.M) and re.search(r"^final: 36 runs", out, re.M)
    assert not (tmp_path / "store").exists()


def test_the_root_reaches_every_dataset_entry(tmp_path):
    import argparse

    from orchestrator.sweep_cli import _config_of

    args = argparse.Namespace(config="paper:table1", root=str(tmp_path), storage=None, name=None)
    assert {entry.root for entry in _config_of(args).datasets} == {str(tmp_path)}
