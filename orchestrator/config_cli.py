"""`ltkd config schema [--out FILE]`: the sweep config's JSON Schema (draft 2020-12), for editors.

VS Code: "json.schemas" / "yaml.schemas" (the Red Hat YAML extension) map config files to the
written file; TOML: taplo's `schema` setting, or `#:schema ./ltkd-sweep.schema.json` atop a config.
The schema is derived from the dataclasses the parser builds (orchestrator/sweep_config.py
`json_schema`), so it names the same keys, types, defaults and choices. Loads neither torch nor Ray.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainables.errors import UserError


def cmd_config_schema(args: argparse.Namespace) -> int:
    from orchestrator.sweep_config import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.out is None:
        print(text, end="")
        return 0
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise UserError(f"--out {args.out} is a folder; pass a file name, e.g. --out ltkd-sweep.schema.json")
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--out {args.out} cannot be written ({exc.strerror or exc})") from None
    print(f"wrote {out}")
    return 0


def add_commands(commands) -> None:
    config = commands.add_parser("config", help="sweep config tools (the JSON Schema editors validate against)")
    config.set_defaults(help_parser=config)
    subcommands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    schema = subcommands.add_parser(
        "schema", help="print the sweep config's JSON Schema (draft 2020-12) for VS Code, taplo, ...",
        description="The JSON Schema (draft 2020-12) of a sweep config: every key, its type, default and "
        "choices; unknown keys are refused. Point an editor at it (VS Code json.schemas / yaml.schemas, "
        "taplo's schema setting) to check TOML, YAML or JSON sweep configs as you type.")
    schema.add_argument("--out", default=None, metavar="FILE", help="write the schema to FILE instead of printing it")
    schema.set_defaults(handler=cmd_config_schema)
