"""The Parquet results store, the paper-style tables and the figures (issue 6).

Results are written with the real writer (in this process, through a file:// URI, and from
several separate processes at once), read back, and the tables' numbers are checked against
means and standard deviations computed here, independently, from the records themselves.
"""
from __future__ import annotations

import csv
import io
import dataclasses
import json
import multiprocessing
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main as ltkd_main
from results import store as store_module
from results.store import (
    SCHEMA,
    SCHEMA_VERSION,
    TrialRecord,
    code_version,
    read_results,
    trial_file_name,
    write_trial,
)
from trainables.errors import UserError

C = 100  # classes (CIFAR-100-shaped)
GROUP_SIZES = (33, 34, 33)  # the paper's 33% / 34% / 33% split of 100 classes
EPOCHS = 4
SEEDS = (0, 1, 2)
FACTORS = (10.0, 100.0)
TEACHER, STUDENT = "resnet32x4", "resnet8x4"
STUDENT_METHODS = ("ce", "kd", "dkd", "dist", "bkd", "ltkd")
BASE = {"teacher": 63.0, "ce": 55.0, "kd": 57.0, "dkd": 58.0, "dist": 57.5, "bkd": 58.6, "ltkd": 61.0}
SLOPE = {"teacher": 45.0, "ce": 45.0, "kd": 42.0, "dkd": 40.0, "dist": 42.0, "bkd": 30.0, "ltkd": 22.0}


def _counts(factor: float) -> list[int]:
    return [int(500 * (1 / factor) ** (i / (C - 1))) for i in range(C)]


def _history(rng: np.random.Generator, key: str, factor: float, teacher_probs: list[float] | None) -> list[dict]:
    """Per-epoch metrics shaped exactly like trainables/engine.py's."""
    base = BASE[key] - (12.0 if factor == 100 else 0.0)
    profile = base + SLOPE[key] * (0.5 - np.arange(C) / (C - 1)) + rng.normal(0, 4, C)
    history = []
    for epoch, scale in enumerate((0.55, 0.8, 1.0, 0.985), start=1):
        per_class = np.clip(profile * (scale + rng.normal(0, 0.01)), 0, 100).round(0)
        head, medium = GROUP_SIZES[0], GROUP_SIZES[0] + GROUP_SIZES[1]
        shift = 0.1 * (1 - epoch / EPOCHS)
        history.append({
            "epoch": epoch, "epochs": EPOCHS, "train_loss": 3.0 / epoch, "lr": 0.05 if epoch < 4 else 0.005,
            "acc": float(per_class.mean()), "acc_head": float(per_class[:head].mean()),
            "acc_medium": float(per_class[head:medium].mean()), "acc_tail": float(per_class[medium:].mean()),
            "per_class_acc": [float(v) for v in per_class],
            "group_prob": [0.45 + shift, 0.33, 0.22 - shift] if key == "teacher" else [0.36, 0.33, 0.31],
            "teacher_group_prob": teacher_probs, "distill_weight": 0.0 if key in ("teacher", "ce") else 1.0,
            "epoch_seconds": 1.5, "train_seconds": 1.2, "device": "cpu",
        })
    return history


def _config(method: str, role: str, factor: float, seed: int, hparams: dict, teacher_arch: str | None) -> dict:
    from trainables.config import RunConfig
    from trainables.distillers import get_method

    resolved = get_method(method).resolve(hparams, dataset_style="cifar", teacher_arch=teacher_arch or "",
                                          student_arch=STUDENT)
    return RunConfig(dataset="cifar100", root="/data", imbalance_factor=factor, role=role,
                     arch=TEACHER if role == "teacher" else STUDENT, method=method, hparams=resolved,
                     teacher=None if method == "ce" or role == "teacher" else f"/sweep/teachers/{seed}",
                     teacher_arch=teacher_arch, seed=seed, epochs=EPOCHS, batch_size=64, lr=0.05,
                     weight_decay=5e-4).to_dict()


def _record(stage: str, method: str, factor: float, seed: int, *, hparams: dict | None = None, tag: str = "",
            status: str = "completed", optuna_trial: int | None = None, key: str | None = None) -> TrialRecord:
    role = "teacher" if method == "teacher" else "student"
    key = key or method
    rng = np.random.default_rng(abs(hash((stage, method, factor, seed, tag))) % 2**32)
    cell = f"cifar100/if{factor:g}/{TEACHER}" if role == "teacher" else \
        f"cifar100/if{factor:g}/{TEACHER}->{STUDENT}/{method}{'' if stage == 'search' else tag}"
    # The CE student has no teacher: its config names none (the cell still names the pair).
    teacher_arch = None if method in ("ce", "teacher") else TEACHER
    history = _history(rng, key, factor, None if role == "teacher" or method == "ce" else [0.5, 0.32, 0.18])
    if status == "errored":
        history = history[:2]
    return TrialRecord(
        sweep="paper-repro", trial_id=f"{cell}:{stage}:seed={seed}{(':' + str(optuna_trial)) if optuna_trial is not None else ''}",
        stage=stage, cell=cell, config=_config("ce" if role == "teacher" else method, role, factor, seed,
                                               hparams or {}, teacher_arch),
        history=history, status=status, wall_seconds=123.4, device="cuda:0", code_version=code_version(),
        error="RuntimeError: CUDA out of memory" if status == "errored" else None,
        study=f"paper-repro/if{factor:g}/ltkd" if stage == "search" else None, optuna_trial=optuna_trial,
        class_counts=_counts(factor))


ABLATIONS = {  # variant name -> LTKD hparams
    "biased_cross_only": {"rebalance": False, "beta": 0.0},
    "rebalanced_cross_only": {"rebalance": True, "beta": 0.0},
    "reweighted_within_only": {"alpha": 0.0},
}
GROUP_COUNTS = (4, 10, 100)


