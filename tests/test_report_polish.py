"""`ltkd report` polish: clean Markdown marks, LaTeX sized by its content, figures as PDF and PNG,
seed spread in the figures of means, a sensitivity panel per searched hyperparameter, and titles
without internal ids. Results come from the synthetic builders of tests/test_results.py, written
and read back through the real store.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from PIL import Image

from orchestrator.cli import main as ltkd_main
from results import render
from results.figures import (
    DPI,
    param_importances,
    search_outcomes,
    sensitivity_figure,
    sensitivity_panels,
)
from results.render import to_html, to_latex, to_markdown
from results.report_figures import all_figures, draw_figures
from results.store import read_results, write_trial
from results.tables import Column, Stat, Table, TextTable, all_tables
from tests.test_results import FACTORS, STUDENT, TEACHER, _counts, _record, build_records

SWEEP = "paper-repro"  # the builders' sweep name


def _write(folder: Path, records) -> Path:
    for record in records:
        write_trial(str(folder), record)
    return folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("polish"), build_records())


@pytest.fixture(scope="module")
def df(sweep):
    return read_results([str(sweep)])


def _search(method: str, spaces: list[dict], study: str | None = None, statuses=None) -> list:
    records = []
    for number, hparams in enumerate(spaces):
        record = _record("search", method, 10.0, 0, hparams=hparams, tag=f"-t{number}", optuna_trial=number,
                         status=(statuses or {}).get(number, "completed"))
        records.append(dataclasses.replace(record, study=study or f"{SWEEP}:cifar100/if10/{method}"))
    return records


def _three_parameter_search(n: int = 8) -> list:
    rng = np.random.default_rng(3)
    return _search("ltkd", [{"alpha": float(rng.uniform(0.5, 4)), "beta": float(rng.uniform(1, 8)),
                             "temperature": float(rng.uniform(2, 8))} for _ in range(n)])


def _titles(fig) -> list[str]:
    texts = [fig.get_suptitle()] + [ax.get_title(loc=loc) for ax in fig.axes for loc in ("left", "center", "right")]
    return [t for t in texts if t]


# ------------------------------------------------------------------------------ 1. Markdown marks


def test_markdown_marks_second_best_in_italics_and_says_so(df, sweep, capsys):
    tables = [t for t in all_tables(df) if isinstance(t, Table)]
    assert {t.name for t in tables} == {"main_table", "ablation_table", "group_count_table"}
    for table in tables:
        md, tex, page = to_markdown(table), to_latex(table), to_html(table)
        assert "<u>" not in md and "underlined" not in md
        assert re.search(r"\| _\d+\.\d\d ± \d+\.\d\d_ ", md), md  # the second best, in italics
        assert re.search(r"\| \*\*\d+\.\d\d ± \d+\.\d\d\*\* ", md)  # the best, bold
        assert "; italics: second best." in md
        # LaTeX and HTML keep the underline, and their captions say so
        assert r"\underline{" in tex and "underlined: second best" in tex and "italics" not in tex
        assert "<u>" in page and "underlined: second best" in page and "italics" not in page
    assert ltkd_main(["report", str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "<u>" not in printed and "italics: second best" in printed and "underlined" not in printed


# ------------------------------------------------------------------------------ 2. LaTeX size


def _table(n_columns: int, label: str = "LTKD", paper: float | None = None) -> Table:
    factors = [10.0, 20.0, 50.0, 100.0, 200.0, 256.0][: max(1, n_columns // 2)]
    columns = [Column("cifar100", TEACHER, STUDENT, f, m) for f in factors for m in ("acc_tail", "acc")][:n_columns]
    rows = ["Student", label]
    cells = [[Stat(50.0 + j, 1.0, 3, mark="second", paper=paper) for j in range(n_columns)],
             [Stat(60.0 + j, 1.5, 3, mark="best", paper=paper) for j in range(n_columns)]]
    return Table("main_table", "Main results", "Bold: best student; underlined: second best.", columns, rows,
                 ["method", "method"], cells)


def _closes_its_braces(tex: str) -> bool:
    body = re.sub(r"\\[{}]", "", tex)
    return body.count("{") == body.count("}")


def test_latex_scales_only_wide_tables(monkeypatch):
    narrow, wide = to_latex(_table(4)), to_latex(_table(12))
    assert r"\resizebox" not in narrow and "\\end{tabular}\n\\end{table*}" in narrow
    assert "\\resizebox{\\textwidth}{!}{%\n\\begin{tabular}" in wide and "\\end{tabular}}\n\\end{table*}" in wide
    assert _closes_its_braces(narrow) and _closes_its_braces(wide)
    # few columns but too wide for the page (a long row label, the paper's numbers beside each cell)
    assert r"\resizebox" in to_latex(_table(6, label="LTKD, " + "a very long ablation name " * 6, paper=55.5))
    assert r"\resizebox" not in to_latex(_table(6))
    # scaling is the only difference: the rest of the table is as it was
    monkeypatch.setattr(render, "RESIZE_COLUMNS", 0)
    forced = to_latex(_table(4))
    assert forced.replace("\\resizebox{\\textwidth}{!}{%\n", "").replace("\\end{tabular}}", "\\end{tabular}") == narrow


def test_latex_text_tables_are_sized_too():
    small = TextTable("chosen_hparams", "Chosen", "caption", ["Method", "γ", "Hyperparameters"],
                      [["LTKD", "10", "alpha=1, beta=2"]])
    wide = TextTable("chosen_hparams", "Chosen", "caption", [f"h{k}" for k in range(9)], [[str(k) for k in range(9)]])
    assert r"\resizebox" not in to_latex(small) and _closes_its_braces(to_latex(small))
    assert r"\resizebox" in to_latex(wide) and _closes_its_braces(to_latex(wide))


def test_report_main_table_of_four_columns_is_natural_size(sweep, tmp_path):
    out = tmp_path / "report"
    assert ltkd_main(["report", str(sweep), "--out", str(out)]) == 0
    tex = (out / "main_table.tex").read_text()
    assert r"\begin{tabular}{lcccc}" in tex  # row labels, then 2 factors x (Tail, All)
    assert r"\resizebox" not in tex
    assert r"\resizebox" in (out / "chosen_hparams.tex").read_text()  # 9 columns


# ------------------------------------------------------------------------------ 3. PDF and PNG


def test_every_figure_is_written_as_pdf_and_png(df, sweep, tmp_path, capsys):
    written = all_figures(df, tmp_path / "figs")
    on_disk = sorted((tmp_path / "figs").iterdir())
    assert sorted(written) == on_disk  # what it says it wrote is what is there
    stems = {p.stem for p in on_disk}
    assert {p.suffix for p in on_disk} == {".pdf", ".png"} and len(on_disk) == 2 * len(stems)
    for stem in stems:
        assert (tmp_path / "figs" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        with Image.open(tmp_path / "figs" / f"{stem}.png") as image:
            assert image.info["dpi"] == pytest.approx((DPI, DPI), abs=0.5)
    assert DPI >= 200
    out = tmp_path / "report"
    assert ltkd_main(["report", str(sweep), "--out", str(out), "--figures"]) == 0
    err = capsys.readouterr().err
    count = int(re.search(r"wrote (\d+) file\(s\)", err).group(1))
    assert count == len(list(out.iterdir()))
    assert len(list(out.glob("*.pdf"))) == len(list(out.glob("*.png"))) == len(stems)


def test_figures_help_names_both_formats(capsys):
    with pytest.raises(SystemExit):
        ltkd_main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ".pdf" in text and ".png" in text and f"{DPI} dpi" in text and "PNG figures into" not in text


# ------------------------------------------------------------------------------ 4. seed spread


def _figure(df, prefix: str):
    return next(fig for stem, fig in draw_figures(df) if stem.startswith(prefix))


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window)
    return np.convolve(values, kernel, mode="same") / np.convolve(np.ones_like(values), kernel, mode="same")


def test_per_class_curves_show_the_seed_spread(df):
    fig = _figure(df, "per_class_cifar100_if10_")
    ax = next(a for a in fig.axes if a.get_legend() is not None)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 7 and all("(n=3," in t for t in legend)  # teacher and six methods, 3 seeds each
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 7
    assert "± 1 sample std over seeds" in ax.get_title()
    # LTKD's band is mean ± sample std of the seeds' smoothed curves, computed here from the records
    runs = [r for r in build_records() if r.stage == "final" and r.config["method"] == "ltkd"
            and r.cell.endswith("/ltkd") and r.config["imbalance_factor"] == 10.0 and r.status == "completed"]
    assert len(runs) == 3
    counts = np.asarray(_counts(10.0), dtype=float)
    order = np.lexsort((np.arange(len(counts)), -counts))
    smoothed = np.stack([_smooth(np.asarray(r.history[-1]["per_class_acc"])[order], 5) for r in runs])
    mean, std = smoothed.mean(axis=0), smoothed.std(axis=0, ddof=1)
    ltkd = bands[legend.index(next(t for t in legend if t.startswith("LTKD")))]
    vertices = ltkd.get_paths()[0].vertices
    for rank in (1, 50, 100):
        ys = vertices[np.isclose(vertices[:, 0], rank), 1]
        assert ys.min() == pytest.approx(max(mean[rank - 1] - std[rank - 1], 0), abs=1e-6)
        assert ys.max() == pytest.approx(min(mean[rank - 1] + std[rank - 1], 100), abs=1e-6)


def test_one_seed_draws_no_band(tmp_path):
    records = [r for r in build_records() if r.stage in ("final", "teacher") and r.config["seed"] == 0
               and r.config["imbalance_factor"] == 10.0]
    fig = _figure(read_results([str(_write(tmp_path, records))]), "per_class_")
    ax = next(a for a in fig.axes if a.get_legend() is not None)
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert all("(n=1," in t.get_text() for t in ax.get_legend().get_texts())


def test_head_bias_shows_the_seed_spread(df):
    fig = _figure(df, "head_bias_cifar100_if10_")
    left, right = fig.axes[:2]
    assert len([c for c in left.collections if isinstance(c, PolyCollection)]) == 3  # a band per group
    assert "n = 3 teacher runs" in left.get_legend().get_title().get_text()
    labels = [t.get_text() for t in right.get_yticklabels()]
    assert labels[0] == "Teacher (n=3)" and all(label.endswith("(n=3)") for label in labels)
    assert len([c for c in right.containers if isinstance(c, ErrorbarContainer)]) == len(labels)
    assert "± 1 sample std" in right.get_title()


# ------------------------------------------------------------------------------ 5. sensitivity


def test_sensitivity_has_a_panel_per_searched_hyperparameter(tmp_path):
    df = read_results([str(_write(tmp_path, _three_parameter_search()))])
    group = search_outcomes(df)
    assert sensitivity_panels(group) == [("alpha", "numeric"), ("beta", "numeric"), ("temperature", "numeric")]
    fig = sensitivity_figure(group)
    panels = [ax for ax in fig.axes if not ax.get_title()]
    assert [ax.get_xlabel() for ax in panels] == ["alpha", "beta", "temperature"]
    importance = [ax for ax in fig.axes if ax.get_title().startswith("Importance")]
    assert len(importance) == 1
    assert sorted(t.get_text() for t in importance[0].get_yticklabels()) == ["alpha", "beta", "temperature"]
    assert "8 completed trials" in importance[0].get_title()


def test_importances_come_from_the_results_rows(tmp_path):
    df = read_results([str(_write(tmp_path, _three_parameter_search()))])
    group = search_outcomes(df)
    panels = sensitivity_panels(group)
    first = param_importances(group, panels, "acc")
    assert set(first) == {"alpha", "beta", "temperature"} and sum(first.values()) == pytest.approx(1.0)
    assert param_importances(group, panels, "acc") == first  # seeded: the same report, the same panel
    assert param_importances(group.iloc[:4], panels, "acc") is None  # too few trials to say


def test_sensitivity_of_a_search_without_alpha_or_beta(tmp_path):
    """KD's search (KD weight and temperature) had no sensitivity figure before."""
    rng = np.random.default_rng(5)
    records = _search("kd", [{"kd_weight": float(rng.uniform(0.1, 0.9)), "temperature": float(rng.uniform(1, 8))}
                             for _ in range(6)])
    df = read_results([str(_write(tmp_path, records))])
    assert sensitivity_panels(search_outcomes(df)) == [("kd_weight", "numeric"), ("temperature", "numeric")]
    stems = [stem for stem, _ in draw_figures(df)]
    assert f"sensitivity_{SWEEP}_cifar100_if10_kd" in stems


