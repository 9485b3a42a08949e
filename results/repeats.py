"""LTKD's Δ per column across repeats of one sweep (other data and teacher seeds, one folder each).

Each repeat's Δ is the main table's own gain cell (results/tables.py): the comparator chosen on
validation, the paired t-test across seeds, Holm-adjusted over that repeat's table. Nothing is
adjusted across repeats: "significant" counts repeats whose own Holm p is below 0.05.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from results.statistics import ALPHA
from results.store import read_results
from results.tables import main_table, method_label


@dataclass(frozen=True)
class Gain:
    """One repeat's Δ in one column: LTKD minus `comparator`, its Holm-adjusted p (None: no test)."""

    delta: float
    comparator: str
    p_holm: float | None
    no_test: str | None = None

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA


@dataclass(frozen=True)
class ColumnSummary:
    column: str
    gains: tuple[Gain | None, ...]  # one per repeat; None: that repeat's table has no Δ there

    @property
    def present(self) -> list[Gain]:
        return [g for g in self.gains if g is not None]

    @property
    def positive(self) -> int:
        return sum(g.delta > 0 for g in self.present)

    @property
    def significant(self) -> int:
        return sum(g.significant for g in self.present)

    @property
    def significant_positive(self) -> int:
        return sum(g.significant and g.delta > 0 for g in self.present)


def sweep_gains(sweep_dir: str) -> dict[str, Gain]:
    """Column name -> LTKD's Δ in the main table of one sweep's Parquet results (empty: no Δ row)."""
    table = main_table(read_results([str(sweep_dir)]))
    if table is None or "gain" not in table.row_keys:
        return {}
    groups = {c.group for c in table.columns}
    out = {}
    for column, cell in zip(table.columns, table.cells[table.row_keys.index("gain")]):
        if cell is None or cell.mean is None:
            continue
        name = f"{column.sub} {column.label}" if len(groups) == 1 else f"{column.group} {column.sub} {column.label}"
        out[name] = Gain(cell.mean, method_label(cell.compared_to), cell.p_holm, cell.no_test)
    return out


def summarize(per_repeat: Sequence[dict[str, Gain]]) -> list[ColumnSummary]:
    """Per column (in the order first seen), its Δ in every repeat."""
    columns = list(dict.fromkeys(name for gains in per_repeat for name in gains))
    return [ColumnSummary(name, tuple(gains.get(name) for gains in per_repeat)) for name in columns]


def _gain_text(gain: Gain | None) -> str:
    if gain is None:
        return "-"
    p = f"p = {gain.p_holm:.3f}" if gain.p_holm is not None else "no test"
    return f"{gain.delta:+.2f} vs {gain.comparator} ({p}{'' if gain.significant else ' †'})"


def summary_lines(summaries: Sequence[ColumnSummary]) -> list[str]:
    """A Markdown table: per column each repeat's Δ (comparator, Holm p), the range and the counts."""
    if not summaries:
        return ["no Δ row in any repeat (no LTKD rows or no comparator)"]
    n = len(summaries[0].gains)
    lines = ["| column | " + " | ".join(f"repeat {k}" for k in range(n))
             + " | Δ min..max | positive | significant (Holm p < 0.05) |",
             "| --- |" + " ---: |" * n + " ---: | ---: | ---: |"]
    for s in summaries:
        deltas = [g.delta for g in s.present]
        span = f"{min(deltas):+.2f}..{max(deltas):+.2f}" if deltas else "-"
        negative = s.significant - s.significant_positive
        significant = f"{s.significant}/{len(s.present)}" + (f" ({negative} negative)" if negative else "")
        lines.append(f"| {s.column} | " + " | ".join(_gain_text(g) for g in s.gains)
                     + f" | {span} | {s.positive}/{len(s.present)} | {significant} |")
    lines.append(f"Δ: LTKD minus the comparator its own repeat chose on validation; p: that repeat's paired "
                 f"t-test across seeds, Holm-adjusted over its table's Δ cells (none across repeats); "
                 f"†: not significant at {ALPHA:g}.")
    return lines