def build_records() -> list[TrialRecord]:
    records = []
    for factor in FACTORS:
        for seed in SEEDS:
            records.append(_record("teacher", "teacher", factor, seed))
            for method in STUDENT_METHODS:
                records.append(_record("final", method, factor, seed))
        # an errored final run: left out of the tables
        records.append(_record("final", "kd", factor, 9, status="errored"))
    for variant, hparams in ABLATIONS.items():
        for seed in SEEDS[:2]:
            records.append(_record("final", "ltkd", 10.0, seed, hparams=hparams, tag=f"-{variant}", key="dkd"))
    for n in GROUP_COUNTS:
        for seed in SEEDS[:2]:
            records.append(_record("final", "ltkd", 100.0, seed, hparams={"n_groups": n}, tag=f"-g{n}", key="bkd"))
    rng = np.random.default_rng(7)
    for number in range(12):
        status = "errored" if number == 5 else ("early_stopped" if number in (3, 8) else "completed")
        hparams = {"alpha": float(rng.uniform(0.5, 4)), "beta": float(np.exp(rng.uniform(0, np.log(30))))}
        records.append(_record("search", "ltkd", 10.0, 0, hparams=hparams, tag=f"-t{number}", status=status,
                               optuna_trial=number))
    return records


def _is_main(record: TrialRecord) -> bool:
    hp = record.config["hparams"]
    return record.config["method"] != "ltkd" or (hp["rebalance"] and hp["uniform_within"] and hp["alpha"] > 0
                                                 and hp["beta"] > 0 and hp["n_groups"] == 3)


def expected_main(records: list[TrialRecord], select: str = "last-epoch") -> dict:
    """(row key, factor, metric) -> list of values, computed from the records, not the store."""
    out: dict = {}
    for r in records:
        if r.stage not in ("final", "teacher") or r.status != "completed" or not _is_main(r):
            continue
        key = "teacher" if r.config["role"] == "teacher" else r.config["method"]
        if select == "last-epoch":
            chosen = r.history[-1]
        else:
            best = max(m["acc"] for m in r.history)
            chosen = next(m for m in r.history if m["acc"] == best)
        for metric in ("acc_tail", "acc"):
            out.setdefault((key, r.config["imbalance_factor"], metric), []).append(chosen[metric])
    return out


@pytest.fixture(scope="module")
def records() -> list[TrialRecord]:
    return build_records()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, records) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    for record in records:
        write_trial(str(folder), record)
    return folder


# ------------------------------------------------------------------------------ store


def test_schema_is_explicit_versioned_and_in_every_file(sweep, records):
    files = sorted((sweep / "results").glob("*.parquet"))
    assert len(files) == len(records)
    for path in files[:5]:
        schema = pq.read_schema(path)
        assert schema.metadata[b"ltkd_sweep.schema_version"] == str(SCHEMA_VERSION).encode()
        assert schema.remove_metadata().equals(SCHEMA.remove_metadata())
    # identical schemas: pyarrow.dataset reads the whole store as one table
    import pyarrow.dataset as ds

    table = ds.dataset(sweep / "results", format="parquet").to_table()
    expected_rows = sum(len(r.history) + 1 for r in records)
    assert table.num_rows == expected_rows


def test_rows_round_trip(sweep, records):
    df = read_results([str(sweep)])
    assert set(df["row_kind"]) == {"epoch", "final"}
    assert len(df[df["row_kind"] == "final"]) == len(records)
    record = next(r for r in records if r.stage == "final" and r.config["method"] == "dist")
    rows = df[df["trial_id"] == record.trial_id].sort_values(["row_kind", "epoch"])
    epochs = rows[rows["row_kind"] == "epoch"]
    assert list(epochs["epoch"]) == [1, 2, 3, 4]
    assert np.allclose(np.stack(epochs["per_class_acc"].to_numpy()), [m["per_class_acc"] for m in record.history])
    final = rows[rows["row_kind"] == "final"].iloc[0]
    assert final["acc"] == pytest.approx(record.history[-1]["acc"])
    assert final["status"] == "completed" and final["wall_seconds"] == pytest.approx(123.4)
    assert final["device"] == "cuda:0" and final["code_version"] == code_version()
    assert final["dataset"] == "cifar100" and final["imbalance_factor"] == record.config["imbalance_factor"]
    assert final["arch"] == STUDENT and final["teacher_arch"] == TEACHER and final["method"] == "dist"
    assert final["temperature"] == pytest.approx(4.0)  # DIST's tau
    assert json.loads(final["hparams_json"]) == record.config["hparams"]
    assert json.loads(final["config_json"])["batch_size"] == 64
    assert list(final["teacher_group_prob"]) == pytest.approx([0.5, 0.32, 0.18])
    assert list(final["class_counts"]) == _counts(record.config["imbalance_factor"])
    ltkd = df[(df["method"] == "ltkd") & (df["row_kind"] == "final") & (df["stage"] == "final")]
    assert set(ltkd["n_groups"].astype(int)) == {3, 4, 10, 100}
    assert set(ltkd["rebalance"]) == {True, False}
    # the CE student's config names no teacher: the pair comes from its cell
    ce = df[(df["method"] == "ce") & (df["role"] == "student")]
    assert set(ce["teacher_arch"]) == {TEACHER}
    errored = df[(df["status"] == "errored") & (df["row_kind"] == "final")]
    assert errored["error"].str.contains("out of memory").all()
    search = df[(df["stage"] == "search") & (df["row_kind"] == "final")]
    assert sorted(search["optuna_trial"].astype(int)) == list(range(12))


