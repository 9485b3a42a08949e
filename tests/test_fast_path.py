"""Issue 8, the fast path: tensor augmentation statistics, the teacher-logit cache, and cached == live runs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables import teacher_cache as tcache
from trainables.checkpoint import load_checkpoint
from trainables.config import TEACHER_CACHE_DTYPES, RunConfig
from trainables.data.pipeline import (
    Normalization,
    TensorBatches,
    crop_flip,
    crop_flip_parameters,
    decode_views,
    encode_views,
    view_count,
)
from trainables.data.sources import ImageSet, get_dataset, load_long_tailed
from trainables.engine import fit, read_metrics
from trainables.locks import Lease
from trainables.errors import UserError
from trainables.models import MODELS, Classifier, ModelOutput, ModelSpec

REPO = Path(__file__).resolve().parents[1]


def chi2_pvalue(counts: np.ndarray) -> float:
    """p-value of Pearson's chi-square test of `counts` against the uniform distribution."""
    from scipy.stats import chi2

    counts = np.asarray(counts, dtype=np.float64).ravel()
    expected = counts.sum() / len(counts)
    return float(chi2.sf(((counts - expected) ** 2 / expected).sum(), len(counts) - 1))


def random_images(n: int, size: int = 32, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(labels=rng.integers(0, 10, n).astype(np.int64),
                    images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


# ----------------------------------------------------------------------------------- augmentation


def test_view_ids_enumerate_the_162_views_and_round_trip():
    assert view_count(4, True) == 162 and view_count(4, False) == 81 and view_count(0, False) == 1
    rows, cols, flips = (t.ravel() for t in torch.meshgrid(torch.arange(9), torch.arange(9), torch.arange(2), indexing="ij"))
    flips = flips.bool()
    views = encode_views(rows, cols, flips, 4)
    assert sorted(views.tolist()) == list(range(162))
    r, c, f = decode_views(views, 4)
    assert torch.equal(r, rows) and torch.equal(c, cols) and torch.equal(f, flips)


def test_crop_offsets_and_flips_are_uniform_and_independent():
    generator = torch.Generator().manual_seed(1234)
    rows, cols, flips = [], [], []
    for _ in range(50):  # 50 batches of 4,000: the same calls an epoch makes, at scale
        r, c, f = crop_flip_parameters(4000, 4, generator)
        rows.append(r), cols.append(c), flips.append(f)
    rows, cols, flips = torch.cat(rows), torch.cat(cols), torch.cat(flips)
    n = len(rows)
    assert rows.min() == 0 and rows.max() == 8 and cols.min() == 0 and cols.max() == 8
    # uniform over 0..2p for rows and for columns, and jointly (independence): chi-square, p > 0.001
    assert chi2_pvalue(np.bincount(rows.numpy(), minlength=9)) > 1e-3
    assert chi2_pvalue(np.bincount(cols.numpy(), minlength=9)) > 1e-3
    assert chi2_pvalue(np.bincount((rows * 9 + cols).numpy(), minlength=81)) > 1e-3
    # flip rate 0.5: within 4 binomial standard deviations, and independent of the offsets
    assert abs(flips.float().mean().item() - 0.5) < 4 * (0.25 / n) ** 0.5
    assert chi2_pvalue(np.bincount(encode_views(rows, cols, flips, 4).numpy(), minlength=162)) > 1e-3


def test_epoch_views_are_uniform_and_rebuild_the_yielded_inputs():
    batches = TensorBatches(random_images(300, size=8), 64, torch.device("cpu"), Normalization((0.5,) * 3, (0.25,) * 3))
    generator = torch.Generator().manual_seed(0)
    seen = []
    for epoch in range(60):
        for inputs, labels, index, views in batches.epoch(generator, with_views=True):
            seen.append(views)
            if epoch == 0:  # the view ids name exactly the crops the epoch made
                assert torch.equal(batches.view_inputs(index, views), inputs)
    seen = torch.cat(seen)
    assert len(seen) == 60 * 300
    assert chi2_pvalue(np.bincount(seen.numpy(), minlength=162)) > 1e-3
    # asking for the views consumes the generator identically: the same batches either way
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for (x1, y1, i1), (x2, y2, i2, _) in zip(batches.epoch(a), batches.epoch(b, with_views=True)):
        assert torch.equal(x1, x2) and torch.equal(i1, i2)
    assert torch.equal(a.get_state(), b.get_state())


def test_crop_flip_equals_torchvision_random_crop_and_flip():
    from PIL import Image
    from torchvision import transforms
    from torchvision.transforms import functional as TF

    image = random_images(1, seed=3).images[0]
    pil = Image.fromarray(image)
    padded = F.pad(torch.from_numpy(image)[None], (0, 0, 4, 4, 4, 4))
    index = torch.zeros(1, dtype=torch.long)
    # every one of the 162 views against torchvision's functional pad + crop + flip
    for view in range(162):
        r, c, f = decode_views(torch.tensor([view]), 4)
        expected = TF.crop(TF.pad(pil, 4), int(r), int(c), 32, 32)
        if bool(f):
            expected = TF.hflip(expected)
        assert np.array_equal(crop_flip(padded, index, r, c, f, 32)[0].numpy(), np.asarray(expected)), view
    # and the standard transform itself: replay its random draws (top, left, then the flip coin)
    standard = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])
    for seed in range(40):
        torch.manual_seed(seed)
        out = np.asarray(standard(pil))
        torch.manual_seed(seed)
        top, left, _, _ = transforms.RandomCrop.get_params(TF.pad(pil, 4), (32, 32))
        flip = torch.rand(1) < 0.5
        ours = crop_flip(padded, index, torch.tensor([top]), torch.tensor([left]), flip, 32)[0].numpy()
        assert np.array_equal(ours, out), seed


