"""The training engine: `fit(config, run_dir)` trains one teacher or student. It knows nothing about Ray.

`fit` reads like torchvision's classification reference: `build_run` (check the config, resume
the run folder's checkpoint, load the data, build the model, distiller, optimiser and teacher),
then per epoch `train_one_epoch` (shuffled augmented batches -> forward, and the teacher's for
distillation -> weighted cross-entropy + warmed-up distillation term -> SGD step), evaluation on
the balanced validation split (`validation_metrics`: val_acc, val_acc_head/medium/tail, what
searches select on) every epoch and on the balanced test set (`evaluate`, `summarize`: acc,
acc_head/medium/tail) every `test_every` epochs and at the last (None in between), both under
inference mode in `RunDevice.eval_batch_size` batches, `epoch_metrics`, `save_epoch` (an atomic checkpoint, then the metrics line), and the epoch's
metrics handed to a callback (the Ray trainable reports them to Tune; the command line prints them).

A student's teacher is one object (`Teacher.outputs(inputs, index, views)`): a `LiveTeacher` runs
the frozen model on every batch; a `CachedTeacher` reads its logits from the teacher-logit cache
(trainables/teacher_cache.py: every one of the 162 views of every training image, 25 for the
unflipped digits, computed once per teacher and kept next to its checkpoint), which students of
logit methods on in-memory CIFAR-style data may use; see `fit`'s `teacher_cache`. The cache
changes neither the batches nor the views a run sees (the data generator is consumed
identically), so a cached run equals a live-teacher run to float tolerance, and exact resume
holds for both.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainables import teacher_cache as tcache
from trainables.checkpoint import FORMAT_VERSION, CheckpointError, checkpoint_path, load_checkpoint, save_atomic
from trainables.config import TEACHER_CACHE_MODES, RunConfig
from trainables.data.groups import class_groups, group_names
from trainables.data.pipeline import FileBatches, Normalization, TensorBatches
from trainables.data.sources import LongTailedData, load_long_tailed
from trainables.device import RunDevice, configure, deterministic_warnings, resolve_device
from trainables.distillers import DistillContext, MethodSpec, get_method, warmup_factor
from trainables.errors import UserError
from trainables.metrics import GROUPS, TEST_METRICS, VALIDATION_METRICS
from trainables.models import ModelOutput, create_model
from trainables.run_files import (CHECKPOINT_NAME, CONFIG_NAME, DATA_NAME, METRICS_NAME, append_text,
                                  data_summary_text, metrics_lines, parse_metrics, read_metrics)
from trainables.storage import Location

# The run-folder names, `read_metrics`/`parse_metrics` and VALIDATION_METRICS live in the torch-free
# trainables/run_files.py and trainables/metrics.py; they stay importable from here for older callers.
__all__ = [
    "CONFIG_NAME", "DEFAULT_CHANNELS_LAST", "METRICS_NAME", "VALIDATION_METRICS",
    "CachedTeacher", "EpochCallback", "EpochTraining", "LiveTeacher",
    "NonFiniteLossError", "Run", "RunResult", "Teacher", "TeacherOptions", "build_run",
    "distillation_loss", "epoch_metrics", "evaluate", "fit", "optimizer_step", "parse_metrics", "read_metrics",
    "read_teacher", "save_epoch", "summarize", "teacher_cache_key", "teacher_model", "train_one_epoch",
    "validation_metrics",
]

EpochCallback = Callable[[dict[str, Any], Path], None]


class NonFiniteLossError(UserError):
    pass


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]  # the last epoch's
    history: list[dict[str, Any]]

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME


# ----------------------------------------------------------------------------------- memory layout


# The memory layout when the config leaves it open: channels-last, on CUDA and on CPU alike.
# On CPU (oneDNN) it was measured 1.17-1.40x faster than NCHW for a training step of every
# CIFAR student (resnet8/20/8x4, vgg8, wrn_40_1, ShuffleNetV1, MobileNetV2) and for the forward
# pass of every CIFAR teacher, at batch 64 on 2 cores, alternating the layouts; on CUDA it lets
# the convolutions use tensor cores without layout transposes.
DEFAULT_CHANNELS_LAST = True


# ----------------------------------------------------------------------------------- metrics


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches, num_classes: int, eval_groups: torch.Tensor,
             amp_dtype: torch.dtype | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy on a (balanced) test set and the mean group probability of the predictions.

    Counts and per-batch sums stay on the device until the end (no host sync per batch), in integer
    and float32 types every device has; the sums are added up in float64 on the host.
    """
    model.eval()
    n_eval_groups = int(eval_groups.max()) + 1
    correct = total = groups_dev = None
    batch_sums = []
    for inputs, labels in batches.ordered():
        with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(inputs)
        logits = logits.float()
        if groups_dev is None:
            groups_dev = eval_groups.to(logits.device)
            correct = torch.zeros(num_classes, dtype=torch.int64, device=logits.device)
            total = torch.zeros(num_classes, dtype=torch.int64, device=logits.device)
        correct.index_add_(0, labels, (logits.argmax(1) == labels).long())
        total.index_add_(0, labels, torch.ones_like(labels, dtype=torch.int64))
        probs = logits.softmax(1)
        per_group = torch.zeros(len(probs), n_eval_groups, device=probs.device).index_add_(1, groups_dev, probs)
        batch_sums.append(per_group.sum(0))
    if correct is None:
        return np.zeros(num_classes), np.zeros(n_eval_groups)
    group_prob = torch.zeros(n_eval_groups, dtype=torch.float64)
    for batch_sum in torch.stack(batch_sums).cpu().double():
        group_prob += batch_sum
    per_class = (correct.cpu().double() / total.cpu().double().clamp(min=1)).numpy()
    return per_class, (group_prob / max(int(total.sum()), 1)).numpy()