def test_final_rows_and_chosen_columns_read_the_same_values(sweep, records):
    """What status and tables read of a paper-scale store: each trial's final row, only some columns."""
    full = read_results([str(sweep)])
    finals = read_results([str(sweep)], final_only=True)
    assert set(finals["row_kind"]) == {"final"} and len(finals) == len(records)
    expected = full[full["row_kind"] == "final"].sort_values("trial_id").reset_index(drop=True)
    assert finals.sort_values("trial_id").reset_index(drop=True).equals(expected)
    few = read_results([str(sweep)], final_only=True, columns=("stage", "status", "acc", "val_acc"))
    assert list(few.columns) == ["sweep", "trial_id", "row_kind", "stage", "status", "acc", "val_acc", "written_at",
                                 "source"]
    few = few.sort_values("trial_id").reset_index(drop=True)
    for column in ("stage", "status", "acc", "val_acc", "written_at"):
        assert few[column].equals(expected[column]), column
    with pytest.raises(ValueError, match="unknown results columns: colour"):
        read_results([str(sweep)], columns=("colour",))


def test_the_final_row_has_a_row_group_of_its_own_and_one_group_files_still_read(sweep, records, tmp_path):
    """A final-only read reads the last row group alone; files written before that (one group) read the same."""
    record = next(r for r in records if r.stage == "final" and len(r.history) > 1)
    path = Path(write_trial(str(tmp_path / "groups"), record))
    parquet = pq.ParquetFile(path)
    assert parquet.num_row_groups == 2
    assert parquet.metadata.row_group(0).num_rows == len(record.history)
    assert parquet.read_row_group(1, columns=["row_kind"])["row_kind"].to_pylist() == ["final"]
    # the same rows in one row group, as write_trial wrote them before
    single = tmp_path / "single" / "results"
    single.mkdir(parents=True)
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata(parquet.schema_arrow.metadata), single / path.name)
    assert pq.ParquetFile(single / path.name).num_row_groups == 1
    a = read_results([str(tmp_path / "groups")], final_only=True).drop(columns="source")
    b = read_results([str(tmp_path / "single")], final_only=True).drop(columns="source")
    assert len(a) == 1 and a.equals(b)
    assert a["acc"].iloc[0] == pytest.approx(record.history[-1]["acc"])
    # a trial without epochs (errored at start) is a single final row
    bare = dataclasses.replace(record, trial_id=record.trial_id + "-bare", history=[], status="errored",
                               error="boom")
    bare_path = Path(write_trial(str(tmp_path / "bare"), bare))
    assert pq.ParquetFile(bare_path).num_row_groups == 1
    only = read_results([str(tmp_path / "bare")], final_only=True)
    assert list(only["row_kind"]) == ["final"] and list(only["error"]) == ["boom"]


def test_trial_file_names_are_safe_and_stable():
    a = trial_file_name("cifar100/if10/resnet32x4->resnet8x4/ltkd:final:seed=0")
    assert "/" not in a and ":" not in a and ">" not in a and a.endswith(".parquet")
    assert a == trial_file_name("cifar100/if10/resnet32x4->resnet8x4/ltkd:final:seed=0")
    assert a != trial_file_name("cifar100/if10/resnet32x4->resnet8x4/ltkd:final:seed=1")
    # ids that slug alike still get different files
    assert trial_file_name("a/b") != trial_file_name("a:b")


def test_repeated_write_leaves_one_copy(tmp_path, records):
    record = records[3]
    first = write_trial(str(tmp_path), record)
    second = write_trial(str(tmp_path), record)
    assert first == second
    assert [p.name for p in (tmp_path / "results").iterdir()] == [Path(first).name]
    df = read_results([str(tmp_path)])
    assert len(df) == len(record.history) + 1
    assert len(df[df["row_kind"] == "final"]) == 1
    # a resumed trial rewrites with more epochs: still one copy, the newer one
    longer = TrialRecord(**{**record.__dict__, "history": record.history + [dict(record.history[-1], epoch=5)]})
    write_trial(str(tmp_path), longer)
    df = read_results([str(tmp_path)])
    assert len(df) == len(record.history) + 2 and df["epoch"].max() == 5


def test_uri_store_round_trip(tmp_path, records):
    uri = tmp_path.as_uri()
    assert uri.startswith("file://")
    written = write_trial(uri, records[0])  # file:// names a local folder: the written file's path comes back
    assert written == str(tmp_path / "results" / trial_file_name(records[0].trial_id))
    assert Path(written).is_file()
    by_uri, by_path = read_results([uri]), read_results([str(tmp_path)])
    assert len(by_uri) == len(by_path) == len(records[0].history) + 1
    # the same store named twice: every trial still counted once
    assert len(read_results([uri, str(tmp_path)])) == len(by_path)


def test_bad_records_are_refused(tmp_path, records):
    bad = TrialRecord(**{**records[0].__dict__, "status": "finished"})
    with pytest.raises(ValueError, match="status must be one of"):
        write_trial(str(tmp_path), bad)
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())


def _write_many(folder: str, records: list[TrialRecord], repeats: int) -> int:
    for _ in range(repeats):
        for record in records:
            write_trial(folder, record)
    return len(records)


def test_concurrent_writers_in_separate_processes(tmp_path, records):
    """Four processes write at once, each its own trials plus the same shared trials several
    times; meanwhile this process keeps reading: it never sees a half-written file."""
    shared = records[:3]
    own = [records[3 + i::4][:6] for i in range(4)]
    context = multiprocessing.get_context("spawn")
    seen_warnings: list[str] = []
    reads = 0
    with context.Pool(4) as pool:
        jobs = [pool.apply_async(_write_many, (str(tmp_path), shared + own[i], 3)) for i in range(4)]
        while not all(job.ready() for job in jobs):
            try:
                read_results([str(tmp_path)], warn=seen_warnings.append)
                reads += 1
            except UserError:  # nothing written yet
                pass
            time.sleep(0.01)
        assert [job.get() for job in jobs] == [3 + len(o) for o in own]
    expected = {r.trial_id for r in shared} | {r.trial_id for o in own for r in o}
    files = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert files == sorted(trial_file_name(t) for t in expected)  # one file each, no temporary left
    assert seen_warnings == [] and reads > 0
    df = read_results([str(tmp_path)])
    finals = df[df["row_kind"] == "final"]
    assert sorted(finals["trial_id"]) == sorted(expected)
    by_id = {r.trial_id: r for r in records}
    assert len(df) == sum(len(by_id[t].history) + 1 for t in expected)


