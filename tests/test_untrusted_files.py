"""Files on shared storage are untrusted: checkpoints and CIFAR pickles load without running code."""
from __future__ import annotations

import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.dataset_builders import write_cifar100
from trainables.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_atomic
from trainables.config import RunConfig
from trainables.data.sources import _read_cifar_pickle, load_long_tailed
from trainables.engine import fit
from trainables.errors import DatasetLayoutError

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICK = dict(dataset="digits", imbalance_factor=100, arch="resnet8", batch_size=64, device="cpu", progress=False)
REFUSED = "contains objects that are not plain tensors/containers, so it is refused"


class Plant:
    """Unpickling this creates `marker`: what a planted file could do instead (run any code)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher")
    fit(RunConfig(**QUICK, epochs=1), run_dir, log=None)
    return run_dir


def plant_checkpoint(teacher_dir: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
    """A copy of the teacher's checkpoint with a Plant in it; returns the marker it would create."""
    marker = folder.parent / f"{folder.name}-marker"
    payload = load_checkpoint(teacher_dir)
    payload["note"] = Plant(marker)
    folder.mkdir()
    torch.save(payload, folder / CHECKPOINT_NAME)
    return marker


# ------------------------------------------------------------------------------- checkpoints


def test_a_planted_teacher_is_refused_by_the_cli_in_one_line(teacher_dir, tmp_path):
    planted = tmp_path / "planted"
    marker = plant_checkpoint(teacher_dir, planted)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", "student", "--dataset", "digits", "--imbalance-factor",
         "100", "--arch", "resnet8", "--method", "kd", "--teacher", str(planted), "--epochs", "1", "--batch-size",
         "64", "--device", "cpu", "--out", str(tmp_path / "student")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(err) == 1 and err[0].startswith("ltkd: error: "), err
    assert str(planted / CHECKPOINT_NAME) in err[0] and REFUSED in err[0], err
    assert not marker.exists()
    assert not (tmp_path / "student" / CHECKPOINT_NAME).exists()


def test_a_planted_checkpoint_is_refused_by_load_checkpoint_and_on_resume(teacher_dir, tmp_path):
    planted = tmp_path / "planted"
    marker = plant_checkpoint(teacher_dir, planted)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(planted, what="teacher checkpoint")
    message = str(refused.value)
    assert message.startswith(f"teacher checkpoint {planted / CHECKPOINT_NAME} {REFUSED}") and "\n" not in message
    # the run folder's own checkpoint, read to resume, is refused the same way
    with pytest.raises(CheckpointError, match=REFUSED):
        fit(RunConfig(**QUICK, epochs=1), planted, log=None)
    assert not marker.exists()


def test_a_checkpoint_of_the_old_format_with_numpy_arrays_is_refused(teacher_dir, tmp_path):
    payload = load_checkpoint(teacher_dir)
    payload["train_indices"] = payload["train_indices"].numpy()  # as format version 1 saved it
    torch.save(payload, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match=f"{REFUSED} .*before format version 2"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"not a checkpoint\n", b""])
def test_garbage_is_still_truncated_or_not_a_checkpoint(tmp_path, content):
    (tmp_path / CHECKPOINT_NAME).write_bytes(content)
    with pytest.raises(CheckpointError, match="is truncated or not a checkpoint"):
        load_checkpoint(tmp_path)


def test_save_atomic_lets_the_umask_set_the_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        save_atomic({"format": "ltkd-sweep", "weights": torch.zeros(3)}, tmp_path / CHECKPOINT_NAME)
    finally:
        os.umask(previous)
    assert (tmp_path / CHECKPOINT_NAME).stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == [CHECKPOINT_NAME]  # no temporary file left behind


@pytest.mark.parametrize("value", [np.arange(3), np.float64(0.5), pathlib.Path("x")])
def test_save_atomic_refuses_what_weights_only_loading_would_refuse(tmp_path, value):
    with pytest.raises(TypeError, match=r"checkpoint payload\['history'\]\[0\] is a (numpy|pathlib)"):
        save_atomic({"format": "ltkd-sweep", "history": [value]}, tmp_path / CHECKPOINT_NAME)
    assert os.listdir(tmp_path) == []