# ----------------------------------------------------------------------------------- the cache, as a store


SHAPE = (10, 6, 4)
KEY = {"teacher_arch": "toy", "teacher_weights": "abc", "padding": 1}


def toy_logits(shape=SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def toy_builder(values: np.ndarray, delay: float = 0.0, rows_per_block: int = 3):
    def build(sink):
        time.sleep(delay)
        for first in range(0, len(values), rows_per_block):
            sink(values[first:first + rows_per_block])
        return {"teacher_group_prob": [0.5, 0.5]}
    return build


def test_cache_builds_once_and_looks_logits_up_by_image_and_view(tmp_path):
    values, lines = toy_logits(), []
    cache = tcache.open_or_build(tmp_path, KEY, SHAPE, toy_builder(values), log=lines.append, chunk_rows=4)
    index, views = torch.tensor([0, 9, 3, 3]), torch.tensor([5, 0, 2, 3])
    assert torch.equal(cache.lookup(index, views), torch.from_numpy(values[index.numpy(), views.numpy()]))
    assert cache.extras["teacher_group_prob"] == [0.5, 0.5]
    # the on-device table's flat lookup (used on CUDA), exercised here with the table on the CPU
    host = cache.lookup(index, views)
    cache.device_data = torch.from_numpy(np.array(cache.data))
    assert torch.equal(cache.lookup(index, views), host)
    cache.device_data = None
    again = tcache.open_or_build(tmp_path, KEY, SHAPE, toy_builder(values * 0), log=lines.append, chunk_rows=4)
    assert again.build_id == cache.build_id and np.array_equal(np.asarray(again.data), values)
    assert len(tcache.read_build_log(tmp_path)) == 1
    assert len(json.loads((tmp_path / tcache.MANIFEST_NAME).read_text())["chunk_sha256"]) == 3  # 10 images / 4
    assert tcache.open_or_build(tmp_path, {**KEY, "padding": 2}, SHAPE, toy_builder(values), build=False,
                                log=None) is None


@pytest.mark.parametrize("damage,reason", [
    ("flip", "corrupt: chunk 2 of 3"),
    ("truncate", "bytes, expected"),
    ("key", "key mismatch (differs in: teacher_weights)"),
    ("manifest", "manifest unreadable"),
])
def test_a_damaged_or_mismatched_cache_is_detected_and_rebuilt(tmp_path, damage, reason):
    values = toy_logits()
    first = tcache.open_or_build(tmp_path, KEY, SHAPE, toy_builder(values), log=None, chunk_rows=4)
    data_file = first.folder / first.manifest["data_file"]
    del first
    manifest_path = tmp_path / tcache.MANIFEST_NAME
    if damage == "flip":  # flip the bytes of one logit in the second chunk (images 4..7)
        raw = bytearray(data_file.read_bytes())
        offset = 5 * SHAPE[1] * SHAPE[2] * 4 + 8
        raw[offset:offset + 4] = bytes(b ^ 0xFF for b in raw[offset:offset + 4])
        data_file.write_bytes(bytes(raw))
    elif damage == "truncate":
        data_file.write_bytes(data_file.read_bytes()[:-16])
    elif damage == "key":  # a cache built for another teacher's weights
        manifest = json.loads(manifest_path.read_text())
        manifest["key"]["teacher_weights"] = "another"
        manifest_path.write_text(json.dumps(manifest))
    else:
        manifest_path.write_text(manifest_path.read_text()[:40])
    valid, why = tcache.open_valid(tmp_path, KEY, SHAPE)
    assert valid is None and reason in why
    lines = []
    rebuilt = tcache.open_or_build(tmp_path, KEY, SHAPE, toy_builder(values), log=lines.append, chunk_rows=4)
    assert any(reason in line and "building" in line for line in lines), lines
    assert np.array_equal(np.asarray(rebuilt.data), values)
    builds = tcache.read_build_log(tmp_path)
    assert len(builds) == 2 and reason in builds[-1]["reason"]
    assert [p.name for p in tmp_path.glob("logits-*.bin")] == [rebuilt.manifest["data_file"]]  # the old file is gone


def test_float16_cache_rounds_logits_to_half_precision(tmp_path):
    values = toy_logits() * 20
    cache = tcache.open_or_build(tmp_path, KEY, SHAPE, toy_builder(values), dtype="float16", log=None)
    got = cache.lookup(torch.arange(10).repeat_interleave(6), torch.arange(6).repeat(10)).view(SHAPE)
    assert got.dtype == torch.float32
    relative = (got - torch.from_numpy(values)).abs() / torch.from_numpy(values).abs()
    assert relative.max() <= 2.0 ** -11
    assert tcache.open_valid(tmp_path, KEY, SHAPE, "float32")[0] is None  # dtype is part of what is checked


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_stale_lock_is_broken(tmp_path):
    values = toy_logits()
    lock = tmp_path / tcache.LOCK_NAME
    # the holder is a dead process on this host: broken at once
    lock.write_text(json.dumps({"token": "x", "host": socket.gethostname(), "pid": dead_pid(), "since": 0}))
    lines = []
    started = time.monotonic()
    cache = tcache.open_or_build(tmp_path, KEY, SHAPE, toy_builder(values), log=lines.append, poll_seconds=0.05)
    assert time.monotonic() - started < 5 and cache is not None and not lock.exists()
    assert any("is dead" in line for line in lines)
    # a holder on another host whose heartbeat stopped: broken after stale_after seconds of silence
    other = tmp_path / "other"
    other.mkdir()
    (other / tcache.LOCK_NAME).write_text(json.dumps({"token": "y", "host": "elsewhere", "pid": 1, "since": 0}))
    lines = []
    cache = tcache.open_or_build(other, KEY, SHAPE, toy_builder(values), log=lines.append, poll_seconds=0.05,
                                 stale_after=0.5)
    assert any("waiting for the build by pid 1 on elsewhere" in line for line in lines)
    assert any("no heartbeat" in line for line in lines)


def test_a_live_lock_is_waited_for_not_broken(tmp_path):
    lock = Lease(tmp_path / tcache.LOCK_NAME, stale_after=0.5, heartbeat=0.1)
    assert lock.try_acquire()
    try:
        waiter = Lease(tmp_path / tcache.LOCK_NAME, stale_after=0.5, heartbeat=0.1)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # three stale_after periods: the heartbeat keeps it alive
            assert not waiter.break_if_stale()
            time.sleep(0.05)
        assert lock.still_held()
    finally:
        lock.release()
    assert not (tmp_path / tcache.LOCK_NAME).exists()


CONCURRENT_BUILD = textwrap.dedent("""
    import json, os, pathlib, sys, time
    import numpy as np
    from trainables import teacher_cache as tcache
    folder = sys.argv[1]
    shape = (10, 6, 4)
    values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    def build(sink):
        time.sleep(1.0)  # a build long enough for the others to arrive while it runs
        sink(values)
        return {}
    ready = pathlib.Path(folder) / f"ready-{os.getpid()}"
    ready.touch()
    while len(list(pathlib.Path(folder).glob("ready-*"))) < 3:  # start together
        time.sleep(0.01)
    cache = tcache.open_or_build(folder, {"teacher_arch": "toy", "k": 1}, shape, build, log=None, poll_seconds=0.05)
    print(json.dumps({"build": cache.build_id, "equal": bool(np.array_equal(np.asarray(cache.data), values))}))
""")


def test_concurrent_trials_build_the_cache_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [subprocess.Popen([sys.executable, "-c", CONCURRENT_BUILD, str(tmp_path)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len(tcache.read_build_log(tmp_path)) == 1
    assert len({r["build"] for r in results}) == 1 and all(r["equal"] for r in results)
    assert not (tmp_path / tcache.LOCK_NAME).exists()


# ----------------------------------------------------------------------------------- cached == live teacher


QUICK = dict(dataset="digits", imbalance_factor=100, batch_size=64, progress=False, device="cpu")  # bitwise checks: CPU


@pytest.fixture(scope="module")
def resnet20_teacher(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resnet20_teacher")  # 3 short epochs: a teacher that is not constant
    fit(RunConfig(**{**QUICK, "batch_size": 16}, arch="resnet20", epochs=3, seed=0), run_dir, log=None)
    return run_dir


def test_cached_logits_equal_the_live_teachers_for_random_views(resnet20_teacher, tmp_path):
    from trainables.engine import teacher_model

    payload = load_checkpoint(resnet20_teacher)
    data = load_long_tailed("digits", None, 100, train_indices=payload["train_indices"])
    normalization = Normalization(*payload["normalization"])
    subset = data.train.subset(np.arange(0, len(data.train), 38))  # 8 images: 1,296 views
    batches = TensorBatches(subset, 64, torch.device("cpu"), normalization)
    teacher = teacher_model(payload, 10, torch.device("cpu"))
    shape = (batches.n_images, batches.n_views, 10)

    def build(sink):
        for block in tcache.teacher_view_logits(teacher, batches, images_per_block=3, batch_size=200):
            sink(block)
        return {}

    cache = tcache.open_or_build(tmp_path, {"teacher_arch": "resnet20"}, shape, build, log=None)
    # random views, as a training epoch draws them, against the live teacher on the epoch's own inputs
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _ in range(4):
            for inputs, _, index, views in batches.epoch(generator, with_views=True):
                live = teacher(inputs)
                torch.testing.assert_close(cache.lookup(index, views), live, rtol=1e-5, atol=1e-5)
    # the float16 option's error, on the same logits
    half = tcache.open_or_build(tmp_path / "f16", {"teacher_arch": "resnet20"}, shape,
                                lambda sink: (sink(np.asarray(cache.data)), {})[1], dtype="float16", log=None)
    exact = np.asarray(cache.data)
    assert (np.abs(np.asarray(half.data).astype(np.float32) - exact) <= np.abs(exact) * 2.0 ** -11 + 1e-7).all()


class TinyNet(Classifier):
    """A teacher cheap enough to cache all 162 views of the digits set in a few seconds."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.classifier = nn.Linear(8 * 4, num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        features = F.relu(self.bn(self.conv(x)))
        pooled = F.adaptive_avg_pool2d(features, 2).flatten(1)  # keeps where things are: views differ
        return ModelOutput(self.classifier(pooled), [features], pooled)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODELS, "tiny_test_net", ModelSpec("tiny_test_net", TinyNet, "cifar", 0.05))
        run_dir = tmp_path_factory.mktemp("tiny_teacher")
        fit(RunConfig(**QUICK, arch="tiny_test_net", epochs=2, seed=0), run_dir, log=None)
        yield run_dir


def strip(history):
    return [{k: v for k, v in m.items() if "seconds" not in k and k != "resumed_from"} for m in history]


def test_cached_ltkd_run_equals_the_live_teacher_run(resnet20_teacher, tmp_path):
    config = RunConfig(**{**QUICK, "batch_size": 16}, arch="resnet8", role="student", method="ltkd", epochs=2,
                       seed=3, teacher=str(resnet20_teacher))
    cache_root = tmp_path / "caches"
    live_lines, cached_lines = [], []
    live = fit(config, tmp_path / "live", log=live_lines.append, teacher_cache="off")
    cached = fit(config, tmp_path / "cached", log=cached_lines.append, teacher_cache="on",
                 teacher_cache_dir=cache_root)
    assert any("teacher logits: from the cache" in line for line in cached_lines), cached_lines
    assert not any("cache" in line for line in live_lines)
    (folder,) = cache_root.iterdir()
    assert len(tcache.read_build_log(folder)) == 1
    a, b = load_checkpoint(tmp_path / "live"), load_checkpoint(tmp_path / "cached")
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    for m_live, m_cached in zip(live.history, cached.history):
        for key in ("train_loss", "acc", "acc_head", "acc_medium", "acc_tail"):
            assert m_cached[key] == pytest.approx(m_live[key], rel=1e-5, abs=1e-4), key
        assert m_cached["per_class_acc"] == pytest.approx(m_live["per_class_acc"], abs=1e-4)
        assert m_cached["teacher_group_prob"] == pytest.approx(m_live["teacher_group_prob"], rel=1e-5, abs=1e-7)
    # the RNG streams were consumed identically
    assert torch.equal(a["rng"]["data"], b["rng"]["data"]) and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # the student learnt something: the comparison is not between two constant runs
    assert live.history[0]["train_loss"] != live.history[1]["train_loss"]
    assert live.history[-1]["teacher_group_prob"][0] < 0.99


def test_later_trials_share_the_cache_and_resume_exactly(tiny_teacher, tmp_path):
    config = RunConfig(**QUICK, arch="resnet8", role="student", method="ltkd", epochs=2, seed=3,
                       teacher=str(tiny_teacher))
    cache_root = tmp_path / "caches"
    cached = fit(config, tmp_path / "cached", log=None, teacher_cache="on", teacher_cache_dir=cache_root)
    b = load_checkpoint(tmp_path / "cached")
    (folder,) = cache_root.iterdir()

    # a second trial of the same teacher finds the cache ("auto": it exists) and builds nothing
    lines = []
    fit(RunConfig(**{**config.to_dict(), "seed": 4}), tmp_path / "second", log=lines.append,
        teacher_cache_dir=cache_root)
    assert any("teacher logits: from the cache" in line for line in lines)
    assert len(tcache.read_build_log(folder)) == 1

    # exact resume with the cache: stopped after epoch 1 and resumed == straight through
    class Stop(Exception):
        pass

    def stop(metrics, checkpoint):
        if metrics["epoch"] == 1:
            raise Stop()

    with pytest.raises(Stop):
        fit(config, tmp_path / "resumed", callback=stop, log=None, teacher_cache_dir=cache_root)
    resumed = fit(config, tmp_path / "resumed", log=None, teacher_cache_dir=cache_root)
    c = load_checkpoint(tmp_path / "resumed")
    for name, tensor in b["model"].items():
        assert torch.equal(tensor, c["model"][name]), name
    assert strip(resumed.history) == strip(cached.history)
    assert [m["epoch"] for m in read_metrics(tmp_path / "resumed")] == [1, 2]


def test_a_float16_cache_is_half_the_size_and_trains_the_same_student_to_tolerance(tiny_teacher, tmp_path):
    """The run's teacher_cache_dtype picks the storage (fit's argument left unset). float16 rounds each
    logit to a relative 2^-11 (~4.9e-4). Tolerances: the first epoch's mean loss to 1e-4 relative
    (measured 1.5e-5), the second's to 5e-3 (1.3e-3: SGD amplifies the rounding step by step, as it
    would any change of the last bits), and every accuracy to 1 percentage point, i.e. 5 of the 500
    test images (measured: equal). Weights are not compared: SGD amplifies the rounding step by step
    beyond any float tolerance of the weights while the results agree."""
    config = RunConfig(**QUICK, arch="resnet8", role="student", method="ltkd", epochs=2, seed=3,
                       teacher=str(tiny_teacher))
    runs, lines = {}, {}
    for dtype in tcache.DTYPES:
        lines[dtype] = []
        runs[dtype] = fit(RunConfig(**{**config.to_dict(), "teacher_cache_dtype": dtype}), tmp_path / dtype,
                          log=lines[dtype].append, teacher_cache="on", teacher_cache_dir=tmp_path / "caches")
        assert any(f"MiB {dtype}" in line and "from the cache" in line for line in lines[dtype]), lines[dtype]
    manifests = {m["dtype"]: (path.parent, m) for path in (tmp_path / "caches").glob(f"*/{tcache.MANIFEST_NAME}")
                 for m in [json.loads(path.read_text())]}
    sizes = {dtype: (folder / m["data_file"]).stat().st_size for dtype, (folder, m) in manifests.items()}
    assert sizes["float16"] * 2 == sizes["float32"] > 0
    half, full = runs["float16"].history, runs["float32"].history
    assert half[0]["train_loss"] == pytest.approx(full[0]["train_loss"], rel=1e-4)
    assert half[1]["train_loss"] == pytest.approx(full[1]["train_loss"], rel=5e-3)
    for m16, m32 in zip(half, full):
        for key in ("acc", "acc_head", "acc_medium", "acc_tail", "val_acc"):
            assert m16[key] == pytest.approx(m32[key], abs=1.0), key
    assert full[0]["train_loss"] != full[1]["train_loss"] and full[1]["acc"] > 10  # it learnt: not two constant runs
    assert tuple(tcache.DTYPES) == TEACHER_CACHE_DTYPES  # the config's choices are the cache's


def test_auto_keeps_the_live_teacher_for_a_short_run_without_a_cache(tiny_teacher, tmp_path):
    config = RunConfig(**QUICK, arch="tiny_test_net", role="student", method="kd", epochs=1, teacher=str(tiny_teacher))
    lines = []
    fit(config, tmp_path / "s", log=lines.append, teacher_cache_dir=tmp_path / "caches")
    views = view_count(get_dataset("digits").crop_padding, get_dataset("digits").hflip)  # 25: digits are never flipped
    assert any("teacher: live forward pass" in line and f"costs {views} teacher epochs" in line for line in lines), lines
    assert not (tmp_path / "caches").exists()


def test_feature_methods_keep_the_live_teacher(resnet20_teacher, tmp_path):
    config = RunConfig(**QUICK, arch="resnet8", role="student", method="catkd", epochs=1, teacher=str(resnet20_teacher))
    fit(config, tmp_path / "s", log=None, teacher_cache="on", teacher_cache_dir=tmp_path / "caches")
    assert not (tmp_path / "caches").exists()


@pytest.mark.parametrize("settings,message", [
    (dict(teacher_cache="sometimes"), "teacher_cache must be one of auto, on, off"),
    (dict(teacher_cache_dtype="bfloat16"), "teacher_cache_dtype must be one of float32, float16"),
    (dict(trial_gpus=1.5), "gpus_per_trial must be 0, a fraction of a GPU or 1, got 1.5"),
])
def test_bad_fast_path_settings_are_rejected_before_any_work(settings, message, tmp_path):
    with pytest.raises(UserError, match=message):
        fit(RunConfig(**QUICK, arch="resnet8", epochs=1), tmp_path / "never", log=None, **settings)
    assert not (tmp_path / "never").exists()