def test_code_version_outside_a_checkout(monkeypatch, tmp_path):
    version = code_version()
    assert version.startswith("0.") or version.startswith("unknown")
    code_version.cache_clear()
    monkeypatch.setattr(store_module, "__file__", str(tmp_path / "store.py"))
    try:
        assert "+g" not in code_version()
    finally:
        code_version.cache_clear()


# ------------------------------------------------------------------------------ tables


def _table(sweep, **kwargs):
    from results.tables import main_table

    return main_table(read_results([str(sweep)]), **kwargs)


def _column(table, factor: float, metric: str) -> int:
    return next(j for j, c in enumerate(table.columns) if c.imbalance_factor == factor and c.metric == metric)


@pytest.mark.parametrize("select", ["last-epoch", "best-epoch"])
def test_main_table_numbers_match_independent_means(sweep, records, select):
    table = _table(sweep, select=select)
    expected = expected_main(records, select)
    order = ["teacher", "ce", "kd", "dkd", "dist", "bkd", "ltkd"]
    assert table.row_keys == order + ["gain"]
    assert table.rows[:len(order)] == ["Teacher", "Student", "KD", "DKD", "DIST", "BKD", "LTKD"]
    assert len(table.columns) == 4 and {c.group for c in table.columns} == {"CIFAR-100-LT: resnet32x4 → resnet8x4"}
    for j, column in enumerate(table.columns):
        means = {}
        for i, key in enumerate(order):
            values = expected[(key, column.imbalance_factor, column.metric)]
            assert len(values) == 3  # the errored KD run and the ablation / group variants left out
            cell = table.cells[i][j]
            assert cell.n == 3
            assert cell.mean == pytest.approx(statistics.mean(values))
            assert cell.std == pytest.approx(statistics.stdev(values))
            means[key] = statistics.mean(values)
        students = {k: round(v, 2) for k, v in means.items() if k != "teacher"}
        ranked = sorted(set(students.values()), reverse=True)
        for i, key in enumerate(order):
            mark = table.cells[i][j].mark
            if key == "teacher":
                assert mark is None
            else:
                want = "best" if students[key] == ranked[0] else "second" if students[key] == ranked[1] else None
                assert mark == want, (key, column)
        # these records carry no validation accuracy: one comparator per block, the best test mean of All
        overall = {k: statistics.mean(expected[(k, column.imbalance_factor, "acc")]) for k in order
                   if k not in ("ltkd", "teacher")}
        comparator = max(overall, key=overall.get)
        gain = table.cells[-1][j]
        assert gain.compared_to == comparator and gain.compared_on == "test"
        assert gain.mean == pytest.approx(means["ltkd"] - means[comparator])
    if select == "best-epoch":
        assert "test-selected" in table.caption
    else:
        assert "last epoch" in table.caption and "test-selected" not in table.caption


def test_best_epoch_differs_from_last_epoch(sweep):
    last, best = _table(sweep), _table(sweep, select="best-epoch")
    j = _column(last, 10.0, "acc")
    assert all(b[j].mean >= l[j].mean - 1e-9 for b, l in zip(best.cells[:-1], last.cells[:-1]))
    assert any(b[j].mean > l[j].mean + 1e-6 for b, l in zip(best.cells[:-1], last.cells[:-1]))


def test_single_seed_cell_shows_mean_without_std(tmp_path, records):
    from results.render import to_markdown
    from results.tables import main_table

    one = [r for r in records if r.stage in ("final", "teacher") and r.config["seed"] == 0 and _is_main(r)
           and r.config["imbalance_factor"] == 10.0]
    for record in one:
        write_trial(str(tmp_path), record)
    table = main_table(read_results([str(tmp_path)]))
    assert all(cell.std is None and cell.n == 1 for row in table.cells[:-1] for cell in row)
    text = to_markdown(table)
    assert "±" not in text.split("*Top-1")[0]  # no spread in any cell (the caption explains it)
    ltkd = next(r for r in one if r.config["method"] == "ltkd")
    assert f"{ltkd.history[-1]['acc']:.2f}" in text


def test_ablation_and_group_count_tables(sweep, records):
    from results.tables import ablation_table, group_count_table

    df = read_results([str(sweep)])
    ablation = ablation_table(df)
    assert ablation.row_keys == ["kd", "biased_cross_only", "rebalanced_cross_only", "reweighted_within_only", "ltkd"]
    assert {c.imbalance_factor for c in ablation.columns} == {10.0}  # the variants ran at gamma 10 only
    assert ablation.lead[1] == [False, None, True, False] and ablation.lead[-1] == [True, True, True, True]
    j = _column(ablation, 10.0, "acc_tail")
    for i, variant in enumerate(ablation.row_keys[1:4], start=1):
        values = [r.history[-1]["acc_tail"] for r in records if r.cell.endswith(f"ltkd-{variant}")]
        assert ablation.cells[i][j].mean == pytest.approx(statistics.mean(values)) and len(values) == 2
    main = _table(sweep)
    assert ablation.cells[-1][j].mean == pytest.approx(main.cells[main.row_keys.index("ltkd")][_column(main, 10.0, "acc_tail")].mean)

    groups = group_count_table(df)
    assert groups.row_keys == ["3", "4", "10", "100"]
    assert [c.imbalance_factor for c in groups.columns] == [100.0] and groups.columns[0].metric == "acc"
    for i, n in enumerate(GROUP_COUNTS, start=1):
        values = [r.history[-1]["acc"] for r in records if r.cell.endswith(f"ltkd-g{n}")]
        assert groups.cells[i][0].mean == pytest.approx(statistics.mean(values))
    best = max(range(4), key=lambda i: round(groups.cells[i][0].mean, 2))
    assert groups.cells[best][0].mark == "best"


