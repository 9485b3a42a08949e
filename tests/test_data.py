"""Long-tailed counts, class groups, seeded subsampling and the dataset readers (issue 2)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from orchestrator.cli import main as ltkd_main
from tests.dataset_builders import write_cifar100, write_image_folder, write_tiny_imagenet
from trainables.data.groups import class_groups, group_sizes
from trainables.data.long_tail import long_tail_counts, subsample_indices
from trainables.data.sources import DATASETS, load_long_tailed
from trainables.errors import DatasetLayoutError, UserError


# ------------------------------------------------------------------------------- counts


@pytest.mark.parametrize("factor,total", [(100, 10847), (20, 15907), (10, 19573)])
def test_cifar100_long_tail_totals_match_the_paper(factor, total):
    counts = long_tail_counts(500, 100, factor)
    assert sum(counts) == total
    assert counts[0] == 500 and counts[-1] == int(500 / factor)


def test_counts_follow_the_exponential_profile():
    n_max, classes, factor = 1300, 1000, 20
    counts = long_tail_counts(n_max, classes, factor)
    for i in (0, 1, 333, 999):
        assert counts[i] == int(n_max * (1 / factor) ** (i / (classes - 1)))
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert long_tail_counts(7, 5, 1) == [7] * 5


@pytest.mark.parametrize("bad", [0.5, 0, -3, float("nan")])
def test_imbalance_factor_below_one_is_rejected(bad):
    with pytest.raises(ValueError, match="imbalance factor must be >= 1"):
        long_tail_counts(500, 100, bad)


# ------------------------------------------------------------------------------- groups


def test_three_groups_are_head_medium_tail_by_count():
    counts = long_tail_counts(500, 100, 100)
    groups = class_groups(counts, 3)
    assert groups.dtype == torch.long and groups.shape == (100,)
    assert torch.equal(groups[:33], torch.zeros(33, dtype=torch.long))
    assert torch.equal(groups[33:67], torch.ones(34, dtype=torch.long))
    assert torch.equal(groups[67:], torch.full((33,), 2))


def test_groups_follow_counts_not_class_order():
    rng = np.random.default_rng(1)
    counts = rng.permutation(long_tail_counts(200, 30, 50)).tolist()
    groups = class_groups(counts, 3)
    order = sorted(range(30), key=lambda c: -counts[c])
    sizes = [round(30 * 0.33), 30 - 2 * round(30 * 0.33), round(30 * 0.33)]
    expected = np.repeat([0, 1, 2], sizes)
    for rank, cls in enumerate(order):
        assert groups[cls] == expected[rank]
    # every head class is at least as frequent as every tail class
    head = [counts[c] for c in range(30) if groups[c] == 0]
    tail = [counts[c] for c in range(30) if groups[c] == 2]
    assert min(head) >= max(tail)


@pytest.mark.parametrize("classes,n", [(100, 4), (100, 7), (100, 25), (100, 100), (200, 3), (10, 3), (10, 1), (1000, 3)])
def test_n_groups_are_contiguous_and_near_equal(classes, n):
    counts = long_tail_counts(500, classes, 10)
    groups = class_groups(counts, n)
    sizes = torch.bincount(groups, minlength=n).tolist()
    assert sum(sizes) == classes and min(sizes) >= 1
    assert sizes == group_sizes(classes, n)
    if n != 3:
        assert max(sizes) - min(sizes) <= 1
    # counts are sorted (class 0 largest): group ids must be non-decreasing
    assert all(a <= b for a, b in zip(groups.tolist(), groups.tolist()[1:]))
    if n == classes:
        assert groups.tolist() == list(range(classes))


def test_paper_group_split_on_1000_classes():
    assert group_sizes(1000, 3) == [330, 340, 330]
    assert group_sizes(200, 3) == [66, 68, 66]


@pytest.mark.parametrize("n", [0, -1, 11, 2.5, True])
def test_impossible_group_counts_are_rejected(n):
    with pytest.raises(ValueError, match="number of groups"):
        class_groups(long_tail_counts(50, 10, 10), n)


# ------------------------------------------------------------------------------- subsampling


def test_subsample_is_seeded_and_exact():
    labels = np.repeat(np.arange(10), 40)
    np.random.default_rng(0).shuffle(labels)
    counts = long_tail_counts(40, 10, 10)
    a = subsample_indices(labels, counts, seed=3)
    b = subsample_indices(labels, counts, seed=3)
    c = subsample_indices(labels, counts, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(labels[a], minlength=10).tolist() == counts
    assert len(np.unique(a)) == len(a)


def test_subsample_refuses_more_than_a_class_has_unless_capped():
    labels = np.array([0] * 5 + [1] * 2)
    with pytest.raises(ValueError, match="class 1 has 2"):
        subsample_indices(labels, [5, 3], seed=0)
    kept = subsample_indices(labels, [5, 3], seed=0, cap_to_available=True)
    assert np.bincount(labels[kept]).tolist() == [5, 2]


# ------------------------------------------------------------------------------- readers


def test_cifar100_reader_on_real_pickle_layout(tmp_path):
    write_cifar100(tmp_path, per_class_train=20, per_class_test=2)
    data = load_long_tailed("cifar100", tmp_path, 10, seed=0)
    expected = long_tail_counts(20, 100, 10)
    assert data.counts == expected
    assert data.train.images.shape == (sum(expected), 32, 32, 3) and data.train.images.dtype == np.uint8
    # the label was written into the first red byte: images and labels stay paired
    assert np.array_equal(data.train.images[:, 0, 0, 0], data.train.labels)
    assert np.bincount(data.test.labels).tolist() == [2] * 100
    assert data.class_names[:2] == ["class0", "class1"]
    # the folder itself works as root too, and the recorded indices rebuild the same set
    again = load_long_tailed("cifar100", tmp_path / "cifar-100-python", 10, train_indices=data.train_indices)
    assert np.array_equal(again.train.images, data.train.images)
    other_seed = load_long_tailed("cifar100", tmp_path, 10, seed=1)
    assert not np.array_equal(other_seed.train_indices, data.train_indices)
    assert other_seed.counts == expected


def test_tiny_imagenet_reader_with_flat_val_folder(tmp_path):
    write_tiny_imagenet(tmp_path, num_classes=6, per_class_train=10, per_class_val=2)
    data = load_long_tailed("tinyimagenet", tmp_path, 5, seed=0)
    assert data.counts == long_tail_counts(10, 6, 5)
    assert data.train.images.shape[1:] == (64, 64, 3)
    assert np.bincount(data.test.labels).tolist() == [2] * 6
    # pixel value 10*c was written for class c (JPEG is lossy: compare loosely); grayscale became RGB
    for images, labels in ((data.train.images, data.train.labels), (data.test.images, data.test.labels)):
        assert np.allclose(images.reshape(len(labels), -1).mean(1), 10 * labels, atol=3)


def test_image_folder_counts_are_capped_at_what_each_class_has(tmp_path):
    available = [30, 4, 25, 3, 20, 18]
    write_image_folder(tmp_path, available)
    data = load_long_tailed("imagenet", tmp_path, 10, seed=0)
    profile = long_tail_counts(30, 6, 10)
    assert data.counts == [min(p, a) for p, a in zip(profile, available)]
    assert data.train.paths is not None and data.train.images is None  # decoded lazily by the pipeline
    assert len(data.test) == 12


def test_digits_is_embedded_with_a_fixed_balanced_test_split():
    a = load_long_tailed("digits", None, 10, seed=0)
    b = load_long_tailed("digits", None, 10, seed=1)
    assert a.num_classes == 10 and a.train.images.shape[1:] == (16, 16, 3)
    assert np.bincount(a.test.labels).tolist() == [50] * 10
    assert np.array_equal(a.test.images, b.test.images)
    assert not np.array_equal(a.train_indices, b.train_indices)
    assert a.counts == b.counts == long_tail_counts(a.counts[0], 10, 10)


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("dataset", ["cifar100", "tinyimagenet", "imagenet"])
def test_missing_root_and_wrong_layout_name_the_expected_layout(tmp_path, dataset):
    with pytest.raises(DatasetLayoutError, match="does not exist; expected"):
        load_long_tailed(dataset, tmp_path / "missing", 10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="not in the expected layout.*expected"):
        load_long_tailed(dataset, tmp_path / "empty", 10)


def test_truncated_cifar_pickle_is_a_layout_error(tmp_path):
    folder = write_cifar100(tmp_path, per_class_train=2, per_class_test=1)
    (folder / "train").write_bytes((folder / "train").read_bytes()[:100])
    with pytest.raises(DatasetLayoutError, match="cannot read"):
        load_long_tailed("cifar100", tmp_path, 10)


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match="unknown dataset 'cifar10'.*known: "):
        load_long_tailed("cifar10", None, 10)


def test_registry_lists_the_four_datasets():
    assert set(DATASETS) == {"digits", "cifar100", "tinyimagenet", "imagenet"}


# ------------------------------------------------------------------------------- command line


def test_describe_prints_counts_groups_and_totals(tmp_path, capsys):
    # 60 per class: the default holdout of 50 per class leaves n_max 10
    write_cifar100(tmp_path, per_class_train=60, per_class_test=1)
    assert ltkd_main(["data", "describe", "--dataset", "cifar100", "--root", str(tmp_path),
                      "--imbalance-factor", "10", "--groups", "4"]) == 0
    out = capsys.readouterr().out
    counts = long_tail_counts(10, 100, 10)
    assert f"training images: {sum(counts)}" in out
    assert "validation holdout: 50 per class (the default), 5000 images" in out
    assert "n_max used: 10 (the smallest class's pool: 60 less the 50 held out" in out
    assert f"the paper's protocol (validation_per_class 0) keeps {sum(long_tail_counts(60, 100, 10))} " in out
    assert "10,847 / 15,907 / 19,573" in out and "9,754 / 14,315 / 17,614" in out
    assert "test images: 100 (balanced: 1 per class)" in out
    group_lines = [line.split() for line in out.splitlines() if line[:2] in ("g0", "g1", "g2", "g3")]
    assert [int(fields[1]) for fields in group_lines] == [25, 25, 25, 25]
    assert [int(fields[2]) for fields in group_lines] == [sum(counts[i:i + 25]) for i in range(0, 100, 25)]
    class_lines = [line.split() for line in out.splitlines() if line.split()[:1] == ["0"]]
    assert class_lines == [["0", "class0", str(counts[0]), "50", "g0"]]


def test_describe_without_holdout_shows_the_papers_counts(tmp_path):
    from orchestrator.describe import describe_dataset

    write_cifar100(tmp_path, per_class_train=20, per_class_test=1)
    out = describe_dataset("cifar100", tmp_path, 10, validation_per_class=0)
    assert f"training images: {sum(long_tail_counts(20, 100, 10))} " in out
    assert "validation holdout: none" in out and "n_max used: 20 " in out
    with pytest.raises(UserError, match="validation_per_class 50 leaves cifar100 class .* largest allowed .* is 19"):
        describe_dataset("cifar100", tmp_path, 10)


@pytest.mark.parametrize("args,message", [
    (["--dataset", "cifar100", "--root", "/definitely/missing", "--imbalance-factor", "10"], "does not exist"),
    (["--dataset", "mnist", "--imbalance-factor", "10"], "unknown dataset 'mnist'"),
    (["--dataset", "digits", "--imbalance-factor", "0.5"], "imbalance factor must be >= 1"),
    (["--dataset", "digits", "--imbalance-factor", "10", "--groups", "11"], "--groups must be between 1 and"),
])
def test_describe_bad_input_is_one_line_and_nonzero(args, message, capsys):
    assert ltkd_main(["data", "describe", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ltkd: error:") and message in err[0]


def test_installed_console_command_runs():
    result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "data", "describe", "--dataset", "digits",
                             "--imbalance-factor", "100"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "training images: " in result.stdout
