"""The Ray Tune trainable: adapts the engine's `fit` to Tune. The engine knows nothing about Ray.

A trial's config carries a complete RunConfig (as a dict) and the run folder on the sweep's
storage. The engine checkpoints into that folder every epoch, so a retried or resumed trial
continues from its last epoch; a finished run is never trained again. On an object store the
run trains in a scratch copy that is pushed back after every epoch (trainables/storage.py), and
a student reads a fetched copy of its teacher (with the teacher's logit cache, which it shares
back when it built one). Only `ray.tune.report` is used here (SPEC section 7: any `ray.train.*`
call fails the trial under Train V2).
"""
from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from trainables.storage import LocalCopy, Location, local_folder

# Scalar metrics reported to Tune each epoch (lists stay in the run folder and the Parquet store): the
# test metrics and, beside them, the validation split's (what searches maximise with selection "val").
REPORTED = ("epoch", "epochs", "acc", "acc_head", "acc_medium", "acc_tail", "val_acc", "val_acc_head",
            "val_acc_medium", "val_acc_tail", "train_loss", "lr", "epoch_seconds")


def reported_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The REPORTED metrics of an epoch; a metric that is None (no validation split) is left out."""
    return {name: metrics[name] for name in REPORTED if metrics.get(name) is not None}


def trial_record(trial: dict[str, Any], status: str, started: float, error: str | None = None,
                 run_folder: Path | None = None):
    """The results record of a trial from what its run folder holds (used by the driver too)."""
    from results.store import TrialRecord, code_version
    from trainables.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
    from trainables.engine import METRICS_NAME, read_metrics

    if run_folder is None:
        location = Location.parse(trial["run_dir"])
        if location.remote:
            with tempfile.TemporaryDirectory(prefix="ltkd-record-") as copy:
                location.fetch(Path(copy), keep=lambda name: name in (METRICS_NAME, CHECKPOINT_NAME))
                return trial_record(trial, status, started, error, run_folder=Path(copy))
        run_folder = location.local_path
    history = read_metrics(run_folder)
    try:
        class_counts = load_checkpoint(run_folder).get("class_counts")
    except CheckpointError:
        class_counts = None
    return TrialRecord(
        sweep=trial["sweep"], trial_id=trial["trial_id"], stage=trial["stage"], cell=trial["cell"],
        config=trial["resolved_run"], history=history, status=status, wall_seconds=time.time() - started,
        device=history[-1]["device"] if history else "", code_version=code_version(), error=error,
        study=trial.get("study"), optuna_trial=trial.get("optuna_trial"), class_counts=class_counts,
        # How this configuration was chosen (orchestrator/plan.py; absent from older trial dicts).
        selection=trial.get("selection"), teacher_seed=trial.get("teacher_seed"),
        search_trials=trial.get("search_trials"), objective_metric=trial.get("objective_metric"),
    )


def _teacher_files(trial: dict[str, Any]) -> Path | None:
    """A student's teacher on this machine: None (read it where the config says) or a fetched copy."""
    teacher = trial.get("teacher_dir")
    if not teacher or not Location.parse(teacher).remote:
        return None
    # Build locks and half-written files are local matters of the node that made them.
    return local_folder(Location.parse(teacher), keep=lambda name: not name.endswith((".lock", ".tmp", ".part")))


def _share_teacher_caches(trial: dict[str, Any], teacher_files: Path | None) -> None:
    """Push logit caches this node built to the store, so other nodes download instead of rebuilding."""
    from trainables.teacher_cache import CACHE_DIR_NAME, MANIFEST_NAME

    if teacher_files is None or not (teacher_files / CACHE_DIR_NAME).is_dir():
        return
    store = Location.parse(trial["teacher_dir"]) / CACHE_DIR_NAME
    for manifest in sorted((teacher_files / CACHE_DIR_NAME).glob(f"*/{MANIFEST_NAME}")):
        folder = store / manifest.parent.name
        text = manifest.read_text()
        if (folder / MANIFEST_NAME).read_text() == text:
            continue
        data_file = json.loads(text)["data_file"]
        folder.push(manifest.parent, [data_file, MANIFEST_NAME])  # the data first: a manifest never points at nothing
        folder.delete_remote_files(name for name in folder.files()
                                   if name.startswith("logits-") and name != data_file)


def run_trial(trial: dict[str, Any]) -> None:
    """Function trainable: trial = {"run": RunConfig dict, "run_dir": location, "sweep_dir": location, ...}."""
    import torch
    from ray import tune

    from results.store import write_trial
    from trainables.config import RunConfig
    from trainables.engine import CONFIG_NAME, METRICS_NAME, fit
    from trainables.checkpoint import CHECKPOINT_NAME

    torch.set_num_threads(max(1, int(trial.get("cpus", 1))))
    config = RunConfig.from_dict(trial["run"])
    started = time.time()
    reported = []
    with LocalCopy(Location.parse(trial["run_dir"])) as run:

        teacher_files = None

        def record_completed() -> None:
            write_trial(trial["sweep_dir"], trial_record(trial, "completed", started, run_folder=run.path))

        def on_epoch(metrics: dict[str, Any], checkpoint_path) -> None:
            if run.lease.lost.is_set():  # another process was judged the folder's owner: it trains the run
                raise RuntimeError(f"run folder {trial['run_dir']} was taken over by another process; this "
                                   "trial stops (a retry waits for that process)")
            if not reported:  # a cache this trial built is shared as soon as it is used, not hours later
                _share_teacher_caches(trial, teacher_files)
            # The checkpoint first: a resumed run rebuilds its metrics from the checkpoint's history.
            run.sync([CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME])
            reported.append(metrics["epoch"])
            if metrics["epoch"] >= metrics["epochs"]:
                # Before the last report: a scheduler may stop the trial on it (ASHA stops every trial at
                # max_t), and a stopped trial's thread never comes back from tune.report.
                record_completed()
            tune.report(reported_metrics(metrics))

        try:
            gpus = float(trial.get("gpus", 0))
            # A fraction of a GPU is only a scheduling label to Ray: cap this trial's memory to its share.
            memory_share = gpus * 0.95 if 0 < gpus < 1 else None
            teacher_files = _teacher_files(trial)
            result = fit(config, run.path, callback=on_epoch, log=None, cuda_memory_fraction=memory_share,
                         teacher_path=teacher_files)
        except Exception as exc:
            record = trial_record(trial, "errored", started, f"{type(exc).__name__}: {exc}", run_folder=run.path)
            write_trial(trial["sweep_dir"], record)
            traceback.print_exc()
            raise
        if not reported:  # already finished earlier (resumed sweep): report its final epoch once
            run.sync([CONFIG_NAME, METRICS_NAME])  # fit rebuilt them from the checkpoint, which may lead them
            record_completed()
            tune.report(reported_metrics(result.metrics))
