"""A fake CUDA for tests on machines without a GPU: tensors stay on the CPU, arguments are checked as torch.cuda checks them.

Installed in this process with `trainables.device.use_backend(FakeCuda(...))`, or in processes a
test starts (Ray workers) with LTKD_ACCELERATOR_BACKEND=tests.fake_accelerator:FakeCuda. Its GPU
count is LTKD_FAKE_GPUS (default 1), narrowed by CUDA_VISIBLE_DEVICES as torch's is (Ray sets it
for a trial holding a GPU share). With LTKD_FAKE_ACCELERATOR_LOG=DIR every call is also appended
to DIR/<pid>.jsonl, so a test can read what each trial asked.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from trainables.device import Backend

GIB = 1 << 30


class FakeCuda(Backend):
    kind = "cuda"

    def __init__(self, count: int | None = None, bf16: bool = True, total_bytes: int = 80 * GIB):
        if count is None:
            count = int(os.environ.get("LTKD_FAKE_GPUS", "1"))
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None:
                count = min(count, len([d for d in visible.split(",") if d.strip()]))
        self.count, self.bf16, self.total_bytes = count, bf16, total_bytes
        self.calls: list[tuple] = []
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}
        self.memory_fraction: dict[int, float] = {}
        self.log_dir = os.environ.get("LTKD_FAKE_ACCELERATOR_LOG")

    def _record(self, name: str, *args) -> None:
        self.calls.append((name, *args))
        if self.log_dir:
            shown = [str(a) if isinstance(a, torch.device) else a for a in args if not isinstance(a, torch.Tensor)]
            with open(Path(self.log_dir) / f"{os.getpid()}.jsonl", "a") as f:
                f.write(json.dumps({"call": name, "args": shown}) + "\n")

    def _index(self, device) -> int:
        """As torch's _get_device_index: an indexed cuda device (or an int) naming a visible GPU."""
        if isinstance(device, torch.device):
            if device.type != "cuda" or device.index is None:
                raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
            device = device.index
        if not 0 <= device < self.count:
            raise RuntimeError("CUDA error: invalid device ordinal")
        return device

    def available(self) -> bool:
        return self.count > 0

    def device_count(self) -> int:
        return self.count

    def current_index(self) -> int:
        self._record("current_index")
        return 0

    def tensor_device(self, index: int) -> torch.device:
        self._index(index)
        return torch.device("cpu")

    def bf16_supported(self, device: torch.device) -> bool:
        self._index(device)
        return self.bf16

    def set_memory_fraction(self, fraction: float, device: torch.device) -> None:
        index = self._index(device)
        if not 0 <= fraction <= 1:
            raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
        self.memory_fraction[index] = fraction
        self._record("set_memory_fraction", fraction, device)

    def memory(self, device: torch.device) -> tuple[int, int, int]:
        self._index(device)
        self._record("memory", device)
        return self.total_bytes, self.total_bytes, 0

    def rng_state(self, device: torch.device) -> torch.Tensor:
        self._record("rng_state", device)
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state: torch.Tensor, device: torch.device) -> None:
        index = self._index(device)
        if state.dtype != torch.uint8:
            raise TypeError(f"RNG state must be a torch.ByteTensor, got {state.dtype}")
        self.states[index] = state.clone()
        self._record("set_rng_state", device)

    def empty_cache(self) -> None:
        self._record("empty_cache")

    def synchronize(self, device: torch.device) -> None:
        self._index(device)

    def configure(self, deterministic: bool) -> None:
        self._record("configure", deterministic)


def read_call_logs(folder: str | Path) -> dict[int, list[dict]]:
    """pid -> the calls that process made (LTKD_FAKE_ACCELERATOR_LOG)."""
    return {int(path.stem): [json.loads(line) for line in path.read_text().splitlines()]
            for path in Path(folder).glob("*.jsonl")}
