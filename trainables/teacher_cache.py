"""The teacher-logit cache: every training view's teacher logits, computed once per teacher.

Why. Under the CIFAR augmentation (random crop with padding p, horizontal flip) an image has only
(2p + 1)^2 * 2 = 162 distinct training views (trainables/data/pipeline.py numbers them). The
teacher is frozen and in eval mode, so its logits of a view never change: a sweep that trains
hundreds of logit-method students against a few teachers computes every teacher's logits of every
view once, stores them next to the teacher's checkpoint (on the sweep's shared storage), and the
students look them up by (image, view) instead of running the teacher. Building costs 162 teacher
epochs; a 240-epoch student run pays that back on its own. Feature methods (they need the
teacher's feature maps) and file-backed ImageNet data (RandomResizedCrop: not enumerable) keep the
live teacher.

Layout of a cache folder (`<teacher run>/logit_cache/<arch>-<key digest>/`):

- `logits-<build id>.bin`: raw little-endian array (images, views, classes), float32 by default
  (float16 on request: half the size, logits rounded to 11 significant bits, i.e. a relative
  error of at most 2^-11 ~ 4.9e-4);
- `manifest.json`: the key (everything that determines the logits: a hash of the teacher's
  weights, its architecture, hashes of the training and test images, normalisation, padding,
  flips, image size, dtype), the data file's name, shape and a sha256 per chunk of images, and
  the teacher's mean test-set group probabilities (which a run reports) measured at build time;
- `build.lock` while a build runs, `builds.log` (one JSON line per build: who, why, how long).

Concurrency. Many trials may start together: exactly one builds, the others wait. The lock is
an exclusive lease (trainables/locks.py: O_CREAT | O_EXCL, a heartbeat file, a holder judged
dead by its pid and start time on its own machine or by `stale_after` seconds of heartbeat
silence on a waiter's own clock elsewhere) and is broken when its holder is dead. Correctness never depends on the lock: a build writes a
private temporary file, publishes it under a unique name with an atomic rename, and then
atomically replaces the manifest that points at it; readers only follow the manifest. The lock
only keeps the work from being done twice.

Validation. Every open checks the manifest's key against the run's key, the data file's size,
and every chunk's sha256 (a full read: about a second for the 703 MB of CIFAR-100-LT at
imbalance 100). A corrupt, truncated or mismatched cache is logged with the reason and rebuilt;
it is never used.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.console import span
from trainables.device import RunDevice
from trainables.locks import Lease

FORMAT = "ltkd-teacher-logits"
FORMAT_VERSION = 1
CACHE_DIR_NAME = "logit_cache"
MANIFEST_NAME = "manifest.json"
# Every cache data file's name (`_build` makes them): a manifest naming anything else is foreign, and
# is neither read nor pushed (its name could lead out of the cache folder).
DATA_FILE_PATTERN = re.compile(r"logits-[0-9]{8}T[0-9]{6}-[0-9]+-[0-9a-f]{8}\.bin")


def is_data_file_name(name: object) -> bool:
    """Whether `name` is a cache data file's name (DATA_FILE_PATTERN), a plain name in its folder."""
    return isinstance(name, str) and DATA_FILE_PATTERN.fullmatch(name) is not None
LOCK_NAME = "build.lock"
BUILD_LOG_NAME = "builds.log"
DTYPES = {"float32": np.float32, "float16": np.float16}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}

Builder = Callable[[Callable[[np.ndarray], None]], Mapping[str, Any]]


class CacheError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------- hashing


