"""Bad input to `ltkd sweep` and `ltkd train`: one line `ltkd: error: ...` naming the key or flag,
exit status 2, and nothing written (no storage folder, no run folder, no file overwritten)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import main as ltkd_main
from orchestrator.sweep_config import ConfigError, parse_config
from trainables.config import RunConfig, check_device
from trainables.data.long_tail import long_tail_counts
from trainables.data.sources import DATASETS, nominal_n_max
from trainables.errors import UserError
from tests.sweep_helpers import LTKD, tiny_config





def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def fails(capsys, args, *needles) -> str:
    """Run `ltkd ARGS` in-process: status 2 and one stderr line `ltkd: error: ...` holding every needle."""
    code = ltkd_main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("ltkd: error: "), err
    for needle in needles:
        assert needle in err[0], err
    return err[0]


@pytest.fixture
def workspace(tmp_path):
    """tmp_path/work holds the configs; tmp_path/work/store is the storage, which must never appear."""
    work = tmp_path / "work"
    work.mkdir()
    return work


# ------------------------------------------------------------------------------------ the config file


def test_config_path_that_is_a_folder(capsys, workspace):
    folder = workspace / "configs"
    folder.mkdir()
    fails(capsys, ["sweep", folder], f"sweep config {folder} is a folder; pass a .toml, .yaml or .json file")
    assert tree(workspace) == {"configs"}


def test_config_path_that_is_a_folder_in_a_subprocess(workspace):
    result = subprocess.run([*LTKD, "sweep", str(workspace)], capture_output=True, text=True, timeout=300)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert err[0] == f"ltkd: error: sweep config {workspace} is a folder; pass a .toml, .yaml or .json file"
    assert tree(workspace) == set()


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_config_that_is_not_utf8_names_the_file(capsys, workspace, suffix):
    path = workspace / f"latin1{suffix}"
    texts = {".json": json.dumps(tiny_config(workspace / "store", name="caf\u00e9"), ensure_ascii=False),
             ".toml": 'name = "caf\u00e9"\n', ".yaml": "name: caf\u00e9\n"}
    text = texts[suffix]
    path.write_bytes(text.encode("latin-1"))
    fails(capsys, ["sweep", path], str(path), "is not UTF-8 text")
    assert not (workspace / "store").exists()


# ------------------------------------------------------------------------------------ types of keys


@pytest.mark.parametrize("change,message", [
    ({"datasets": [{"name": ["digits"]}]}, "datasets[0].name must be a string, got list"),
    ({"methods": [{"method": "ce"}, {"method": "ltkd", "search": {"n_trials": "6"}}]},
     "methods[1].search.n_trials must be an integer, got '6'"),
    ({"methods": [{"method": "ltkd", "search": {"n_trials": 2.5}}]}, "methods[0].search.n_trials must be an integer"),
    ({"methods": [{"method": "ltkd", "search": {"n_trials": True}}]}, "methods[0].search.n_trials must be an integer"),
    ({"teacher_epochs": "2"}, "teacher_epochs must be an integer, got '2'"),
    ({"seeds": [0, True]}, "seeds[1] must be an integer, got true"),
    ({"seeds": 3}, "seeds must be a list, got 3"),
    ({"scheduler": {"asha": 1}}, "scheduler.asha must be true or false, got 1"),
    ({"scheduler": {"grace_period": 2.0}}, "scheduler.grace_period must be an integer, got 2.0"),
    ({"resources": {"cpus_per_trial": "2"}}, "resources.cpus_per_trial must be a number, got '2'"),
    ({"datasets": [{"name": "digits", "imbalance_factors": ["10"]}]},
     "datasets[0].imbalance_factors[0] must be a number, got '10'"),
    ({"datasets": [{"name": "digits", "root": 3}]}, "datasets[0].root must be a string, got 3"),
    ({"datasets": {"name": "digits"}}, "datasets must be a list, got table"),
    ({"pairs": [{"teacher": "resnet8", "student": ["resnet8"]}]}, "pairs[0].student must be a string, got list"),
    ({"methods": [{"method": "ltkd", "hparams": [1]}]}, "methods[0].hparams must be a table/mapping, got list"),
    ({"methods": [{"method": "ltkd", "name": 7}]}, "methods[0].name must be a string, got 7"),
    ({"objective": None}, "objective must be a string, got null"),
])
def test_every_key_has_its_declared_type(tmp_path, change, message):
    with pytest.raises(ConfigError) as error:
        parse_config({**tiny_config(tmp_path / "store"), **change})
    assert message in str(error.value)


def test_right_types_still_load(tmp_path):
    config = parse_config(tiny_config(
        tmp_path / "store", teacher_epochs=None, resources={"cpus_per_trial": 2, "gpus_per_trial": 0},
        datasets=[{"name": "digits", "imbalance_factors": [10, 12.5]}],
        methods=[{"method": "ltkd", "search": True}, {"method": "kd", "search": None}],
    ))
    assert config.resources.cpus_per_trial == 2 and config.datasets[0].imbalance_factors == [10, 12.5]
    # search = true is kept as written; with no other searched entry its budget is SearchEntry's default
    assert config.methods[0].search is True and config.search_for(config.methods[0]).n_trials == 8
    assert config.methods[1].search is None


@pytest.mark.parametrize("change,needles", [
    ({"datasets": [{"name": ["digits"]}]}, ["datasets[0].name must be a string, got list"]),
    ({"methods": [{"method": "ce"}, {"method": "ltkd", "search": {"n_trials": "6"}}]},
     ["methods[1].search.n_trials must be an integer, got '6'"]),
])
def test_wrong_types_are_one_line_from_the_cli(capsys, workspace, change, needles):
    path = workspace / "c.json"
    path.write_text(json.dumps(tiny_config(workspace / "store", **change)))
    fails(capsys, ["sweep", path], *needles)
    assert not (workspace / "store").exists()


# ------------------------------------------------------------------------------------ devices


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_valid_devices(device):
    check_device(device)


@pytest.mark.parametrize("device", ["gpu", "cdua", "CUDA", "cuda:", "cuda:-1", "cuda:x", "cuda:0 ", "", "cpu:0"])
def test_invalid_devices_list_the_valid_ones(device):
    with pytest.raises(UserError, match="device must be one of auto, cpu, cuda, cuda:N .* or mps"):
        check_device(device)
    with pytest.raises(UserError, match="device must be one of"):
        RunConfig(device=device, epochs=1).resolved()


@pytest.mark.parametrize("device", ["gpu", "cdua"])
def test_sweep_device_is_checked(capsys, workspace, device):
    path = workspace / "c.toml"
    path.write_text(f'name = "t"\nstorage = "{workspace / "store"}"\ndevice = "{device}"\n'
                    '[[datasets]]\nname = "digits"\n[[pairs]]\nteacher = "resnet8"\nstudent = "resnet8"\n'
                    '[[methods]]\nmethod = "ce"\n')
    fails(capsys, ["sweep", path], "device must be one of auto, cpu, cuda, cuda:N", repr(device))
    assert not (workspace / "store").exists()


def test_train_device_flag_is_checked(capsys, workspace):
    out = workspace / "run"
    fails(capsys, ["train", "teacher", "--arch", "resnet8", "--epochs", "1", "--device", "gpu", "--out", out],
          "--device must be one of auto, cpu, cuda, cuda:N", "mps", "'gpu'")
    assert not out.exists()


# ------------------------------------------------------------------------------------ --out


def test_train_out_that_is_a_file(capsys, workspace):
    out = workspace / "notes.txt"
    out.write_text("keep me")
    fails(capsys, ["train", "teacher", "--arch", "resnet8", "--epochs", "1", "--out", out],
          f"--out {out} is a file", "--out must be a folder")
    assert out.read_text() == "keep me" and tree(workspace) == {"notes.txt"}
    fails(capsys, ["train", "teacher", "--arch", "resnet8", "--epochs", "1", "--out", out / "run"],
          f"is inside {out}", "--out must be a folder")
    assert out.read_text() == "keep me" and tree(workspace) == {"notes.txt"}


# ------------------------------------------------------------------------------------ sweep names


@pytest.mark.parametrize("name", ["../../x", "..", ".", "", "a/b", "a b", "x" * 101, "caf\u00e9", "a\n", "/abs"])
def test_bad_sweep_names_in_the_config(tmp_path, name):
    with pytest.raises(ConfigError, match="name must be 1 to 100 letters, digits"):
        parse_config(tiny_config(tmp_path / "store", name=name))


@pytest.mark.parametrize("name", ["a", "x" * 100, "cifar-lt_v1.2", "..a", "A.B"])
def test_good_sweep_names(tmp_path, name):
    assert parse_config(tiny_config(tmp_path / "store", name=name)).name == name


@pytest.mark.parametrize("name", ["../../x", "..", ".", "", "a/b", "x" * 101])
def test_bad_name_flag_writes_nothing_anywhere(capsys, tmp_path, name):
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    store = work / "store"
    path = work / "c.json"
    path.write_text(json.dumps(tiny_config(store)))
    before = tree(tmp_path.parent)
    fails(capsys, ["sweep", path, "--name", name], "--name must be 1 to 100 letters, digits")
    assert not store.exists()
    assert tree(tmp_path.parent) == before  # nothing appeared beside or above the storage folder either


def test_bad_name_in_the_config_file_from_the_cli(capsys, workspace):
    path = workspace / "c.json"
    path.write_text(json.dumps(tiny_config(workspace / "store", name="../../x")))
    fails(capsys, ["sweep", path], "name must be 1 to 100 letters", "'../../x'")
    assert not (workspace / "store").exists() and not (workspace.parent.parent / "x").exists()


@pytest.mark.parametrize("storage,needles", [
    ("", ["--storage must be a folder or URI"]),
    ("   ", ["--storage must be a folder or URI"]),
    ("s3://KEY:SECRET@bucket/sweeps", ["--storage", "carries credentials; pass them in the environment instead"]),
    ("gs://bucket/x?client_secret=s3cr3t", ["--storage", "carries secrets in its query (client_secret)"]),
    ("s3://bucket/sweeps?region=eu-west-1&session_token=s3cr3t&secret_key=s3cr3t",
     ["--storage", "carries secrets in its query (session_token, secret_key); pass them in the environment"]),
    ("az://c/x?sv=2022&sig=s3cr3t", ["--storage", "carries secrets in its query (sig)"]),
])
def test_bad_storage_flag(capsys, workspace, storage, needles):
    path = workspace / "c.json"
    path.write_text(json.dumps(tiny_config(workspace / "store")))
    message = fails(capsys, ["sweep", path, "--storage", storage], *needles)
    assert "SECRET" not in message and "s3cr3t" not in message
    assert tree(workspace) == {"c.json"}


def test_a_secret_in_the_config_files_storage_query_is_refused(capsys, workspace):
    path = workspace / "c.json"
    path.write_text(json.dumps(tiny_config("s3://bucket/sweeps?endpoint_override=h:9000&token=s3cr3t")))
    message = fails(capsys, ["sweep", path], "carries secrets in its query (token)")
    assert "s3cr3t" not in message and tree(workspace) == {"c.json"}


def test_name_and_storage_overrides_are_checked_together(capsys, workspace):
    """A good --storage with a bad --name, and the other way round: validated before anything is written."""
    path = workspace / "c.json"
    path.write_text(json.dumps(tiny_config(workspace / "store")))
    fails(capsys, ["sweep", path, "--storage", workspace / "other", "--name", "../x"], "--name")
    fails(capsys, ["sweep", path, "--storage", "", "--name", "fine"], "--storage")
    assert tree(workspace) == {"c.json"}


# ------------------------------------------------------------------------------------ imbalance factors


def test_nominal_n_max_matches_the_data():
    from trainables.data.sources import target_counts

    spec = DATASETS["digits"]
    source = spec.read(None)
    assert nominal_n_max(spec) == target_counts(spec, source.train.labels, 1.0)[0]
    assert {name: nominal_n_max(DATASETS[name]) for name in ("cifar100", "tinyimagenet", "imagenet")} == \
        {"cifar100": 500, "tinyimagenet": 500, "imagenet": 1300}


@pytest.mark.parametrize("factor", [float("inf"), 1e300, 501, 500.5])
def test_counts_refuse_factors_that_empty_a_class(factor):
    with pytest.raises(ValueError, match="imbalance factor must be .*500"):
        long_tail_counts(500, 100, factor)


def test_the_largest_allowed_factor_keeps_one_image_in_the_smallest_class():
    for n_max in range(1, 1400):
        for classes in (2, 10, 100):
            counts = long_tail_counts(n_max, classes, n_max)
            assert counts[0] == n_max and counts[-1] == 1, (n_max, classes)
    assert long_tail_counts(500, 100, 100)[-1] == 5 and sum(long_tail_counts(500, 100, 100)) == 10847


@pytest.mark.parametrize("dataset,factor,largest", [
    ("digits", "inf", 124), ("digits", "1e300", 124), ("digits", "125", 124), ("cifar100", "501", 500),
    ("imagenet", "1e5", 1300),
])
def test_sweep_factor_too_large_says_the_largest_allowed(capsys, workspace, dataset, factor, largest):
    path = workspace / "c.toml"
    pair = ("resnet50", "resnet18") if dataset == "imagenet" else ("resnet8", "resnet8")
    path.write_text(f'name = "t"\nstorage = "{workspace / "store"}"\n'
                    f'[[datasets]]\nname = "{dataset}"\nroot = "{workspace / "nope"}"\n'
                    f'imbalance_factors = [10, {factor}]\n'
                    f'[[pairs]]\nteacher = "{pair[0]}"\nstudent = "{pair[1]}"\n[[methods]]\nmethod = "ce"\n')
    fails(capsys, ["sweep", path], "datasets[0].imbalance_factors", f"{largest}", dataset)
    assert not (workspace / "store").exists()


@pytest.mark.parametrize("factor", ["inf", "1e300", "125", "0.5", "nan"])
def test_train_factor_flag_is_checked(capsys, workspace, factor):
    out = workspace / "run"
    message = fails(capsys, ["train", "teacher", "--arch", "resnet8", "--epochs", "1", "--imbalance-factor", factor,
                             "--out", out], "--imbalance-factor must be")
    if factor not in ("0.5", "nan"):
        assert "124" in message and "digits" in message
    assert not out.exists()


def test_run_config_checks_the_factor_for_its_dataset():
    # The paper's counts (no validation holdout): the largest class has 500 images.
    with pytest.raises(UserError, match="imbalance factor must be at most 500 for cifar100"):
        RunConfig(dataset="cifar100", imbalance_factor=1e300, arch="resnet8", epochs=1,
                  validation_per_class=0).resolved()
    largest = RunConfig(dataset="cifar100", imbalance_factor=500, arch="resnet8", epochs=1,
                        validation_per_class=0).resolved()
    assert largest.imbalance_factor == 500
    # With the default holdout of 50 per class the largest class has 450.
    with pytest.raises(UserError, match="at most 450"):
        RunConfig(dataset="cifar100", imbalance_factor=500, arch="resnet8", epochs=1).resolved()


def test_a_renamed_sweep_folder_is_refused_naming_both_names(capsys, workspace):
    original = workspace / "store" / "tiny"
    original.mkdir(parents=True)
    (original / "sweep.json").write_text(parse_config(tiny_config(workspace / "store")).to_json())
    renamed = original.rename(workspace / "store" / "renamed")
    before = tree(workspace)
    for command in ("resume", "status"):
        fails(capsys, [command, renamed], "holds the sweep named 'tiny'", "not 'renamed'",
              "rename the folder back to 'tiny'")
    assert tree(workspace) == before and not original.exists()
