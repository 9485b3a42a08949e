"""`ltkd train student --config FILE [--cell TEXT]` trains the run a `ltkd best` file describes;
`--print-config` writes such a file. Real runs on the embedded digits data."""
from __future__ import annotations

import json
import shlex

import pytest

from orchestrator.cli import build_parser, main
from orchestrator.train_cli import run_config_from_args
from orchestrator.train_file import args_from_file
from results.best import to_toml
from tests.sweep_helpers import run_ltkd


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher") / "t"
    result = run_ltkd("train", "teacher", "--dataset", "digits", "--imbalance-factor", "10", "--arch", "resnet8",
                      "--epochs", "1", "--device", "cpu", "--out", folder, timeout=600)
    assert result.returncode == 0, result.stderr
    return folder


def student_flags(teacher) -> list[str]:
    return ["--dataset", "digits", "--imbalance-factor", "10", "--arch", "resnet8", "--method", "ltkd",
            "--teacher", str(teacher), "--epochs", "1", "--alpha", "1.5", "--set", "rebalance=false"]


def identity(argv: list[str]) -> dict:
    """The resolved identity `ltkd train` would train for ARGV (after `train student`)."""
    args = build_parser().parse_args(["train", "student", *argv])
    args.argv = ["train", "student", *argv]
    if args.config:
        args = args_from_file(args, args.argv)
    return run_config_from_args(args, "student").resolved().identity()


def test_print_config_is_trained_again_by_config(teacher, tmp_path, capsys):
    """print, save, --config: the same run; printing the file's run again prints the same file."""
    flags = student_flags(teacher)
    assert main(["train", "student", *flags, "--out", str(tmp_path / "a"), "--print-config"]) == 0
    text = capsys.readouterr().out
    saved = tmp_path / "run.toml"
    saved.write_text(text)
    assert identity(["--config", str(saved)]) == identity(flags)
    assert main(["train", "student", "--config", str(saved), "--print-config"]) == 0
    assert capsys.readouterr().out == text
    assert "cell = \"digits/if10/resnet8->resnet8/ltkd\"" in text and f"--out {tmp_path / 'a'}" in text


def test_flags_beside_the_file_win_over_it(teacher, tmp_path, capsys):
    assert main(["train", "student", *student_flags(teacher), "--print-config"]) == 0
    saved = tmp_path / "run.toml"
    saved.write_text(capsys.readouterr().out)
    changed = identity(["--config", str(saved), "--seed", "5", "--set", "beta=3", "--alpha", "2"])
    assert changed == identity([*student_flags(teacher), "--seed", "5", "--set", "beta=3", "--alpha", "2"])
    assert changed["seed"] == 5 and changed["hparams"]["beta"] == 3 and changed["hparams"]["alpha"] == 2
    assert changed["hparams"]["rebalance"] is False  # the file's --set stays


def test_config_trains_the_run_of_the_chosen_cell(teacher, tmp_path):
    """A two-cell best file: --cell picks one, and the run trains with the file's teacher."""
    from results.best import train_command

    def entry(method: str, alpha: float) -> dict:
        config = {"dataset": "digits", "imbalance_factor": 10.0, "data_seed": 0, "validation_per_class": 10,
                  "arch": "resnet8", "method": method, "teacher": str(teacher), "teacher_arch": "resnet8", "seed": 0,
                  "epochs": 1, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4,
                  "hparams": {"alpha": alpha} if method != "ce" else {}}
        return {"cell": f"digits/if10/resnet8->resnet8/{method}", "method": method, "hparams": config["hparams"],
                "seeds": [0], "command": train_command(config)}

    best = tmp_path / "best.toml"
    best.write_text(to_toml([entry("ce", 0), entry("ltkd", 2.5)]))
    result = run_ltkd("train", "student", "--config", best, "--cell", "/ltkd", "--device", "cpu",
                      "--out", tmp_path / "run", timeout=600)
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    config = run.get("config", run)
    assert config["method"] == "ltkd" and config["hparams"]["alpha"] == 2.5 and config["teacher"] == str(teacher)
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1

    several = run_ltkd("train", "student", "--config", best, "--out", tmp_path / "x", timeout=120)
    assert several.returncode == 2
    assert several.stderr.strip() == (f"ltkd: error: --config {best} holds 2 cells (digits/if10/resnet8->resnet8/ce, "
                                      "digits/if10/resnet8->resnet8/ltkd); pick one with --cell TEXT")
    none = run_ltkd("train", "student", "--config", best, "--cell", "dkd", "--out", tmp_path / "x", timeout=120)
    assert none.returncode == 2 and "--cell dkd: no cell of" in none.stderr


def test_a_teacher_the_file_names_but_this_machine_lacks_is_one_line(tmp_path, capsys):
    command = shlex.join(["ltkd", "train", "student", "--dataset", "digits", "--imbalance-factor", "10", "--arch",
                          "resnet8", "--method", "kd", "--teacher", str(tmp_path / "gone"), "--epochs", "1",
                          "--out", str(tmp_path / "run")])
    best = tmp_path / "best.json"
    best.write_text(json.dumps([{"cell": "digits/if10/resnet8->resnet8/kd", "command": command}]))
    assert main(["train", "student", "--config", str(best)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ltkd: error: teacher {tmp_path / 'gone'}") and "pass --teacher DIR" in err, err
    assert main(["train", "student", "--config", str(tmp_path / "nothing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
