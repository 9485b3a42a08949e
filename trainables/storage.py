"""Where a sweep's files live: a folder every node reaches (local disk, NFS) or an object store.

A `Location` names a file or folder on the sweep's storage. On a POSIX folder it is a plain path.
On an object store (s3://, gs://, abfs://, hdfs://: any URI pyarrow's `FileSystem.from_uri`
understands, query options such as `?endpoint_override=host:9000&scheme=http` included) runs
cannot train in place: training writes memory-mapped caches and checkpoints through ordinary
files. So a trial fetches its run folder (and its teacher's) into a local scratch folder, trains
there, and pushes its checkpoint and metrics back after every epoch. The store stays the one
truth: a trial retried on another node fetches the last pushed epoch and continues from it.

Small files (sweep.json, the driver lock, metrics) are read and written on the store directly.
Credentials come from the environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...),
never from the URI: the URI is written into sweep.json and every trial's config.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import socket
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from trainables.errors import UserError

SCRATCH_ENV = "LTKD_SCRATCH"
OBJECT_STORE_TYPES = ("s3", "gcs", "abfs")  # pyarrow's names of stores whose "move" is a server-side copy
_ARROW_ERRORS = (pa.ArrowException, OSError, ValueError)


class StorageError(UserError):
    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message  # the store's own words, for callers that add their own context


def scratch_root() -> Path:
    """This machine's scratch folder for object-store runs (LTKD_SCRATCH, else one in the temp folder).

    Checked on every use: a folder of this user's that others cannot write. The default name in
    /tmp is predictable, so another user could have made it first (or a link by that name).
    """
    root = Path(os.environ.get(SCRATCH_ENV) or os.path.join(tempfile.gettempdir(), f"ltkd-scratch-{os.getuid()}"))
    root = root.expanduser()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(root)
    except OSError as exc:
        raise StorageError(f"scratch folder {root} cannot be created ({exc.strerror or exc}); set {SCRATCH_ENV} to a "
                           "folder of yours") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise StorageError(f"scratch folder {root} is not a private folder of this user (a link, another owner, or "
                           f"writable by others); remove it or set {SCRATCH_ENV} to a folder only you can write")
    return root


def private_scratch_folder(kind: str, label: str) -> Path:
    """A new folder under the scratch root, made here and now (never one found there), that only this user can enter.

    For files one process writes and reads back (Ray Tune's experiment state): nobody else can plant
    anything in it, so what is read from it is what this process wrote.
    """
    parent = scratch_root() / kind
    try:
        parent.mkdir(mode=0o700, exist_ok=True)
        folder = parent / f"{label[:60]}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        os.mkdir(folder, 0o700)  # fails when anything has the name: never a folder (or link) made by another
        os.chmod(folder, 0o700, follow_symlinks=False)  # whatever the umask
        infos = [os.lstat(parent), os.lstat(folder)]
    except OSError as exc:
        raise StorageError(f"scratch folder {parent} cannot be used ({exc.strerror or exc}); set {SCRATCH_ENV} to "
                           "a folder of yours") from None
    if any(not stat.S_ISDIR(i.st_mode) or i.st_uid != os.getuid() or i.st_mode & 0o022 for i in infos) \
            or infos[1].st_mode & 0o077:
        raise StorageError(f"scratch folder {parent} is not a private folder of this user (a link, another owner, "
                           f"or writable by others); remove it or set {SCRATCH_ENV} to a folder only you can write")
    return folder


SCRATCH_KEEP_SECONDS = 24 * 3600  # an unused mirror is kept this long, in case the next trial needs it again
_IN_USE = ".in-use"
_held_scratch: dict[str, int] = {}  # scratch folders this process uses -> the fd holding their shared lock


def hold_scratch(folder: Path) -> None:
    """Mark a scratch folder as used by this process until it exits: a shared flock on its marker
    (released by the kernel when the process dies, however it dies), whose mtime says when it was last used."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / _IN_USE
    if str(folder) not in _held_scratch:
        fd = os.open(marker, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _held_scratch[str(folder)] = fd
    os.utime(marker)


def prune_scratch(kind: Path, keep_seconds: float = SCRATCH_KEEP_SECONDS) -> list[Path]:
    """Remove the scratch folders under `kind` that no process holds and none used for `keep_seconds`."""
    removed = []
    for folder in sorted(kind.iterdir()) if kind.is_dir() else []:
        marker = folder / _IN_USE
        try:
            if str(folder) in _held_scratch or time.time() - marker.stat().st_mtime < keep_seconds:
                continue
            fd = os.open(marker, os.O_RDWR)
        except OSError:  # no marker: being made right now, or not ours to judge
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a running process uses it
            os.close(fd)
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@functools.lru_cache(maxsize=None)
def _filesystem(scheme: str, netloc: str, query: str) -> tuple[pafs.FileSystem, bool]:
    """(filesystem, whether its paths start with the URI's netloc), one per store: opening one may
    cost a round trip (S3 looks up the bucket's region)."""
    uri = f"{scheme}://{netloc}/" + (f"?{query}" if query else "")
    try:
        fs, inner = pafs.FileSystem.from_uri(uri)
    except _ARROW_ERRORS as exc:
        raise StorageError(f"storage '{uri}' cannot be opened: {_first_line(exc)}") from None
    # s3://bucket/key -> "bucket/key"; hdfs://host:port/path -> "/path".
    return fs, bool(netloc) and inner.lstrip("/").startswith(netloc)


# Query options that hold credentials (pyarrow's S3/GCS/Azure options, SAS signatures, generic names):
# a name in the set, or one ending in one of the suffixes, once lower-cased with '-' as '_'.
SECRET_OPTIONS = frozenset({"key", "secret", "token", "password", "passwd", "sig", "signature", "credential",
                            "credentials", "auth", "authorization"})
SECRET_SUFFIXES = tuple(f"_{name}" for name in SECRET_OPTIONS)


def _names_a_secret(option: str) -> bool:
    name = option.strip().lower().replace("-", "_")
    return name in SECRET_OPTIONS or name.endswith(SECRET_SUFFIXES)


@dataclass(frozen=True)
class Location:
    """A file or folder on a sweep's storage: a local path, or `scheme://...` plus the URI's query options."""

    path: str  # absolute local path, or scheme://netloc/path without the query
    query: str = ""

    @staticmethod
    def parse(text: str | Path) -> "Location":
        text = str(text)
        if text.startswith("file://"):
            text = text[len("file://"):]
        if "://" not in text:
            return Location(str(Path(text).expanduser().resolve()))
        parts = urlsplit(text)
        if not parts.scheme or not (parts.netloc or parts.path):
            raise StorageError(f"storage '{text}' is not a URI (e.g. s3://bucket/sweeps)")
        if "@" in parts.netloc:
            raise StorageError(f"storage '{parts.scheme}://...@{parts.netloc.split('@', 1)[1]}' carries credentials; "
                               "pass them in the environment instead (they would be written into sweep.json)")
        path = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
        secrets = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True) if _names_a_secret(name)]
        if secrets:
            raise StorageError(f"storage '{path}?...' carries secrets in its query ({', '.join(secrets)}); pass them in "
                               "the environment instead (the URI is written into sweep.json and every trial's config)")
        return Location(path, parts.query)

    # -------------------------------------------------------------- names

    @property
    def remote(self) -> bool:
        return "://" in self.path

    @property
    def uri(self) -> str:
        """What pyarrow (and `Location.parse`) opens: the path with its query options."""
        return self.path + (f"?{self.query}" if self.query else "")

    def __str__(self) -> str:
        return self.path

    def __truediv__(self, part: str | Path) -> "Location":
        part = str(part).strip("/")
        if any(segment in (".", "..") for segment in part.split("/")):
            raise StorageError(f"refusing the path {part!r} under {self}: it would leave that folder")
        return Location(f"{self.path.rstrip('/')}/{part}" if part else self.path, self.query)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        head = self.path.rstrip("/").rsplit("/", 1)[0]
        if self.remote and "://" not in head:  # already the store's root
            return self
        return Location(head or "/", self.query)

    @property
    def local_path(self) -> Path:
        """The path of a location on a POSIX storage."""
        if self.remote:
            raise StorageError(f"{self} is on an object store, not a local folder")
        return Path(self.path)

    def scratch(self, kind: str) -> Path:
        """This machine's scratch folder for a remote location (stable per location)."""
        digest = hashlib.sha1(self.path.encode()).hexdigest()[:16]
        return scratch_root() / kind / f"{self.name[:60]}-{digest}"

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """(pyarrow filesystem, path inside it) of a remote location."""
        parts = urlsplit(self.uri)
        fs, with_netloc = _filesystem(parts.scheme, parts.netloc, parts.query)
        inner = f"{parts.netloc}{parts.path}" if with_netloc else (parts.path or "/")
        return fs, inner.rstrip("/")

    def _call(self, action: str, fn: Callable):
        try:
            return fn()
        except _ARROW_ERRORS as exc:
            raise StorageError(f"cannot {action} {self}: {_first_line(exc)}", _first_line(exc)) from None

    # -------------------------------------------------------------- small files, read and written in place

    def exists(self) -> bool:
        if not self.remote:
            return Path(self.path).exists()
        fs, inner = self.filesystem()
        return self._call("read", lambda: fs.get_file_info(inner).type != pafs.FileType.NotFound)

    def is_dir(self) -> bool:
        if not self.remote:
            return Path(self.path).is_dir()
        fs, inner = self.filesystem()
        return self._call("read", lambda: fs.get_file_info(inner).type == pafs.FileType.Directory)

    def read_bytes(self) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        if not self.remote:
            try:
                return Path(self.path).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):  # also when removed meanwhile
                return None
        fs, inner = self.filesystem()

        def read():
            if fs.get_file_info(inner).type != pafs.FileType.File:
                return None
            with fs.open_input_stream(inner) as source:
                return source.read()
        return self._call("read", read)

    def read_text(self) -> str | None:
        data = self.read_bytes()
        return None if data is None else data.decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Replace the file all at once: readers see the old or the new bytes, never a mix."""
        if not self.remote:
            path = Path(self.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            return
        fs, inner = self.filesystem()
        self._call("write", lambda: publish(fs, inner, lambda sink: sink.write(data), len(data)))

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def delete(self) -> None:
        """Remove the file if it exists."""
        if not self.remote:
            Path(self.path).unlink(missing_ok=True)
            return
        fs, inner = self.filesystem()

        def delete():
            if fs.get_file_info(inner).type == pafs.FileType.File:
                fs.delete_file(inner)
        self._call("delete", delete)

    # -------------------------------------------------------------- mirroring whole run folders (object stores)

    def subfolders(self) -> list[str]:
        """The names of the folders directly under this one (none when it does not exist)."""
        if not self.remote:
            folder = Path(self.path)
            return sorted(child.name for child in folder.iterdir() if child.is_dir()) if folder.is_dir() else []
        fs, inner = self.filesystem()
        infos = self._call("list", lambda: fs.get_file_info(pafs.FileSelector(inner, recursive=False,
                                                                              allow_not_found=True)))
        return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)

    def files(self) -> dict[str, pafs.FileInfo]:
        """The files under a remote folder, by path relative to it."""
        fs, inner = self.filesystem()
        infos = self._call("list", lambda: fs.get_file_info(pafs.FileSelector(inner, recursive=True,
                                                                              allow_not_found=True)))
        return {info.path[len(inner):].lstrip("/"): info for info in infos if info.type == pafs.FileType.File}

    def fetch(self, dest: Path, keep: Callable[[str], bool] = lambda name: True) -> list[str]:
        """Copy a remote folder's files (those `keep` accepts) into `dest`; returns what was downloaded.

        A local file with the remote one's size and modification time is already that file and
        is skipped. Each file appears whole (downloaded beside it, then renamed).
        """
        fs, _ = self.filesystem()
        dest = Path(dest)
        fetched = []
        for name, info in sorted(self.files().items()):
            if not keep(name) or name.rsplit("/", 1)[-1].startswith("."):
                continue
            if any(segment in ("", ".", "..") for segment in name.split("/")):
                # A store's key is any string: `runs/../../x` would be written outside `dest`.
                raise StorageError(f"refusing to download {self.path}/{name}: the key leaves its folder")
            target = dest / name
            if _same_file(target, info):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
            try:
                with fs.open_input_stream(info.path) as source, open(tmp, "wb") as sink:
                    while chunk := source.read(1 << 24):
                        sink.write(chunk)
                if info.mtime is not None:
                    stamp = info.mtime.timestamp()
                    os.utime(tmp, (stamp, stamp))
                os.replace(tmp, target)
            except _ARROW_ERRORS as exc:
                raise StorageError(f"cannot download {self / name}: {_first_line(exc)}") from None
            finally:
                tmp.unlink(missing_ok=True)
            fetched.append(name)
        return fetched

    def push(self, source: Path, names: Iterable[str]) -> None:
        """Upload files of a local folder to this remote folder, in the given order.

        Each local file then takes the uploaded object's modification time, so a later `fetch`
        into the same folder sees it as current (a node never downloads a cache it built).
        """
        fs, inner = self.filesystem()
        for name in names:
            local = _inside(Path(source), name)
            if not local.is_file():
                continue

            def upload(local=local, target=f"{inner}/{name}"):
                def copy(sink):
                    with open(local, "rb") as f:
                        while chunk := f.read(1 << 24):
                            sink.write(chunk)
                publish(fs, target, copy, local.stat().st_size)
                return fs.get_file_info(target).mtime
            mtime = self._call("upload to", upload)
            if mtime is not None:
                os.utime(local, (mtime.timestamp(), mtime.timestamp()))

    def delete_remote_files(self, names: Iterable[str]) -> None:
        fs, inner = self.filesystem()
        for name in names:
            self._call("delete", lambda: fs.delete_file(f"{inner}/{name}"))


def _inside(folder: Path, name: str) -> Path:
    """`folder / name` when `name` is a relative path of plain names whose file lies inside `folder` and is
    no symbolic link; otherwise StorageError. Names to push may come from files others could write."""
    path = folder / name
    if not name or os.path.isabs(name) or any(part in ("", ".", "..") for part in name.split("/")):
        raise StorageError(f"refusing to push '{name}' from {folder}: not a plain file name inside that folder "
                           "(absolute, '..' or empty parts); remove whatever file named it")
    try:
        link = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:  # no such file: nothing to push
        return path
    if link or not path.resolve().is_relative_to(folder.resolve()):
        raise StorageError(f"refusing to push {path}: a symbolic link or outside {folder}; remove it")
    return path


def _same_file(local: Path, info: pafs.FileInfo) -> bool:
    try:
        stat = local.stat()
    except OSError:
        return False
    same_time = info.mtime is None or int(stat.st_mtime) == int(info.mtime.timestamp())
    return stat.st_size == info.size and same_time


# The largest object pyarrow's move (a server-side copy) can copy on S3-like stores.
SERVER_COPY_LIMIT = 5 * 1024 ** 3


def publish(fs: pafs.FileSystem, path: str, write: Callable, size: int | None = None) -> None:
    """Write a file so that readers see all of it or none, and a failed write leaves no file behind.

    The bytes go to a temporary name beside the file, which is then moved over it: a rename on local
    disks and HDFS, a server-side copy on object stores. (Written in place, an object store would
    publish a half-written object: pyarrow completes the upload when a writer raises midway.)
    Objects too large for a server-side copy (`size` above SERVER_COPY_LIMIT, only teacher-logit
    data files, whose names are unique) are written in place and deleted if the writer raises.
    """
    parent, _, name = path.rpartition("/")
    if parent:
        fs.create_dir(parent, recursive=True)
    if fs.type_name in OBJECT_STORE_TYPES and size is not None and size > SERVER_COPY_LIMIT:
        target = path
    else:
        target = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp" if parent else f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(target) as sink:
            write(sink)
        if target != path:
            fs.move(target, path)
    except BaseException:
        try:
            fs.delete_file(target)
        except Exception:
            pass
        raise


RUN_LOCK_NAME = ".trial.lock"


class LocalCopy:
    """A run folder to train in: the folder itself on POSIX storage, a fresh scratch copy on an object store.

    One process at a time trains in a run folder: entering takes the folder's lease (two search
    trials that drew the same hyperparameters share a folder; the second waits for the first and
    then finds the run finished). `sync(names)` pushes files back to the store (nothing to do on
    POSIX storage); leaving the `with` block removes the scratch copy, so scratch holds only runs
    in progress. A process that never leaves the block (killed, or a Tune trial stopped
    mid-report) leaves its copy behind: the next copy made on this machine removes every copy
    whose process is gone, and its lease is taken over once it is seen dead.
    """

    def __init__(self, location: Location, log: Callable[[str], None] = functools.partial(print, flush=True)):
        from trainables.locks import Lease

        self.location = location
        self.log = log
        self.lease = Lease(location / RUN_LOCK_NAME, log=log, describe={"what": "training run"})
        if location.remote:
            # Named by its process so dead copies can be told apart (and by host, should a scratch be shared).
            attempt = f"{os.getpid()}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
            self.path = location.scratch("runs") / attempt
        else:
            self.path = location.local_path

    def __enter__(self) -> "LocalCopy":
        def waiting(state: str, holder: dict) -> None:
            self.log(f"run {self.location}: another process (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) "
                     "trains it; waiting for it to finish")
        self.lease.acquire(wait_for_live_holder=True, poll=2.0, on_wait=waiting)
        try:
            if self.location.remote:
                remove_dead_copies(self.path.parent.parent)
                self.location.fetch(self.path)
        except BaseException:
            self.lease.release()
            raise
        return self

    def sync(self, names: Iterable[str]) -> None:
        if self.location.remote:
            self.location.push(self.path, names)

    def __exit__(self, *exc) -> None:
        try:
            if self.location.remote:
                shutil.rmtree(self.path, ignore_errors=True)
                try:
                    self.path.parent.rmdir()
                except OSError:
                    pass
        finally:
            self.lease.release()


def remove_dead_copies(runs: Path) -> None:
    """Remove this machine's scratch run copies whose process is gone (live ones, of any run, stay)."""
    from trainables.locks import pid_alive

    host = socket.gethostname()
    for attempt in runs.glob("*/*") if runs.is_dir() else []:
        pid, _, rest = attempt.name.partition("-")
        if rest.rpartition("@")[2] != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        shutil.rmtree(attempt, ignore_errors=True)
        try:
            attempt.parent.rmdir()
        except OSError:  # other copies of the run remain
            pass


def local_folder(location: Location, keep: Callable[[str], bool] = lambda name: True) -> Path:
    """A folder's files on this machine, for reading: the folder itself, or its scratch mirror brought up to date."""
    if not location.remote:
        return location.local_path
    mirror = location.scratch("mirror")
    hold_scratch(mirror)
    prune_scratch(mirror.parent)
    location.fetch(mirror, keep)
    return mirror

