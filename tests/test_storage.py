"""Sweep storage: local folders and object stores (an S3 server on localhost), files, mirrors, the journal."""
from __future__ import annotations

import os
import socket
import time

import pytest

from trainables.errors import UserError
from trainables.storage import LocalCopy, Location, StorageError, local_folder


def test_locations_name_paths_and_keep_uri_options(tmp_path):
    local = Location.parse(tmp_path / "store")
    assert not local.remote and local.local_path == (tmp_path / "store").resolve()
    assert Location.parse(f"file://{tmp_path}/store") == local
    assert (local / "name" / "runs").parent == local / "name"

    remote = Location.parse("s3://bucket/sweeps/?endpoint_override=127.0.0.1:9000&scheme=http")
    assert remote.remote and str(remote) == "s3://bucket/sweeps"
    child = remote / "tiny" / "runs"
    assert child.uri == "s3://bucket/sweeps/tiny/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    assert child.parent.parent == remote and child.name == "runs"
    assert Location.parse(child.uri) == child  # what goes into trial configs comes back the same
    assert remote.parent.parent == Location.parse("s3://bucket?endpoint_override=127.0.0.1:9000&scheme=http")
    with pytest.raises(StorageError, match="carries credentials; pass them in the environment"):
        Location.parse("s3://KEY:SECRET@bucket/sweeps")
    with pytest.raises(StorageError, match="cannot be opened: Unrecognized filesystem"):
        Location.parse("nosuchfs://bucket/x").exists()
    with pytest.raises(StorageError, match="on an object store"):
        remote.local_path


@pytest.mark.parametrize("option", ["client_secret", "sig", "token", "password", "key", "secret", "access_key",
                                    "session_token", "credential", "Secret-Access-Key", "account_key", "sas_token"])
def test_a_uri_with_a_secret_in_its_query_is_refused_without_echoing_it(option):
    with pytest.raises(StorageError) as refused:
        Location.parse(f"s3://bucket/sweeps?endpoint_override=h:9000&{option}=s3cr3t")
    message = str(refused.value)
    assert f"carries secrets in its query ({option})" in message and "s3cr3t" not in message and "\n" not in message


def test_query_options_without_secrets_are_kept():
    uri = "s3://bucket/sweeps?endpoint_override=h:9000&scheme=http&region=eu-west-1&role_arn=arn:x&anonymous=true"
    assert Location.parse(uri).uri == uri


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_small_files_are_read_written_and_deleted_in_place(kind, tmp_path, request):
    base = Location.parse(tmp_path) if kind == "local" else Location.parse(request.getfixturevalue("s3_storage"))
    note = base / "sweep" / "note.json"
    assert note.read_text() is None and not note.exists()
    note.write_text('{"a": 1}')
    assert note.read_text() == '{"a": 1}' and note.exists()
    assert (base / "sweep").is_dir() and not note.is_dir()
    note.write_text("replaced")
    assert note.read_text() == "replaced"
    note.delete()
    note.delete()  # deleting what is gone is fine
    assert note.read_text() is None


