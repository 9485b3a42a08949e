"""`ltkd report --figures`: learning curves, search coordinates and Head/Medium/Tail bars draw the
Parquet values (read from the matplotlib artists), and are written as valid PNG and PDF."""
from __future__ import annotations

import statistics

import numpy as np
import pytest

from orchestrator.cli import main as ltkd_main
from results.method_figures import draw_method_figures
from results.store import read_results, write_trial
from tests.test_results import _is_main, build_records


@pytest.fixture(scope="module")
def records():
    out = build_records()
    for record in out:  # a validation split, as sweeps with selection "val" record it
        for metrics in record.history:
            metrics["val_acc"] = round(metrics["acc"] - 1.5 + 0.1 * metrics["epoch"], 3)
    return out


@pytest.fixture(scope="module")
def figures(tmp_path_factory, records):
    folder = tmp_path_factory.mktemp("sweep")
    for record in records:
        write_trial(str(folder), record)
    return folder, dict(draw_method_figures(read_results([str(folder)])))


def finals(records, method: str, factor: float):
    return [r for r in records if r.stage == "final" and r.status == "completed" and _is_main(r)
            and r.config["role"] == "student" and r.config["method"] == method
            and r.config["imbalance_factor"] == factor]


def artist(fig, gid: str, kind: str = "lines"):
    found = [a for ax in fig.axes for a in getattr(ax, kind) if a.get_gid() == gid]
    assert len(found) == 1, (gid, [a.get_gid() for ax in fig.axes for a in getattr(ax, kind)])
    return found[0]


def test_learning_curves_are_the_mean_over_seeds_per_epoch(figures, records):
    _, drawn = figures
    curves = {stem: fig for stem, fig in drawn.items() if stem.startswith("curves_")}
    assert len(curves) == 2  # one per imbalance factor (one dataset, one pair)
    for factor in (10.0, 100.0):
        [fig] = [f for stem, f in curves.items() if f"_if{factor:g}_" in stem]
        for method in ("ce", "kd", "ltkd"):
            runs = finals(records, method, factor)
            for metric in ("val_acc", "acc"):
                line = artist(fig, f"{metric}:{method}")
                epochs = sorted({m["epoch"] for r in runs for m in r.history})
                assert list(line.get_xdata()) == epochs
                expected = [statistics.mean(m[metric] for r in runs for m in r.history if m["epoch"] == e)
                            for e in epochs]
                np.testing.assert_allclose(line.get_ydata(), expected, atol=1e-9)
                assert f"(n={len(runs)})" in line.get_label()
            band = artist(fig, f"band:acc:{method}", "collections")  # ± 1 sample std over seeds
            top = band.get_paths()[0].vertices[:, 1].max()
            last = [r.history[-1]["acc"] for r in runs]
            assert top >= statistics.mean(last) + statistics.stdev(last) - 1e-9


def test_group_bars_are_head_medium_tail_means_per_method(figures, records):
    _, drawn = figures
    [fig] = [f for stem, f in drawn.items() if stem.startswith("groups_") and "_if100_" in stem]
    labels = [t.get_text().split("\n")[0] for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "Student" and "LTKD" in labels
    keys = {"Student": "ce", "KD": "kd", "LTKD": "ltkd"}
    from matplotlib.container import BarContainer

    for metric, group in (("acc_head", "Head"), ("acc_medium", "Medium"), ("acc_tail", "Tail")):
        [bars] = [c for c in fig.axes[0].containers if isinstance(c, BarContainer) and c.get_label() == group]
        for label, bar in zip(labels, bars):
            if label not in keys:
                continue
            values = [r.history[-1][metric] for r in finals(records, keys[label], 100.0)]
            assert bar.get_height() == pytest.approx(statistics.mean(values), abs=1e-9)


def test_parallel_coordinates_draw_every_scored_search_trial(figures, records):
    _, drawn = figures
    [fig] = [f for stem, f in drawn.items() if stem.startswith("coordinates_")]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["alpha", "beta", "All"]
    trials = [r for r in records if r.stage == "search" and r.status in ("completed", "early_stopped")]
    assert len([l for l in ax.lines if str(l.get_gid()).startswith("trial:")]) == len(trials) == 11
    columns = {
        "alpha": np.array([r.config["hparams"]["alpha"] for r in trials]),
        "beta": np.array([r.config["hparams"]["beta"] for r in trials]),
        "acc": np.array([r.history[-1]["acc"] for r in trials]),
    }
    scaled = {}
    for name, values in columns.items():  # each axis from its lowest to its highest value, log past 20x
        values = np.log(values) if values.min() > 0 and values.max() / values.min() > 20 else values
        scaled[name] = (values - values.min()) / (values.max() - values.min())
    for i, record in enumerate(trials):
        line = artist(fig, f"trial:{record.trial_id}")
        np.testing.assert_allclose(line.get_ydata(), [scaled[n][i] for n in ("alpha", "beta", "acc")], atol=1e-9)


def test_report_writes_and_lists_the_new_figures_as_png_and_pdf(figures, tmp_path, capsys):
    folder, drawn = figures
    out = tmp_path / "report"
    assert ltkd_main(["report", str(folder), "--out", str(out), "--figures"]) == 0
    listed = capsys.readouterr().err
    for stem in drawn:
        png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.read_bytes().rstrip().endswith(b"%%EOF")
        assert f"{stem}.pdf, {stem}.png" in listed
