"""The `ltkd` command line itself: version, and help where a subcommand is missing."""
from __future__ import annotations

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
