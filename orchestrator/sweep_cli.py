"""`ltkd sweep`, `ltkd plan`, `ltkd resume`, `ltkd status`."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

QUICKSTART = Path(__file__).with_name("quickstart.toml")
PAPER_CONFIGS = Path(__file__).with_name("paper")  # paper:table1 ... paper:table6, shipped with the package
PAPER_PREFIX = "paper:"


def packaged_configs() -> dict[str, tuple[Path, str]]:
    """paper:<name> -> (its file, its description), for `--list` and for CONFIG = paper:<name>."""
    return {f"{PAPER_PREFIX}{path.stem}": (path, description(path.read_text()))
            for path in sorted(PAPER_CONFIGS.glob("*.toml"))}


def description(text: str) -> str:
    """A packaged config's description: the prose of its leading comment, whole sentences only.

    It ends at the first example command (an indented comment line), the protocol note, or the
    first key; a last sentence that only introduces the commands ("Run it on ...:") is left out.
    """
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:]
        if body.startswith(("  ", "\t")) or body.strip().startswith("Protocol:"):
            break
        words.append(body.strip())
    prose = " ".join(w for w in words if w)
    if prose.endswith(":") and ". " in prose:
        prose = prose[:prose.rindex(". ") + 1]
    return prose


def listing(configs: dict[str, tuple[Path, str]], width: int) -> str:
    """`ltkd sweep --list`: each name and its whole description, wrapped at words."""
    import textwrap

    pad = max(len(name) for name in configs) + 2
    return "\n".join(textwrap.fill(summary, width=max(width, pad + 30), initial_indent=f"{name:<{pad}}",
                                   subsequent_indent=" " * pad, break_on_hyphens=False) for name, (_, summary) in configs.items())


def config_path(text: str | None) -> Path:
    """The config file CONFIG names: a path, `paper:<name>` (a config shipped with the package), or none (the quickstart)."""
    from trainables.errors import UserError

    if text is None:
        return QUICKSTART
    if text.startswith(PAPER_PREFIX):
        known = packaged_configs()
        if text not in known:
            raise UserError(f"unknown packaged config '{text}' (known: {', '.join(known)}; `ltkd sweep --list`)")
        return known[text][0]
    return Path(text)


def _config_of(args: argparse.Namespace):
    """The sweep config of `ltkd sweep` / `ltkd plan`: the file (or the quickstart) with its --set overrides,
    --root, --storage and --name."""
    from orchestrator.sweep_config import check_storage, check_sweep_name, load_config, validate

    config = load_config(config_path(args.config), getattr(args, "set", None))
    if args.root is not None:  # where the user's copy of the data is: every dataset entry reads it there
        for entry in config.datasets:
            entry.root = args.root
    # Overrides are checked as typed, then the config again: all before anything is written or Ray starts.
    if args.storage is not None:
        check_storage(args.storage, "--storage")
        config.storage = args.storage
    if args.name is not None:
        check_sweep_name(args.name, "--name")
        config.name = args.name
    if args.storage is not None or args.name is not None or args.root is not None:
        validate(config)
    return config


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.sweep import run_sweep

    if args.list:
        import shutil

        print(listing(packaged_configs(), shutil.get_terminal_size((100, 24)).columns - 1))
        return 0

    return run_sweep(_config_of(args), address=args.address or os.environ.get("RAY_ADDRESS"), verbose=args.verbose)


def cmd_plan(args: argparse.Namespace) -> int:
    from orchestrator.device_rates import check_kind

    kind = check_kind(args.device_kind)  # before the config is read: an unknown kind is one line, exit 2
    from orchestrator.dry_run import plan_report
    from trainables.data.sources import check_root

    config = _config_of(args)
    if args.print_config:  # a config may be written here for the machine that holds the data
        print(config_toml(config), end="")
        return 0
    for entry in config.datasets:  # as `ltkd sweep` checks them before Ray starts
        check_root(entry.name, entry.root)
    print(plan_report(config, estimate=not args.no_estimate, device_kind=kind))
    return 0


def config_toml(config) -> str:
    """A checked config as the TOML text `ltkd sweep` reads back to the same config."""
    from orchestrator.overrides import to_toml

    return to_toml(config.to_dict(), header="ltkd sweep config, written by `ltkd plan --print-config`")


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.sweep import load_sweep_folder, run_sweep

    config = load_sweep_folder(args.sweep_dir)
    return run_sweep(config, address=args.address or os.environ.get("RAY_ADDRESS"), verbose=args.verbose, resume=True,
                     force=args.force)


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.status import sweep_status, watch

    if args.watch:
        return watch(args.sweep_dir, every=max(1.0, args.every))
    print(sweep_status(args.sweep_dir))
    return 0


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help="sweep config (.toml, .yaml or .json), or paper:NAME "
                        "for one of the paper's tables shipped with the package (`ltkd sweep --list`); default: the "
                        "quickstart")
    parser.add_argument("--root", default=None, help="the folder holding your copy of the dataset(s), for every "
                        "dataset entry of the config (e.g. with paper:table1)")
    parser.add_argument("--storage", default=None, help="override the config's storage folder")
    parser.add_argument("--name", default=None, help="override the config's sweep name")
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                        help="override one config key before the config is checked (repeatable): a dotted key, "
                        "list entries by index or name, the value as TOML, e.g. --set student_epochs=5 --set "
                        "methods.ltkd.search.n_trials=30 --set datasets.cifar100.root=/data")


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None, help="Ray cluster address HOST:PORT (default: RAY_ADDRESS, or a "
                        "local cluster)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own output")


def add_commands(commands) -> None:
    from orchestrator.device_rates import CPU_KIND, DEFAULT_GPU_KIND, RATES

    sweep = commands.add_parser("sweep", help="run a sweep (no CONFIG: the digits quickstart)")
    _config_options(sweep)
    sweep.add_argument("--list", action="store_true", help="list the sweep configs shipped with the package "
                       "(the paper's tables) and exit")
    _cluster_options(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    plan = commands.add_parser("plan", help="what a sweep would run (runs per stage, already done, epochs, teacher "
                               "caches) and an estimate of its GPU-hours (or CPU device-hours); writes nothing")
    _config_options(plan)
    plan.add_argument("--no-estimate", action="store_true", help="counts only (the estimate may time a few training "
                      "steps on this machine when no earlier runs on the storage say how long an epoch takes)")
    plan.add_argument("--device-kind", default=None, metavar="KIND", help="price the training MACs at this kind's "
                      f"rate (orchestrator/device_rates.py): {', '.join(RATES)}; or {CPU_KIND} (time a few training "
                      f"steps on this machine's CPU). Default: {DEFAULT_GPU_KIND} for a config whose "
                      f"resources.gpus_per_trial > 0, else {CPU_KIND}")
    plan.add_argument("--print-config", action="store_true", help="print the config with every override and default "
                      "merged in, as TOML that `ltkd sweep` reads back, and exit")
    plan.set_defaults(handler=cmd_plan)

    resume = commands.add_parser("resume", help="continue a sweep whose driver died or was stopped")
    resume.add_argument("sweep_dir", help="the sweep folder (storage/name)")
    resume.add_argument("--force", action="store_true", help="take over the driver lock whoever holds it (only when "
                        "you know its driver is dead, e.g. its machine is gone)")
    _cluster_options(resume)
    resume.set_defaults(handler=cmd_resume)

    status = commands.add_parser("status", help="where a sweep stands (reads only, changes nothing)")
    status.add_argument("sweep_dir", help="the sweep folder (storage/name)")
    status.add_argument("--watch", action="store_true", help="show it again every --every seconds until the "
                        "sweep's driver stops (Ctrl-C ends watching; the sweep goes on)")
    status.add_argument("--every", type=float, default=10.0, metavar="SECONDS", help="with --watch (default 10)")
    status.set_defaults(handler=cmd_status)
