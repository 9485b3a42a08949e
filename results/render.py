"""Rendering of `results.tables.Table` objects: Markdown (terminal), LaTeX, HTML and CSV.

Markdown splits the table into one block per (dataset, pair), since a terminal cannot show
the paper's three header levels; LaTeX and HTML keep the paper's layout (dataset and pair, then
imbalance factor, then Tail / All); CSV is tidy: one line per cell.

Every cell is mean ± std over seeds; HTML and CSV add the 95% Student-t interval (a one-seed cell
says it has none). The gain row carries the paired t-test's p-value, and a dagger when the gain is
not significant at 0.05 (or could not be tested). `TextTable`s (the chosen hyperparameters) render
as plain tables in every format.
"""
from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable
from dataclasses import dataclass

from results.tables import NOT_SIGNIFICANT, Column, Stat, Table, TextTable, format_factor

DIGITS = 2


# ------------------------------------------------------------------------------ cell text


def _number(value: float) -> str:
    return f"{value:.{DIGITS}f}"


def _signed(value: float) -> str:
    return f"{value:+.{DIGITS}f}"


def _cell_parts(stat: Stat | None, kind: str) -> tuple[str, str | None, str | None]:
    """(main number, spread or None, paper number or None) as plain text."""
    if stat is None or stat.mean is None:
        return "–", None, None
    if kind == "gain":
        return _signed(stat.mean), None, None if stat.paper is None else _signed(stat.paper)
    spread = None if stat.std is None else _number(stat.std)
    return _number(stat.mean), spread, None if stat.paper is None else _number(stat.paper)


def p_text(stat: Stat) -> str:
    """The gain's paired test as text: 'p = 0.012', 'p < 0.001' or 'no test'."""
    if stat.p_value is None:
        return "no test"
    return "p < 0.001" if stat.p_value < 0.001 else f"p = {stat.p_value:.3f}"


def dagger(stat: Stat | None, kind: str) -> str:
    """The mark of a gain that is not significant (or was not tested)."""
    if kind != "gain" or stat is None or stat.mean is None or stat.significant:
        return ""
    return NOT_SIGNIFICANT


def ci_text(stat: Stat | None, kind: str) -> str | None:
    """The 95% interval as text, or what stands in for it (None for an empty cell)."""
    if stat is None or stat.mean is None:
        return None
    if stat.ci is not None:
        low, high = stat.ci
        if kind == "gain":  # the gain is a difference of means; its interval is the paired differences'
            return f"paired Δ 95% CI [{_signed(low)}, {_signed(high)}]"
        return f"95% CI [{_number(low)}, {_number(high)}]"
    if kind == "gain":
        return f"{stat.n_pairs} pair{'' if stat.n_pairs == 1 else 's'}: no interval"
    return f"n = {stat.n}: no interval"


def _runs(values: list[str]) -> list[tuple[str, int]]:
    """Consecutive equal values as (value, span)."""
    out: list[tuple[str, int]] = []
    for value in values:
        if out and out[-1][0] == value:
            out[-1] = (value, out[-1][1] + 1)
        else:
            out.append((value, 1))
    return out


def _switch(value) -> str:
    return "–" if value is None else ("✓" if value else "✗")


@dataclass(frozen=True)
class _Markup:
    """How one format writes the parts of a cell (`_cell`); the strings are `str.format` templates."""

    escape: Callable[[str], str]  # any text of the cell (numbers, the p-value, the interval)
    signed: Callable[[str], str]  # a gain's numbers, which carry a sign
    best: str
    second: str
    spread: str
    dagger: str
    p_value: str
    paper: str
    mark_spread: bool = False  # best / second mark the spread with the mean
    interval: str | None = None  # the 95% interval (HTML only)


def _cell(stat: Stat | None, kind: str, markup: _Markup) -> str:
    """A cell: mean (marked best / second), spread, the gain's dagger and p-value, the paper's number."""
    if stat is None or stat.mean is None:
        return markup.escape("–")  # (marks are only set on cells with a mean)
    main, spread, paper = _cell_parts(stat, kind)
    number = markup.signed if kind == "gain" else markup.escape
    text = number(main)
    spread_text = "" if spread is None else markup.spread.format(markup.escape(spread))
    if markup.mark_spread:
        text += spread_text
    if kind != "gain" and stat.mark in ("best", "second"):
        text = (markup.best if stat.mark == "best" else markup.second).format(text)
    if not markup.mark_spread:
        text += spread_text
    if kind == "gain":
        mark = dagger(stat, kind)
        if mark:
            text += markup.dagger.format(markup.escape(mark))
        text += markup.p_value.format(markup.escape(p_text(stat)))
    if paper is not None:
        text += markup.paper.format(number(paper))
    interval = None if markup.interval is None else ci_text(stat, kind)
    if interval is not None:
        text += markup.interval.format(markup.escape(interval))
    return text


# ------------------------------------------------------------------------------ Markdown


