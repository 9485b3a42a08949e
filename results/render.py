"""Rendering of `results.tables.Table` objects: Markdown (terminal), LaTeX, HTML and CSV.

Markdown splits the table into one block per (dataset, pair), since a terminal cannot show
the paper's three header levels; LaTeX and HTML keep the paper's layout (dataset and pair, then
imbalance factor, then Tail / All); CSV is tidy: one line per cell.

Every cell is mean ± std over seeds; HTML and CSV add the 95% Student-t interval (a one-seed cell
says it has none). The best student is bold everywhere; the second best is underlined in LaTeX and
HTML and set in italics in Markdown (raw `<u>` tags read badly in a terminal), and each format's
caption names the mark it uses. LaTeX sets a table at its natural size unless it is wide
(`latex_needs_resize`): only then is it scaled to `\textwidth`. The gain row carries the paired
t-test's Holm-adjusted p-value (or why there is no test), a dagger when the gain is not significant
at 0.05 after Holm (or could not be tested), and a double dagger when its comparator was chosen on
the test set.
`TextTable`s (the chosen hyperparameters) render as plain tables in every format.
"""
from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from results.tables import NOT_SIGNIFICANT, SECOND_BEST_CAPTION, TEST_CHOSEN, Column, Stat, Table, TextTable, format_factor

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
    """The gain's paired test as text: 'p = 0.012', 'p < 0.001' (Holm-adjusted when the table
    adjusted it, as its caption says), 'no test', or why not ('all 3 differences equal: no test')."""
    if stat.p_value is None:
        return stat.no_test if stat.no_test and stat.no_test.endswith("no test") else "no test"
    p = stat.p_holm if stat.p_holm is not None else stat.p_value
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def dagger(stat: Stat | None, kind: str) -> str:
    """The marks of a gain: not significant (or not tested), comparator chosen on the test set."""
    if kind != "gain" or stat is None or stat.mean is None:
        return ""
    return ("" if stat.significant else NOT_SIGNIFICANT) + (TEST_CHOSEN if stat.compared_on == "test" else "")


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


_MD = _Markup(escape=str, signed=str, best="**{}**", second="_{}_", spread=" ± {}", dagger="{}",
              p_value=" ({})", paper=" ({})", mark_spread=True)
MARKDOWN_SECOND_BEST = "italics: second best"  # what the Markdown caption says instead of SECOND_BEST_CAPTION


def markdown_caption(caption: str) -> str:
    """The caption as the Markdown table has it: it names italics, not underlining, for the second best."""
    return caption.replace(SECOND_BEST_CAPTION, MARKDOWN_SECOND_BEST)


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
    lines.append(f"*{markdown_caption(table.caption)}*")
    for note in table.notes:
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------ LaTeX


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"→": r"$\rightarrow$", "γ": r"$\gamma$", "Δ": r"$\Delta$", "−": "$-$", "±": r"$\pm$",
                  "✓": r"\checkmark", "✗": r"$\times$", "–": "--",
                  "†": r"$^\dagger$", "‡": r"$^\ddagger$"}


def latex_escape(text: str) -> str:
    out = []
    for ch in str(text):
        out.append(_LATEX_SPECIAL.get(ch) or _LATEX_UNICODE.get(ch) or ch)
    return "".join(out)


_TEX = _Markup(escape=lambda text: latex_escape(text).replace("<", "$<$"),
               signed=lambda text: text.replace("-", "$-$"),
               best=r"\textbf{{{}}}", second=r"\underline{{{}}}", spread=r"{{\scriptsize$\pm${}}}", dagger="{}",
               p_value=r" {{\scriptsize({})}}", paper=r" {{\scriptsize({})}}")


# When a LaTeX table is scaled to the text width: an estimate of its natural width, not a measure.
RESIZE_COLUMNS = 8  # a tabular with more columns than this (the row labels included) is always scaled
TEXTWIDTH_PT = 500.0  # else scaled when wider than this: about a two-column paper's full width, which table* spans
_CHAR_PT = 5.0  # a digit (or an average letter) at 10 pt
_SMALL_PT = 3.5  # at \scriptsize (the spread, the p-value, the paper's number)
_COLSEP_PT = 12.0  # 2 x \tabcolsep


def _plain_width(text: str, small: bool = False) -> float:
    return len(text) * (_SMALL_PT if small else _CHAR_PT)


