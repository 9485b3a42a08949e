"""`--set KEY=VALUE` on a sweep config's raw values, and the config written back as TOML.

Overrides are merged into the mapping read from the file before it is typed and validated
(orchestrator/sweep_config.parse_config), so an overridden value is checked exactly as one
written in the file, with the same one-line errors. Keys are dotted paths; an entry of a list
of tables (datasets, pairs, methods) is addressed by its index or by its name (a method entry's
`name`, else its `method`; a dataset entry's `name`).
"""
from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from trainables.errors import UserError


class OverrideError(UserError):
    pass


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def parse_value(text: str) -> Any:
    """A value as TOML (or else JSON) reads it; text that neither reads is the plain string it is.

    `5` is an integer, `0.25` a number, `true` a boolean, `[10, 100]` a list, `"5"` the string 5,
    and `/data` (valid as neither) the string /data.
    """
    stripped = text.strip()
    try:
        return _toml_loads(f"value = {stripped}")["value"]
    except Exception:  # noqa: BLE001 (not TOML: try JSON, then the text itself)
        pass
    try:
        return json.loads(stripped)
    except ValueError:
        return stripped


def parse_override(text: str) -> tuple[list[str], Any]:
    """`KEY=VALUE` as (the key's dotted parts, the parsed value)."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise OverrideError(f"--set expects KEY=VALUE with a dotted KEY (e.g. --set resources.gpus_per_trial=0.25), "
                            f"got '{text}'")
    return [p.strip() for p in parts], parse_value(value)


def _entry_name(entry: Any, list_key: str) -> str | None:
    if not isinstance(entry, dict):
        return None
    if list_key == "methods":
        return entry.get("name") or entry.get("method")
    return entry.get("name")


def _list_index(entries: list, part: str, list_key: str, shown: str, override: str) -> int:
    """The index a path part names in a list of tables: a number, or an entry's name."""
    if re.fullmatch(r"-?\d+", part):
        index = int(part)
        if not 0 <= index < len(entries):
            raise OverrideError(f"--set {override}: {shown} has {len(entries)} entries (indices 0 to "
                                f"{len(entries) - 1}), not {index}; use an index in range or the entry's name")
        return index
    names = [_entry_name(e, list_key) for e in entries]
    if part not in names:
        known = ", ".join(str(n) for n in names if n is not None) or "none"
        raise OverrideError(f"--set {override}: no {shown} entry named '{part}' (named: {known}); "
                            f"use an entry's name or index")
    if names.count(part) > 1:
        raise OverrideError(f"--set {override}: {names.count(part)} {shown} entries are named '{part}'; "
                            "address the one you mean by its index")
    return names.index(part)


def apply_override(values: dict[str, Any], override: str) -> dict[str, Any]:
    """`values` (a config's raw mapping) with one `KEY=VALUE` set; the input is left unchanged."""
    parts, value = parse_override(override)
    out = copy.deepcopy(values)
    node: Any = out
    shown = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part, parts[i - 1] if i else "", shown, override)
            shown = f"{shown}.{part}"
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise OverrideError(f"--set {override}: {shown} is {_kind(node)}, not a table, so it has no key "
                                f"'{part}'; set {shown} itself")
        shown = f"{shown}.{part}" if shown else part
        if last:
            node[part] = value
            break
        child = node.get(part)
        if child is None or child is True and part == "search":  # absent, or `search = true`: a new table
            child = node[part] = {}
        node = child
    return out


def _kind(value: Any) -> str:
    return "true" if value is True else "false" if value is False else f"the value {value!r}"


def apply_overrides(values: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Every override in order (a later one wins over an earlier one of the same key)."""
    for override in overrides or []:
        values = apply_override(values, override)
    return values


# ---------------------------------------------------------------------------------------------- TOML out


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """One value in TOML's inline syntax (tables as inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # TOML basic strings use JSON's escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(values: dict[str, Any], header: str = "") -> str:
    """A mapping as a TOML document: sub-mappings as [tables], lists of mappings as [[arrays of tables]].

    TOML has no null: a key whose value is None is left out (every such key of a sweep config
    defaults to None, so reading the text back gives the same config).
    """
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _table(values, "", lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(values: dict[str, Any], prefix: str, lines: list[str]) -> None:
    nested = []
    for key, value in values.items():
        if value is None:
            continue
        if (isinstance(value, dict) and value) or _is_table_list(value):
            nested.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    for key, value in nested:
        path = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        if isinstance(value, dict):
            lines += ["", f"[{path}]"]
            _table(value, path, lines)
        else:
            for entry in value:
                lines += ["", f"[[{path}]]"]
                _table(entry, path, lines)
