"""`ltkd sweep`, `ltkd resume`, `ltkd status`."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

QUICKSTART = Path(__file__).with_name("quickstart.toml")


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.sweep import run_sweep
    from orchestrator.sweep_config import check_storage, check_sweep_name, load_config, validate

    config = load_config(QUICKSTART if args.config is None else args.config)
    # Overrides are checked as typed, then the config again: all before anything is written or Ray starts.
    if args.storage is not None:
        check_storage(args.storage, "--storage")
        config.storage = args.storage
    if args.name is not None:
        check_sweep_name(args.name, "--name")
        config.name = args.name
    if args.storage is not None or args.name is not None:
        validate(config)
    return run_sweep(config, address=args.address or os.environ.get("RAY_ADDRESS"), verbose=args.verbose)


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.sweep import load_sweep_folder, run_sweep

    config = load_sweep_folder(args.sweep_dir)
    return run_sweep(config, address=args.address or os.environ.get("RAY_ADDRESS"), verbose=args.verbose, resume=True,
                     force=args.force)


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.status import sweep_status

    print(sweep_status(args.sweep_dir))
    return 0


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None, help="Ray cluster address HOST:PORT (default: RAY_ADDRESS, or a "
                        "local cluster)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own output")


def add_commands(commands) -> None:
    sweep = commands.add_parser("sweep", help="run a sweep (no CONFIG: the digits quickstart)")
    sweep.add_argument("config", nargs="?", default=None, help="sweep config (.toml, .yaml or .json)")
    sweep.add_argument("--storage", default=None, help="override the config's storage folder")
    sweep.add_argument("--name", default=None, help="override the config's sweep name")
    _cluster_options(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    resume = commands.add_parser("resume", help="continue a sweep whose driver died or was stopped")
    resume.add_argument("sweep_dir", help="the sweep folder (storage/name)")
    resume.add_argument("--force", action="store_true", help="take over the driver lock whoever holds it (only when "
                        "you know its driver is dead, e.g. its machine is gone)")
    _cluster_options(resume)
    resume.set_defaults(handler=cmd_resume)

    status = commands.add_parser("status", help="where a sweep stands (reads only, changes nothing)")
    status.add_argument("sweep_dir", help="the sweep folder (storage/name)")
    status.set_defaults(handler=cmd_status)
