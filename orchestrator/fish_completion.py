"""`ltkd completion fish`: a fish completion script written from the argparse parser itself.

shtab writes the bash and zsh scripts but has no fish; this walks the same parser: every
subcommand (nested ones such as `train student` under their parent), its options with their
help, and the choices of options and positionals that have them.
"""
from __future__ import annotations

import argparse

PROGRAM = "ltkd"


def _quoted(text: str) -> str:
    """A fish single-quoted string (only \\ and ' are special inside)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _summary(text: str | None) -> str:
    """A help text's first sentence, on one line, short enough for a completion menu."""
    line = " ".join((text or "").replace("%%", "%").split())
    line = line.split(". ")[0]
    return line if len(line) <= 70 else line[:67].rstrip() + "..."


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """name -> (its parser, its help) for a parser's subcommands (none when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}
    return {}


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every subcommand path of the parser: ("sweep",), ("train",), ("train", "student"), ..."""
    out = []
    for name, (sub, _) in _subcommands(parser).items():
        out.append((*path, name))
        out += command_paths(sub, (*path, name))
    return out


def _condition(path: tuple[str, ...], children: list[str]) -> str:
    """A fish condition: the words of `path` were typed, and none of `children` yet."""
    if not path:
        return "__fish_use_subcommand"
    parts = [f"__fish_seen_subcommand_from {word}" for word in path]
    if children:
        parts.append(f"not __fish_seen_subcommand_from {' '.join(children)}")
    return "; and ".join(parts)


def _lines(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[str]:
    subcommands = _subcommands(parser)
    condition = _quoted(_condition(path, list(subcommands)))
    lines = []
    for name, (_, help_text) in subcommands.items():
        lines.append(f"complete -c {PROGRAM} -n {condition} -f -a {name} -d {_quoted(_summary(help_text))}")
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        words = [f"complete -c {PROGRAM} -n {condition}"]
        if action.option_strings:
            for option in action.option_strings:
                words.append(f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}")
            if action.nargs != 0:
                words.append("-r")
        if action.choices:
            words.append(f"-f -a {_quoted(' '.join(map(str, action.choices)))}")
        elif not action.option_strings:
            continue  # a free positional (a file, a folder): fish completes paths by itself
        if _summary(action.help):
            words.append(f"-d {_quoted(_summary(action.help))}")
        lines.append(" ".join(words))
    for name, (sub, _) in subcommands.items():
        lines += _lines(sub, (*path, name))
    return lines


def fish_script(parser: argparse.ArgumentParser) -> str:
    """The whole completion script for `ltkd` (source it, or save it as ~/.config/fish/completions/ltkd.fish)."""
    header = [f"# fish completion for {PROGRAM}, written by `{PROGRAM} completion fish`",
              f"complete -c {PROGRAM} -e"]
    return "\n".join(header + _lines(parser, ())) + "\n"
