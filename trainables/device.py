"""Where a run computes, decided once per run: every device question the engine asks is answered here.

`resolve_device` turns the run's `device` and `amp` settings and, inside a Ray trial, the trial's
GPU share into a `RunDevice`: the device with its index, whether it is an accelerator, the
autocast dtype and gradient scaler, pinning, the memory cap, RNG save and restore, evaluation and
cache-build batch sizes, how often the host reads values back from the device. No other module
asks torch.cuda anything.

Accelerator calls go through a `Backend` (torch.cuda). A test installs a fake one whose tensors
live on the CPU but which checks its arguments as torch does, so every accelerator branch (bf16
autocast, an fp16 scaler, the logit table on the device, the memory cap, per-device RNG states)
runs in CI on a machine without a GPU; `LTKD_ACCELERATOR_BACKEND=module:Class` installs one in
processes a test starts (Ray workers).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import warnings
from dataclasses import dataclass, field

import torch

from trainables.config import check_trial_gpus
from trainables.errors import UserError

BACKEND_ENV = "LTKD_ACCELERATOR_BACKEND"
# A trial on a fraction of a GPU caps its allocator a little below its share: the CUDA context
# (a few hundred MiB per process) is outside the cap.
MEMORY_SHARE_MARGIN = 0.95
# cuBLAS needs a fixed workspace to be deterministic (CUDA's documented setting).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
# Images per evaluation forward pass. CPU: 64, measured fastest (with 32) by benchmarks/evaluation.py
# on 2 cores (larger batches fall out of the caches). Accelerators: as many pixels as 1024 CIFAR
# images (1024 at 32x32, 256 at 64x64), or the training batch when larger: no activations are kept.
CPU_EVAL_BATCH = 64
GPU_EVAL_PIXELS = 1024 * 32 * 32
# Views per teacher forward pass when building the logit cache (CPU: larger was measured slower,
# resnet32x4 on 2 cores: 71 images/s at 64, 63 at 256).
CPU_CACHE_BUILD_BATCH = 64
GPU_CACHE_BUILD_BATCH = 1024
# Training steps between reads of device values on the host (the non-finite check, the progress bar):
# a read-back per step would stall an accelerator's queue.
ACCELERATOR_SYNC_EVERY = 32
# The checkpoint interval when a run leaves it open: every epoch on a CPU (epochs of seconds to
# minutes); 60 s on an accelerator, where CIFAR epochs take seconds and a checkpoint (and its upload
# to an object store) per epoch would be a large share of the run.
CPU_CHECKPOINT_SECONDS = 0.0
ACCELERATOR_CHECKPOINT_SECONDS = 60.0

_CUDA_NAME = re.compile(r"cuda(?::([0-9]+))?")


class Backend:
    """The accelerator calls a run makes, answered by torch.cuda."""

    kind = "cuda"

    def available(self) -> bool:
        return torch.cuda.is_available()

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def current_index(self) -> int:
        return torch.cuda.current_device()

    def tensor_device(self, index: int) -> torch.device:
        """Where a run on accelerator `index` keeps its tensors."""
        return torch.device("cuda", index)

    def bf16_supported(self, device: torch.device) -> bool:
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported()

    def set_memory_fraction(self, fraction: float, device: torch.device) -> None:
        torch.cuda.set_per_process_memory_fraction(fraction, device)

    def memory(self, device: torch.device) -> tuple[int, int, int]:
        """(free, total, reserved by this process) bytes."""
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total), int(torch.cuda.memory_reserved(device))

    def rng_state(self, device: torch.device) -> torch.Tensor:
        return torch.cuda.get_rng_state(device)

    def set_rng_state(self, state: torch.Tensor, device: torch.device) -> None:
        torch.cuda.set_rng_state(state, device)

    def empty_cache(self) -> None:
        torch.cuda.empty_cache()

    def synchronize(self, device: torch.device) -> None:
        torch.cuda.synchronize(device)

    def configure(self, deterministic: bool) -> None:
        """cuDNN: fixed algorithms when deterministic, else the fastest for each shape (benchmark)."""
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


_backend: Backend | None = None


def backend() -> Backend:
    """The accelerator backend of this process: torch.cuda, or the class named by LTKD_ACCELERATOR_BACKEND."""
    global _backend
    if _backend is None:
        spec = os.environ.get(BACKEND_ENV)
        if spec:
            module, _, name = spec.partition(":")
            _backend = getattr(importlib.import_module(module), name)()
        else:
            _backend = Backend()
    return _backend


def use_backend(replacement: Backend | None) -> Backend | None:
    """Install `replacement` (None: back to the default on next use); returns the one it replaces."""
    global _backend
    previous, _backend = _backend, replacement
    return previous


@dataclass(frozen=True)
class RunDevice:
    """One run's device decisions (see the module docstring); made by `resolve_device`."""

    device: torch.device  # where the run's tensors live
    accelerator: torch.device | None = None  # the accelerator with its index (cuda:0); None on CPU and MPS
    amp_dtype: torch.dtype | None = None  # autocast dtype of the forward passes; None: float32
    memory_fraction: float | None = None  # this process's allocator cap (a fraction of a GPU)
    deterministic: bool = False
    backend: Backend | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """What the run reports as its device: cuda:0, cpu, mps."""
        return str(self.accelerator if self.accelerator is not None else self.device)

    @property
    def is_accelerator(self) -> bool:
        return self.accelerator is not None

    @property
    def float64(self) -> bool:
        """Whether float64 tensors may live on the device (MPS has none)."""
        return self.device.type != "mps"

    @property
    def pin_memory(self) -> bool:
        """Host-to-device copies go through pinned memory (CUDA only: pinning needs a CUDA context)."""
        return self.device.type == "cuda"

    @property
    def sync_every(self) -> int:
        return ACCELERATOR_SYNC_EVERY if self.is_accelerator else 1

    @property
    def fused_optimizer(self) -> bool:
        """SGD as one fused kernel (and without a host sync for the fp16 scaler's inf check)."""
        return self.is_accelerator

    @property
    def checkpoint_seconds(self) -> float:
        """The checkpoint interval of a run that leaves it open (None)."""
        return ACCELERATOR_CHECKPOINT_SECONDS if self.is_accelerator else CPU_CHECKPOINT_SECONDS

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 autocast (bf16 and float32 need none: the scaler is then disabled)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def move(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the run's device; a host tensor travels from pinned memory without a host sync."""
        if tensor.device == self.device:
            return tensor
        if self.pin_memory and tensor.device.type == "cpu":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def eval_batch_size(self, image_size: int, train_batch_size: int) -> int:
        """Images per forward pass when evaluating (see CPU_EVAL_BATCH, GPU_EVAL_PIXELS)."""
        if not self.is_accelerator:
            return CPU_EVAL_BATCH
        return max(int(train_batch_size), GPU_EVAL_PIXELS // (image_size * image_size))

    def cache_build_batch_size(self) -> int:
        return GPU_CACHE_BUILD_BATCH if self.is_accelerator else CPU_CACHE_BUILD_BATCH

    def cache_budget(self) -> int | None:
        """Bytes a teacher-logit table may take on the device: a quarter of what this run may still
        allocate; None: the table stays in host memory (CPU, MPS)."""
        if not self.is_accelerator:
            return None
        free, total, reserved = self.backend.memory(self.accelerator)
        allowed = free if self.memory_fraction is None else min(free, self.memory_fraction * total - reserved)
        return max(0, int(allowed // 4))

    def rng_states(self) -> list[torch.Tensor]:
        """The accelerator's RNG state, for a checkpoint: this run's device only ([] off accelerators)."""
        return [self.backend.rng_state(self.accelerator)] if self.is_accelerator else []

    def restore_rng(self, saved: list[torch.Tensor] | None, saved_index: int = 0) -> None:
        """Set this run's accelerator RNG from a checkpoint's states.

        Checkpoints now hold one state, the run's device's; older ones held every visible GPU's,
        of which `saved_index` is the one the run trained on (0 when unknown). A run resumed on
        another device or on a machine with fewer GPUs gets that one state; a CPU run ignores them.
        """
        if not self.is_accelerator or not saved:
            return
        state = saved[saved_index] if saved_index < len(saved) else saved[0]
        self.backend.set_rng_state(state, self.accelerator)

    def empty_cache(self) -> None:
        if self.is_accelerator:
            self.backend.empty_cache()

    def synchronize(self) -> None:
        if self.is_accelerator:
            self.backend.synchronize(self.accelerator)


def memory_share(gpus: float | None) -> float | None:
    """The allocator cap of a trial holding `gpus` of a GPU: a little below a fraction, None for a whole one."""
    return gpus * MEMORY_SHARE_MARGIN if gpus is not None and 0 < gpus < 1 else None


def resolve_device(name: str, amp: str = "auto", *, trial_gpus: float | None = None, deterministic: bool = False,
                   accelerators: Backend | None = None) -> RunDevice:
    """The RunDevice of a run asking for device `name` with `amp`.

    trial_gpus: the GPU share of the Ray trial running it; None outside Ray (`ltkd train`). Ray
    shows a trial with a GPU share only its own GPU, as cuda:0, and a trial without one every GPU of
    its node: there `auto` means the CPU, and `cuda` is refused.
    """
    accelerators = accelerators or backend()
    if trial_gpus is not None:
        check_trial_gpus(trial_gpus)
    in_trial_without_gpu = trial_gpus == 0
    if name in ("cpu", "mps") or (name == "auto" and (in_trial_without_gpu or not accelerators.available())):
        if name == "auto" and trial_gpus and not accelerators.available():
            raise UserError(f"this trial holds {trial_gpus:g} GPU but CUDA is not available on its node; "
                            "check the node's GPUs and drivers, or set resources.gpus_per_trial = 0")
        return RunDevice(torch.device("cpu" if name == "auto" else name), deterministic=deterministic,
                         backend=accelerators)
    match = _CUDA_NAME.fullmatch(name) if name != "auto" else None
    if name != "auto" and match is None:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if in_trial_without_gpu:
        raise UserError(f"device '{name}' in a Ray trial that holds no GPU: set resources.gpus_per_trial "
                        "(1, or a fraction such as 0.25), or device = 'auto'")
    if not accelerators.available():
        raise UserError(f"device '{name}' asked for but CUDA is not available; use --device cpu or auto")
    index = int(match.group(1)) if match is not None and match.group(1) is not None else None
    if trial_gpus is not None and index not in (None, 0):
        raise UserError(f"device '{name}' inside a Ray trial: a trial sees only its own GPU, as cuda:0; "
                        "use device = 'cuda' or 'auto'")
    index = accelerators.current_index() if index is None else index
    count = accelerators.device_count()
    if index >= count:
        raise UserError(f"device 'cuda:{index}' asked for but {count} GPU{'s are' if count != 1 else ' is'} "
                        f"visible (cuda:0 to cuda:{count - 1})")
    accelerator = torch.device(accelerators.kind, index)
    return RunDevice(accelerators.tensor_device(index), accelerator, _amp_dtype(amp, accelerator, accelerators),
                     memory_share(trial_gpus), deterministic, accelerators)


def _amp_dtype(amp: str, accelerator: torch.device, accelerators: Backend) -> torch.dtype | None:
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    supported = accelerators.bf16_supported(accelerator)
    if amp == "bf16" and not supported:
        raise UserError(f"amp 'bf16' asked for but {accelerator} has no bfloat16; use amp fp16 or auto")
    return torch.bfloat16 if supported else torch.float16


def configure(run_device: RunDevice, log=None) -> None:
    """Set this process up for the run: determinism switches, cuDNN's algorithm choice, the memory cap.

    Every switch is set both ways, as a Ray worker process serves one run after another.
    """
    if run_device.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    # warn_only: an operation without a deterministic kernel warns (deterministic_warnings says which)
    # instead of stopping the run.
    torch.use_deterministic_algorithms(run_device.deterministic, warn_only=True)
    if run_device.is_accelerator:
        run_device.backend.configure(run_device.deterministic)
        if run_device.memory_fraction is not None:
            run_device.backend.set_memory_fraction(run_device.memory_fraction, run_device.accelerator)


@contextlib.contextmanager
def deterministic_warnings(run_device: RunDevice, log):
    """Log, once each, the operations that had no deterministic kernel in a deterministic run."""
    if not run_device.deterministic:
        yield
        return
    seen: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                text = str(warning.message)
                if "deterministic" in text and text not in seen:
                    seen.add(text)
                    log(f"deterministic run, not bitwise reproducible: {text.splitlines()[0]}")
                elif "deterministic" not in text:
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
