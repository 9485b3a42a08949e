"""FileBatches (ImageNet-style data decoded by DataLoader workers) on a tiny ImageFolder written to disk.

The images are random noise (PNG, lossless), so every crop and flip changes the pixels: two passes
agree only when they drew the same augmentation for every sample.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data.pipeline import FileBatches
from trainables.data.sources import load_long_tailed

IMAGE_SIZE = 16  # what the batches crop to; the files are 24 px
CPU = torch.device("cpu")


def write_noise_folder(root: Path, per_class_train: list[int], per_class_val: int = 2, size: int = 24) -> Path:
    """An ImageFolder root (train/<class>/*.png, val/<class>/*.png) of random-noise images."""
    rng = np.random.default_rng(0)
    for c, count in enumerate(per_class_train):
        for split, n in (("train", count), ("val", per_class_val)):
            folder = root / split / f"cls{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_noise_folder(tmp_path_factory.mktemp("imagenet"), [6, 5, 4])
    return load_long_tailed("imagenet", root, 1, seed=0)  # 15 training images, 6 test images


def make(images, num_workers: int, train: bool = True, batch_size: int = 4) -> FileBatches:
    return FileBatches(images, batch_size, CPU, train=train, image_size=IMAGE_SIZE, num_workers=num_workers)


def run_epochs(batches: FileBatches, generator: torch.Generator, epochs: int) -> list[list[tuple[torch.Tensor, ...]]]:
    return [[tuple(t.clone() for t in batch) for batch in batches.epoch(generator)] for _ in range(epochs)]


def assert_same(a, b):
    """Equal nested lists / tuples of tensors (same dtypes, same values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert_same(x, y)


def test_epochs_do_not_depend_on_the_number_of_workers(data):
    epochs = {}
    for workers in (0, 2):
        batches = make(data.train, workers)
        try:
            epochs[workers] = run_epochs(batches, torch.Generator().manual_seed(7), 2)
        finally:
            batches.close()
    assert_same(epochs[0], epochs[2])
    first, second = epochs[0]
    assert len(first) == len(make(data.train, 0)) == 4  # 15 images in batches of 4
    # Every image once per epoch, in a new order, through a new crop.
    for epoch in (first, second):
        index = torch.cat([index for _, _, index in epoch])
        assert sorted(index.tolist()) == list(range(15))
        assert torch.equal(torch.cat([labels for _, labels, _ in epoch]), torch.from_numpy(data.train.labels)[index])
    order = [torch.cat([index for _, _, index in epoch]) for epoch in (first, second)]
    assert not torch.equal(order[0], order[1])
    assert first[0][0].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_augmentation_follows_the_sample_not_its_position(data):
    """The same epoch seed and a different order give every image the same pixels."""
    batches = make(data.train, 0)
    a = {int(i): x for xs, _, index in batches._epoch(list(range(15)), 1234) for x, i in zip(xs, index)}
    b = {int(i): x for xs, _, index in batches._epoch(list(range(14, -1, -1)), 1234) for x, i in zip(xs, index)}
    c = {int(i): x for xs, _, index in batches._epoch(list(range(15)), 1235) for x, i in zip(xs, index)}
    assert all(torch.equal(a[i], b[i]) for i in range(15))
    assert not all(torch.equal(a[i], c[i]) for i in range(15))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_run_sees_the_epoch_an_unbroken_run_sees(data, workers):
    generator = torch.Generator().manual_seed(3)
    unbroken = make(data.train, workers)
    try:
        run_epochs(unbroken, generator, 1)
        state = generator.get_state()  # what the checkpoint after epoch 1 holds
        expected = run_epochs(unbroken, generator, 1)
    finally:
        unbroken.close()

    torch.manual_seed(99)  # a fresh process: the global RNG is elsewhere
    restored = torch.Generator()
    restored.set_state(state)
    resumed = make(data.train, workers)
    try:
        assert_same(run_epochs(resumed, restored, 1), expected)
    finally:
        resumed.close()
    assert torch.equal(restored.get_state(), generator.get_state())


class PidRecorder:
    """Wraps a transform; records the process that ran it as an empty file named by its pid."""

    def __init__(self, transform, folder: Path):
        self.transform, self.folder = transform, folder

    def __call__(self, image):
        (self.folder / str(os.getpid())).touch()
        return self.transform(image)


def record_pids(batches: FileBatches, folder: Path) -> None:
    folder.mkdir()
    for name in ("transform", "augment", "plain"):  # whichever transforms this FileBatches has
        if getattr(batches.dataset, name, None) is not None:
            setattr(batches.dataset, name, PidRecorder(getattr(batches.dataset, name), folder))


def pids(folder: Path) -> set[int]:
    return {int(p.name) for p in folder.iterdir()}


def test_workers_live_for_the_run(data, tmp_path):
    train, test = make(data.train, 2), make(data.test, 2, train=False)
    record_pids(train, tmp_path / "train")
    record_pids(test, tmp_path / "test")
    generator = torch.Generator().manual_seed(0)
    try:
        run_epochs(train, generator, 1)
        assert sum(len(y) for _, y in test.ordered()) == 6
        train_pids, test_pids = pids(tmp_path / "train"), pids(tmp_path / "test")
        assert os.getpid() not in train_pids | test_pids and len(train_pids) == len(test_pids) == 2
        run_epochs(train, generator, 1)
        assert sum(len(y) for _, y in train.ordered()) == 15
        assert sum(len(y) for _, y in test.ordered()) == 6
        for _ in test.ordered():  # an abandoned pass leaves the workers to the next one
            break
        assert sum(len(y) for _, y in test.ordered()) == 6
        assert pids(tmp_path / "train") == train_pids and pids(tmp_path / "test") == test_pids
    finally:
        train.close()
        test.close()
    for pid in train_pids | test_pids:  # close() ended the workers (joined: no zombie left)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_draws_no_random_number(data, workers):
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    global_state, run_state = torch.get_rng_state(), generator.get_state()
    for train in (True, False):
        batches = make(data.train, workers, train=train)
        try:
            first = [(x.clone(), y.clone()) for x, y in batches.ordered()]
            again = [(x.clone(), y.clone()) for x, y in batches.ordered()]
        finally:
            batches.close()
        assert_same(first, again)
        # Dataset order, whether the set is a training set or not.
        assert torch.equal(torch.cat([y for _, y in first]), torch.from_numpy(data.train.labels))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(generator.get_state(), run_state)


def test_an_epoch_draws_a_permutation_and_a_seed_from_the_run_generator_only(data):
    generator, replica = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    torch.manual_seed(0)
    global_state = torch.get_rng_state()
    batches = make(data.train, 0)
    order = torch.cat([index for _, _, index in batches.epoch(generator)])
    assert torch.equal(order, torch.randperm(15, generator=replica))
    torch.randint(0, 2**63 - 1, (), generator=replica)
    assert torch.equal(generator.get_state(), replica.get_state())
    assert torch.equal(torch.get_rng_state(), global_state)  # the augmentation ran in this process


def test_a_second_pass_ends_an_unfinished_one(data):
    batches = make(data.train, 0)
    first = batches.ordered()
    next(first)
    assert sum(len(y) for _, y in batches.ordered()) == 15
    with pytest.raises(RuntimeError, match="another pass"):
        next(first)


def test_open_workers_do_not_hold_up_the_interpreter_exit(data):
    """A process that leaves a pass half read and never calls close() still exits."""
    script = (
        "import sys, numpy as np, torch\n"
        "from trainables.data.pipeline import FileBatches\n"
        "from trainables.data.sources import ImageSet\n"
        "paths = sys.argv[1:]\n"
        "images = ImageSet(labels=np.zeros(len(paths), dtype=np.int64), paths=paths)\n"
        f"batches = FileBatches(images, 2, torch.device('cpu'), train=True, image_size={IMAGE_SIZE}, num_workers=2)\n"
        "it = batches.epoch(torch.Generator().manual_seed(0))\n"
        "next(it)\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script, *data.train.paths], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