def test_paper_numbers_beside_matching_cells(sweep):
    table = _table(sweep, paper=True)
    published = pd.read_csv(Path(__file__).resolve().parents[1] / "results" / "paper_data" / "main_results.csv")
    row = published[(published["dataset"] == "cifar100_lt") & (published["teacher"] == "resnet32x4")
                    & (published["student"] == "resnet8x4") & (published["imbalance_factor"] == 10)
                    & (published["method"] == "ltkd")].iloc[0]
    i, j = table.row_keys.index("ltkd"), _column(table, 10.0, "acc_tail")
    assert table.cells[i][j].paper == pytest.approx(row["tail_acc"])
    assert table.cells[table.row_keys.index("kd")][j].paper is None  # Table 1 has no KD row
    assert table.cells[table.row_keys.index("bkd")][j].paper is None  # nor BKD
    assert table.cells[table.row_keys.index("ce")][j].paper == pytest.approx(47.32)  # "student"
    assert table.cells[0][j].paper == pytest.approx(50.72)  # "teacher"
    assert "published" in table.caption


# ------------------------------------------------------------------------------ CLI


def test_report_cli_writes_tables_and_figures(sweep, records, tmp_path, capsys):
    out = tmp_path / "report"
    assert ltkd_main(["report", str(sweep), "--out", str(out), "--figures", "--paper"]) == 0
    printed = capsys.readouterr().out
    assert "### Main results" in printed and "LTKD" in printed and "(58.66)" in printed
    for stem in ("main_table", "ablation_table", "group_count_table"):
        for extension in ("md", "tex", "html", "csv"):
            assert (out / f"{stem}.{extension}").stat().st_size > 0
    tex = (out / "main_table.tex").read_text()
    assert r"\textbf{" in tex and r"\underline{" in tex and r"\begin{tabular}" in tex
    assert "<b>" in (out / "main_table.html").read_text()
    # the CSV's numbers are the independent means
    rows = list(csv.DictReader(io.StringIO((out / "main_table.csv").read_text())))
    expected = expected_main(records)
    for key in ("teacher", "ce", "ltkd"):
        for metric in ("acc", "acc_tail"):
            for factor in FACTORS:
                line = next(r for r in rows if r["row_key"] == key and r["metric"] == metric
                            and float(r["imbalance_factor"]) == factor)
                assert float(line["mean"]) == pytest.approx(statistics.mean(expected[(key, factor, metric)]), abs=1e-5)
                assert float(line["std"]) == pytest.approx(statistics.stdev(expected[(key, factor, metric)]), abs=1e-5)
                assert line["n"] == "3"
    pngs = sorted(p.name for p in out.glob("*.png"))
    kinds = {name.split("_")[0] for name in pngs}
    assert {"per", "head", "sensitivity", "optuna"} <= kinds, pngs
    assert len([p for p in pngs if p.startswith("per_class")]) == 2  # one per imbalance factor
    for name in pngs:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert (out / name).with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"  # each figure as PDF too


def test_report_best_epoch_caption(sweep, capsys):
    assert ltkd_main(["report", str(sweep), "--select", "best-epoch"]) == 0
    assert "test-selected" in capsys.readouterr().out


def test_report_missing_folder(tmp_path, capsys):
    assert ltkd_main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ltkd: error:") and "no such folder" in err and len(err.splitlines()) == 1


def test_report_empty_folder(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    assert ltkd_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ltkd: error:") and "no results" in err


def test_report_figures_need_out(sweep, capsys):
    assert ltkd_main(["report", str(sweep), "--figures"]) == 2
    assert "--out" in capsys.readouterr().err


def test_truncated_and_foreign_files_are_skipped(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    victim = sorted((copy / "results").glob("*.parquet"))[0]
    data = victim.read_bytes()
    (copy / "results" / "truncated.parquet").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.table({"x": [1, 2, 3]}), copy / "results" / "foreign.parquet")
    warnings: list[str] = []
    df = read_results([str(copy)], warn=warnings.append)
    assert len(df) == len(read_results([str(sweep)]))
    assert len(warnings) == 2
    assert any("truncated.parquet" in w for w in warnings) and any("foreign.parquet" in w for w in warnings)
    assert ltkd_main(["report", str(copy)]) == 0
    captured = capsys.readouterr()
    assert "ltkd: warning: skipping" in captured.err and "truncated.parquet" in captured.err
    assert "### Main results" in captured.out


def test_a_file_of_a_newer_schema_is_skipped_with_a_warning_naming_it(tmp_path, records, monkeypatch, capsys):
    first = write_trial(str(tmp_path), records[0])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    newer = write_trial(str(tmp_path), records[1])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION)
    warnings = []
    df = read_results([str(tmp_path)], warn=warnings.append)
    assert set(df["source"]) == {first}
    assert len(warnings) == 1 and Path(newer).name in warnings[0]
    assert f"newer ltkd-sweep (schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION})" in warnings[0]
    assert ltkd_main(["report", str(tmp_path)]) == 0
    assert "ltkd: warning: skipping" in capsys.readouterr().err
    Path(first).unlink()  # nothing readable left: an error, in one line
    with pytest.raises(UserError, match="no readable results"):
        read_results([str(tmp_path)])