def test_push_then_fetch_copies_a_run_folder_and_skips_what_is_current(s3_storage, tmp_path):
    source = tmp_path / "source"
    (source / "logit_cache" / "x").mkdir(parents=True)
    (source / "checkpoint.pt").write_bytes(os.urandom(3000))
    (source / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (source / "logit_cache" / "x" / "manifest.json").write_text("{}")
    for name in ("checkpoint.pt", "metrics.jsonl", "logit_cache/x/manifest.json"):
        os.utime(source / name, (1e9, 1e9))  # written long before the upload
    remote = Location.parse(s3_storage) / "runs" / "one"
    remote.push(source, ["checkpoint.pt", "metrics.jsonl", "logit_cache/x/manifest.json", "missing.bin"])
    assert sorted(remote.files()) == ["checkpoint.pt", "logit_cache/x/manifest.json", "metrics.jsonl"]
    assert remote.fetch(source) == []  # what a node pushed is current there: never downloaded back

    copy = tmp_path / "copy"
    assert sorted(remote.fetch(copy)) == ["checkpoint.pt", "logit_cache/x/manifest.json", "metrics.jsonl"]
    for name in ("checkpoint.pt", "metrics.jsonl", "logit_cache/x/manifest.json"):
        assert (copy / name).read_bytes() == (source / name).read_bytes()
    assert remote.fetch(copy) == []  # same size and time: already there
    time.sleep(1.1)  # object stores keep whole-second times
    (source / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    remote.push(source, ["metrics.jsonl"])
    assert remote.fetch(copy, keep=lambda name: not name.startswith("logit_cache")) == ["metrics.jsonl"]
    assert (copy / "metrics.jsonl").read_text().count("epoch") == 2
    assert not list(copy.rglob(".*"))  # no partial downloads left behind
    remote.delete_remote_files(["checkpoint.pt"])
    assert "checkpoint.pt" not in remote.files()


def test_a_local_copy_trains_in_scratch_pushes_on_sync_and_cleans_up(s3_storage, tmp_path, monkeypatch):
    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "scratch"))
    remote = Location.parse(s3_storage) / "runs" / "two"
    with LocalCopy(remote) as run:
        assert run.path.is_relative_to(tmp_path / "scratch")
        run.path.mkdir(parents=True)
        (run.path / "checkpoint.pt").write_bytes(b"epoch 1")
        run.sync(["checkpoint.pt"])
    assert (remote / "checkpoint.pt").read_bytes() == b"epoch 1"
    assert not any((tmp_path / "scratch").rglob("checkpoint.pt"))  # scratch holds only runs in progress
    host = socket.gethostname()
    killed = remote.scratch("runs") / f"999999999-deadbeef@{host}"  # a copy whose process was killed
    killed.mkdir(parents=True)
    live = remote.scratch("runs") / f"{os.getpid()}-livecopy@{host}"  # another live trial of the same run
    live.mkdir()
    # A trial of another run, stopped by Tune mid-report and never back: its copy goes too.
    other_run = (Location.parse(s3_storage) / "runs" / "three").scratch("runs") / f"999999999-cafe@{host}"
    other_run.mkdir(parents=True)
    elsewhere = remote.scratch("runs") / "999999999-beef@another-node"  # not ours to judge
    elsewhere.mkdir()
    with LocalCopy(remote) as again:  # a retry (on any node) starts from what the store holds
        assert (again.path / "checkpoint.pt").read_bytes() == b"epoch 1"
        assert not killed.exists() and live.exists() and elsewhere.exists()
        assert not other_run.parent.exists()
    mirror = local_folder(remote)
    assert (mirror / "checkpoint.pt").read_bytes() == b"epoch 1"

    posix = Location.parse(tmp_path / "posix" / "run")
    with LocalCopy(posix) as run:  # a shared folder is trained in place
        assert run.path == posix.local_path
        run.sync(["anything"])
    assert local_folder(posix) == posix.local_path


def test_an_optuna_journal_on_an_object_store_survives_its_driver(s3_storage, tmp_path, monkeypatch):
    import optuna

    from orchestrator.studies import open_storage

    journal = Location.parse(s3_storage) / "tiny" / "optuna.journal"
    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "first-node"))
    study = optuna.create_study(storage=open_storage(journal), study_name="cell", direction="maximize")
    for value in (0.25, 0.75):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr("hparams", {"x": trial.params["x"]})
        study.tell(trial, value)
    running = study.ask()
    # Another machine (its scratch empty) opens the study from the store alone.
    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "second-node"))
    reopened = optuna.load_study(storage=open_storage(journal), study_name="cell")
    assert [t.value for t in reopened.trials[:2]] == [0.25, 0.75]
    assert reopened.trials[2].state.name == "RUNNING" and reopened.trials[2].number == running.number
    assert reopened.trials[0].user_attrs["hparams"] == {"x": reopened.trials[0].params["x"]}
    reopened.tell(running.number, 0.5)
    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "third-node"))
    assert [t.value for t in optuna.load_study(storage=open_storage(journal), study_name="cell").trials] == \
        [0.25, 0.75, 0.5]


def test_a_driver_opening_the_journal_breaks_a_killed_drivers_lock_and_readers_leave_it(tmp_path):
    """A driver SIGKILLed while appending leaves the journal's lock file; Optuna would wait 30 s before
    breaking it. The driver that opens the journal next holds the sweep's lock, so the journal's lock is stale."""
    import optuna
    from optuna.storages.journal import JournalFileOpenLock

    from orchestrator.studies import journal_lock_file, open_storage, opened_storage

    journal = Location.parse(tmp_path / "optuna.journal")
    with opened_storage(journal) as storage:
        optuna.create_study(storage=storage, study_name="cell", direction="maximize")
    lock = JournalFileOpenLock(str(journal.local_path))
    assert lock.acquire() and journal_lock_file(journal.local_path).exists()  # the name Optuna uses
    # The lock is never released: its holder was killed. A reader (`ltkd status`) leaves it alone.
    open_storage(journal)
    assert journal_lock_file(journal.local_path).exists()
    with opened_storage(journal) as storage:
        assert not journal_lock_file(journal.local_path).exists()
        study = optuna.load_study(storage=storage, study_name="cell")
        study.tell(study.ask(), 1.0)
    assert [t.value for t in optuna.load_study(storage=open_storage(journal), study_name="cell").trials] == [1.0]


