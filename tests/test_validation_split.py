"""Issue 13, the validation split: held out of the balanced training pool before the long-tailed
subsample, balanced, disjoint from the subsample and the test set, seeded, recorded and rebuilt on
resume, evaluated every epoch; and digits are never flipped."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.dataset_builders import write_cifar100, write_image_folder, write_tiny_imagenet
from trainables.checkpoint import load_checkpoint
from trainables.config import RunConfig
from trainables.data.long_tail import long_tail_counts
from trainables.data.pipeline import Normalization, TensorBatches, crop_flip, decode_views
from trainables.data.sources import DATASETS, get_dataset, load_long_tailed
from trainables.errors import UserError

REPO = Path(__file__).resolve().parents[1]
VAL_KEYS = ("val_acc", "val_acc_head", "val_acc_medium", "val_acc_tail")
QUICK = dict(dataset="digits", imbalance_factor=100, arch="resnet8", batch_size=64, progress=False, device="cpu")  # bitwise checks: CPU


def rows(images: np.ndarray) -> set[bytes]:
    return {bytes(row) for row in images.reshape(len(images), -1)}


def sklearn_digits_pool_sizes() -> np.ndarray:
    """Training images per digit after the fixed test split, from scikit-learn directly."""
    from sklearn.datasets import load_digits

    return np.bincount(load_digits().target, minlength=10) - 50


# ------------------------------------------------------------------------------- defaults


def test_dataset_defaults_and_config_resolution():
    assert {name: spec.validation_per_class for name, spec in DATASETS.items()} == \
        {"cifar100": 50, "tinyimagenet": 50, "imagenet": 20, "digits": 10}
    assert RunConfig(arch="resnet8", epochs=1).resolved().validation_per_class == 10
    assert RunConfig(dataset="cifar100", arch="resnet8", epochs=1).resolved().validation_per_class == 50
    explicit = RunConfig(arch="resnet8", epochs=1, validation_per_class=0).resolved()
    assert explicit.validation_per_class == 0
    # part of the run's identity
    assert explicit.identity()["validation_per_class"] == 0
    assert RunConfig(arch="resnet8", epochs=1).resolved().identity() != explicit.identity()


@pytest.mark.parametrize("value", [-1, 2.5, True, "10"])
def test_validation_per_class_must_be_a_non_negative_integer(value):
    with pytest.raises(UserError, match="validation_per_class must be"):
        RunConfig(arch="resnet8", epochs=1, validation_per_class=value).resolved()


# ------------------------------------------------------------------------------- the split


def check_split(data, per_class: int, num_classes: int, pool_size: int):
    """Balanced (exactly per_class of every class), within the pool, disjoint from the subsample."""
    assert np.bincount(data.val.labels, minlength=num_classes).tolist() == [per_class] * num_classes
    assert len(data.val_indices) == per_class * num_classes == len(np.unique(data.val_indices))
    assert data.val_indices.min() >= 0 and data.val_indices.max() < pool_size
    assert len(np.intersect1d(data.val_indices, data.train_indices)) == 0
    assert data.validation_per_class == per_class


def test_digits_split_is_balanced_and_disjoint_from_the_subsample_and_the_test_set():
    spec = get_dataset("digits")
    source = spec.read(None)
    data = load_long_tailed("digits", None, 10, seed=0, validation_per_class=10)
    check_split(data, 10, 10, len(source.train))
    # the images themselves (every digits image is distinct): never a training or a test image
    val = rows(data.val.images)
    assert len(val) == 100
    assert not val & rows(data.train.images)
    assert not val & rows(data.test.images)
    # they are the pool's images at the recorded indices, with their labels
    assert np.array_equal(data.val.images, source.train.images[data.val_indices])
    assert np.array_equal(data.val.labels, source.train.labels[data.val_indices])
    # the digits test split is the fixed one, whatever the holdout
    assert np.array_equal(data.test.images, load_long_tailed("digits", None, 10, validation_per_class=0).test.images)


def test_cifar_copy_split_is_balanced_and_disjoint(tmp_path):
    write_cifar100(tmp_path, per_class_train=20, per_class_test=2)
    data = load_long_tailed("cifar100", tmp_path, 10, seed=0, validation_per_class=5)
    check_split(data, 5, 100, 2000)
    # the builder writes the label into the first red byte: images and labels stay paired
    assert np.array_equal(data.val.images[:, 0, 0, 0], data.val.labels)
    val = rows(data.val.images)  # random bytes: equal rows would be the same image
    assert len(val) == 500 and not val & rows(data.train.images) and not val & rows(data.test.images)
    # n_max = 20 - 5 = 15, computed here independently
    assert data.counts == long_tail_counts(15, 100, 10) and data.n_max == 15


def test_tiny_imagenet_copy_split_comes_from_train_never_from_val(tmp_path):
    folder = write_tiny_imagenet(tmp_path, num_classes=6, per_class_train=10, per_class_val=2)
    data = load_long_tailed("tinyimagenet", tmp_path, 2, seed=0, validation_per_class=3)
    source = get_dataset("tinyimagenet").read(tmp_path)
    check_split(data, 3, 6, 60)
    val_paths = {source.train.paths[i] for i in data.val_indices}
    train_paths = {source.train.paths[i] for i in data.train_indices}
    assert all(Path(p).is_relative_to(folder / "train") for p in val_paths)
    assert not val_paths & train_paths and not val_paths & set(source.test.paths)
    assert data.val.images.shape == (18, 64, 64, 3)  # decoded like the training images
    assert np.allclose(data.val.images.reshape(18, -1).mean(1), 10 * data.val.labels, atol=3)
    assert data.counts == long_tail_counts(7, 6, 2)


def test_image_folder_split_and_counts_capped_at_what_remains(tmp_path):
    available = [30, 4, 25, 3, 20, 18]
    write_image_folder(tmp_path, available)
    data = load_long_tailed("imagenet", tmp_path, 10, seed=0, validation_per_class=2)
    check_split(data, 2, 6, sum(available))
    assert data.val.paths is not None and all("/train/" in p for p in data.val.paths)
    assert not set(data.val.paths) & set(data.train.paths)
    assert not set(data.val.paths) & set(get_dataset("imagenet").read(tmp_path).test.paths)
    # ImageNet-LT caps every class at what it has left after the holdout; n_max = largest - holdout
    left = [a - 2 for a in available]
    assert data.counts == [min(p, a) for p, a in zip(long_tail_counts(28, 6, 10), left)]


def test_same_seed_same_split_another_seed_another(tmp_path):
    a = load_long_tailed("digits", None, 100, seed=0, validation_per_class=10)
    b = load_long_tailed("digits", None, 100, seed=0, validation_per_class=10)
    c = load_long_tailed("digits", None, 100, seed=1, validation_per_class=10)
    assert np.array_equal(a.val_indices, b.val_indices) and np.array_equal(a.train_indices, b.train_indices)
    assert not np.array_equal(a.val_indices, c.val_indices)
    # the split depends on the data seed only, not on the imbalance factor: teachers and students share it
    d = load_long_tailed("digits", None, 10, seed=0, validation_per_class=10)
    assert np.array_equal(a.val_indices, d.val_indices)
    write_cifar100(tmp_path, per_class_train=20, per_class_test=1)
    e, f = (load_long_tailed("cifar100", tmp_path, 10, seed=s, validation_per_class=5) for s in (3, 4))
    assert not np.array_equal(e.val_indices, f.val_indices)
    assert np.array_equal(e.val_indices, load_long_tailed("cifar100", tmp_path, 10, seed=3,
                                                          validation_per_class=5).val_indices)


# ------------------------------------------------------------------------------- counts


@pytest.mark.parametrize("factor", [10, 100])
@pytest.mark.parametrize("per_class", [0, 10, 20])
def test_digits_counts_use_n_max_less_the_holdout(factor, per_class):
    n_max = int(sklearn_digits_pool_sizes().min()) - per_class  # 124 - holdout
    data = load_long_tailed("digits", None, factor, seed=0, validation_per_class=per_class)
    assert data.counts == long_tail_counts(n_max, 10, factor) and data.n_max == n_max
    assert len(data.train) == sum(data.counts)


def test_default_digits_counts_and_the_papers_counts_without_holdout():
    assert sum(load_long_tailed("digits", None, 100, validation_per_class=10).counts) == 278
    assert sum(load_long_tailed("digits", None, 100, validation_per_class=0).counts) == 304
    # CIFAR-100-LT: the paper's totals at n_max 500, and at 450 with the default 50 held out
    assert [sum(long_tail_counts(500, 100, g)) for g in (100, 20, 10)] == [10847, 15907, 19573]
    assert [sum(long_tail_counts(450, 100, g)) for g in (100, 20, 10)] == [9754, 14315, 17614]


def test_without_holdout_the_subsample_is_the_papers_draw(tmp_path):
    """validation_per_class 0 keeps the subsample exactly as it was drawn before validation splits."""
    from trainables.data.long_tail import subsample_indices

    write_cifar100(tmp_path, per_class_train=20, per_class_test=1)
    data = load_long_tailed("cifar100", tmp_path, 10, seed=7, validation_per_class=0)
    labels = get_dataset("cifar100").read(tmp_path).train.labels
    assert np.array_equal(data.train_indices, subsample_indices(labels, long_tail_counts(20, 100, 10), 7))
    assert len(data.val) == 0 and len(data.val_indices) == 0 and data.val.labels.dtype == np.int64


def test_the_imbalance_factor_bound_uses_n_max_after_the_holdout():
    RunConfig(imbalance_factor=124, arch="resnet8", epochs=1, validation_per_class=0).resolved()
    with pytest.raises(UserError, match="at most 114 for digits .*124 less validation_per_class = 10"):
        RunConfig(imbalance_factor=120, arch="resnet8", epochs=1).resolved()
    RunConfig(imbalance_factor=114, arch="resnet8", epochs=1).resolved()
    RunConfig(dataset="cifar100", imbalance_factor=500, arch="resnet8", epochs=1, validation_per_class=0).resolved()
    with pytest.raises(UserError, match="at most 450 for cifar100"):
        RunConfig(dataset="cifar100", imbalance_factor=500, arch="resnet8", epochs=1).resolved()


# ------------------------------------------------------------------------------- bad input


def test_a_holdout_that_empties_a_class_is_one_line_naming_the_largest_allowed(tmp_path):
    with pytest.raises(UserError, match="validation_per_class must be between 0 and 123 for digits"):
        RunConfig(arch="resnet8", epochs=1, validation_per_class=124).resolved()
    with pytest.raises(UserError, match="between 0 and 499 for cifar100"):
        RunConfig(dataset="cifar100", arch="resnet8", epochs=1, validation_per_class=500).resolved()
    # a partial copy is checked against what it holds: the default 50 leaves a class of 20 nothing
    write_cifar100(tmp_path, per_class_train=20, per_class_test=1)
    with pytest.raises(UserError) as raised:
        load_long_tailed("cifar100", tmp_path, 10, validation_per_class=50)
    message = str(raised.value)
    assert "\n" not in message and "validation_per_class 50" in message and "cifar100" in message
    assert "largest allowed for this copy of cifar100 is 19" in message
    load_long_tailed("cifar100", tmp_path, 1, validation_per_class=19)  # the largest allowed works


def test_cli_refuses_a_too_large_holdout_with_one_line_and_exit_2(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", "teacher", "--arch", "resnet8",
                             "--epochs", "1", "--validation-per-class", "500", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert err[0].startswith("ltkd: error: --validation-per-class") and "validation_per_class" in err[0]
    assert "digits" in err[0] and "123" in err[0]
    assert not out.exists()


# ------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A 2-epoch digits teacher stopped after epoch 1 and resumed with the split's generator disabled."""
    from trainables import engine
    from trainables.data import long_tail

    run_dir = tmp_path_factory.mktemp("val_run")
    config = RunConfig(**QUICK, epochs=2, seed=0, data_seed=3)
    lines = []

    class Stop(Exception):
        pass

    def stop(metrics, checkpoint):
        raise Stop()

    with pytest.raises(Stop):
        engine.fit(config, run_dir, callback=stop, log=lines.append)
    first = load_checkpoint(run_dir)

    def no_drawing(*args, **kwargs):
        raise AssertionError("a resumed run must rebuild its recorded split, not draw one")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(long_tail, "validation_indices", no_drawing)
        result = engine.fit(config, run_dir, log=lines.append)
    return run_dir, config, first, result, lines