def test_a_trial_in_two_stores_counts_once(tmp_path, records):
    old, new = tmp_path / "a", tmp_path / "b"
    record = next(r for r in records if r.stage == "final")
    write_trial(str(old), record)
    time.sleep(0.01)
    newer = TrialRecord(**{**record.__dict__, "history": record.history[:3]})
    write_trial(str(new), newer)
    warnings: list[str] = []
    df = read_results([str(old), str(new)], warn=warnings.append)
    assert len(df) == 3 + 1 and df["epoch"].max() == 3  # the newer copy
    assert len(warnings) == 1 and "newest" in warnings[0]


def test_search_only_sweep_gives_figures_not_tables(tmp_path, records, capsys):
    for record in records:
        if record.stage == "search":
            write_trial(str(tmp_path / "sweep"), record)
    assert ltkd_main(["report", str(tmp_path / "sweep")]) == 2
    assert "search trials alone make no table" in capsys.readouterr().err
    out = tmp_path / "out"
    assert ltkd_main(["report", str(tmp_path / "sweep"), "--out", str(out), "--figures"]) == 0
    assert sorted(p.name.split("_")[0] for p in out.glob("*.png")) == ["coordinates", "optuna", "sensitivity"]
    assert not list(out.glob("*.md"))


def test_schema_is_written_down():
    text = (Path(__file__).resolve().parents[1] / "results" / "README.md").read_text()
    for field in SCHEMA:
        assert f"| `{field.name}` |" in text, field.name
    assert f"## Schema, version {SCHEMA_VERSION}" in text


def test_allow_empty_reads_a_sweep_that_wrote_nothing_yet(tmp_path):
    (tmp_path / "results").mkdir()
    df = read_results([str(tmp_path)], allow_empty=True)
    assert df.empty and set(SCHEMA.names) <= set(df.columns)
    with pytest.raises(UserError, match="no results"):
        read_results([str(tmp_path)])


def test_optuna_history_plots_the_objective(sweep, tmp_path):
    from results.figures import optuna_history_figures

    df = read_results([str(sweep)])
    paths = optuna_history_figures(df, tmp_path, objective="acc_tail")
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"] and len({p.stem for p in paths}) == 1
    assert all(p.stat().st_size > 10_000 for p in paths)


# ------------------------------------------------------------------------------ schema version 2 (issue 13)

# What version 2 added to version 1, written out here rather than taken from the store module.
VERSION_2_COLUMNS = ("selection", "objective_metric", "search_trials", "teacher_seed", "validation_per_class",
                     "within_norm", "val_acc", "val_acc_head", "val_acc_medium", "val_acc_tail")


def _write_version_1(folder: Path, record: TrialRecord) -> Path:
    """A results file as version 1 wrote it: its schema (SCHEMA without the version-2 columns, in
    the same order), schema_version 1 in the rows and in the file metadata."""
    rows = store_module.record_table(record)
    schema = pa.schema([f for f in SCHEMA if f.name not in VERSION_2_COLUMNS],
                       metadata={b"ltkd_sweep.schema_version": b"1", b"ltkd_sweep.format": b"ltkd-sweep/trial-results"})
    columns = {name: rows[name] for name in schema.names}
    columns["schema_version"] = pa.array([1] * len(rows), pa.int32())
    path = folder / "results" / trial_file_name(record.trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)
    return path


def test_version_1_files_still_read(tmp_path, records):
    assert SCHEMA_VERSION == 2 and set(VERSION_2_COLUMNS) <= set(SCHEMA.names)
    old = [r for r in records if r.stage in ("final", "teacher") and r.config["imbalance_factor"] == 10.0]
    new = [r for r in records if r.stage in ("final", "teacher") and r.config["imbalance_factor"] == 100.0]
    for record in old:
        path = _write_version_1(tmp_path, record)
    assert pq.read_schema(path).metadata[b"ltkd_sweep.schema_version"] == b"1"
    assert not set(VERSION_2_COLUMNS) & set(pq.read_schema(path).names)
    for record in new:
        write_trial(str(tmp_path), record)
    warnings: list[str] = []
    df = read_results([str(tmp_path)], warn=warnings.append)
    assert warnings == []
    assert list(df.columns) == list(SCHEMA.names) + ["source"]
    assert len(df[df["row_kind"] == "final"]) == len(old) + len(new)
    v1 = df[df["imbalance_factor"] == 10.0]
    assert set(v1["schema_version"]) == {1} and set(df[df["imbalance_factor"] == 100.0]["schema_version"]) == {2}
    for name in VERSION_2_COLUMNS:
        assert v1[name].isna().all(), name
    record = next(r for r in old if r.config["method"] == "ltkd")
    final = v1[(v1["trial_id"] == record.trial_id) & (v1["row_kind"] == "final")].iloc[0]
    assert final["acc"] == pytest.approx(record.history[-1]["acc"])
    assert list(final["per_class_acc"]) == pytest.approx(record.history[-1]["per_class_acc"])
    # the tables read it, and their caption does not invent a protocol for it
    from results.tables import main_table

    table = main_table(df)
    assert {c.imbalance_factor for c in table.columns} == {10.0, 100.0}
    assert "written before schema version 2" in table.caption
    assert "selected on the validation split" not in table.caption


