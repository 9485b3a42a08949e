"""The `ltkd` command line. Each subcommand is a small function; errors caused by the user's
input print one line (`ltkd: error: ...`) and exit with status 2."""
from __future__ import annotations

import argparse
import importlib
import sys

from trainables.errors import UserError

EXIT_USER_ERROR = 2
# Modules that add subcommands: each has add_commands(subparsers).
COMMAND_MODULES = ("orchestrator.train_cli", "orchestrator.sweep_cli", "results.report_cli")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    return value


def cmd_data_describe(args: argparse.Namespace) -> int:
    from orchestrator.describe import describe_dataset

    print(describe_dataset(args.dataset, args.root, args.imbalance_factor, args.groups,
                           validation_per_class=args.validation_per_class))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ltkd-sweep")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltkd",
        description="Long-Tailed Knowledge Distillation: datasets, training, sweeps and reports.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"ltkd-sweep {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = commands.add_parser("data", help="inspect long-tailed datasets")
    data.set_defaults(help_parser=data)
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    describe = data_commands.add_parser(
        "describe", help="per-class counts, group sizes and totals of a long-tailed training set"
    )
    describe.add_argument("--dataset", required=True, help="digits, cifar100, tinyimagenet or imagenet")
    describe.add_argument("--root", default=None, help="folder holding the dataset (not needed for digits)")
    describe.add_argument("--imbalance-factor", type=_number, required=True,
                          help="ratio of the largest to the smallest class (gamma), >= 1")
    describe.add_argument("--groups", type=int, default=3, help="number of class groups (default 3: head/medium/tail)")
    describe.add_argument("--validation-per-class", type=int, default=None,
                          help="images per class held out for validation (default: the dataset's; 0: the paper's counts)")
    describe.set_defaults(handler=cmd_data_describe)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:  # a command without its subcommand (`ltkd train`): that command's help
        getattr(args, "help_parser", parser).print_help()
        return EXIT_USER_ERROR
    try:
        return int(handler(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as exc:
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"ltkd: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("ltkd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