def test_a_real_run_round_trips_under_weights_only_and_resumes(tmp_path):
    def stop_after_first_epoch(metrics, checkpoint):
        raise Stop()

    config = RunConfig(**QUICK, epochs=2)
    with pytest.raises(Stop):
        fit(config, tmp_path, callback=stop_after_first_epoch, log=None)
    payload = torch.load(tmp_path / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert payload["epoch"] == 1 and payload["train_indices"].dtype == torch.int64
    assert len(payload["train_indices"]) == sum(payload["class_counts"])
    result = fit(config, tmp_path, log=None)
    assert [m["epoch"] for m in result.history] == [1, 2]
    assert [m["resumed_from"] for m in result.history] == [0, 1]
    assert load_checkpoint(tmp_path)["finished"]
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME, "data.json", "metrics.jsonl", "run.json"]
    # data.json is plain JSON (records read the class counts there, without torch)
    assert json.loads((tmp_path / "data.json").read_text())["class_counts"] == payload["class_counts"]


# ------------------------------------------------------------------------------- CIFAR pickles


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_planted_cifar_pickle_is_refused(tmp_path, protocol):
    folder = write_cifar100(tmp_path, per_class_train=2, per_class_test=1)
    marker = tmp_path / "marker"
    (folder / "train").write_bytes(pickle.dumps({b"data": Plant(marker), b"fine_labels": [0]}, protocol=protocol))
    with pytest.raises(DatasetLayoutError) as refused:
        load_long_tailed("cifar100", tmp_path, 10)
    message = str(refused.value)
    assert f"{folder / 'train'} holds objects other than plain data" in message and "was refused" in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("array", [np.array([1, "x"], dtype=object), np.array([(1, 2.0)], dtype="i4,f8")])
def test_a_cifar_pickle_with_an_array_of_objects_or_records_is_refused(tmp_path, array):
    folder = write_cifar100(tmp_path, per_class_train=2, per_class_test=1)
    (folder / "train").write_bytes(pickle.dumps({b"data": array, b"fine_labels": [0]}))
    with pytest.raises(DatasetLayoutError, match="holds objects other than plain data .*numpy dtype.* was refused"):
        load_long_tailed("cifar100", tmp_path, 10)


def _python2_pickle(value) -> bytes:
    """`value` as Python 2's cPickle (protocol 2) wrote the real CIFAR-100 files: str as byte
    strings, the uint8 image rows through numpy.core.multiarray._reconstruct and __setstate__."""
    if isinstance(value, bytes):
        return (b"U" + bytes([len(value)]) if len(value) < 256 else b"T" + struct.pack("<i", len(value))) + value
    if isinstance(value, int):
        return b"J" + struct.pack("<i", value)
    if isinstance(value, list):
        return b"](" + b"".join(map(_python2_pickle, value)) + b"e"
    if isinstance(value, dict):
        return b"}(" + b"".join(_python2_pickle(k) + _python2_pickle(v) for k, v in value.items()) + b"u"
    assert isinstance(value, np.ndarray) and value.dtype == np.uint8
    dtype = b"cnumpy\ndtype\n" + b"".join(map(_python2_pickle, [b"u1", 0, 1])) + b"\x87R(" + \
        b"".join(map(_python2_pickle, [3, b"|"])) + b"NNN" + b"".join(map(_python2_pickle, [-1, -1, 0])) + b"tb"
    shape = b"(" + b"".join(map(_python2_pickle, value.shape)) + b"t"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _python2_pickle(0) + b"\x85"
            + _python2_pickle(b"b") + b"\x87R(" + _python2_pickle(1) + shape + dtype + b"\x89"
            + _python2_pickle(value.tobytes()) + b"tb")


def test_the_python2_pickles_of_the_real_cifar_download_still_load(tmp_path):
    """The real files hold the images as a numpy uint8 array (pickled by numpy 1.x under Python 2)."""
    written = write_cifar100(tmp_path / "builder", per_class_train=20, per_class_test=2)
    folder = tmp_path / "download" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        blob = b"\x80\x02" + _python2_pickle(_read_cifar_pickle(written / name)) + b"."
        (folder / name).write_bytes(blob)
    # numpy itself reads the replica as it reads the real file (the test's own bytes: trusted)
    assert pickle.loads((folder / "train").read_bytes(), encoding="bytes")[b"data"].shape == (2000, 3072)
    expected = load_long_tailed("cifar100", tmp_path / "builder", 10, seed=0)
    data = load_long_tailed("cifar100", tmp_path / "download", 10, seed=0)
    assert data.counts == expected.counts and data.class_names == expected.class_names
    assert np.array_equal(data.train.images, expected.train.images)
    assert np.array_equal(data.test.labels, expected.test.labels)