def summarize(per_class: np.ndarray | None, eval_groups: torch.Tensor) -> dict[str, float | None]:
    """Overall accuracy (mean over classes: the test set is balanced) and per-group accuracy, in %.

    All None for an epoch whose test set was not evaluated (per_class None: see RunConfig.test_every).
    """
    if per_class is None:
        return dict.fromkeys(TEST_METRICS)
    out = {"acc": float(per_class.mean() * 100)}
    groups = eval_groups.numpy()
    for g, name in enumerate(group_names(int(groups.max()) + 1)):
        out[f"acc_{name}"] = float(per_class[groups == g].mean() * 100)
    return out


def validation_metrics(model: torch.nn.Module, batches, num_classes: int, eval_groups: torch.Tensor,
                       amp_dtype: torch.dtype | None) -> dict[str, float | None]:
    """val_acc, val_acc_head, val_acc_medium, val_acc_tail (%) of `model` on the balanced validation split.

    The same `evaluate` as the test set (eval mode, no gradients, no augmentation) and the same
    groups (the 3-group split of the training counts); all None without a split (`batches` None).
    """
    out: dict[str, float | None] = dict.fromkeys(VALIDATION_METRICS)
    if batches is None:
        return out
    per_class, _ = evaluate(model, batches, num_classes, eval_groups, amp_dtype)
    for name, value in summarize(per_class, eval_groups).items():
        if f"val_{name}" in out:
            out[f"val_{name}"] = value
    return out


# ----------------------------------------------------------------------------------- teacher


def read_teacher(config: RunConfig, data: LongTailedData, files: str | Path | None = None) -> tuple[dict, dict]:
    """The teacher's checkpoint payload and config, after checking it was trained for this data.

    files: where the teacher's run folder is on this machine, when `config.teacher` names it
    elsewhere (a copy fetched from an object store); default `config.teacher`.
    """
    payload = load_checkpoint(files or config.teacher, what="teacher checkpoint")
    teacher_config = payload["config"]
    problems = []
    if teacher_config["dataset"] != config.dataset:
        problems.append(f"dataset {teacher_config['dataset']} (this run: {config.dataset})")
    if payload["num_classes"] != data.num_classes:
        problems.append(f"{payload['num_classes']} classes (this run: {data.num_classes})")
    if config.teacher_arch and teacher_config["arch"] != config.teacher_arch:
        problems.append(f"architecture {teacher_config['arch']} (asked: {config.teacher_arch})")
    if float(teacher_config["imbalance_factor"]) != float(config.imbalance_factor) or \
            teacher_config["data_seed"] != config.data_seed:
        problems.append(f"imbalance factor {teacher_config['imbalance_factor']:g} / data seed "
                        f"{teacher_config['data_seed']} (this run: {config.imbalance_factor:g} / {config.data_seed})")
    # A student selects on its validation split: its teacher must never have trained on those images.
    teacher_holdout = teacher_config.get("validation_per_class") or 0
    if teacher_holdout != config.validation_per_class:
        problems.append(f"validation_per_class {teacher_holdout} (this run: {config.validation_per_class})")
    elif payload.get("val_indices") is not None and \
            not np.array_equal(payload["val_indices"].numpy(), np.asarray(data.val_indices)):
        problems.append("another validation split (is --root the same copy of the dataset?)")
    if problems:
        raise CheckpointError(f"teacher checkpoint {config.teacher} was trained for " + "; ".join(problems)
                              + ": train a teacher for this setting or pass the matching one")
    if not payload.get("finished"):
        raise CheckpointError(f"teacher run {config.teacher} is not finished (epoch {payload['epoch']} of "
                              f"{teacher_config['epochs']}); resume it with `ltkd train teacher --out` first")
    return payload, teacher_config


