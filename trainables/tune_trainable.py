"""The Ray Tune trainable: adapts the engine's `fit` to Tune. The engine knows nothing about Ray.

A trial receives a TrialSpec (trainables/trial.py): its resolved RunConfig and its run folder on
the sweep's storage. The engine checkpoints into that folder every epoch (or every
checkpoint_every_seconds), so a retried or resumed trial continues from its last checkpoint; a finished
run is never trained again. On an object store the run trains in a scratch copy that is pushed back
after every epoch (trainables/storage.py), and
a student reads a fetched copy of its teacher (with the teacher's logit cache, which it shares
back when it built one). Only `ray.tune.report` is used here (SPEC section 7: any `ray.train.*`
call fails the trial under Train V2).
"""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainables.errors import UserError
from trainables.metrics import REPORTED
from trainables.run_files import CHECKPOINT_NAME, RUN_FILES, TRAIN_LOG_NAME, TrainLog
from trainables.storage import LocalCopy, Location, local_folder
from trainables.tracking import TensorBoardLog
from trainables.trial import TrialSpec

# What a trial's results are recorded with: record(spec, run_folder, status, started, error). The
# orchestrator passes one that writes the trial's Parquet file (orchestrator/records.py), so this
# module knows nothing of the results store.
Recorder = Callable[[TrialSpec, Path, str, float, "str | None"], None]
# What trains a run: the engine's `fit` (trainables/engine.py), or a stand-in with its signature
# (benchmarks/scale.py's simulated training, which sleeps instead of computing).
Fit = Callable[..., Any]


def reported_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The REPORTED metrics of an epoch; a metric that is None (no validation split) is left out."""
    return {name: metrics[name] for name in REPORTED if metrics.get(name) is not None}


def _teacher_files(trial: TrialSpec) -> Path | None:
    """A student's teacher on this machine: None (read it where the config says) or a fetched copy."""
    teacher = trial.teacher_dir
    if not teacher or not Location.parse(teacher).remote:
        return None
    # Build locks and half-written files are local matters of the node that made them.
    return local_folder(Location.parse(teacher), keep=lambda name: not name.endswith((".lock", ".tmp", ".part")))


def _share_teacher_caches(trial: TrialSpec, teacher_files: Path | None) -> None:
    """Push logit caches this node built to the store, so other nodes download instead of rebuilding."""
    from trainables.teacher_cache import CACHE_DIR_NAME, MANIFEST_NAME, is_data_file_name

    if teacher_files is None or not (teacher_files / CACHE_DIR_NAME).is_dir():
        return
    store = Location.parse(trial.teacher_dir) / CACHE_DIR_NAME
    for manifest in sorted((teacher_files / CACHE_DIR_NAME).glob(f"*/{MANIFEST_NAME}")):
        folder = store / manifest.parent.name
        text = manifest.read_text()
        if (folder / MANIFEST_NAME).read_text() == text:
            continue
        values = json.loads(text)
        data_file = values.get("data_file") if isinstance(values, dict) else None
        if not is_data_file_name(data_file):
            raise UserError(f"{manifest} names a data file that is not logits-<build id>.bin ({str(data_file)[:80]!r}); "
                            "remove that cache folder (it is rebuilt)")
        folder.push(manifest.parent, [data_file, MANIFEST_NAME])  # the data first: a manifest never points at nothing
        folder.delete_remote_files(name for name in folder.files() if is_data_file_name(name) and name != data_file)


def _sync_quietly(run: LocalCopy, names) -> None:
    """Push files of a failing trial when the store lets us; its own error matters more."""
    try:
        run.sync(names)
    except Exception:  # noqa: BLE001 (the trial's error is re-raised by the caller)
        pass


def run_trial(trial: TrialSpec, record: Recorder, fit: Fit | None = None) -> None:
    """Function trainable: trains `trial.run` in its run folder, reporting every epoch to Tune.

    `record` is called once the run is finished (status "completed") or has failed ("errored").
    `fit`: what trains the run (default: the engine's; torch is imported only then).
    """
    from ray import tune

    if fit is None:
        from trainables.engine import fit
    started = time.time()
    reported = []
    with LocalCopy(Location.parse(trial.run_dir)) as run:

        teacher_files = None
        log = TrainLog(run.path)  # the trial's own lines land in its run folder, not only in a node's Ray logs
        tensorboard = TensorBoardLog(run.path)

        def on_epoch(metrics: dict[str, Any], checkpoint_path) -> None:
            if run.lease.lost.is_set():  # another process was judged the folder's owner: it trains the run
                raise RuntimeError(f"run folder {trial.run_dir} was taken over by another process; this "
                                   "trial stops (a retry waits for that process)")
            if not reported:  # a cache this trial built is shared as soon as it is used, not hours later
                _share_teacher_caches(trial, teacher_files)
            tensorboard.epoch(metrics)
            # The checkpoint first: a resumed run rebuilds its metrics from the checkpoint's history. An
            # epoch that wrote none (checkpoint_every_seconds) pushes the rest: the stored one is current.
            run.sync([name for name in RUN_FILES if checkpoint_path is not None or name != CHECKPOINT_NAME]
                     + tensorboard.files())
            reported.append(metrics["epoch"])
            if metrics["epoch"] >= metrics["epochs"]:
                # Before the last report: a scheduler may stop the trial on it (ASHA stops every trial at
                # max_t), and a stopped trial's thread never comes back from tune.report.
                record(trial, run.path, "completed", started, None)
            tune.report(reported_metrics(metrics))

        try:
            teacher_files = _teacher_files(trial)
            log(f"trial {trial.trial_id} ({trial.stage}, cell {trial.cell}) on {socket.gethostname()}, pid {os.getpid()}")
            # The trial's GPU share decides its device (none: the CPU, even on a GPU node) and, for a
            # fraction, caps its memory: to Ray a fraction is only a scheduling label.
            result = fit(trial.run, run.path, callback=on_epoch, log=log, trial_gpus=trial.gpus,
                         teacher_path=teacher_files, threads=max(1, int(trial.cpus)))
        except Exception as exc:
            record(trial, run.path, "errored", started, f"{type(exc).__name__}: {exc}")
            log("failed:\n" + traceback.format_exc().rstrip())
            traceback.print_exc()
            _sync_quietly(run, [TRAIN_LOG_NAME])
            raise
        finally:
            tensorboard.close()
        if not reported:  # already finished earlier (resumed sweep): report its final epoch once
            run.sync(RUN_FILES[1:])  # fit rebuilt them from the checkpoint, which may lead them
            record(trial, run.path, "completed", started, None)
            tune.report(reported_metrics(result.metrics))