def test_the_checkpoint_records_the_split_and_a_resumed_run_rebuilds_it(resumed_run):
    run_dir, config, first, result, _ = resumed_run
    last = load_checkpoint(run_dir)
    assert first["val_indices"].dtype == torch.int64 and len(first["val_indices"]) == 100
    assert torch.equal(first["val_indices"], last["val_indices"])
    assert torch.equal(first["train_indices"], last["train_indices"])
    assert [m["resumed_from"] for m in result.history] == [0, 1]
    # the same split as a fresh draw with the run's data seed, and disjoint from its subsample
    fresh = load_long_tailed("digits", None, 100, seed=3, validation_per_class=10)
    assert np.array_equal(last["val_indices"].numpy(), fresh.val_indices)
    assert np.array_equal(last["train_indices"].numpy(), fresh.train_indices)
    assert len(np.intersect1d(last["val_indices"].numpy(), last["train_indices"].numpy())) == 0
    assert last["config"]["validation_per_class"] == 10


def test_every_epoch_carries_val_metrics_equal_to_an_independent_evaluation(resumed_run):
    from trainables.engine import read_metrics
    from trainables.models import create_model

    run_dir, config, _, result, lines = resumed_run
    rows_ = read_metrics(run_dir)
    assert [m["epoch"] for m in rows_] == [1, 2]
    for m in rows_:
        assert all(isinstance(m[k], float) and 0 <= m[k] <= 100 for k in VAL_KEYS), m
        assert all(k in m for k in ("acc", "acc_head", "acc_medium", "acc_tail"))  # the test metrics stay
    assert sum(any(f"val acc {m['val_acc']:.2f}" in line for line in lines) for m in rows_) == 2
    # evaluate the saved model on the split with code of our own: plain NCHW float32, no augmentation
    payload = load_checkpoint(run_dir)
    data = load_long_tailed("digits", None, 100, seed=3, validation_per_class=10)
    model = create_model(payload["config"]["arch"], 10)
    model.load_state_dict(payload["model"])
    model.eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in payload["normalization"])
    x = (torch.from_numpy(data.val.images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        predicted = model(x).argmax(1).numpy()
    per_class = np.array([(predicted[data.val.labels == c] == c).mean() * 100 for c in range(10)])
    # digits' counts fall with the class index: head = classes 0-2, medium 3-6, tail 7-9
    expected = {"val_acc": per_class.mean(), "val_acc_head": per_class[:3].mean(),
                "val_acc_medium": per_class[3:7].mean(), "val_acc_tail": per_class[7:].mean()}
    for key, value in expected.items():
        assert rows_[-1][key] == pytest.approx(value, abs=1e-6), key
    # and it is not the test accuracy under another name
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["val_acc"] == rows_[-1]["val_acc"]


def test_without_a_split_val_metrics_are_none_and_counts_are_the_papers(tmp_path):
    from trainables.engine import fit, read_metrics

    lines = []
    fit(RunConfig(**QUICK, epochs=1, validation_per_class=0), tmp_path / "run", log=lines.append)
    (row,) = read_metrics(tmp_path / "run")
    assert all(k in row and row[k] is None for k in VAL_KEYS)
    assert isinstance(row["acc"], float)
    payload = load_checkpoint(tmp_path / "run")
    assert sum(payload["class_counts"]) == 304 and len(payload["val_indices"]) == 0
    assert not any("val acc" in line for line in lines)


# ------------------------------------------------------------------------------- no flips for digits


def test_digits_batches_are_never_flipped(tmp_path, monkeypatch):
    """A digits run's augmented batches equal the un-flipped crops at their offsets; CIFAR's still flip."""
    from trainables import engine

    seen = []

    class Recording(TensorBatches):
        def epoch(self, generator, with_views=False):
            for inputs, labels, index, views in super().epoch(generator, with_views=True):
                seen.append((self, inputs.clone(), index.clone(), views.clone()))
                yield (inputs, labels, index, views) if with_views else (inputs, labels, index)

    monkeypatch.setattr(engine, "TensorBatches", Recording)
    engine.fit(RunConfig(**QUICK, epochs=1, channels_last=False), tmp_path / "run", log=None)
    assert seen
    batches = seen[0][0]
    assert batches.hflip is False and batches.n_views == 25  # (2 * 2 + 1)^2 crop offsets, no flips
    padding, size = batches.padding, batches.size
    for _, inputs, index, views in seen:
        assert int(views.max()) < 25
        rows_, cols = decode_views(views, padding, with_flips=False)[:2]
        unflipped = crop_flip(batches.padded, index, rows_, cols, torch.zeros(len(index), dtype=torch.bool), size)
        assert torch.equal(inputs, batches.to_input(unflipped))

    # the control: the same check catches flips where the augmentation does flip
    data = load_long_tailed("digits", None, 100, validation_per_class=10)
    flipping = TensorBatches(data.train, 64, torch.device("cpu"), Normalization.of(data.train.images), padding=2)
    generator = torch.Generator().manual_seed(0)
    inputs, _, index, views = next(flipping.epoch(generator, with_views=True))
    r, c, flips = decode_views(views, 2)
    unflipped = flipping.to_input(crop_flip(flipping.padded, index, r, c, torch.zeros_like(flips), flipping.size))
    differs = (inputs != unflipped).flatten(1).any(1)
    assert flips.any() and not differs[~flips].any() and differs[flips].float().mean() > 0.9


def test_the_cache_key_says_no_flips_for_digits_and_is_unchanged_elsewhere():
    from trainables.engine import teacher_cache_key

    images = load_long_tailed("digits", None, 100, validation_per_class=10)
    normalization = Normalization.of(images.train.images)
    payload = {"model": {"w": torch.zeros(2)}, "config": {"arch": "resnet8"}}
    groups = torch.zeros(10, dtype=torch.long)
    digits = TensorBatches(images.train, 64, torch.device("cpu"), normalization, padding=2, hflip=False)
    key = teacher_cache_key(payload, images, digits, normalization, groups, "float32")
    assert key["flips"] is False and key["views"] == "row * (2p+1) + col" and digits.n_views == 25
    flipping = TensorBatches(images.train, 64, torch.device("cpu"), normalization, padding=4)
    key = teacher_cache_key(payload, images, flipping, normalization, groups, "float32")
    assert key["flips"] is True and key["views"] == "(row * (2p+1) + col) * 2 + flip" and flipping.n_views == 162
    plain = TensorBatches(images.train, 64, torch.device("cpu"), normalization, augment=False, hflip=False)
    key = teacher_cache_key(payload, images, plain, normalization, groups, "float32")
    assert key["flips"] is False and key["views"] == "(row * (2p+1) + col) * 2 + flip" and plain.n_views == 1


def test_an_imagenet_holdout_must_leave_its_smallest_class_an_image():
    """ImageNet-1k's classes hold 732 to 1300 images: the bound is the smallest, checked before any run."""
    from trainables.data.sources import validation_per_class_problem

    assert validation_per_class_problem("imagenet", 731) is None
    assert "between 0 and 731 for imagenet" in validation_per_class_problem("imagenet", 800)