def teacher_model(payload: dict, num_classes: int, device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    """The frozen teacher (eval mode, no gradients) from its checkpoint payload.

    Its random initialisation runs on a forked RNG: the weights are overwritten anyway, and a run
    must consume the global RNG identically whether it loads the teacher or reads the cache.
    """
    with torch.random.fork_rng(devices=[]):
        teacher = create_model(payload["config"]["arch"], num_classes)
    teacher.load_state_dict(payload["model"])
    teacher.to(device).eval()
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Teacher:
    """Where a student's teacher outputs come from, one batch at a time: a `LiveTeacher` or a `CachedTeacher`."""

    with_views = False  # whether `outputs` needs the batch's view ids (train_batches.epoch(..., with_views=True))
    group_prob: np.ndarray | None = None  # mean group probabilities of its test-set predictions

    def outputs(self, inputs: torch.Tensor, index: torch.Tensor, views: torch.Tensor | None) -> ModelOutput:
        """The teacher's outputs for a batch: `inputs`, the images `index` of the training set seen through `views`."""
        raise NotImplementedError


class LiveTeacher(Teacher):
    """The frozen teacher model, run on every batch (with its features when the distiller reads them)."""

    def __init__(self, model: torch.nn.Module, features: bool = False, group_prob: np.ndarray | None = None):
        self.model, self.features, self.group_prob = model, features, group_prob

    def outputs(self, inputs: torch.Tensor, index: torch.Tensor, views: torch.Tensor | None) -> ModelOutput:
        with torch.no_grad():
            if self.features:
                return self.model.forward_features(inputs)
            logits = self.model(inputs)
            return ModelOutput(logits, [], logits)


class CachedTeacher(Teacher):
    """The teacher's logits read from its logit cache by image index and view: no forward pass."""

    with_views = True

    def __init__(self, logits: tcache.TeacherLogits):
        self.logits = logits
        # measured when the cache was built (the teacher is never loaded by a cached run)
        self.group_prob = np.asarray(logits.extras["teacher_group_prob"], dtype=np.float64)

    def outputs(self, inputs: torch.Tensor, index: torch.Tensor, views: torch.Tensor | None) -> ModelOutput:
        logits = self.logits.lookup(index, views)
        return ModelOutput(logits, [], logits)


# ----------------------------------------------------------------------------------- teacher-logit cache


def teacher_cache_key(payload: dict, data: LongTailedData, batches: TensorBatches, normalization: Normalization,
                      eval_groups: torch.Tensor, dtype: str, autocast: torch.dtype | None = None) -> dict[str, Any]:
    """Everything that determines the cached logits (and the teacher's test-set group probabilities).

    autocast: the precision the teacher's forward passes ran in, the live teacher's in the same run
    (a float32 cache, as every CPU run builds, has no such key: its key is unchanged).
    """
    precision = {} if autocast is None else {"teacher_autocast": str(autocast).removeprefix("torch.")}
    return {**precision,
        "teacher_weights": tcache.digest_state_dict(payload["model"]),
        "teacher_arch": payload["config"]["arch"],
        "num_classes": data.num_classes,
        "dataset": data.dataset,
        "train_images": tcache.digest_array(data.train.images),
        "n_train": len(data.train),
        "image_size": batches.size,
        "padding": batches.padding,
        "flips": bool(batches.hflip),
        # how view ids are numbered (pipeline.encode_views); the key of a flipping (or unaugmented) run is unchanged
        "views": "row * (2p+1) + col" if batches.augment and not batches.hflip else "(row * (2p+1) + col) * 2 + flip",
        "normalization": [list(normalization.mean), list(normalization.std)],
        "test_images": tcache.digest_array(data.test.images),
        "test_labels": tcache.digest_array(data.test.labels),
        "eval_groups": eval_groups.tolist(),
        "dtype": dtype,
    }


@dataclass(frozen=True)
class TeacherOptions:
    """Where a student gets its teacher's outputs from: `fit`'s teacher_* arguments, checked (see `fit`)."""

    cache: str = "auto"  # "auto", "on" or "off"
    cache_dtype: str = "float32"
    cache_dir: str | Path | None = None  # root of the caches; None = logit_cache/ beside the teacher's checkpoint
    path: str | Path | None = None  # the teacher's run folder on this machine; None = config.teacher

    def __post_init__(self):
        if self.cache not in TEACHER_CACHE_MODES:
            raise UserError(f"teacher_cache must be one of {', '.join(TEACHER_CACHE_MODES)}, got {self.cache!r}")
        if self.cache_dtype not in tcache.DTYPES:
            raise UserError(f"teacher_cache_dtype must be one of {', '.join(tcache.DTYPES)}, "
                            f"got {self.cache_dtype!r}")


def _open_teacher_cache(run: Run, payload: dict, options: TeacherOptions) -> tcache.TeacherLogits | None:
    """The opened cache, building it when asked ("on") or when worth it ("auto"); None = run the teacher."""
    mode, dtype, batches, log = options.cache, options.cache_dtype, run.train_batches, run.log
    root = options.cache_dir if options.cache_dir is not None else \
        checkpoint_path(options.path or run.config.teacher).parent / tcache.CACHE_DIR_NAME
    key = teacher_cache_key(payload, run.data, batches, run.normalization, run.eval_groups, dtype, run.amp_dtype)
    folder = tcache.cache_folder(root, key)
    n_views = batches.n_views
    remaining_epochs = run.config.epochs - run.start_epoch
    # "auto" builds when the run itself pays for it (a build costs n_views teacher epochs, the run
    # saves one per epoch), or when someone already decided to cache this teacher.
    build = mode == "on" or remaining_epochs >= n_views or folder.exists()
    if not build:
        log(f"teacher: live forward pass (a cache of its {n_views} views per image costs {n_views} teacher epochs "
            f"and this run has {remaining_epochs}; teacher_cache='on' builds it anyway)")
        return None
    num_classes, run_device = run.num_classes, run.run_device
    shape = (batches.n_images, n_views, num_classes)

    def builder(sink):
        teacher = teacher_model(payload, num_classes, run_device.device, run.channels_last)
        # In the precision the live teacher runs in (its forward passes are under the run's autocast).
        with run_device.autocast():
            for block in tcache.teacher_view_logits(teacher, batches, batch_size=run_device.cache_build_batch_size()):
                sink(block)
        _, group_prob = evaluate(teacher, run.test_batches, num_classes, run.eval_groups, run.amp_dtype)
        del teacher
        run_device.empty_cache()
        return {"teacher_group_prob": [float(v) for v in group_prob], "built_on": run_device.name}

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if mode == "on":
            raise UserError(f"cannot create the teacher logit cache folder {folder} ({exc.strerror}); "
                            "pass a writable teacher_cache_dir") from None
        log(f"teacher: live forward pass (cannot create the cache folder {folder}: {exc.strerror})")
        return None
    cache = tcache.open_or_build(folder, key, shape, builder, dtype=dtype, log=log)
    copied = cache.to_device(run_device, run_device.cache_budget())
    log(f"teacher logits: from the cache {folder} (build {cache.build_id}, {cache.nbytes / 2**20:.0f} MiB {dtype}, "
        f"looked up {'on ' + run_device.name if copied else 'from host memory'})")
    return cache


def _open_teacher(run: Run, payload: dict, model: torch.nn.Module | None, cacheable: bool,
                  options: TeacherOptions) -> Teacher:
    """The run's teacher, once the run folder is written: its cache when usable, else the live model.

    model: the live teacher already loaded (it was needed to build the distiller), else None.
    """
    if cacheable:
        cache = _open_teacher_cache(run, payload, options)
        if cache is not None:
            return CachedTeacher(cache)
        model = teacher_model(payload, run.num_classes, run.run_device.device, run.channels_last)
    elif run.method.kind == "logit" and options.cache == "on":
        run.log("teacher: live forward pass (the cache needs in-memory data with the CIFAR augmentation)")
    group_prob = recorded_group_prob(payload, run.eval_groups)
    if group_prob is None:  # a checkpoint without it: one pass of the teacher over the test set
        _, group_prob = evaluate(model, run.test_batches, run.num_classes, run.eval_groups, run.amp_dtype)
    return LiveTeacher(model, run.needs_features, group_prob)


def recorded_group_prob(payload: dict, eval_groups: torch.Tensor) -> np.ndarray | None:
    """The teacher's mean group probabilities on the test set, as its own run measured them at its last
    epoch (the same test set and groups: read_teacher checked the data), so no student run repeats a
    pass of the teacher over the test set (minutes per trial on a CPU). None if not recorded."""
    history = payload.get("history") or []
    values = history[-1].get("group_prob") if history else None
    n_groups = int(eval_groups.max()) + 1
    if not isinstance(values, list) or len(values) != n_groups or \
            not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return np.asarray(values, dtype=np.float64)


# ----------------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything one run trains with, as `build_run` made it; `fit`'s epochs update it in place."""

    config: RunConfig  # resolved
    run_dir: Path
    log: Callable[[str], None]
    run_device: RunDevice  # the device and every decision that depends on it (trainables/device.py)
    channels_last: bool
    data: LongTailedData
    eval_groups: torch.Tensor  # group id of every class (3 groups of the training counts)
    generator: torch.Generator  # the data order and augmentation, saved with every checkpoint
    model: torch.nn.Module
    normalization: Normalization | None  # in-memory data only
    train_batches: TensorBatches | FileBatches
    test_batches: TensorBatches | FileBatches
    val_batches: TensorBatches | FileBatches | None  # None without a validation split
    method: MethodSpec  # the method's registry entry
    distiller: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler
    history: list[dict[str, Any]] = field(default_factory=list)  # every finished epoch's metrics
    start_epoch: int = 0  # epochs done before this process (0 = a fresh run)
    teacher: Teacher | None = None

    @property
    def device(self) -> torch.device:
        return self.run_device.device

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return self.run_device.amp_dtype

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def needs_features(self) -> bool:
        return bool(self.distiller is not None and self.distiller.needs_features)

    @property
    def finished(self) -> bool:  # only a resumed run can be (a config has epochs >= 1)
        return self.start_epoch >= self.config.epochs

    def close(self) -> None:
        """Stop the DataLoader workers of file-backed data (they live for the run)."""
        for batches in (self.train_batches, self.test_batches, self.val_batches):
            if isinstance(batches, FileBatches):
                batches.close()


def build_run(config: RunConfig, run_dir: str | Path, log: Callable[[str], None], teacher: TeacherOptions,
              trial_gpus: float | None = None, cpus: int | None = None) -> Run:
    """Check and resolve `config`, resume `run_dir`'s checkpoint when it holds the same run, and build the run.

    A finished run comes back as found (`Run.finished`; its run.json and metrics.jsonl
    rewritten): nothing else is loaded. Otherwise the run folder is written (run.json, the
    metrics so far) and the teacher opened last, as every input has been checked by then.
    The global RNG is seeded right before the model is created; the teacher never consumes it.
    trial_gpus: the GPU share of the Ray trial running it (None outside Ray; see resolve_device).
    cpus: the CPUs this process holds (a trial's), which bound its DataLoader workers; None: not limited.
    """
    config = config.resolved()
    run_dir = Path(run_dir)
    run_device = resolve_device(config.device, config.amp, trial_gpus=trial_gpus, deterministic=config.deterministic)
    configure(run_device)  # before the run allocates anything on the device: the memory cap
    device = run_device.device
    channels_last = DEFAULT_CHANNELS_LAST if config.channels_last is None else config.channels_last
    resume = _resume_payload(run_dir, config)
    data = load_long_tailed(config.dataset, config.root, config.imbalance_factor, config.data_seed,
                            train_indices=None if resume is None else resume["train_indices"].numpy(),
                            validation_per_class=config.validation_per_class,
                            val_indices=_recorded_val_indices(resume))
    num_classes = data.num_classes
    eval_groups = class_groups(data.counts, 3) if num_classes >= 3 else torch.zeros(num_classes, dtype=torch.long)

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = create_model(config.arch, num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    normalization, train_batches, test_batches, val_batches = _batches(config, data, run_device, channels_last, cpus)

    method = get_method(config.method)
    teacher_live, teacher_config, teacher_payload = None, None, None
    # Logit methods on in-memory data may read the teacher's logits from the cache: the teacher is
    # then only loaded (after the checks below) if the cache is not used.
    cacheable = method.kind == "logit" and isinstance(train_batches, TensorBatches) and teacher.cache != "off"
    if method.needs_teacher:
        teacher_payload, teacher_config = read_teacher(config, data, teacher.path)
        if not cacheable:
            teacher_live = teacher_model(teacher_payload, num_classes, device, channels_last)
    image_shape = (3, data.spec.image_size, data.spec.image_size)
    context = DistillContext(num_classes=num_classes, class_counts=tuple(data.counts), student=model,
                             teacher=teacher_live, teacher_arch=teacher_config["arch"] if teacher_config else "",
                             student_arch=config.arch, input_shape=image_shape)
    distiller = method.build(context, dict(config.hparams))
    if distiller is not None:
        distiller.to(device)
    if cacheable and distiller is not None and distiller.needs_features:
        raise RuntimeError(f"method '{method.name}' is registered as a logit method but its distiller reads features")

    parameters = list(model.parameters()) + (list(distiller.parameters()) if distiller is not None else [])
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                                fused=True if run_device.fused_optimizer else None)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.lr_milestones),
                                                     gamma=config.lr_decay)
    run = Run(config=config, run_dir=run_dir, log=log, run_device=run_device,
              channels_last=channels_last, data=data, eval_groups=eval_groups,
              generator=generator, model=model, normalization=normalization, train_batches=train_batches,
              test_batches=test_batches, val_batches=val_batches, method=method, distiller=distiller,
              optimizer=optimizer, scheduler=scheduler, scaler=run_device.grad_scaler())

    if resume is not None:
        _restore(run, resume)
        if run.finished:
            # A process killed between the last checkpoint and its metrics line left metrics.jsonl
            # short: rebuild it, or the run would never look finished to a sweep.
            _write_run_files(run_dir, config, run.history, data)
            log(f"{run_dir}: already finished ({run.start_epoch} epochs)")
            return run
        log(f"resuming {run_dir} from epoch {run.start_epoch}")
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: every input has been checked
    _write_run_files(run_dir, config, run.history, data)
    if method.needs_teacher:
        run.teacher = _open_teacher(run, teacher_payload, teacher_live, cacheable, teacher)
    return run