def test_categorical_hyperparameters_get_a_strip(tmp_path):
    records = _search("ltkd", [{"alpha": 0.5 + k / 2, "rebalance": k % 2 == 0} for k in range(6)],
                      statuses={2: "early_stopped"})
    df = read_results([str(_write(tmp_path, records))])
    group = search_outcomes(df)
    assert sensitivity_panels(group) == [("alpha", "numeric"), ("rebalance", "categorical")]
    fig = sensitivity_figure(group)
    strip = next(ax for ax in fig.axes if ax.get_xlabel() == "rebalance")
    assert [t.get_text() for t in strip.get_xticklabels()] == ["false", "true"]


def test_nothing_searched_draws_no_sensitivity(tmp_path):
    records = _search("ltkd", [{"alpha": 1.0, "beta": 2.0}] * 3)
    group = search_outcomes(read_results([str(_write(tmp_path, records))]))
    assert sensitivity_panels(group) == [] and sensitivity_figure(group) is None


# ------------------------------------------------------------------------------ 6. titles


def test_titles_read_like_a_paper(df, tmp_path):
    search = read_results([str(_write(tmp_path, _three_parameter_search()))])
    cells = set(df["cell"].dropna()) | set(search["cell"].dropna())
    studies = set(df["study"].dropna()) | set(search["study"].dropna())
    seen = 0
    for frame in (df, search):
        for stem, fig in draw_figures(frame):
            for title in _titles(fig):
                seen += 1
                assert SWEEP not in title, (stem, title)
                assert not any(cell in title or study in title for cell in cells for study in studies), title
                assert "->" not in title and not re.search(r":\s*\S+/if\d", title), (stem, title)
            if stem.startswith(("sensitivity", "optuna")):
                text = " ".join(_titles(fig))
                assert "LTKD, CIFAR-100-LT, γ=10, resnet32x4 → resnet8x4" in text, text
            if stem.startswith(("per_class", "head_bias")):
                factor = next(f for f in FACTORS if f"_if{f:g}_" in stem)
                assert f"CIFAR-100-LT, γ={factor:g}, resnet32x4 → resnet8x4" in " ".join(_titles(fig))
    assert seen >= 10