def test_version_2_columns_round_trip(tmp_path, records):
    base = next(r for r in records if r.stage == "final" and r.config["method"] == "ltkd")
    history = [dict(m, val_acc=50.0 + i, val_acc_head=60.0 + i, val_acc_medium=50.5, val_acc_tail=40.25 + i)
               for i, m in enumerate(base.history)]
    history[0].update(val_acc=None, val_acc_head=None, val_acc_medium=None, val_acc_tail=None)
    config = {**base.config, "validation_per_class": 10, "hparams": {**base.config["hparams"], "within_norm": "mean"}}
    record = TrialRecord(**{**base.__dict__, "history": history, "config": config, "selection": "val",
                            "teacher_seed": 2, "search_trials": 8, "objective_metric": "val_acc_tail"})
    path = write_trial(str(tmp_path), record)
    schema = pq.read_schema(path)
    types = {"val_acc": pa.float64(), "val_acc_head": pa.float64(), "val_acc_medium": pa.float64(),
             "val_acc_tail": pa.float64(), "selection": pa.string(), "teacher_seed": pa.int64(),
             "search_trials": pa.int64(), "objective_metric": pa.string(), "within_norm": pa.string(),
             "validation_per_class": pa.int64()}
    for name, kind in types.items():
        assert schema.field(name).type.equals(kind), name
    df = read_results([str(tmp_path)])
    epochs = df[df["row_kind"] == "epoch"].sort_values("epoch")
    assert epochs["val_acc"].isna().tolist() == [True, False, False, False]
    assert epochs["val_acc_tail"].tolist()[1:] == [41.25, 42.25, 43.25]
    final = df[df["row_kind"] == "final"].iloc[0]
    assert final["val_acc"] == 53.0 and final["val_acc_head"] == 63.0 and final["val_acc_medium"] == 50.5
    assert final["selection"] == "val" and final["objective_metric"] == "val_acc_tail"
    assert final["teacher_seed"] == 2 and final["search_trials"] == 8
    assert final["within_norm"] == "mean" and final["validation_per_class"] == 10
    assert df["extra_json"].isna().all()  # the validation metrics are columns, not extras
    assert set(df["selection"]) == {"val"}  # every row of the trial carries how it was chosen
    with pytest.raises(ValueError, match="selection must be"):
        write_trial(str(tmp_path), TrialRecord(**{**record.__dict__, "selection": "validation"}))


def test_tune_reports_validation_metrics_and_records_the_protocol(tmp_path):
    from orchestrator.records import trial_record
    from trainables.config import RunConfig
    from trainables.metrics import REPORTED
    from trainables.trial import TrialSpec
    from trainables.tune_trainable import reported_metrics

    assert {"val_acc", "val_acc_head", "val_acc_medium", "val_acc_tail", "acc"} <= set(REPORTED)
    epoch = {"epoch": 3, "epochs": 4, "acc": 50.0, "acc_head": 60.0, "acc_medium": 50.0, "acc_tail": 40.0,
             "val_acc": 48.0, "val_acc_head": 58.0, "val_acc_medium": 47.0, "val_acc_tail": None,
             "train_loss": 1.0, "lr": 0.1, "epoch_seconds": 2.0, "per_class_acc": [1.0]}
    reported = reported_metrics(epoch)
    assert reported["val_acc"] == 48.0 and "val_acc_tail" not in reported and "per_class_acc" not in reported
    assert set(reported) == set(REPORTED) - {"val_acc_tail"}
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({**epoch, "device": "cpu"}) + "\n")
    older = TrialSpec(sweep="s", trial_id="final/c/seed0", stage="final", cell="c", sweep_dir=str(tmp_path),
                      run_dir=str(run), run=RunConfig(dataset="digits", method="kd", seed=0))
    record = trial_record(older, "completed", time.time(), run_folder=run)
    assert (record.selection, record.teacher_seed, record.search_trials, record.objective_metric) == (None,) * 4
    newer = dataclasses.replace(older, selection="val", teacher_seed=0, search_trials=6, objective_metric="val_acc")
    assert TrialSpec.from_dict(newer.to_dict()) == newer  # what crosses the Ray boundary comes back the same
    record = trial_record(newer, "completed", time.time(), run_folder=run)
    assert (record.selection, record.teacher_seed, record.search_trials, record.objective_metric) == \
        ("val", 0, 6, "val_acc")
    write_trial(str(tmp_path / "sweep"), record)
    final = read_results([str(tmp_path / "sweep")]).query("row_kind == 'final'").iloc[0]
    assert final["search_trials"] == 6 and final["val_acc"] == 48.0 and final["selection"] == "val"


# ------------------------------------------------------------------------------ what was chosen (issue 13)


def _chosen_records() -> list[TrialRecord]:
    out = []
    protocol = {"selection": "val", "objective_metric": "val_acc"}
    for seed in (0, 1, 2):
        out.append(_record("teacher", "teacher", 10.0, seed))
        for method, trials in (("ce", 0), ("kd", 0)):
            r = _record("final", method, 10.0, seed)
            out.append(TrialRecord(**{**r.__dict__, **protocol, "search_trials": trials,
                                      "teacher_seed": None if method == "ce" else 0}))
        r = _record("final", "ltkd", 10.0, seed, hparams={"alpha": 2.5, "beta": 3.0})
        out.append(TrialRecord(**{**r.__dict__, **protocol, "search_trials": 6, "teacher_seed": 0}))
    for number, (alpha, beta) in enumerate([(0.5, 1.0), (2.5, 3.0), (4.0, 12.0)]):
        r = _record("search", "ltkd", 10.0, 3, hparams={"alpha": alpha, "beta": beta}, tag=f"-t{number}",
                    optuna_trial=number)
        out.append(TrialRecord(**{**r.__dict__, **protocol, "search_trials": 6, "teacher_seed": 0}))
    return out