def _resume_payload(run_dir: Path, config: RunConfig) -> dict[str, Any] | None:
    """The run folder's checkpoint when it holds this very run; None for a fresh run folder."""
    if not (run_dir / CHECKPOINT_NAME).exists():
        return None
    # Resume only the very same run; never overwrite someone else's checkpoint.
    resume = load_checkpoint(run_dir, what="checkpoint in the run folder")
    stored = _stored_identity(resume)
    if stored != config.identity():
        changed = sorted(k for k in config.identity() if stored.get(k) != config.identity()[k])
        raise UserError(f"{run_dir} already holds a different run (differs in: {', '.join(changed)}); "
                        "choose another output folder")
    return resume


def loader_workers(asked: int, cpus: int | None) -> int:
    """DataLoader workers per file-backed loader: as asked, but no more than the CPUs the process
    holds beside its own (a Ray trial's `cpus_per_trial`; None: not limited)."""
    return asked if cpus is None else max(0, min(asked, cpus - 1))


def _batches(config: RunConfig, data: LongTailedData, run_device: RunDevice, channels_last: bool,
             cpus: int | None = None):
    """(normalization, train, test, validation batches): tensors on the device for in-memory data, else files."""
    device, pin = run_device.device, run_device.pin_memory
    eval_batch = run_device.eval_batch_size(data.spec.image_size, config.batch_size)
    if data.spec.in_memory:
        normalization = Normalization.of(data.train.images)
        train_batches = TensorBatches(data.train, config.batch_size, device, normalization, augment=config.augment,
                                      padding=data.spec.crop_padding, channels_last=channels_last,
                                      hflip=data.spec.hflip, pin_memory=pin)
        test_batches = TensorBatches(data.test, eval_batch, device, normalization, augment=False,
                                     channels_last=channels_last, pin_memory=pin)
        val_batches = TensorBatches(data.val, eval_batch, device, normalization, augment=False,
                                    channels_last=channels_last, pin_memory=pin) if len(data.val) else None
        return normalization, train_batches, test_batches, val_batches
    workers = loader_workers(config.num_workers, cpus)
    train_batches = FileBatches(data.train, config.batch_size, device, train=True, image_size=data.spec.image_size,
                                num_workers=workers, channels_last=channels_last, hflip=data.spec.hflip,
                                pin_memory=pin)
    # Evaluation passes are short and come once an epoch: half the workers (they live for the whole run).
    eval_workers = (workers + 1) // 2
    test_batches = FileBatches(data.test, eval_batch, device, train=False, image_size=data.spec.image_size,
                               num_workers=eval_workers, channels_last=channels_last, pin_memory=pin)
    val_batches = None if not len(data.val) else FileBatches(
        data.val, eval_batch, device, train=False, image_size=data.spec.image_size,
        num_workers=eval_workers, channels_last=channels_last, pin_memory=pin)
    return None, train_batches, test_batches, val_batches