_MD = _Markup(escape=str, signed=str, best="**{}**", second="<u>{}</u>", spread=" ± {}", dagger="{}",
              p_value=" ({})", paper=" ({})", mark_spread=True)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table | TextTable) -> str:
    if isinstance(table, TextTable):
        return _text_markdown(table)
    lines = [f"### {table.title}", ""]
    groups = _runs([c.group for c in table.columns])
    start = 0
    for group, span in groups:
        block = list(range(start, start + span))
        start += span
        lines.append(f"**{_md_escape(group)}**")
        lines.append("")
        header = [table.row_header] + table.lead_headers + [f"{table.columns[j].sub} {table.columns[j].label}" for j in block]
        lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
        lines.append("|" + "|".join([":---"] + [":---:"] * len(table.lead_headers) + ["---:"] * len(block)) + "|")
        for i, label in enumerate(table.rows):
            if all(table.cells[i][j] is None for j in block):
                continue
            lead = [_switch(v) for v in table.lead[i]] if table.lead else []
            row = [_md_escape(label)] + lead + [_cell(table.cells[i][j], table.kinds[i], _MD) for j in block]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines.append(f"*{table.caption}*")
    for note in table.notes:
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------ LaTeX


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"→": r"$\rightarrow$", "γ": r"$\gamma$", "Δ": r"$\Delta$", "−": "$-$", "±": r"$\pm$",
                  "✓": r"\checkmark", "✗": r"$\times$", "–": "--",
                  "†": r"$^\dagger$"}


def latex_escape(text: str) -> str:
    out = []
    for ch in str(text):
        out.append(_LATEX_SPECIAL.get(ch) or _LATEX_UNICODE.get(ch) or ch)
    return "".join(out)


_TEX = _Markup(escape=lambda text: latex_escape(text).replace("<", "$<$"),
               signed=lambda text: text.replace("-", "$-$"),
               best=r"\textbf{{{}}}", second=r"\underline{{{}}}", spread=r"{{\scriptsize$\pm${}}}", dagger="{}",
               p_value=r" {{\scriptsize({})}}", paper=r" {{\scriptsize({})}}")


def to_latex(table: Table | TextTable) -> str:
    if isinstance(table, TextTable):
        return _text_latex(table)
    n_lead = 1 + len(table.lead_headers)
    spec = "l" + "c" * len(table.lead_headers) + "c" * len(table.columns)
    lines = [
        "% Generated by `ltkd report`. Needs \\usepackage{booktabs,graphicx,amssymb}.",
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        r"\resizebox{\textwidth}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    levels: list[Callable[[Column], str]] = [lambda c: c.group, lambda c: f"{c.group}|{c.sub}"]
    for depth, key in enumerate(levels):
        cells = [""] * n_lead
        rules = []
        position = n_lead + 1
        for value, span in _runs([key(c) for c in table.columns]):
            text = value.split("|")[-1]
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(text)}}}")
            rules.append(rf"\cmidrule(lr){{{position}-{position + span - 1}}}")
            position += span
        lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    header = [table.row_header] + [latex_escape(h) for h in table.lead_headers] + [latex_escape(c.label) for c in table.columns]
    lines.append(" & ".join(header) + r" \\")
    lines.append(r"\midrule")
    for i, label in enumerate(table.rows):
        if table.kinds[i] == "gain" or (i > 0 and table.kinds[i - 1] == "teacher" and table.kinds[i] != "teacher"):
            lines.append(r"\midrule")
        lead = [latex_escape(_switch(v)) for v in table.lead[i]] if table.lead else []
        row = [latex_escape(label)] + lead + [_cell(cell, table.kinds[i], _TEX) for cell in table.cells[i]]
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table*}"]
    if table.notes:
        lines += ["% Notes:"] + [f"% - {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ HTML


_HTML = _Markup(escape=html.escape, signed=html.escape, best="<b>{}</b>", second="<u>{}</u>",
                spread='<span class="std"> ± {}</span>', dagger="<sup>{}</sup>",
                p_value=' <span class="p">({})</span>', paper=' <span class="paper">({})</span>',
                interval='<br><span class="ci">{}</span>')


_HTML_STYLE = """
body { font-family: sans-serif; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 2px 8px; text-align: center; white-space: nowrap; }
td.label { text-align: left; }
thead tr:last-child th { border-bottom: 1px solid #000; }
tr.gain td { border-top: 1px solid #000; font-style: italic; }
tr.teacher td { color: #555; }
.std { font-size: 80%; color: #444; }
.paper { font-size: 80%; color: #777; }
.ci, .p { font-size: 75%; color: #555; }
caption { caption-side: bottom; text-align: left; max-width: 60em; font-size: 90%; }
""".strip()


def to_html_fragment(table: Table | TextTable) -> str:
    if isinstance(table, TextTable):
        return _text_html_fragment(table)
    n_lead = 1 + len(table.lead_headers)
    lines = [f'<table id="{table.name}">', f"<caption>{html.escape(table.caption)}"]
    if table.notes:
        lines.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in table.notes) + "</ul>")
    lines += ["</caption>", "<thead>"]
    for key in (lambda c: c.group, lambda c: f"{c.group}|{c.sub}"):
        row = [f'<th colspan="{n_lead}"></th>']
        for value, span in _runs([key(c) for c in table.columns]):
            row.append(f'<th colspan="{span}">{html.escape(value.split("|")[-1])}</th>')
        lines.append("<tr>" + "".join(row) + "</tr>")
    header = [table.row_header] + table.lead_headers + [c.label for c in table.columns]
    lines.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    lines += ["</thead>", "<tbody>"]
    for i, label in enumerate(table.rows):
        lead = [_switch(v) for v in table.lead[i]] if table.lead else []
        cells = [f'<td class="label">{html.escape(label)}</td>'] + [f"<td>{html.escape(v)}</td>" for v in lead]
        cells += [f"<td>{_cell(cell, table.kinds[i], _HTML)}</td>" for cell in table.cells[i]]
        lines.append(f'<tr class="{table.kinds[i]}">' + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines) + "\n"


