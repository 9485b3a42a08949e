"""`--set KEY=VALUE` on `ltkd sweep` / `ltkd plan`, and `ltkd plan --print-config` read back by `ltkd sweep`."""
from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from orchestrator.overrides import apply_overrides, parse_value
from orchestrator.sweep_config import ConfigError, load_config, parse_config
from tests.sweep_helpers import run_ltkd, tiny_config, write_config


@pytest.mark.parametrize("text,value", [("5", 5), ("0.25", 0.25), ("true", True), ("[10, 100]", [10, 100]),
                                        ('"5"', "5"), ("/data", "/data"), ("mean", "mean"), ('["a", 1]', ["a", 1])])
def test_values_read_as_toml_scalars_or_lists_else_as_text(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_keys_address_tables_and_entries_by_index_or_name(tmp_path):
    raw = tiny_config(tmp_path)
    merged = apply_overrides(raw, ["methods.ltkd.search.n_trials=30", "resources.gpus_per_trial=0.25",
                                   "student_epochs=5", "datasets.0.root=/data", "datasets.digits.validation_per_class=5",
                                   "methods.ce.hparams.label_smoothing=0.1", "scheduler.asha=true"])
    assert merged["methods"][1]["search"]["n_trials"] == 30
    assert merged["resources"] == {"cpus_per_trial": 1, "gpus_per_trial": 0.25}
    assert merged["student_epochs"] == 5 and merged["scheduler"] == {"asha": True}
    assert merged["datasets"][0]["root"] == "/data" and merged["datasets"][0]["validation_per_class"] == 5
    assert raw == tiny_config(tmp_path)  # the file's values are left as they were


def test_an_override_is_checked_exactly_as_the_file_is(tmp_path, capsys):
    """The same bad value, once in the file and once through --set: the same one-line error."""
    good = write_config(tmp_path / "good.json", tiny_config(tmp_path / "store"))
    bad = write_config(tmp_path / "bad.json", tiny_config(tmp_path / "store", resources={"cpus_per_trial": 1,
                                                                                          "gpus_per_trial": 2}))
    assert main(["plan", str(bad), "--no-estimate"]) == 2
    from_file = capsys.readouterr().err
    assert main(["plan", str(good), "--no-estimate", "--set", "resources.gpus_per_trial=2"]) == 2
    assert capsys.readouterr().err == from_file
    assert from_file.startswith("ltkd: error: resources.gpus_per_trial") and from_file.count("\n") == 1


@pytest.mark.parametrize("override,message", [
    ("resources.gpus_per_tria=1", "unknown key 'resources.gpus_per_tria'"),
    ("methods.dkd.search.n_trials=3", "no methods entry named 'dkd' (named: ce, ltkd)"),
    ("datasets.4.root=/data", "datasets has 1 entries (indices 0 to 0), not 4"),
    ("student_epochs=0", "student_epochs must be an integer >= 1, got 0"),
    ("student_epochs.x=1", "student_epochs is the value 4, not a table"),
    ("seeds", "--set expects KEY=VALUE"),
    ("methods.ltkd.search.n_trials=many", "methods[1].search.n_trials must be an integer, got 'many'"),
])
def test_a_bad_override_is_one_line_naming_the_key(tmp_path, capsys, override, message):
    config = write_config(tmp_path / "c.json", tiny_config(tmp_path / "store"))
    assert main(["plan", str(config), "--no-estimate", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ltkd: error: ") and message in err and err.count("\n") == 1, err


def test_print_config_is_read_back_by_sweep_as_the_same_config(tmp_path, capsys):
    """print, save, load: the same SweepConfig (overrides, --root and the packaged paper configs included)."""
    for source, extra in [(None, ["--set", "student_epochs=5", "--set", "methods.ltkd.search.n_trials=2",
                                  "--set", "methods.kd.search=false", "--set", "tracking.wandb_entity=me"]),
                          ("paper:table1", ["--root", "/data", "--set", "datasets.cifar100.imbalance_factors=[10]"])]:
        args = ([source] if source else []) + extra
        assert main(["plan", *args, "--print-config"]) == 0
        text = capsys.readouterr().out
        saved = tmp_path / "printed.toml"
        saved.write_text(text)
        from orchestrator.sweep_cli import _config_of, add_commands  # noqa: F401 (the parser builds the namespace)
        from orchestrator.cli import build_parser

        expected = _config_of(build_parser().parse_args(["plan", *args]))
        assert load_config(saved) == expected
    assert expected.datasets[0].root == "/data" and expected.datasets[0].imbalance_factors == [10]


def test_an_override_is_part_of_the_sweeps_identity(tmp_path):
    """A sweep started with one override is not continued by the same config with another."""
    from orchestrator.sweep import SweepError, _write_sweep_file

    base = write_config(tmp_path / "c.json", tiny_config(tmp_path / "store"))
    _write_sweep_file(load_config(base, ["student_epochs=3"]))
    _write_sweep_file(load_config(base, ["student_epochs=3"]))  # the same override: the same sweep
    with pytest.raises(SweepError, match=r"already holds a different sweep \(differs in: student_epochs\)"):
        _write_sweep_file(load_config(base, ["student_epochs=5"]))
    assert json.loads((tmp_path / "store" / "tiny" / "sweep.json").read_text())["student_epochs"] == 3


def test_sweep_refuses_a_bad_override_before_ray_starts(tmp_path):
    config = write_config(tmp_path / "c.json", tiny_config(tmp_path / "store"))
    result = run_ltkd("sweep", config, "--set", "methods.ltkd.search.n_trials=0", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "ltkd: error: methods[1].search.n_trials must be >= 1, got 0"
    assert not (tmp_path / "store").exists()


def test_parse_config_rejects_what_the_override_merged_in(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'tracking.wandb_group'"):
        parse_config(apply_overrides(tiny_config(tmp_path), ["tracking.wandb_group=x"]))