def _cell_width(stat: Stat | None, kind: str) -> float:
    """The estimated width (pt) of a cell as `_TEX` sets it: the mean at normal size, the rest smaller."""
    main, spread, paper = _cell_parts(stat, kind)
    width = _plain_width(main) + (0 if spread is None else _plain_width("±" + spread, small=True))
    if kind == "gain" and stat is not None and stat.mean is not None:
        width += _plain_width(dagger(stat, kind)) + _plain_width(f" ({p_text(stat)})", small=True)
    if paper is not None:
        width += _plain_width(f" ({paper})", small=True)
    return width


def latex_needs_resize(widths: list[float], spans: Iterable[tuple[int, int, float]] = ()) -> bool:
    """Whether a tabular is scaled to \\textwidth (\\resizebox): when it has more than RESIZE_COLUMNS
    columns, or when its estimated natural width (`widths`: each column's widest cell in pt, plus
    the column padding; `spans`: (first column, columns, width) of headers over several columns, which widen
    the columns they span when wider than them) exceeds TEXTWIDTH_PT. Narrower tables are set at
    their natural size, never scaled up."""
    if len(widths) > RESIZE_COLUMNS:
        return True
    columns = [w + _COLSEP_PT for w in widths]
    total = sum(columns)
    for first, span, width in spans:
        total += max(0.0, width + _COLSEP_PT - sum(columns[first:first + span]))
    return total > TEXTWIDTH_PT


def _table_widths(table: Table) -> tuple[list[float], list[tuple[int, int, float]]]:
    """Per-column estimated widths of a `Table` (labels, switches, numbers) and its spanning headers."""
    n_lead = 1 + len(table.lead_headers)
    widths = [max([_plain_width(table.row_header)] + [_plain_width(label) for label in table.rows])]
    for k, header in enumerate(table.lead_headers):
        widths.append(max([_plain_width(header)] + [_plain_width(_switch(v[k])) for v in table.lead if len(v) > k]))
    for j, column in enumerate(table.columns):
        widths.append(max([_plain_width(column.label)]
                          + [_cell_width(row[j], kind) for row, kind in zip(table.cells, table.kinds)]))
    spans = []
    for key in (lambda c: c.group, lambda c: c.sub):
        first = n_lead
        for value, span in _runs([key(c) for c in table.columns]):
            spans.append((first, span, _plain_width(value)))
            first += span
    return widths, spans


def _resize_lines(resize: bool) -> tuple[list[str], str]:
    """The lines that open a tabular and the line that closes it, scaled to \\textwidth or not."""
    return ([r"\resizebox{\textwidth}{!}{%"], r"\end{tabular}}") if resize else ([], r"\end{tabular}")


def to_latex(table: Table | TextTable) -> str:
    if isinstance(table, TextTable):
        return _text_latex(table)
    n_lead = 1 + len(table.lead_headers)
    spec = "l" + "c" * len(table.lead_headers) + "c" * len(table.columns)
    widths, spans = _table_widths(table)
    opening, closing = _resize_lines(latex_needs_resize(widths, spans))
    lines = [
        "% Generated by `ltkd report`. Needs \\usepackage{booktabs,graphicx,amssymb}.",
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        *opening,
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
    lines += [r"\bottomrule", closing, r"\end{table*}"]
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
              "mean", "std", "n", "ci_low", "ci_high", "ci_note", "compared_to", "compared_on", "n_pairs", "p_value", "p_holm", "significant",
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
                "compared_to": stat.compared_to or "", "compared_on": stat.compared_on or "",
                "n_pairs": stat.n_pairs if gain else "",
                "p_value": "" if not gain or stat.p_value is None else repr(float(f"{stat.p_value:.6g}")),
                "p_holm": "" if not gain or stat.p_holm is None else repr(float(f"{stat.p_holm:.6g}")),
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
    widths = [max([_plain_width(str(h))] + [_plain_width(str(row[k])) for row in table.rows if len(row) > k])
              for k, h in enumerate(table.headers)]
    opening, closing = _resize_lines(latex_needs_resize(widths))
    lines = [
        "% Generated by `ltkd report`. Needs \\usepackage{booktabs,graphicx}.",
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        *opening,
        rf"\begin{{tabular}}{{{'l' * len(table.headers)}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(str(v)) for v in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", closing, r"\end{table*}"]
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