def test_report_writes_chosen_hyperparameters_and_best_config(tmp_path, capsys):
    records = _chosen_records()
    for record in records:
        write_trial(str(tmp_path / "sweep"), record)
    out = tmp_path / "report"
    assert ltkd_main(["report", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### Chosen hyperparameters" in printed
    for extension in ("md", "tex", "html", "csv"):
        assert (out / f"chosen_hparams.{extension}").stat().st_size > 0
    rows = {r["Method"]: r for r in csv.DictReader(io.StringIO((out / "chosen_hparams.csv").read_text()))}
    assert set(rows) == {"Student", "KD", "LTKD"}
    ltkd = rows["LTKD"]
    assert "alpha=2.5" in ltkd["Hyperparameters"] and "beta=3" in ltkd["Hyperparameters"]
    assert ltkd["Searched"] == "alpha, beta" and ltkd["Trials"] == "6"
    assert ltkd["Selection"] == "validation (val_acc)" and ltkd["Seeds"] == "0, 1, 2 (teacher 0)"
    assert ltkd["Dataset"] == "CIFAR-100-LT" and ltkd["γ"] == "10" and ltkd["Pair"] == f"{TEACHER} → {STUDENT}"
    assert rows["KD"]["Trials"] == "defaults" and rows["KD"]["Selection"] == "– (no search)"
    assert rows["KD"]["Searched"] == "–" and "temperature=4" in rows["KD"]["Hyperparameters"]
    assert rows["Student"]["Seeds"] == "0, 1, 2"
    assert r"\begin{tabular}" in (out / "chosen_hparams.tex").read_text()

    best = json.loads((out / "best_config.json").read_text())
    assert list(best) == ["paper-repro"]
    cells = best["paper-repro"]
    ltkd_record = next(r for r in records if r.stage == "final" and r.config["method"] == "ltkd")
    entry = cells[ltkd_record.cell]
    assert entry["hparams"] == ltkd_record.config["hparams"]
    assert entry["hparams"]["alpha"] == 2.5 and entry["hparams"]["beta"] == 3.0
    assert entry["selection"] == "val" and entry["objective_metric"] == "val_acc" and entry["search_trials"] == 6
    assert entry["searched"] == ["alpha", "beta"] and entry["seeds"] == [0, 1, 2] and entry["teacher_seeds"] == [0]
    assert entry["method"] == "ltkd" and entry["teacher_arch"] == TEACHER and entry["student_arch"] == STUDENT
    kd_record = next(r for r in records if r.stage == "final" and r.config["method"] == "kd")
    assert cells[kd_record.cell]["search_trials"] == 0
    assert cells[kd_record.cell]["hparams"] == kd_record.config["hparams"]
    assert len(cells) == 3  # teachers and search trials are not cells of final runs
    # the main table's caption points at them
    caption = (out / "main_table.md").read_text()
    assert "chosen_hparams" in caption and "best_config.json" in caption
    searches = [r for r in records if r.stage == "search"]
    epochs = sum(r.history[-1]["epoch"] for r in searches)
    assert (f"completed/planned (the best is chosen among completed ones): LTKD {len(searches)}/6 "
            f"({epochs} search epochs); at their defaults (no search): Student, KD.") in caption


def test_group_count_table_names_its_within_norm(tmp_path):
    from results.tables import group_count_table

    def with_norm(record: TrialRecord, norm: str) -> TrialRecord:
        config = {**record.config, "hparams": {**record.config["hparams"], "within_norm": norm}}
        return TrialRecord(**{**record.__dict__, "config": config})

    runs = [(n, seed) for n in (3, 10) for seed in (0, 1)]
    for n, seed in runs:
        write_trial(str(tmp_path / "sum"), with_norm(_record("final", "ltkd", 100.0, seed, hparams={"n_groups": n},
                                                             tag=f"-g{n}"), "sum"))
    table = group_count_table(read_results([str(tmp_path / "sum")]))
    assert table.row_keys == ["3", "10"]
    assert "within_norm = sum" in table.caption and "grows with the group count" in table.caption
    # runs that mix normalisations: one row per (group count, within_norm), and the caption says so
    for n, seed in runs:
        write_trial(str(tmp_path / "sum"), with_norm(_record("final", "ltkd", 100.0, seed, hparams={"n_groups": n},
                                                             tag=f"-g{n}-mean"), "mean"))
    mixed = group_count_table(read_results([str(tmp_path / "sum")]))
    assert mixed.row_keys == ["3/mean", "3/sum", "10/mean", "10/sum"]
    assert mixed.rows == ["3 groups (mean)", "3 groups (sum)", "10 groups (mean)", "10 groups (sum)"]
    assert all(cell.n == 2 for row in mixed.cells for cell in row)
    assert "Rows mix within_norm settings (mean, sum)" in mixed.caption


def test_epochs_that_skipped_the_test_set_are_left_out_of_tables_and_figures(tmp_path):
    """test_every 2 (trainables/config.py): epochs 1 and 3 carry None test metrics, as the engine writes them;
    best-epoch selection, the per-class curves and the teacher's per-epoch head bias read the others."""
    from results.report_figures import draw_figures
    from results.tables import trial_outcomes

    skipped = ("acc", "acc_head", "acc_medium", "acc_tail", "per_class_acc", "group_prob")

    def every_second_epoch(record: TrialRecord) -> TrialRecord:
        history = [dict(m, **dict.fromkeys(skipped)) if m["epoch"] % 2 else m for m in record.history]
        return TrialRecord(**{**record.__dict__, "history": history})

    records = [every_second_epoch(_record("teacher", "teacher", 100.0, seed)) for seed in SEEDS]
    records += [every_second_epoch(_record("final", method, 100.0, seed))
                for method in ("ce", "ltkd") for seed in SEEDS]
    for record in records:
        write_trial(str(tmp_path), record)
    df = read_results(str(tmp_path))
    epochs = df[df["row_kind"] == "epoch"]
    odd = epochs[epochs["epoch"] % 2 == 1]
    assert len(odd) == 2 * len(records) and odd["acc"].isna().all() and odd["per_class_acc"].isna().all()
    best = trial_outcomes(df, "best-epoch")
    assert len(best) == len(records) and set(best["epoch"]) <= {2, 4} and best["acc"].notna().all()
    figures = dict(draw_figures(df))
    assert any(stem.startswith("per_class_cifar100_if100") for stem in figures)
    head_bias = next(fig for stem, fig in figures.items() if stem.startswith("head_bias_cifar100_if100"))
    per_epoch = head_bias.axes[0].lines[0]  # the teacher's head group, per epoch
    assert list(per_epoch.get_xdata()) == [2, 4]