def digest_array(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def digest_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and values (what determines the model's outputs)."""
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            h.update(f"{name}={tensor!r};".encode())
            continue
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.numel():
            h.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def digest_key(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_folder(root: str | Path, key: Mapping[str, Any]) -> Path:
    """The folder of one key's cache under a teacher's `logit_cache/` root."""
    return Path(root) / f"{key.get('teacher_arch', 'teacher')}-{digest_key(key)[:16]}"


# ----------------------------------------------------------------------------------- the cache


class TeacherLogits:
    """An opened, validated cache: `lookup(index, views)` -> the teacher's float32 logits (B, C).

    The data stays a read-only memory map of the file (shared by every process on the host
    through the page cache) unless `to_device` copies it to the training device.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], data: np.ndarray):
        self.folder = folder
        self.manifest = manifest
        self.data = data  # (images, views, classes) memmap
        self.device_data: torch.Tensor | None = None
        self.run_device = RunDevice(torch.device("cpu"))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def extras(self) -> dict[str, Any]:
        return self.manifest.get("extras", {})

    @property
    def build_id(self) -> str:
        return self.manifest["build"]["id"]

    def to_device(self, run_device: RunDevice, max_bytes: int | None = None) -> bool:
        """Look up for a run on `run_device`: on an accelerator, copy the whole table there when it
        fits in `max_bytes` (else gather rows on the host and move only them). Returns whether the
        table was copied."""
        self.run_device = run_device
        if not run_device.is_accelerator or (max_bytes is not None and self.nbytes > max_bytes):
            self.device_data = None
            return False
        table = torch.empty(self.shape, dtype=TORCH_DTYPES[self.manifest["dtype"]], device=run_device.device)
        step = max(1, (64 << 20) // max(1, self.data[:1].nbytes))  # copy about 64 MiB at a time
        for first in range(0, self.shape[0], step):
            table[first:first + step].copy_(torch.from_numpy(np.array(self.data[first:first + step])))
        self.device_data = table
        return True

    def lookup(self, index: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Teacher logits of images `index` through views `views` (both (B,) integer), float32 on the device.

        The small index (or the gathered rows) travels as RunDevice.move sends it: on CUDA from
        pinned memory without a host sync, and not at all when already there.
        """
        if self.device_data is not None:
            flat = self.run_device.move(index.long() * self.shape[1] + views.long())
            return self.device_data.view(-1, self.shape[2])[flat].float()
        rows = np.asarray(self.data[index.cpu().numpy(), views.cpu().numpy()])  # a (B, C) copy
        return self.run_device.move(torch.from_numpy(rows).float())


def _manifest_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _key_differences(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))


def open_valid(folder: str | Path, key: Mapping[str, Any], shape: tuple[int, int, int],
               dtype: str = "float32") -> tuple[TeacherLogits | None, str]:
    """The cache in `folder` if it is complete, uncorrupted and built for `key`; else (None, why not)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return None, "no cache yet"
    except (OSError, ValueError) as exc:
        return None, f"manifest unreadable ({type(exc).__name__})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None, "manifest is not a teacher-logit cache manifest"
    if manifest.get("format_version") != FORMAT_VERSION:
        return None, f"cache format version {manifest.get('format_version')} (this code: {FORMAT_VERSION})"
    if manifest.get("key") != dict(key):
        differs = _key_differences(manifest.get("key") or {}, key)
        return None, f"key mismatch (differs in: {', '.join(differs)})"
    if manifest.get("dtype") != dtype or list(manifest.get("shape", [])) != list(shape):
        return None, (f"shape/dtype mismatch ({manifest.get('shape')} {manifest.get('dtype')}, "
                      f"expected {list(shape)} {dtype})")
    if not is_data_file_name(manifest.get("data_file")):
        return None, f"manifest names a data file that is not logits-<build id>.bin ({str(manifest.get('data_file'))[:80]!r})"
    data_path = folder / manifest["data_file"]
    expected_bytes = int(np.prod(shape)) * np.dtype(DTYPES[dtype]).itemsize
    try:
        size = data_path.stat().st_size
    except FileNotFoundError:
        return None, f"data file {data_path.name} missing"
    if size != expected_bytes:
        return None, f"data file has {size} bytes, expected {expected_bytes} (truncated or foreign)"
    try:
        data = np.memmap(data_path, dtype=DTYPES[dtype], mode="r", shape=tuple(shape))
    except FileNotFoundError:  # replaced by a newer build between our looks
        return None, f"data file {data_path.name} missing"
    chunk_rows = int(manifest["chunk_rows"])
    hashes = manifest.get("chunk_sha256", [])
    n_chunks = -(-shape[0] // chunk_rows) if shape[0] else 0
    if len(hashes) != n_chunks:
        return None, f"manifest lists {len(hashes)} chunk checksums, expected {n_chunks}"
    for i, first in enumerate(range(0, shape[0], chunk_rows)):
        chunk = np.ascontiguousarray(data[first:first + chunk_rows])
        if hashlib.sha256(memoryview(chunk).cast("B")).hexdigest() != hashes[i]:
            last = min(first + chunk_rows, shape[0]) - 1
            return None, f"corrupt: chunk {i + 1} of {n_chunks} (images {first}..{last}) fails its checksum"
    return TeacherLogits(folder, manifest, data), "ok"


# ----------------------------------------------------------------------------------- building


class _ChunkWriter:
    """Appends (n, views, classes) blocks to a file, hashing every `chunk_rows` images."""

    def __init__(self, f, shape: tuple[int, int, int], dtype: np.dtype, chunk_rows: int):
        self.f, self.shape, self.dtype, self.chunk_rows = f, shape, dtype, chunk_rows
        self.rows = 0
        self.hashes: list[str] = []
        self._hash = hashlib.sha256()
        self._in_chunk = 0

    def __call__(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        if block.ndim != 3 or tuple(block.shape[1:]) != tuple(self.shape[1:]):
            raise CacheError(f"builder gave a block of shape {block.shape}, expected (n, {self.shape[1]}, {self.shape[2]})")
        if self.rows + len(block) > self.shape[0]:
            raise CacheError(f"builder gave more than {self.shape[0]} images")
        block = np.ascontiguousarray(block, dtype=self.dtype)
        start = 0
        while start < len(block):
            take = min(self.chunk_rows - self._in_chunk, len(block) - start)
            part = block[start:start + take]
            view = memoryview(part).cast("B")
            self._hash.update(view)
            self.f.write(view)
            self._in_chunk += take
            start += take
            if self._in_chunk == self.chunk_rows:
                self._close_chunk()
        self.rows += len(block)

    def _close_chunk(self) -> None:
        self.hashes.append(self._hash.hexdigest())
        self._hash = hashlib.sha256()
        self._in_chunk = 0

    def finish(self) -> None:
        if self.rows != self.shape[0]:
            raise CacheError(f"builder gave {self.rows} images, expected {self.shape[0]}")
        if self._in_chunk:
            self._close_chunk()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class BuildProgress:
    """A line every `every` seconds while a cache is built (logs and terminals alike): images done,
    views per second, and time left at that rate. A long build (hours on a CPU) is never silent."""

    def __init__(self, shape: tuple[int, int, int], log: Callable[[str], None], every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.images, self.views, self.log, self.every, self.clock = shape[0], shape[1], log, every, clock
        self.started = self.last = clock()
        self.done = 0

    def advance(self, images: int) -> None:
        self.done += images
        now = self.clock()
        if now - self.last < self.every or self.done >= self.images:
            return
        self.last = now
        rate = self.done * self.views / max(now - self.started, 1e-9)
        left = (self.images - self.done) * self.views / max(rate, 1e-9)
        self.log(f"{self.done:,} of {self.images:,} images ({100 * self.done / self.images:.0f}%), "
                 f"{rate:,.0f} views/s, about {span(left)} left")


def _build(folder: Path, key: Mapping[str, Any], shape: tuple[int, int, int], dtype: str, builder: Builder,
           chunk_rows: int, reason: str, log: Callable[[str], None]) -> None:
    build_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    data_name = f"logits-{build_id}.bin"
    tmp = folder / f".{data_name}.{uuid.uuid4().hex}.tmp"  # one name per writer
    started = time.perf_counter()
    try:
        with open(tmp, "wb") as f:
            writer = _ChunkWriter(f, shape, np.dtype(DTYPES[dtype]), chunk_rows)
            progress = BuildProgress(shape, lambda line: log(f"teacher logit cache {folder}: {line}"))

            def sink(block: np.ndarray) -> None:
                writer(block)
                progress.advance(len(block))

            extras = dict(builder(sink))
            writer.finish()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / data_name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    seconds = time.perf_counter() - started
    views = shape[0] * shape[1]
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "key": dict(key), "key_digest": digest_key(key),
        "data_file": data_name, "shape": list(shape), "dtype": dtype,
        "bytes": int(np.prod(shape)) * np.dtype(DTYPES[dtype]).itemsize,
        "chunk_rows": chunk_rows, "chunk_sha256": writer.hashes, "extras": extras,
        "build": {"id": build_id, "host": socket.gethostname(), "pid": os.getpid(), "seconds": seconds,
                  "views_per_second": views / max(seconds, 1e-9), "finished": time.time(), "reason": reason},
    }
    _write_atomic(folder / MANIFEST_NAME, json.dumps(manifest, indent=1))
    _fsync_dir(folder)
    with open(folder / BUILD_LOG_NAME, "a") as f:
        f.write(json.dumps({"id": build_id, "host": socket.gethostname(), "pid": os.getpid(), "reason": reason,
                            "seconds": round(seconds, 3), "finished": time.time()}) + "\n")
    # Older data files are no longer referenced (a process still reading one keeps it open).
    for old in folder.glob("logits-*.bin"):
        if old.name != data_name:
            old.unlink(missing_ok=True)
    log(f"teacher logit cache {folder}: built {shape[0]} images x {shape[1]} views in {seconds:.1f} s "
        f"({views / max(seconds, 1e-9):.0f} views/s), {manifest['bytes'] / 2**20:.0f} MiB {dtype}")


def _remove_stale_temporaries(folder: Path, older_than: float) -> None:
    now = time.time()
    for tmp in [*folder.glob(".logits-*.tmp"), *folder.glob(f".{MANIFEST_NAME}.*.tmp")]:
        try:
            if now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
        except FileNotFoundError:
            pass


def open_or_build(folder: str | Path, key: Mapping[str, Any], shape: tuple[int, int, int], builder: Builder, *,
                  dtype: str = "float32", build: bool = True, log: Callable[[str], None] | None = print,
                  chunk_rows: int = 256, poll_seconds: float = 0.5, stale_after: float = 300.0,
                  heartbeat_seconds: float = 5.0, wait_timeout: float | None = None) -> TeacherLogits | None:
    """Open the valid cache for `key` in `folder`, building it first when needed (once, whoever asks).

    `builder(sink)` computes the logits: it calls `sink(block)` with float blocks of shape
    (n, views, classes) in image order until all `shape[0]` images are given, and returns extra
    JSON-able values to keep in the manifest. With `build=False`, returns None instead of building.
    A process that finds another one building waits for it (polling every `poll_seconds`; a
    holder silent for `stale_after` seconds is presumed dead), at most `wait_timeout` seconds.
    """
    if dtype not in DTYPES:
        raise ValueError(f"teacher logit cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    log = log or (lambda line: None)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(v) for v in shape)  # type: ignore[assignment]
    manifest_path = folder / MANIFEST_NAME
    lock = Lease(folder / LOCK_NAME, stale_after=stale_after, heartbeat=heartbeat_seconds,
                 log=lambda line: log(f"teacher logit cache: {line}"), describe={"what": "teacher logit cache build"})
    checked: tuple[Any, str] | None = None  # (manifest signature, why it is not usable)
    waiting_since = None
    while True:
        signature = _manifest_signature(manifest_path)
        if checked is None or checked[0] != signature:
            cache, reason = open_valid(folder, key, shape, dtype)
            if cache is not None:
                return cache
            if _manifest_signature(manifest_path) != signature:
                continue  # replaced while we read it: look again
            if checked is None and signature is not None:
                log(f"teacher logit cache {folder}: not usable: {reason}")
            checked = (signature, reason)
        if not build:
            return None
        if lock.try_acquire():
            try:
                # Someone may have finished a build between our last look and our lock.
                signature = _manifest_signature(manifest_path)
                if checked[0] != signature:
                    cache, reason = open_valid(folder, key, shape, dtype)
                    if cache is not None:
                        return cache
                    checked = (signature, reason)
                _remove_stale_temporaries(folder, stale_after)
                log(f"teacher logit cache {folder}: {checked[1]}; building {shape[0]} images x {shape[1]} views")
                _build(folder, key, shape, dtype, builder, chunk_rows, checked[1], log)
                cache, reason = open_valid(folder, key, shape, dtype)
                if cache is None:
                    raise CacheError(f"teacher logit cache {folder}: the cache just built does not validate ({reason})")
                return cache
            finally:
                lock.release()
        if waiting_since is None:
            waiting_since = time.monotonic()
            holder = lock.info() or {}
            log(f"teacher logit cache {folder}: waiting for the build by pid {holder.get('pid', '?')} "
                f"on {holder.get('host', '?')}")
        elif wait_timeout is not None and time.monotonic() - waiting_since > wait_timeout:
            raise CacheError(f"teacher logit cache {folder}: still being built by another process after "
                             f"{wait_timeout:.0f} s; `ltkd unlock {folder}` if no build is running")
        if not lock.break_if_stale():
            time.sleep(poll_seconds)


def read_build_log(folder: str | Path) -> list[dict[str, Any]]:
    path = Path(folder) / BUILD_LOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------- teacher views


@torch.no_grad()
def teacher_view_logits(teacher: torch.nn.Module, batches, images: torch.Tensor | None = None,
                        views: torch.Tensor | None = None, images_per_block: int = 64,
                        batch_size: int = 512) -> Iterator[np.ndarray]:
    """The teacher's float32 logits of every view of `images` (default: all), as (n, views, C) blocks.

    `batches` is a TensorBatches: its `view_inputs` makes exactly the inputs a training epoch
    makes for an (image, view). `views` restricts the views computed (default: all). The teacher
    must be in eval mode; inputs are run in batches of at most `batch_size` views.
    """
    if teacher.training:
        raise ValueError("the teacher must be in eval mode: its logits of a view must not depend on the batch")
    images = torch.arange(batches.n_images) if images is None else images.long().cpu()
    views = torch.arange(batches.n_views) if views is None else views.long().cpu()
    n_views = len(views)
    for first in range(0, len(images), images_per_block):
        block_images = images[first:first + images_per_block]
        # every (image, view) pair of the block, image-major: row i * n_views + v
        pair_images = block_images.repeat_interleave(n_views)
        pair_views = views.repeat(len(block_images))
        out = []
        for start in range(0, len(pair_images), batch_size):
            inputs = batches.view_inputs(pair_images[start:start + batch_size], pair_views[start:start + batch_size])
            out.append(teacher(inputs).float().cpu())
        yield torch.cat(out).view(len(block_images), n_views, -1).numpy()