def test_the_journal_pushes_state_changes_at_once_and_batches_per_epoch_values(s3_storage, tmp_path, monkeypatch):
    import optuna
    from optuna.storages.journal._storage import JournalOperation

    from orchestrator.studies import _INTERMEDIATE_VALUE, MirroredJournal

    assert _INTERMEDIATE_VALUE == JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE
    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "driver"))
    journal = Location.parse(s3_storage) / "tiny" / "optuna.journal"
    backend = MirroredJournal(journal, intermediate_push_seconds=3600)
    study = optuna.create_study(storage=optuna.storages.JournalStorage(backend), study_name="cell")
    trial = study.ask()

    readers = iter(range(100))

    def trials_on_store():
        """What another machine (its scratch empty) reads from the store."""
        monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / f"reader-{next(readers)}"))
        storage = optuna.storages.JournalStorage(MirroredJournal(journal))
        return optuna.load_study(study_name="cell", storage=storage).trials

    assert trials_on_store()[0].state.name == "RUNNING"  # asking a trial was pushed at once
    for epoch in range(1, 4):
        trial.report(0.1 * epoch, epoch)
    assert trials_on_store()[0].intermediate_values == {}  # per-epoch values wait ...
    study.tell(trial, 0.5)
    [told] = trials_on_store()  # ... and ride along with the next state change
    assert told.value == 0.5 and told.intermediate_values == pytest.approx({1: 0.1, 2: 0.2, 3: 0.3})

    second = study.ask()
    second.report(0.7, 1)
    assert trials_on_store()[1].intermediate_values == {}
    backend.flush()  # as at the driver's exit
    assert trials_on_store()[1].intermediate_values == {1: 0.7}


def test_results_are_written_to_and_read_from_an_object_store(s3_storage):
    from results.store import TrialRecord, read_results, write_trial

    sweep = Location.parse(s3_storage) / "tiny"
    record = TrialRecord(sweep="tiny", trial_id="teacher/t0", stage="teacher", cell="digits/if10/resnet8",
                         config={"dataset": "digits", "imbalance_factor": 10.0, "arch": "resnet8", "method": "ce",
                                 "role": "teacher", "seed": 0, "epochs": 1, "hparams": {}},
                         history=[{"epoch": 1, "acc": 50.0, "acc_head": 60.0, "acc_medium": 50.0, "acc_tail": 40.0}],
                         status="completed", wall_seconds=1.0, device="cpu", code_version="test")
    path = write_trial(sweep.uri, record)
    assert path.startswith(str(sweep)) and "?" not in path
    write_trial(sweep.uri, record)  # idempotent: still one file
    assert len((sweep / "results").files()) == 1
    frame = read_results([sweep.uri])
    assert list(frame["trial_id"].unique()) == ["teacher/t0"]
    assert set(frame["source"]) == {path}  # each row names its file as written, without the URI's options


def test_unreachable_object_store_is_one_clear_error(s3_endpoint):
    from orchestrator.sweep import _check_writable

    with pytest.raises(UserError) as error:
        _check_writable(Location.parse("s3://bucket/sweeps?endpoint_override=127.0.0.1:1&scheme=http"))
    message = str(error.value)
    assert message.startswith("storage s3://bucket/sweeps cannot be written (") and "\n" not in message


# ------------------------------------------------------------------------------------ untrusted storage


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_writer_that_raises_midway_leaves_the_old_file_and_no_partial_one(kind, tmp_path, request):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainables.storage import publish

    base = Location.parse(tmp_path) if kind == "local" else Location.parse(request.getfixturevalue("s3_storage"))
    fs, inner = (base / "results").filesystem() if base.remote else (__import__("pyarrow.fs").fs.LocalFileSystem(),
                                                                     str(base.local_path / "results"))
    table = pa.table({"acc": list(range(1000))})

    def half_then_fail(sink):
        sink.write(b"PAR1" + os.urandom(4096))  # the first part of a file, then the writer dies
        raise _Interrupted()
    with pytest.raises(_Interrupted):
        publish(fs, f"{inner}/new.parquet", half_then_fail)
    assert not (base / "results" / "new.parquet").exists(), "a partial object reached the final key"
    publish(fs, f"{inner}/kept.parquet", lambda sink: pq.write_table(table, sink))
    before = (base / "results" / "kept.parquet").read_bytes()
    with pytest.raises(_Interrupted):
        publish(fs, f"{inner}/kept.parquet", half_then_fail)
    assert (base / "results" / "kept.parquet").read_bytes() == before
    names = (base / "results").files() if base.remote else {p.name: p for p in (base.local_path / "results").iterdir()}
    assert sorted(names) == ["kept.parquet"], "no temporary object is left behind"


