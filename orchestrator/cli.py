"""The `ltkd` command line. Each subcommand is a small function; errors caused by the user's
input print one line (`ltkd: error: ...`) and exit with status 2."""
from __future__ import annotations

import argparse
import importlib
import sys

from trainables.data.sources import DATASETS
from trainables.errors import UserError

EXIT_USER_ERROR = 2
# Modules that add subcommands: each has add_commands(subparsers).
COMMAND_MODULES = ("orchestrator.train_cli", "orchestrator.sweep_cli", "results.report_cli", "results.best",
                   "orchestrator.config_cli", "orchestrator.unlock_cli")


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


def known(registry) -> str:
    """The names a registry knows, for help texts ("a, b or c")."""
    names = registry.names()
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def default_lines(spec, datasets) -> list[str]:
    """Per dataset, a method's defaults (its style's, studied and guessed ones), each guess marked."""
    from trainables.data.sources import get_dataset
    from trainables.guesses import guessed_defaults

    lines = []
    for dataset in datasets:
        style = get_dataset(dataset).style
        values = spec.defaults(style, dataset=dataset)
        guessed = guessed_defaults(spec, dataset)
        set_here = set(spec.style_defaults.get(style, {})) | set(spec.studied_defaults.get(dataset, {})) | set(guessed)
        if spec.defaults_for is not None:
            set_here |= set(spec.defaults_for(style, "", ""))
        if not set_here:
            continue
        text = ", ".join(f"{k} {_value(values[k])}{' (guessed)' if k in guessed else ''}" for k in sorted(set_here))
        lines.append(f"{dataset}: {text}")
    return lines


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def cmd_list(args: argparse.Namespace) -> int:
    """`ltkd list`: what the registries hold (models load torch to register; the rest do not)."""
    from search_spaces import SPACES
    from trainables.methods import METHODS, table_order

    what = args.what
    if what in ("methods", "all"):
        print("methods (table order; * = searched by default; defaults per dataset, the teacher-student pair's "
              "where they depend on it: see the README; (guessed) = neither published for that dataset nor studied):")
        for name in table_order():
            spec = METHODS[name]
            knobs = ", ".join(sorted(k for k in spec.knobs))
            print(f"  {name:<9} {spec.label:<9} {spec.kind:<8}{'*' if name in SPACES else ' '} {knobs}")
            for line in default_lines(spec, DATASETS.names()):
                print(f"{'':<31}{line}")
    if what in ("datasets", "all"):
        print("datasets:")
        from trainables.guesses import recipe_guess

        for name, spec in DATASETS.items():
            recipe = recipe_guess(name)
            print(f"  {name:<13} {spec.label:<16} {spec.num_classes:>5} classes  {spec.image_size}px  "
                  f"validation {spec.validation_per_class}/class  root: {spec.layout}"
                  + (f"  training recipe (guessed): {recipe}" if recipe else ""))
    if what in ("models", "all"):
        from trainables.model_catalog import model_catalog

        print("models (style, student learning rate):")
        for name, spec in model_catalog().items():
            print(f"  {name:<15} {spec.style:<9} {spec.student_lr:g}")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    """`ltkd completion bash|zsh|fish`: the shell completion script (shtab, or our own for fish, reads this very parser)."""
    if args.shell == "fish":  # shtab has no fish
        from orchestrator.fish_completion import fish_script

        print(fish_script(build_parser()), end="")
        return 0
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


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
    describe.add_argument("--dataset", required=True, help=f"one of {known(DATASETS)}")
    describe.add_argument("--root", default=None, help="folder holding the dataset (not needed for digits)")
    describe.add_argument("--imbalance-factor", type=_number, required=True,
                          help="ratio of the largest to the smallest class (gamma), >= 1")
    describe.add_argument("--groups", type=int, default=3, help="number of class groups (default 3: head/medium/tail)")
    describe.add_argument("--validation-per-class", type=int, default=None,
                          help="images per class held out for validation (default: the dataset's; 0: the paper's counts)")
    describe.set_defaults(handler=cmd_data_describe)

    listing = commands.add_parser("list", help="the registered methods, datasets and models")
    listing.add_argument("what", nargs="?", default="all", choices=("all", "methods", "datasets", "models"))
    listing.set_defaults(handler=cmd_list)

    completion = commands.add_parser("completion", help="print a shell completion script: "
                                     "`eval \"$(ltkd completion bash)\"`, `ltkd completion fish | source` (or put it in your shell's startup "
                                     "file)")
    completion.add_argument("shell", choices=("bash", "zsh", "fish"))
    completion.set_defaults(handler=cmd_completion)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: `train student --config` lays flags over a file
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
