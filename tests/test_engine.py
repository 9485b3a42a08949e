"""The training engine without Ray: teachers, students of every logit method, exact resume, bad input."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.cli import main as ltkd_main
from tests.dataset_builders import write_cifar100
from trainables.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainables.config import RunConfig
from trainables.engine import NonFiniteLossError, fit, read_metrics
from trainables.errors import UserError

# Small and quick: digits at imbalance factor 100 keeps 278 training images (10 per class held out for validation).
# device cpu: the exact-resume checks compare weights bitwise, which GPUs only give with deterministic kernels.
QUICK = dict(dataset="digits", imbalance_factor=100, arch="resnet20", batch_size=64, progress=False, device="cpu")


class Stop(Exception):
    pass


def stop_after(epoch: int):
    def callback(metrics, checkpoint):
        if metrics["epoch"] == epoch:
            raise Stop()
    return callback


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher")
    fit(RunConfig(**QUICK, epochs=2, seed=0), run_dir, log=None)
    return run_dir


def test_teacher_run_writes_checkpoint_config_and_metrics(teacher_dir):
    payload = load_checkpoint(teacher_dir)
    assert payload["finished"] and payload["epoch"] == 2 and payload["num_classes"] == 10
    history = read_metrics(teacher_dir)
    assert [m["epoch"] for m in history] == [1, 2]
    last = history[-1]
    for key in ("acc", "acc_head", "acc_medium", "acc_tail", "per_class_acc", "group_prob", "train_loss", "lr"):
        assert key in last
    assert len(last["per_class_acc"]) == 10
    # overall accuracy on the balanced test set is the mean of the per-class accuracies
    assert last["acc"] == pytest.approx(sum(last["per_class_acc"]) / 10)
    # head/medium/tail are the 3-group means (3, 4, 3 classes for 10 classes)
    pc = last["per_class_acc"]
    assert last["acc_head"] == pytest.approx(sum(pc[:3]) / 3)
    assert last["acc_tail"] == pytest.approx(sum(pc[7:]) / 3)
    assert sum(last["group_prob"]) == pytest.approx(1.0, abs=1e-5)
    assert (teacher_dir / "run.json").exists()
    # the recorded subsample rebuilds the long-tailed set: 278 images at factor 100 (n_max 124 - 10 held out)
    assert len(payload["train_indices"]) == sum(payload["class_counts"]) == 278
    assert len(payload["val_indices"]) == 100 and payload["val_indices"].dtype == torch.int64
    for key in ("val_acc", "val_acc_head", "val_acc_medium", "val_acc_tail"):
        assert isinstance(last[key], float)


@pytest.mark.parametrize("method", ["ce", "kd", "dkd", "dist", "bkd", "ltkd"])
def test_every_logit_method_distils_end_to_end(teacher_dir, tmp_path, method):
    config = RunConfig(**QUICK, role="student", method=method, epochs=2,
                       teacher=None if method == "ce" else str(teacher_dir))
    result = fit(config, tmp_path / method, log=None)
    assert len(result.history) == 2
    assert torch.isfinite(torch.tensor(result.metrics["train_loss"]))
    if method != "ce":
        assert result.metrics["teacher_group_prob"] is not None
        assert 0 < result.metrics["distill_weight"] <= 1


def test_ltkd_ablation_switches_and_group_count_reach_the_loss(teacher_dir, tmp_path):
    config = RunConfig(**QUICK, role="student", method="ltkd", epochs=1, teacher=str(teacher_dir),
                       hparams={"rebalance": False, "uniform_within": False, "n_groups": 10, "alpha": 0.0})
    fit(config, tmp_path / "ablation", log=None)
    saved = load_checkpoint(tmp_path / "ablation")["config"]["hparams"]
    assert saved["rebalance"] is False and saved["n_groups"] == 10 and saved["alpha"] == 0.0


def test_resume_continues_exactly(teacher_dir, tmp_path):
    config = RunConfig(**QUICK, role="student", method="ltkd", epochs=3, teacher=str(teacher_dir))
    straight = fit(config, tmp_path / "straight", log=None)
    with pytest.raises(Stop):
        fit(config, tmp_path / "resumed", callback=stop_after(2), log=None)
    assert load_checkpoint(tmp_path / "resumed")["epoch"] == 2
    resumed = fit(config, tmp_path / "resumed", log=None)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    strip = lambda h: [{k: v for k, v in m.items() if "seconds" not in k and k != "resumed_from"} for m in h]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)
    assert [m["epoch"] for m in read_metrics(tmp_path / "resumed")] == [1, 2, 3]
    assert [m["resumed_from"] for m in resumed.history] == [0, 0, 2]
    # a finished run is not trained again
    again = fit(config, tmp_path / "resumed", log=None)
    assert strip(again.history) == strip(straight.history)


def test_a_checkpoint_interval_skips_epochs_and_a_crash_restarts_from_the_last_checkpoint(teacher_dir, tmp_path):
    """checkpoint_every_seconds: no checkpoint after an epoch until that long has passed (an hour here:
    none but the last), every epoch's metrics line regardless; a run stopped before its first checkpoint
    starts again from epoch 0 and ends exactly as a run never stopped, with one metrics line per epoch."""
    config = RunConfig(**QUICK, role="student", method="kd", epochs=3, teacher=str(teacher_dir),
                       checkpoint_every_seconds=3600)
    straight = fit(dataclasses.replace(config, checkpoint_every_seconds=0), tmp_path / "straight", log=None)
    seen = []

    def watch(metrics, checkpoint_path):
        seen.append((metrics["epoch"], checkpoint_path, (tmp_path / "run" / "checkpoint.pt").exists(),
                     len(read_metrics(tmp_path / "run"))))
        if metrics["epoch"] == 2 and len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(config, tmp_path / "run", callback=watch, log=None)
    assert seen == [(1, None, False, 1), (2, None, False, 2)]
    resumed = fit(config, tmp_path / "run", callback=watch, log=None)
    assert seen[2:] == [(1, None, False, 1), (2, None, False, 2), (3, tmp_path / "run" / "checkpoint.pt", True, 3)]
    assert [m["resumed_from"] for m in resumed.history] == [0, 0, 0]  # nothing to resume: trained again
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "run")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]
    strip = lambda h: [{k: v for k, v in m.items() if "seconds" not in k} for m in h]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)


def test_a_run_killed_after_its_last_checkpoint_gets_its_metrics_back(teacher_dir, tmp_path):
    """Killed between the final checkpoint and its metrics line: the next start rebuilds metrics.jsonl."""
    from orchestrator.studies import run_outcome
    from trainables.storage import Location

    run_dir = tmp_path / "run"
    config = RunConfig(**QUICK, role="student", method="kd", epochs=2, teacher=str(teacher_dir))
    fit(config, run_dir, log=None)
    metrics = run_dir / "metrics.jsonl"
    full = metrics.read_text()
    metrics.write_text(full.splitlines(keepends=True)[0])  # the last epoch's line never landed
    assert run_outcome(Location.parse(run_dir), 2) is None  # a sweep sees an unfinished run ...
    checkpoint = (run_dir / CHECKPOINT_NAME).read_bytes()
    fit(config, run_dir, log=None)
    assert (run_dir / CHECKPOINT_NAME).read_bytes() == checkpoint  # ... which is not trained again
    assert metrics.read_text() == full  # and whose metrics come back from the checkpoint's history
    assert run_outcome(Location.parse(run_dir), 2)["epoch"] == 2


# ------------------------------------------------------------------------------- bad input


def test_teacher_for_another_setting_is_refused(teacher_dir, tmp_path):
    with pytest.raises(UserError, match="imbalance factor 100 / data seed 0 \\(this run: 10 / 0\\)"):
        fit(RunConfig(**{**QUICK, "imbalance_factor": 10}, role="student", method="kd", epochs=1,
                      teacher=str(teacher_dir)), tmp_path / "s", log=None)
    with pytest.raises(UserError, match="architecture resnet20 \\(asked: resnet32x4\\)"):
        fit(RunConfig(**QUICK, role="student", method="kd", epochs=1, teacher=str(teacher_dir),
                      teacher_arch="resnet32x4"), tmp_path / "s", log=None)
    assert not (tmp_path / "s" / CHECKPOINT_NAME).exists()


def test_teacher_with_another_validation_split_is_refused(teacher_dir, tmp_path):
    # the student's validation images would be in the teacher's training set
    with pytest.raises(UserError, match="validation_per_class 10 \\(this run: 0\\)"):
        fit(RunConfig(**QUICK, role="student", method="kd", epochs=1, teacher=str(teacher_dir),
                      validation_per_class=0), tmp_path / "s", log=None)
    assert not (tmp_path / "s").exists()


def test_teacher_for_another_class_count_is_refused(tmp_path):
    write_cifar100(tmp_path / "data", per_class_train=2, per_class_test=1)
    fit(RunConfig(dataset="cifar100", root=str(tmp_path / "data"), imbalance_factor=2, arch="resnet20",
                  epochs=1, batch_size=100, progress=False, validation_per_class=0),
        tmp_path / "cifar_teacher", log=None)
    with pytest.raises(UserError, match="dataset cifar100 \\(this run: digits\\); 100 classes \\(this run: 10\\)"):
        fit(RunConfig(**QUICK, role="student", method="ltkd", epochs=1, teacher=str(tmp_path / "cifar_teacher")),
            tmp_path / "s", log=None)


def test_missing_truncated_and_unfinished_teacher_checkpoints(teacher_dir, tmp_path):
    student = dict(**QUICK, role="student", method="kd", epochs=1)
    with pytest.raises(UserError, match="not found"):
        fit(RunConfig(**student, teacher=str(tmp_path / "nowhere")), tmp_path / "s", log=None)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((teacher_dir / CHECKPOINT_NAME).read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated or not a checkpoint"):
        fit(RunConfig(**student, teacher=str(truncated)), tmp_path / "s", log=None)
    with pytest.raises(Stop):
        fit(RunConfig(**QUICK, epochs=3), tmp_path / "unfinished", callback=stop_after(1), log=None)
    with pytest.raises(UserError, match="is not finished \\(epoch 1 of 3\\)"):
        fit(RunConfig(**student, teacher=str(tmp_path / "unfinished")), tmp_path / "s", log=None)


@pytest.mark.parametrize("settings,message", [
    ({"arch": "resnet9000"}, "unknown architecture 'resnet9000'"),
    ({"method": "fancykd", "role": "student", "teacher": "x"}, "unknown method 'fancykd'"),
    ({"method": "kd", "role": "student"}, "distils from a teacher"),
    ({"method": "ltkd", "role": "student", "teacher": "x", "hparams": {"alpha": -1.0}}, "'alpha' must be >= 0"),
    ({"method": "ltkd", "role": "student", "teacher": "x", "hparams": {"gamma": 1.0}}, "unknown hyperparameter 'gamma'"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"lr": -0.1}, "lr must be a positive number"),
    ({"test_every": 0}, "test_every must be an integer >= 1 \\(evaluate the test set every that many epochs"),
    ({"test_every": 2.0}, "test_every must be an integer >= 1"),
    ({"checkpoint_every_seconds": -1}, "checkpoint_every_seconds must be a number of seconds >= 0"),
    ({"checkpoint_every_seconds": float("nan")}, "checkpoint_every_seconds must be a number of seconds >= 0"),
    ({"teacher_cache_dtype": "bfloat16"}, "teacher_cache_dtype must be one of float32, float16, got 'bfloat16'"),
])
def test_impossible_settings_are_rejected_before_any_work(settings, message, tmp_path):
    with pytest.raises((UserError, ValueError), match=message):
        fit(RunConfig(**{**QUICK, **settings}), tmp_path / "never", log=None)
    assert not (tmp_path / "never").exists()


def test_ltkd_with_more_groups_than_classes_is_rejected(teacher_dir, tmp_path):
    with pytest.raises(ValueError, match="between 1 and the class count 10"):
        fit(RunConfig(**QUICK, role="student", method="ltkd", epochs=1, teacher=str(teacher_dir),
                      hparams={"n_groups": 11}), tmp_path / "s", log=None)


def test_another_run_never_overwrites_a_checkpoint(teacher_dir, tmp_path):
    before = (teacher_dir / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(UserError, match="already holds a different run \\(differs in: lr\\)"):
        fit(RunConfig(**QUICK, epochs=2, lr=0.2), teacher_dir, log=None)
    assert (teacher_dir / CHECKPOINT_NAME).read_bytes() == before


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path):
    config = RunConfig(**QUICK, epochs=3)
    with pytest.raises(Stop):
        fit(config, tmp_path / "run", callback=stop_after(1), log=None)
    # Corrupt the saved weights as a diverging run would, then resume: the loss is no longer finite.
    path = tmp_path / "run" / CHECKPOINT_NAME
    payload = torch.load(path, weights_only=False)
    payload["model"]["classifier.weight"].fill_(float("inf"))
    torch.save(payload, path)
    before = path.read_bytes()
    with pytest.raises(NonFiniteLossError, match="at epoch 2, step 1 of 5"):
        fit(config, tmp_path / "run", log=None)
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------- command line


def test_cli_trains_a_teacher_then_an_ltkd_student(tmp_path, capsys):
    common = ["--dataset", "digits", "--imbalance-factor", "100", "--batch-size", "64", "--epochs", "1"]
    assert ltkd_main(["train", "teacher", *common, "--arch", "resnet20", "--out", str(tmp_path / "t")]) == 0
    assert ltkd_main(["train", "student", *common, "--arch", "resnet20", "--method", "ltkd", "--teacher",
                      str(tmp_path / "t"), "--alpha", "1", "--beta", "2", "--temperature", "2", "--groups", "5",
                      "--set", "rebalance=false", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "epoch   1/1" in out and "done: " in out
    hparams = load_checkpoint(tmp_path / "s")["config"]["hparams"]
    assert (hparams["alpha"], hparams["beta"], hparams["temperature"], hparams["n_groups"], hparams["rebalance"]) == \
        (1.0, 2.0, 2.0, 5, False)


@pytest.mark.parametrize("args,message", [
    (["teacher", "--arch", "nope"], "unknown architecture 'nope'"),
    (["student", "--method", "kd"], "distils from a teacher"),
    (["student", "--method", "ltkd", "--teacher", "/no/such/run"], "not found"),
    (["student", "--method", "kd", "--teacher", "/x", "--groups", "3"], "unknown hyperparameter 'n_groups'"),
    (["teacher", "--test-every", "0"], "--test-every must be an integer >= 1"),
    (["teacher", "--checkpoint-every-seconds", "-5"], "--checkpoint-every-seconds must be a number of seconds >= 0"),
])
def test_cli_bad_input_is_one_line_and_nonzero(args, message, tmp_path, capsys):
    code = ltkd_main(["train", *args, "--epochs", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_cli_passes_test_every_and_the_cache_dtype_to_the_run(tmp_path, monkeypatch, capsys):
    import trainables.engine
    from trainables.engine import RunResult

    seen = []

    def fake_fit(config, run_dir, **kwargs):
        seen.append(config)
        Path(run_dir).mkdir(parents=True, exist_ok=True)  # the student's --teacher must exist
        metrics = dict.fromkeys(("acc", "acc_head", "acc_medium", "acc_tail"), 50.0)
        return RunResult(tmp_path, metrics, [metrics])

    monkeypatch.setattr(trainables.engine, "fit", fake_fit)
    common = ["--epochs", "6", "--device", "cpu"]
    assert ltkd_main(["train", "teacher", *common, "--test-every", "3", "--out", str(tmp_path / "t")]) == 0
    assert ltkd_main(["train", "student", *common, "--method", "kd", "--teacher", str(tmp_path / "t"),
                      "--test-every", "2", "--teacher-cache-dtype", "float16", "--out", str(tmp_path / "s")]) == 0
    assert ltkd_main(["train", "student", *common, "--method", "kd", "--teacher", str(tmp_path / "t"),
                      "--out", str(tmp_path / "d")]) == 0
    assert [(c.role, c.test_every, c.teacher_cache_dtype) for c in seen] == \
        [("teacher", 3, "float32"), ("student", 2, "float16"), ("student", 1, "float32")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # argparse's own choices check
        ltkd_main(["train", "student", "--teacher-cache-dtype", "float64", "--out", str(tmp_path / "x")])
    assert refused.value.code == 2 and "invalid choice: 'float64'" in capsys.readouterr().err


def test_a_cache_build_reports_its_progress_with_rate_and_time_left():
    from trainables.teacher_cache import BuildProgress

    now = [0.0]
    lines = []
    progress = BuildProgress((1000, 162, 100), lines.append, every=60.0, clock=lambda: now[0])
    for _ in range(10):  # 100 images every 30 s: 540 views/s
        now[0] += 30.0
        progress.advance(100)
    assert lines == [  # one line a minute, none at the end (the build's own summary follows)
        "200 of 1,000 images (20%), 540 views/s, about 4 min left",
        "400 of 1,000 images (40%), 540 views/s, about 3 min left",
        "600 of 1,000 images (60%), 540 views/s, about 2 min left",
        "800 of 1,000 images (80%), 540 views/s, about 60 s left",
    ]


def test_a_live_teacher_run_reads_the_teachers_test_set_group_probabilities_from_its_checkpoint(teacher_dir,
                                                                                                 tmp_path):
    """The teacher's own last epoch measured them on the same test set and groups: a student run no
    longer repeats a pass of the teacher over the test set (minutes per trial on a CPU at CIFAR size)."""
    from trainables.checkpoint import load_checkpoint
    from trainables.data.groups import class_groups
    from trainables.data.pipeline import Normalization, TensorBatches
    from trainables.data.sources import load_long_tailed
    from trainables.engine import evaluate, recorded_group_prob, teacher_model

    payload = load_checkpoint(teacher_dir)
    recorded = payload["history"][-1]["group_prob"]
    student = fit(RunConfig(**{**QUICK, "arch": "resnet8"}, role="student", method="kd", teacher=str(teacher_dir),
                            epochs=1, teacher_cache="off"), tmp_path / "kd", log=None)
    assert student.metrics["teacher_group_prob"] == recorded
    # ... and they are what a pass of the teacher over the test set gives (what runs did before).
    config = RunConfig(**QUICK, epochs=2).resolved()
    data = load_long_tailed(config.dataset, None, config.imbalance_factor, config.data_seed,
                            validation_per_class=config.validation_per_class)
    groups = class_groups(data.counts, 3)
    test = TensorBatches(data.test, 500, torch.device("cpu"), Normalization.of(data.train.images), augment=False)
    _, measured = evaluate(teacher_model(payload, data.num_classes, torch.device("cpu")), test, data.num_classes,
                           groups, None)
    assert np.allclose(measured, recorded, atol=1e-5)
    assert recorded_group_prob({"history": [{"group_prob": [0.5, 0.5]}]}, groups) is None  # not 3 groups: measured


# ------------------------------------------------------------------------------- evaluation


TEST_KEYS = ("acc", "acc_head", "acc_medium", "acc_tail", "per_class_acc", "group_prob")
VAL_KEYS = ("val_acc", "val_acc_head", "val_acc_medium", "val_acc_tail")


def test_test_every_follows_the_epochs_and_always_takes_the_last():
    config = RunConfig(**QUICK, epochs=10, test_every=3)
    assert [e for e in range(1, 11) if config.evaluates_test_at(e)] == [3, 6, 9, 10]
    assert all(RunConfig(**QUICK, epochs=4).evaluates_test_at(e) for e in range(1, 5))
    # it does not change what a run computes: not part of its identity
    assert config.identity() == RunConfig(**QUICK, epochs=10).identity()


def test_skipped_test_epochs_have_none_test_metrics_and_train_exactly_alike(teacher_dir, tmp_path):
    """teacher_dir evaluated its test set at both of its 2 epochs; with test_every 3 epoch 1 skips it and
    epoch 2, the last, takes it. Validation runs every epoch, and the training is bit for bit the same."""
    from tests.test_sweep import read_tensorboard
    from trainables.tracking import TensorBoardLog

    lines = []
    tensorboard = TensorBoardLog(tmp_path / "run")
    result = fit(RunConfig(**QUICK, epochs=2, seed=0, test_every=3), tmp_path / "run", log=lines.append,
                 callback=lambda metrics, checkpoint: tensorboard.epoch(metrics))
    tensorboard.close()
    skipped, last = result.history
    assert all(skipped[key] is None for key in TEST_KEYS)
    assert all(last[key] is not None for key in TEST_KEYS) and len(last["per_class_acc"]) == 10
    assert all(isinstance(m[key], float) for m in result.history for key in VAL_KEYS)
    assert [m["acc"] for m in read_metrics(tmp_path / "run")] == [None, last["acc"]]  # null in metrics.jsonl
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert "test set not evaluated" in epoch_lines[0] and "val acc" in epoch_lines[0]
    assert f"acc {last['acc']:.2f}" in epoch_lines[1]
    # the same weights, optimiser state and RNG states as the run that evaluated every epoch
    reference, payload = load_checkpoint(teacher_dir), load_checkpoint(tmp_path / "run")
    for name, tensor in reference["model"].items():
        assert torch.equal(payload["model"][name], tensor), name
    for key in ("torch", "data"):
        assert torch.equal(payload["rng"][key], reference["rng"][key]), key
    for ours, theirs in zip(result.history, reference["history"]):
        assert [ours[key] for key in VAL_KEYS] == [theirs[key] for key in VAL_KEYS]
        assert ours["train_loss"] == theirs["train_loss"]
    assert [last[key] for key in TEST_KEYS] == [reference["history"][-1][key] for key in TEST_KEYS]
    # TensorBoard gets the validation scalars of every epoch and the test ones where they exist
    scalars = read_tensorboard(tmp_path / "run" / "tensorboard")
    assert set(scalars["val/val_acc"]) == {1, 2} and set(scalars["acc"]) == {2}
    assert set(scalars["group_prob/head"]) == {2}


def digits_eval_set(batch_size: int):
    from trainables.data.pipeline import Normalization, TensorBatches
    from trainables.data.sources import load_long_tailed

    config = RunConfig(**QUICK, epochs=2).resolved()
    data = load_long_tailed(config.dataset, None, config.imbalance_factor, config.data_seed,
                            validation_per_class=config.validation_per_class)
    return TensorBatches(data.test, batch_size, torch.device("cpu"), Normalization.of(data.train.images),
                         augment=False, channels_last=True)


def test_evaluation_gives_the_same_metrics_at_any_batch_size(tmp_path):
    from trainables.data.groups import class_groups
    from trainables.engine import evaluate
    from trainables.models import create_model

    # small batches: 3 quick epochs make a model whose predictions differ between classes
    fit(RunConfig(**{**QUICK, "batch_size": 16}, epochs=3, seed=0), tmp_path / "run", log=None)
    payload = load_checkpoint(tmp_path / "run")
    model = create_model("resnet20", 10)
    model.load_state_dict(payload["model"])
    model = model.to(memory_format=torch.channels_last)
    groups = class_groups(payload["class_counts"], 3)
    small, large = digits_eval_set(7), digits_eval_set(1024)
    model.eval()
    with torch.no_grad():  # the evaluation before inference mode and other batch sizes
        per_class, group_prob = evaluate.__wrapped__(model, small, 10, groups, None)
    assert len(set(per_class.tolist())) > 2  # no degenerate case
    for batches in (small, large):
        got_per_class, got_group_prob = evaluate(model, batches, 10, groups, None)
        assert np.array_equal(got_per_class, per_class)
        np.testing.assert_allclose(got_group_prob, group_prob, rtol=1e-5, atol=1e-7)
    # and the run recorded the same at its last epoch
    last = payload["history"][-1]
    assert last["per_class_acc"] == pytest.approx(list(per_class * 100), abs=1e-9)
    assert last["group_prob"] == pytest.approx(list(group_prob), rel=1e-5, abs=1e-7)


def test_evaluating_file_backed_data_leaves_the_global_rng_alone(tmp_path):
    """A DataLoader without a generator draws its base seed from the global RNG: evaluation (and
    skipping it, with test_every) would shift a run's random stream."""
    from tests.dataset_builders import write_image_folder
    from trainables.data.pipeline import FileBatches
    from trainables.data.sources import ImageSet

    write_image_folder(tmp_path, [3, 3])
    paths = sorted(str(p) for p in (tmp_path / "val").rglob("*.JPEG"))
    images = ImageSet(labels=np.array([0, 0, 1, 1]), paths=paths)
    batches = FileBatches(images, 2, torch.device("cpu"), train=False, image_size=16, num_workers=0)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert sum(len(labels) for _, labels in batches.ordered()) == 4
    assert torch.equal(torch.rand(3), expected)