def test_keys_and_names_that_leave_their_folder_are_refused(s3_storage, tmp_path):
    import boto3

    store = Location.parse(s3_storage)
    bucket, _, prefix = store.path[len("s3://"):].partition("/")
    endpoint = dict(part.split("=") for part in store.query.split("&"))["endpoint_override"]
    client = boto3.client("s3", endpoint_url=f"http://{endpoint}")
    client.put_object(Bucket=bucket, Key=f"{prefix}/runs/one/ok.txt", Body=b"ok")
    client.put_object(Bucket=bucket, Key=f"{prefix}/runs/one/a/../../../../escaped.txt", Body=b"planted")
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(StorageError, match="the key leaves its folder"):
        (store / "runs" / "one").fetch(dest)
    assert not list(tmp_path.rglob("escaped.txt"))
    for bad in ("..", "../x", "a/../../b", "."):
        with pytest.raises(StorageError, match="would leave that folder"):
            Location.parse(tmp_path) / bad
        with pytest.raises(StorageError, match="would leave that folder"):
            store / bad


def test_scratch_is_a_private_folder_of_this_user(tmp_path, monkeypatch):
    from trainables.storage import scratch_root

    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "fresh"))
    old = os.umask(0)
    try:
        root = scratch_root()
    finally:
        os.umask(old)
    assert root.is_dir() and (root.stat().st_mode & 0o777) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("LTKD_SCRATCH", str(shared))
    with pytest.raises(StorageError, match="is not a private folder of this user"):
        scratch_root()
    (tmp_path / "link").symlink_to(tmp_path / "fresh")
    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "link"))
    with pytest.raises(StorageError, match="is not a private folder of this user"):
        scratch_root()


def test_a_private_scratch_folder_is_new_and_only_this_user_enters_it(tmp_path, monkeypatch):
    from trainables.storage import private_scratch_folder

    monkeypatch.setenv("LTKD_SCRATCH", str(tmp_path / "scratch"))
    old = os.umask(0)
    try:
        first, second = private_scratch_folder("tune", "tiny"), private_scratch_folder("tune", "tiny")
    finally:
        os.umask(old)
    assert first != second and list(first.iterdir()) == []
    assert all((os.lstat(p).st_mode & 0o777) == 0o700 for p in (first, second, first.parent))
    # A kind folder that is a link (planted before the first driver ran) is refused.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "scratch" / "planted").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match="is not a private folder of this user"):
        private_scratch_folder("planted", "tiny")


def test_unused_old_mirrors_are_pruned_and_used_ones_kept(tmp_path):
    import subprocess
    import sys

    from trainables.storage import hold_scratch, prune_scratch

    kind = tmp_path / "mirror"
    folders = {name: kind / name for name in ("old-unused", "old-held", "recent", "mine")}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path\n"
                               "from trainables.storage import hold_scratch\n"
                               "hold_scratch(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)",
                               str(folders["old-held"])], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for name in ("old-unused", "recent"):
            (folders[name] / "data.bin").parent.mkdir(parents=True)
            (folders[name] / "data.bin").write_bytes(b"x")
            (folders[name] / ".in-use").touch()
        hold_scratch(folders["mine"])
        day_ago = time.time() - 2 * 24 * 3600
        for name in ("old-unused", "old-held", "mine"):
            os.utime(folders[name] / ".in-use", (day_ago, day_ago))
        assert prune_scratch(kind) == [folders["old-unused"]]
        assert sorted(p.name for p in kind.iterdir()) == ["mine", "old-held", "recent"]
    finally:
        holder.kill()
        holder.wait()
    assert prune_scratch(kind) == [folders["old-held"]]  # its process has ended


def test_files_written_to_shared_storage_are_readable_by_the_group(tmp_path):
    import pyarrow.fs as pafs

    from trainables.storage import publish

    old = os.umask(0o022)
    try:
        note = Location.parse(tmp_path) / "sweep" / "sweep.json"
        note.write_text("{}")
        publish(pafs.LocalFileSystem(), str(tmp_path / "sweep" / "results" / "a.parquet"), lambda sink: sink.write(b"x"))
    finally:
        os.umask(old)
    for path in (note.local_path, tmp_path / "sweep" / "results" / "a.parquet"):  # sweep files, Parquet results
        assert (path.stat().st_mode & 0o777) == 0o644