def to_html(table: Table | TextTable) -> str:
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(table.title)}</title><style>\n{_HTML_STYLE}\n</style></head>\n<body>\n"
            f"<h2>{html.escape(table.title)}</h2>\n{to_html_fragment(table)}</body></html>\n")


# ------------------------------------------------------------------------------ CSV


CSV_FIELDS = ("table", "row", "row_key", "row_kind", "dataset", "teacher", "student", "imbalance_factor", "metric",
              "mean", "std", "n", "ci_low", "ci_high", "ci_note", "compared_to", "n_pairs", "p_value", "significant",
              "mark", "paper", "select")


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(round(float(value), 6))


def to_csv(table: Table | TextTable) -> str:
    if isinstance(table, TextTable):
        return _text_csv(table)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for i, label in enumerate(table.rows):
        for column, stat in zip(table.columns, table.cells[i]):
            if stat is None or stat.mean is None:
                continue
            gain = table.kinds[i] == "gain"
            writer.writerow({
                "table": table.name, "row": label, "row_key": table.row_keys[i] if table.row_keys else label,
                "row_kind": table.kinds[i], "dataset": column.dataset, "teacher": column.teacher or "",
                "student": column.student or "", "imbalance_factor": format_factor(column.imbalance_factor),
                "metric": column.metric, "mean": _csv_number(stat.mean), "std": _csv_number(stat.std),
                "n": "" if gain else stat.n,
                # the gain row: the interval of the mean paired difference, over n_pairs pairs
                "ci_low": _csv_number(stat.ci[0] if stat.ci else None),
                "ci_high": _csv_number(stat.ci[1] if stat.ci else None),
                "ci_note": (f"interval of the mean paired difference ({stat.n_pairs} pairs)" if gain and stat.ci
                            else "" if stat.ci else ci_text(stat, table.kinds[i])),
                "compared_to": stat.compared_to or "", "n_pairs": stat.n_pairs if gain else "",
                "p_value": "" if not gain or stat.p_value is None else repr(float(f"{stat.p_value:.6g}")),
                "significant": "" if not gain else ("no test" if stat.significant is None
                                                    else "yes" if stat.significant else "no"),
                "mark": stat.mark or "", "paper": _csv_number(stat.paper), "select": table.select,
            })
    return buffer.getvalue()


# ------------------------------------------------------------------------------ plain text tables


def _text_markdown(table: TextTable) -> str:
    lines = [f"### {table.title}", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join(":---" for _ in table.headers) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_escape(str(v)) for v in row) + " |")
    lines += ["", f"*{table.caption}*"]
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def _text_latex(table: TextTable) -> str:
    lines = [
        "% Generated by `ltkd report`. Needs \\usepackage{booktabs,graphicx}.",
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        r"\resizebox{\textwidth}{!}{%",
        rf"\begin{{tabular}}{{{'l' * len(table.headers)}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(str(v)) for v in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table*}"]
    if table.notes:
        lines += ["% Notes:"] + [f"% - {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def _text_html_fragment(table: TextTable) -> str:
    lines = [f'<table id="{table.name}">', f"<caption>{html.escape(table.caption)}"]
    if table.notes:
        lines.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in table.notes) + "</ul>")
    lines += ["</caption>", "<thead>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr>",
              "</thead>", "<tbody>"]
    for row in table.rows:
        lines.append("<tr>" + "".join(f'<td class="label">{html.escape(str(v))}</td>' for v in row) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines) + "\n"


def _text_csv(table: TextTable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.headers)
    writer.writerows([[str(v) for v in row] for row in table.rows])
    return buffer.getvalue()


RENDERERS = {"md": to_markdown, "tex": to_latex, "html": to_html, "csv": to_csv}