def _restore(run: Run, resume: dict[str, Any]) -> None:
    """Continue from a checkpoint: weights, optimiser, schedule, scaler, both RNGs, history, epoch."""
    run.model.load_state_dict(resume["model"])
    if run.distiller is not None and resume.get("distiller") is not None:
        run.distiller.load_state_dict(resume["distiller"])
    run.optimizer.load_state_dict(_optimizer_state_for(run.optimizer, resume["optimizer"]))
    _restore_scheduler(run.scheduler, resume["scheduler"])
    # A checkpoint written without loss scaling (float32, bf16) holds an empty scaler state: an fp16
    # run resumed from it starts a fresh scale. A disabled scaler ignores any state.
    if resume.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(resume["scaler"])
    torch.set_rng_state(resume["rng"]["torch"])
    run.generator.set_state(resume["rng"]["data"])
    run.run_device.restore_rng(resume["rng"].get("cuda"), _saved_device_index(resume["config"].get("device", "")))
    run.history = list(resume["history"])
    run.start_epoch = resume["epoch"]


def _stored_identity(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config identity; one written before validation splits existed held none (0)."""
    identity = dict(payload["config_identity"])
    identity.setdefault("validation_per_class", 0)
    return identity


def _recorded_val_indices(payload: dict[str, Any] | None) -> np.ndarray | None:
    """The validation split a checkpoint recorded (None: draw it; a checkpoint before splits had none)."""
    if payload is None:
        return None
    recorded = payload.get("val_indices")
    return np.zeros(0, dtype=np.int64) if recorded is None else recorded.numpy()


def _rng_state(run: Run) -> dict[str, Any]:
    """The RNG states a checkpoint holds: the CPU's, the data generator's and the run's accelerator's."""
    return {"torch": torch.get_rng_state(), "data": run.generator.get_state(), "cuda": run.run_device.rng_states()}


def _saved_device_index(device: str) -> int:
    """Which of an older checkpoint's per-GPU RNG states was the run's: N of cuda:N, else 0."""
    return int(device.split(":")[1]) if device.startswith("cuda:") else 0


def _optimizer_state_for(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A saved optimizer state with this process's implementation choices (fused, foreach): a run
    checkpointed on a GPU may resume on a CPU, and the other way round."""
    groups = []
    for saved, live in zip(state["param_groups"], optimizer.param_groups):
        groups.append({**saved, **{k: live[k] for k in ("fused", "foreach") if k in live}})
    return {**state, "param_groups": groups}


def _scheduler_state(scheduler: torch.optim.lr_scheduler.MultiStepLR) -> dict[str, Any]:
    # MultiStepLR keeps its milestones in a Counter, which torch < 2.4 refuses to load with weights_only.
    return {**scheduler.state_dict(), "milestones": dict(scheduler.milestones)}


def _restore_scheduler(scheduler: torch.optim.lr_scheduler.MultiStepLR, state: dict[str, Any]) -> None:
    scheduler.load_state_dict({**state, "milestones": Counter(state["milestones"])})


# ----------------------------------------------------------------------------------- one epoch


def distillation_loss(model: torch.nn.Module, distiller: torch.nn.Module | None, teacher: Teacher | None,
                      inputs: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, views: torch.Tensor | None, *,
                      needs_features: bool, amp_dtype: torch.dtype | None, ce_weight: float,
                      distill_weight: float) -> torch.Tensor:
    """One batch's training loss: weighted cross-entropy plus the warmed-up distillation term.

    The teacher's outputs come from `teacher.outputs` (a cache lookup by image and view, or the
    live model under no_grad); None = no teacher. benchmarks/throughput.py times this very function.
    """
    with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if needs_features:
            student_out = model.forward_features(inputs)
        else:
            logits = model(inputs)
            student_out = ModelOutput(logits, [], logits)
        teacher_out = None if teacher is None else teacher.outputs(inputs, index, views)
    loss = ce_weight * F.cross_entropy(student_out.logits.float(), labels)
    if distiller is not None:
        loss = loss + distill_weight * distiller(student_out, teacher_out, labels)
    return loss


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@dataclass
class EpochTraining:
    """What `train_one_epoch` hands to `epoch_metrics`."""

    epoch: int  # 0-based
    loss_sum: torch.Tensor  # on the device: read back only for the metrics
    steps: int
    lr: float  # the epoch's learning rate (before the scheduler's step)
    distill_weight: float
    started: float  # time.perf_counter() at the epoch's start
    train_seconds: float


def train_one_epoch(run: Run, epoch: int, show_progress: bool = False) -> EpochTraining:
    """One pass over the shuffled, augmented training set: a loss and an SGD step per batch, then the LR schedule."""
    config, model = run.config, run.model
    model.train()
    distill_weight = warmup_factor(epoch, int(config.hparams["warmup_epochs"]))
    ce_weight = float(config.hparams["ce_weight"])
    started = time.perf_counter()
    loss_sum = torch.zeros((), device=run.device)
    steps = len(run.train_batches)
    # View ids only for the cache's lookups (FileBatches has none); the generator is consumed alike either way.
    with_views = run.teacher is not None and run.teacher.with_views
    batches = run.train_batches.epoch(run.generator, with_views=True) if with_views else \
        run.train_batches.epoch(run.generator)
    sync_every = run.run_device.sync_every
    watch = _NonFiniteWatch(epoch, steps, sync_every)
    for step, (inputs, labels, index, *views) in enumerate(batches, start=1):
        loss = distillation_loss(model, run.distiller, run.teacher, inputs, labels, index,
                                 views[0] if views else None, needs_features=run.needs_features,
                                 amp_dtype=run.amp_dtype, ce_weight=ce_weight, distill_weight=distill_weight)
        watch.check(step, loss)
        optimizer_step(loss, run.optimizer, run.scaler)
        loss_sum += loss.detach()
        if show_progress and (step % sync_every == 0 or step == steps):  # float(loss) waits for the device
            _progress(step, steps, epoch + 1, config.epochs, float(loss.detach()), started)
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    return EpochTraining(epoch, loss_sum, steps, lr, distill_weight, started, time.perf_counter() - started)


class _NonFiniteWatch:
    """Stops an epoch at a non-finite loss, naming the first bad step (kept on the device as (step, loss))."""

    def __init__(self, epoch: int, steps: int, check_every: int):
        self.epoch, self.steps, self.check_every = epoch, steps, check_every
        self.first_bad: torch.Tensor | None = None

    def check(self, step: int, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())
        marker = torch.stack([torch.full((), float(step), device=loss.device), loss.detach().float()])
        self.first_bad = torch.where(bad, marker, torch.full_like(marker, -1.0)) if self.first_bad is None else \
            torch.where((self.first_bad[0] < 0) & bad, marker, self.first_bad)
        # Read back every check_every steps only (RunDevice.sync_every: 1 on a CPU; a read-back per step would
        # stall the GPU queue); the error still names the first bad step.
        if step % self.check_every == 0 or step == self.steps:
            step_bad, value = self.first_bad.tolist()
            if step_bad >= 0:
                raise NonFiniteLossError(
                    f"loss became {value} at epoch {self.epoch + 1}, step {int(step_bad)} of {self.steps}; nothing of "
                    f"this epoch was saved (the last checkpoint is epoch {self.epoch}); lower the learning rate or "
                    "check the hyperparameters")


def _progress(step: int, steps: int, epoch: int, epochs: int, loss: float, started: float) -> None:
    width = 24
    done = int(width * step / steps)
    rate = step / max(time.perf_counter() - started, 1e-9)
    sys.stderr.write(f"\repoch {epoch}/{epochs} [{'#' * done}{'.' * (width - done)}] {step}/{steps} "
                     f"loss {loss:.4f} {rate:.1f} it/s")
    sys.stderr.flush()
    if step == steps:
        sys.stderr.write("\r" + " " * 90 + "\r")


# ----------------------------------------------------------------------------------- after the epoch


def epoch_metrics(run: Run, trained: EpochTraining, per_class: np.ndarray | None, group_prob: np.ndarray | None,
                  val_metrics: dict[str, float | None]) -> dict[str, Any]:
    """The epoch's metrics line, from its training and its evaluation (`evaluate`, `validation_metrics`).

    per_class, group_prob: None for an epoch that skipped the test set; its test metrics are then None.
    """
    config, teacher_group_prob = run.config, None if run.teacher is None else run.teacher.group_prob
    return {
        "epoch": trained.epoch + 1, "epochs": config.epochs,
        "train_loss": float(trained.loss_sum) / max(trained.steps, 1), "lr": trained.lr,
        **summarize(per_class, run.eval_groups),
        **val_metrics,
        "per_class_acc": None if per_class is None else [float(v * 100) for v in per_class],
        "group_prob": None if group_prob is None else [float(v) for v in group_prob],
        "teacher_group_prob": None if teacher_group_prob is None else [float(v) for v in teacher_group_prob],
        "distill_weight": trained.distill_weight if run.distiller is not None else 0.0,
        "epoch_seconds": time.perf_counter() - trained.started, "train_seconds": trained.train_seconds,
        "device": run.run_device.name,
        "resumed_from": run.start_epoch,  # epoch this process started at (0 = fresh); tells resumed runs apart
    }


def save_epoch(run: Run, metrics: dict[str, Any], checkpoint: bool = True) -> None:
    """Record a finished epoch: in the history, in an atomic checkpoint (when `checkpoint`), then as a
    metrics.jsonl line (a resumed run rewrites that file from its checkpoint's history)."""
    config, data, normalization, distiller = run.config, run.data, run.normalization, run.distiller
    run.history.append(metrics)
    if not checkpoint:
        _append_metrics(run.run_dir, metrics)
        return
    payload = {
        "format": "ltkd-sweep", "format_version": FORMAT_VERSION,
        "config": config.to_dict(), "config_identity": config.identity(),
        "epoch": metrics["epoch"], "finished": metrics["epoch"] == config.epochs,
        "num_classes": run.num_classes, "class_counts": list(data.counts),
        "train_indices": torch.as_tensor(data.train_indices, dtype=torch.int64),
        "val_indices": torch.as_tensor(data.val_indices, dtype=torch.int64),
        "normalization": None if normalization is None else [normalization.mean, normalization.std],
        "model": run.model.state_dict(), "distiller": None if distiller is None else distiller.state_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": _scheduler_state(run.scheduler),
        "scaler": run.scaler.state_dict(),
        "rng": _rng_state(run), "history": run.history,
    }
    save_atomic(payload, run.run_dir / CHECKPOINT_NAME)
    _append_metrics(run.run_dir, metrics, sync=True)  # the lines so far reach the disk with each checkpoint


def _format_epoch(m: dict[str, Any]) -> str:
    parts = [f"epoch {m['epoch']:>3}/{m['epochs']}", f"loss {m['train_loss']:.4f}", f"lr {m['lr']:.4g}"]
    if m.get("acc") is not None:
        parts += [f"acc {m['acc']:.2f}", *(f"{group} {m[f'acc_{group}']:.2f}" for group in GROUPS)]
    else:
        parts.append("test set not evaluated this epoch")
    if m.get("val_acc") is not None:
        groups = ", ".join(f"{group} {m[f'val_acc_{group}']:.2f}" for group in GROUPS)
        parts.append(f"val acc {m['val_acc']:.2f} ({groups})")
    parts.append(f"{m['epoch_seconds']:.1f}s")
    return "  ".join(parts)


def _write_run_files(run_dir: Path, config: RunConfig, history: list[dict[str, Any]], data: LongTailedData) -> None:
    """run.json (the resolved config), data.json (class counts: results records read them without
    torch) and metrics.jsonl rewritten from the checkpoint's history."""
    # Written whole under a temporary name of their own, then renamed (Location.write_text).
    Location.parse(run_dir / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    Location.parse(run_dir / DATA_NAME).write_text(data_summary_text(data.counts, len(data.train), len(data.val),
                                                                     len(data.test)))
    Location.parse(run_dir / METRICS_NAME).write_text(metrics_lines(history))


def _append_metrics(run_dir: Path, metrics: dict[str, Any], sync: bool = False) -> None:
    append_text(run_dir / METRICS_NAME, metrics_lines([metrics]), sync=sync)


# ----------------------------------------------------------------------------------- fit


def fit(config: RunConfig, run_dir: str | Path, callback: EpochCallback | None = None,
        log: Callable[[str], None] | None = print, *, teacher_cache: str | None = None,
        teacher_cache_dtype: str | None = None, teacher_cache_dir: str | Path | None = None,
        trial_gpus: float | None = None, teacher_path: str | Path | None = None,
        threads: int | None = None) -> RunResult:
    """Train one run into `run_dir`, resuming from its checkpoint when it holds the same run.

    `callback(metrics, checkpoint_path)` is called after every epoch, once the epoch's checkpoint is
    on disk; checkpoint_path is None after an epoch that wrote none (`config.checkpoint_every_seconds`:
    a checkpoint once that long has passed since the last, and after the last epoch). An exception in
    the callback stops the run; the last checkpoint stays.

    teacher_cache: None = the config's `teacher_cache`. Where a logit-method student on in-memory CIFAR-style data gets its teacher's
        logits. "auto": from the teacher-logit cache when one exists for this teacher, or when
        this run is long enough to pay for building it (at least as many epochs left as views
        per image: 162 for CIFAR's padding of 4); otherwise the live teacher. "on": from the cache, building it if needed
        (a sweep: many students share the teacher). "off": always the live teacher. Feature
        methods and file-backed (ImageNet) data always run the live teacher.
    teacher_cache_dtype: None = the config's `teacher_cache_dtype`. "float32" (equal to the live teacher
        to float tolerance) or "float16" (half the size; logits rounded to a relative 2^-11 ~ 4.9e-4).
    teacher_cache_dir: root of the caches (default: `logit_cache/` beside the teacher's checkpoint,
        i.e. on the sweep's shared storage).
    teacher_path: the teacher's run folder on this machine when `config.teacher` names it on an
        object store (the trainable fetches a copy); default `config.teacher`.
    trial_gpus: the GPU share of the Ray trial running this (None: not in Ray). A trial with none
        trains on the CPU even on a GPU node; one with a fraction caps its allocator to that share
        (trainables/device.py).
    threads: torch's CPU threads for this process (a sweep: the trial's CPUs; they also bound the
        DataLoader workers of file-backed data); None leaves torch's default.
    None of these change what a run computes beyond float tolerance: they are not part of its identity.
    """
    log = log or (lambda line: None)
    if threads is not None:
        torch.set_num_threads(threads)
    teacher = TeacherOptions(config.teacher_cache if teacher_cache is None else teacher_cache,
                             config.teacher_cache_dtype if teacher_cache_dtype is None else teacher_cache_dtype,
                             teacher_cache_dir, teacher_path)
    run = build_run(config, run_dir, log, teacher, trial_gpus, threads)
    try:
        if run.finished:
            return RunResult(run.run_dir, run.history[-1] if run.history else {}, run.history)
        with deterministic_warnings(run.run_device, log):
            _train_epochs(run, callback, log)
        return RunResult(run.run_dir, run.history[-1], run.history)
    finally:
        run.close()


def _train_epochs(run: Run, callback: EpochCallback | None, log: Callable[[str], None]) -> None:
    """The epochs left to train: train, evaluate, record, report."""
    config = run.config
    show_progress = config.progress and sys.stderr.isatty()
    checkpoint_seconds = config.checkpoint_every_seconds
    if checkpoint_seconds is None:
        checkpoint_seconds = run.run_device.checkpoint_seconds
    last_checkpoint = time.monotonic()
    for epoch in range(run.start_epoch, config.epochs):
        trained = train_one_epoch(run, epoch, show_progress)
        val_metrics = validation_metrics(run.model, run.val_batches, run.num_classes, run.eval_groups, run.amp_dtype)
        per_class = group_prob = None
        if config.evaluates_test_at(epoch + 1):
            per_class, group_prob = evaluate(run.model, run.test_batches, run.num_classes, run.eval_groups,
                                             run.amp_dtype)
        metrics = epoch_metrics(run, trained, per_class, group_prob, val_metrics)
        checkpoint = epoch + 1 == config.epochs or time.monotonic() - last_checkpoint >= checkpoint_seconds
        save_epoch(run, metrics, checkpoint)
        if checkpoint:
            last_checkpoint = time.monotonic()
        log(_format_epoch(metrics))
        if callback is not None:
            callback(metrics, run.run_dir / CHECKPOINT_NAME if checkpoint else None)
