"""The `ltkd` command line itself: version, and help where a subcommand is missing."""
from __future__ import annotations

import shutil
import subprocess
from importlib.metadata import version

import pytest

from orchestrator.cli import main


def test_version_names_the_installed_package(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ltkd-sweep {version('ltkd-sweep')}"


@pytest.mark.parametrize("command,choices", [("train", ("teacher", "student")), ("data", ("describe",))])
def test_a_command_without_its_subcommand_prints_its_own_help(capsys, command, choices):
    assert main([command]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ltkd {command} ")
    assert all(choice in out for choice in choices)
    assert "sweep" not in out  # not the top-level help


def test_help_lists_the_valid_values_from_the_registries(capsys):
    from trainables.data.sources import DATASETS
    from trainables.methods import METHODS

    with pytest.raises(SystemExit):
        main(["train", "student", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert f"one of {', '.join(DATASETS.names()[:-1])} or {DATASETS.names()[-1]}" in out
    assert all(name in out for name in METHODS.names())
    assert "ltkd list models" in out and "{auto,bf16,fp16,off}" in out


def test_list_shows_every_registry_in_table_order(capsys):
    from trainables.methods import table_order
    from trainables.models import MODELS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    # a method's line starts at column 2; its defaults per dataset are indented below it
    methods = [line.split()[0] for line in out.split("datasets:")[0].splitlines()[1:] if not line.startswith("   ")]
    assert methods == table_order()
    assert all(f"  {name} " in out for name in MODELS.names()) and "Digits-LT" in out


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_cover_every_command(capsys, shell):
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for command in ("sweep", "plan", "resume", "status", "report", "best", "train", "data", "config", "list"):
        assert command in script, command
    assert "--imbalance-factor" in script


def test_fish_completion_lists_every_subcommand_and_option(capsys):
    """shtab has no fish: ours walks the parser (its syntax: the next test, where fish is installed)."""
    from orchestrator.cli import build_parser
    from orchestrator.fish_completion import command_paths

    assert main(["completion", "fish"]) == 0
    script = capsys.readouterr().out
    paths = command_paths(build_parser())
    assert {p[0] for p in paths} >= {"sweep", "plan", "resume", "status", "report", "best", "train", "data", "config",
                                     "list", "completion"}
    for path in paths:  # each subcommand is offered where its parent was typed
        assert f" -f -a {path[-1]} -d " in script, path
    assert ("'__fish_seen_subcommand_from train; and __fish_seen_subcommand_from student' -l config -r" in script)
    assert "-l set -r" in script and "-f -a 'bash zsh fish'" in script


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed: its syntax check is left out")
def test_fish_completion_is_valid_fish(capsys):
    assert main(["completion", "fish"]) == 0
    check = subprocess.run(["fish", "-n"], input=capsys.readouterr().out, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
