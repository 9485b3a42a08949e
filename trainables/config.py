"""The typed configuration of one training run (a teacher or a student), validated at load."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from trainables.errors import UserError

# SPEC section 5. Milestones are fractions of the run's epochs, so a short run decays at the
# same points of its schedule as the 240-epoch recipe (150/180/210 of 240; 30/60/90 of 100).
RECIPES = {
    "cifar": dict(epochs=240, batch_size=64, lr=0.05, weight_decay=5e-4, milestones=(150 / 240, 180 / 240, 210 / 240)),
    "imagenet": dict(epochs=100, batch_size=512, lr=0.2, weight_decay=1e-4, milestones=(0.3, 0.6, 0.9)),
    # The embedded digits set has ~500 long-tailed training images: small batches give enough
    # steps for a teacher to learn it in well under a minute on a CPU.
    "digits": dict(epochs=12, batch_size=16, lr=0.05, weight_decay=5e-4, milestones=(150 / 240, 180 / 240, 210 / 240)),
}
# Warm-up defaults of the methods (DKD's 20 epochs) are given for their style's recipe (240
# epochs for CIFAR-style data, 100 for ImageNet); a run of another length scales them to the
# same share of its schedule, unless warmup_epochs is set explicitly.


def recipe_for(dataset_name: str, style: str) -> dict:
    return RECIPES.get(dataset_name, RECIPES[style])

ROLES = ("teacher", "student")
AMP_MODES = ("auto", "bf16", "fp16", "off")
# Fields that do not change what a run computes: a resumed run may differ in them.
NON_IDENTITY_FIELDS = ("root", "device", "num_workers", "amp", "channels_last", "progress", "teacher_cache",
                       "teacher_cache_dtype", "test_every", "checkpoint_every_seconds", "deterministic")
TEACHER_CACHE_MODES = ("auto", "on", "off")
TEACHER_CACHE_DTYPES = ("float32", "float16")  # trainables/teacher_cache.py DTYPES (kept torch-free here)
DEVICES = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:[0-9]+|mps")


def check_device(value: Any, key: str = "device") -> None:
    """`value` names a device a run can use; else a UserError naming `key` and the valid values."""
    if not (isinstance(value, str) and _DEVICE_PATTERN.fullmatch(value)):
        raise UserError(f"{key} must be one of {DEVICES}, got {value!r}")


def check_trial_gpus(gpus: Any, key: str = "gpus_per_trial") -> None:
    """A trial's GPU share: 0, a fraction, or one whole GPU (a run trains on one device)."""
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or not 0 <= gpus <= 1:
        raise UserError(f"{key} must be 0, a fraction of a GPU or 1, got {gpus!r}: a run trains on one device "
                        "(data-parallel training over several GPUs is not implemented)")


