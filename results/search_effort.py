"""What each method's search spent, read from the search trials' own result rows: completed and
planned trials, how many ASHA stopped early (and that ASHA ran), and the epochs trained.

Planned trials are what the final runs record (`search_trials`, per cell, summed over the cells a
row covers); the rest is counted from the search stage's final rows of those cells. A search that
wrote no rows (another sweep's, or lost) shows its planned count and 0 completed.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd


def _count(value) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def search_effort(students: pd.DataFrame, df: pd.DataFrame | None) -> dict[str, dict[str, int]]:
    """Row key -> planned, completed, early_stopped, errored trials and search epochs trained."""
    planned: dict[str, int] = {}
    cell_key: dict[str, str] = {}
    for record in students[["cell", "row_key", "search_trials"]].drop_duplicates(["cell"]).to_dict("records"):
        n = _count(record["search_trials"])
        if n:
            planned[record["row_key"]] = planned.get(record["row_key"], 0) + n
            cell_key[record["cell"]] = record["row_key"]
    out = {key: {"planned": n, "completed": 0, "early_stopped": 0, "errored": 0, "epochs": 0}
           for key, n in planned.items()}
    if df is None or df.empty or not cell_key:
        return out
    search = df[(df["row_kind"] == "final") & (df["stage"] == "search") & df["cell"].isin(set(cell_key))]
    search = search.drop_duplicates(["sweep", "trial_id"])
    for record in search[["cell", "status", "epoch"]].to_dict("records"):
        entry = out[cell_key[record["cell"]]]
        if record["status"] in entry:
            entry[record["status"]] += 1
        entry["epochs"] += _count(record["epoch"]) or 0
    return out


def search_sentence(students: pd.DataFrame, df: pd.DataFrame | None, label: Callable[[str], str],
                    order: Callable[[str], tuple]) -> str | None:
    """The caption's sentence on the searches: per method completed/planned trials, ASHA's early
    stops and the epochs spent, and a warning when the planned budgets differ."""
    effort = search_effort(students, df)
    unsearched = sorted((set(students["row_key"]) - set(effort)), key=order)
    if not effort:
        return None
    parts = []
    for key in sorted(effort, key=order):
        e = effort[key]
        text = f"{label(key)} {e['completed']}/{e['planned']}"
        extra = [f"{e['early_stopped']} stopped early by ASHA"] if e["early_stopped"] else []
        if e["errored"]:
            extra.append(f"{e['errored']} errored")
        extra.append(f"{e['epochs']} search epochs")
        parts.append(f"{text} ({', '.join(extra)})")
    text = f"Search trials per method, completed/planned (the best is chosen among completed ones): {'; '.join(parts)}"
    if unsearched:
        text += f"; at their defaults (no search): {', '.join(label(k) for k in unsearched)}"
    text += "."
    if any(e["early_stopped"] for e in effort.values()):
        text += " ASHA stopped weak search trials early."
    rule = ce_weight_sentence(students, set(effort))
    if rule:
        text += " " + rule
    budgets = {e["planned"] for e in effort.values()}
    if len(budgets) > 1:
        text += (" Unequal search budgets: " + ", ".join(f"{label(k)} {effort[k]['planned']}"
                                                         for k in sorted(effort, key=order))
                 + " planned trials; a method searched more had more chances.")
    return text


def ce_weight_sentence(students: pd.DataFrame, searched_keys: set[str]) -> str | None:
    """The shared CE-weight rule, when a searched row is a logit method (search_spaces)."""
    from search_spaces import ce_weight_rule
    from trainables.methods import METHODS

    rows = students[students["row_key"].isin(searched_keys)]
    methods = set(rows["method"]) if "method" in rows else set()
    if not any(m in METHODS and METHODS[m].kind == "logit" for m in methods):
        return None
    rule = ce_weight_rule()
    return f"CE weight: {rule[0].lower()}{rule[1:]}."