def check_test_every(value: Any, key: str = "test_every") -> None:
    """`value` is a whole number of epochs >= 1 between test-set evaluations; else a UserError naming `key`."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise UserError(f"{key} must be an integer >= 1 (evaluate the test set every that many epochs and at the "
                        f"last; 1 = every epoch), got {value!r}")


def check_checkpoint_every_seconds(value: Any, key: str = "checkpoint_every_seconds") -> None:
    """`value` is None (the device's default) or a number of seconds >= 0 between checkpoints; else a
    UserError naming `key`."""
    if value is None:
        return
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise UserError(f"{key} must be a number of seconds >= 0 (a checkpoint after an epoch once that long has "
                        f"passed since the last, and after the last epoch; 0 = every epoch), got {value!r}")


def check_validation_per_class(dataset: str, value: Any, key: str = "validation_per_class") -> None:
    """`value` (None: the dataset's default) is a usable validation holdout per class for a complete
    copy of `dataset`: an integer >= 0 that leaves every class a training image; else a UserError
    naming `key`, the dataset and the largest allowed value."""
    from trainables.data.sources import validation_per_class_problem

    if value is None:
        return
    problem = validation_per_class_problem(dataset, value)
    if problem:
        raise UserError(f"{key} {problem}")


def check_imbalance_factor(dataset: str, value: Any, key: str = "imbalance factor",
                           validation_per_class: int | None = None) -> None:
    """`value` is a usable imbalance factor for `dataset` (finite, >= 1, leaves every class an image)
    once `validation_per_class` images per class (None: the dataset's default) are held out for
    validation: the profile's n_max is then the nominal one less the holdout."""
    from trainables.data.long_tail import imbalance_factor_problem
    from trainables.data.sources import get_dataset, nominal_n_max

    spec = get_dataset(dataset)
    held_out = spec.validation_per_class if validation_per_class is None else int(validation_per_class)
    problem = imbalance_factor_problem(value, nominal_n_max(spec, held_out), dataset, held_out=held_out)
    if problem:
        raise UserError(f"{key} {problem}")


@dataclass
class RunConfig:
    """One training run. None means "the recipe's default for this dataset and model"."""

    dataset: str = "digits"
    root: str | None = None
    imbalance_factor: float = 100.0
    data_seed: int = 0  # seed of the validation split and the long-tailed subsample (fixed across training seeds)
    # Images per class held out of the balanced training pool as the validation split, before the
    # long-tailed subsample (which then has n_max = pool - holdout). None = the dataset's default
    # (cifar100 50, tinyimagenet 50, imagenet 20, digits 10); 0 = no split (the paper's protocol and counts).
    validation_per_class: int | None = None
    role: str = "teacher"  # teacher: cross-entropy on the long-tailed set; student: a method
    arch: str = "resnet20"
    method: str = "ce"
    hparams: dict[str, Any] = field(default_factory=dict)  # method hyperparameters over its defaults
    teacher: str | None = None  # teacher checkpoint (file or run folder), for methods with a teacher
    teacher_arch: str | None = None  # when set, the teacher checkpoint must be this architecture
    seed: int = 0  # training seed (initialisation, batch order, augmentation)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    lr_milestones: tuple[int, ...] | None = None  # epochs at which the lr is multiplied by lr_decay
    lr_decay: float = 0.1
    augment: bool = True
    device: str = "auto"  # auto (CUDA when present; the CPU in a Ray trial without a GPU), cpu, cuda, cuda:1, ...
    amp: str = "auto"  # auto = bf16 on CUDA when supported, fp16 otherwise on CUDA, off on CPU
    channels_last: bool | None = None  # None = the engine's default (on: measured faster on CUDA and CPU)
    num_workers: int = 4  # DataLoader workers for file-backed (ImageNet) data
    progress: bool = True  # progress bar within an epoch when attached to a terminal
    # Teacher-logit cache for logit methods on in-memory data: "auto" uses an existing cache or builds
    # one when the run is long enough to repay it, "on" always, "off" runs the live teacher.
    teacher_cache: str = "auto"
    # How the cache stores logits: float32, or float16 (half the size; logits rounded to a relative 2^-11).
    teacher_cache_dtype: str = "float32"
    # The test set is evaluated every test_every epochs and at the last; the validation split every
    # epoch (searches and ASHA read it). Evaluation consumes no RNG: this never changes the training.
    test_every: int = 1
    # A checkpoint (and, on an object store, its upload) after an epoch once this many seconds have passed
    # since the last one, and always after the last epoch; 0 = every epoch. A crash loses at most that much
    # training (a resumed run starts at its last checkpoint); short epochs (digits, small models on a GPU)
    # otherwise spend much of their time writing checkpoints. None = the device's default
    # (trainables/device.py: every epoch on a CPU, 60 s on an accelerator).
    checkpoint_every_seconds: float | None = None
    # Deterministic kernels (torch.use_deterministic_algorithms, cuDNN without autotuning, a fixed cuBLAS
    # workspace): the same run on the same hardware gives the same weights. Slower on a GPU.
    deterministic: bool = False

    # ------------------------------------------------------------------ loading and defaults

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown run setting '{unknown[0]}' (known: {', '.join(sorted(known))})")
        values = dict(values)
        if values.get("lr_milestones") is not None:
            values["lr_milestones"] = tuple(values["lr_milestones"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if values["lr_milestones"] is not None:
            values["lr_milestones"] = list(values["lr_milestones"])
        return values

    def identity(self) -> dict[str, Any]:
        """The settings that determine the result: two runs with equal identities compute the same thing."""
        values = self.to_dict()
        for name in NON_IDENTITY_FIELDS:
            values.pop(name)
        return values

    def evaluates_test_at(self, epoch: int) -> bool:
        """Whether the test set is evaluated after `epoch` (1-based): every test_every-th epoch and the last."""
        return epoch % self.test_every == 0 or epoch == self.epochs

    def resolved(self) -> "RunConfig":
        """A validated copy with every recipe default filled in and the method's hyperparameters completed."""
        from trainables.data.sources import get_dataset
        from trainables.methods import get_method
        from trainables.model_catalog import model_catalog

        models = model_catalog()  # a style and a learning rate: no need to import torch here
        dataset = get_dataset(self.dataset)
        if self.arch not in models:
            raise UserError(f"unknown architecture '{self.arch}' (known: {', '.join(models)})")
        if self.role not in ROLES:
            raise UserError(f"role must be teacher or student, got '{self.role}'")
        method = get_method(self.method)
        if self.role == "teacher" and method.needs_teacher:
            raise UserError(f"a teacher is trained with cross-entropy alone (method 'ce'), not '{self.method}'")
        if method.needs_teacher and not self.teacher:
            raise UserError(f"method '{self.method}' distils from a teacher: pass its checkpoint (--teacher DIR)")
        recipe = recipe_for(dataset.name, dataset.style)
        teacher_arch = self.teacher_arch or (_teacher_arch_on_disk(self.teacher) if self.teacher else None)
        spec = models[self.arch]
        out = dataclasses.replace(self)
        out.epochs = recipe["epochs"] if self.epochs is None else self.epochs
        out.batch_size = recipe["batch_size"] if self.batch_size is None else self.batch_size
        if self.lr is None:
            out.lr = spec.student_lr if (self.role == "student" and spec.style == dataset.style) else recipe["lr"]
        out.weight_decay = recipe["weight_decay"] if self.weight_decay is None else self.weight_decay
        check_validation_per_class(self.dataset, self.validation_per_class)
        if self.validation_per_class is None:
            out.validation_per_class = dataset.validation_per_class
        if self.lr_milestones is None:
            out.lr_milestones = tuple(sorted({max(1, round(f * out.epochs)) for f in recipe["milestones"]}))
        out.hparams = method.resolve(self.hparams, dataset_style=dataset.style,
                                     teacher_arch=teacher_arch or "", student_arch=self.arch, dataset=dataset.name)
        if "warmup_epochs" not in self.hparams and out.hparams["warmup_epochs"] > 0:
            scaled = round(out.hparams["warmup_epochs"] * out.epochs / RECIPES[dataset.style]["epochs"])
            out.hparams["warmup_epochs"] = max(1, scaled)
        out._check()
        return out

    def _check(self) -> None:
        def need(condition: bool, message: str) -> None:
            if not condition:
                raise UserError(message)

        need(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs}")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch_size must be an integer >= 1, got {self.batch_size}")
        need(_finite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}")
        need(_finite(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(_finite(self.weight_decay) and self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(_finite(self.lr_decay) and 0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1], got {self.lr_decay}")
        need(all(isinstance(m, int) and m >= 1 for m in self.lr_milestones),
             f"lr_milestones must be positive epoch numbers, got {self.lr_milestones}")
        check_validation_per_class(self.dataset, self.validation_per_class)
        check_imbalance_factor(self.dataset, self.imbalance_factor, validation_per_class=self.validation_per_class)
        check_device(self.device)
        need(self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}, got '{self.amp}'")
        need(self.teacher_cache in TEACHER_CACHE_MODES,
             f"teacher_cache must be one of {', '.join(TEACHER_CACHE_MODES)}, got '{self.teacher_cache}'")
        need(self.teacher_cache_dtype in TEACHER_CACHE_DTYPES,
             f"teacher_cache_dtype must be one of {', '.join(TEACHER_CACHE_DTYPES)}, got {self.teacher_cache_dtype!r}")
        check_test_every(self.test_every)
        check_checkpoint_every_seconds(self.checkpoint_every_seconds)
        for key in ("seed", "data_seed"):
            need(is_seed(getattr(self, key)), f"{key} must be an integer from 0 to {SEED_MAX} (2**63 - 1), "
                                              f"got {getattr(self, key)!r}")
        need(isinstance(self.deterministic, bool), f"deterministic must be true or false, got {self.deterministic!r}")


SEED_MAX = 2 ** 63 - 1  # seeds outside 0..SEED_MAX fail inside every trial (torch's and numpy's seeding)


def is_seed(value: object) -> bool:
    """Whether `value` is a seed every run accepts: an integer (not a bool) from 0 to SEED_MAX."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX


def _teacher_arch_on_disk(teacher: str) -> str | None:
    """The teacher's architecture from its run folder's run.json (so per-pair method defaults apply)."""
    import json
    from pathlib import Path

    folder = Path(teacher).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    try:
        return json.loads((folder / "run.json").read_text()).get("arch")
    except (OSError, ValueError):
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
