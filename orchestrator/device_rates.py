"""Training throughput per accelerator kind, in multiply-accumulates (MACs) per second: the rate at
which `ltkd plan` prices the MACs of a sweep whose trials run on GPUs (`--device-kind KIND`).

No torch here: pricing a GPU config does not time anything on this machine.

Where each number comes from (`DeviceRate.source` says it for every kind):

- "measured by benchmarks/gpu_check.py on <device>": a rate timed on that card. None exists yet (no
  GPU has been available to this project); add one to `MEASURED` and it replaces the estimate below.
- "public <precision> peak x E% efficiency": the card's dense (no sparsity) tensor-core peak for the
  precision our training uses on it (`amp = "auto"`: bf16 where the card has it, fp16 on V100 and
  T4), from NVIDIA's datasheet, halved (one MAC = 2 FLOPs), times `EFFICIENCY`.

EFFICIENCY is a stated assumption, not a measurement: 2% of peak, for every kind. The sweeps train
small CIFAR-sized convnets at batch 64 in eager PyTorch; their GEMMs are small (resnet8x4's 256-channel
convolutions at batch 64 are 4,096 x 256 x 2,304), so each step is bound by kernel launches, the
optimizer and memory traffic (batch norm, activations), not by tensor-core math. Such work reaches a
few percent of peak at best. 2% puts one H100 at 9.9 TMAC/s: a resnet8x4 training step at batch 64
(3 x 64 x 177 M MACs) every 3.4 ms, aggregated over the trials sharing the GPU. Being one share for
every card, it flatters the largest cards (H100, H200), whose peak small kernels fill least, and
undercharges models with few MACs and many layers (mobilenetv2, shufflenetv1), whose steps cost
launches rather than MACs. Treat the estimate as an order of magnitude until a measured rate exists.
"""
from __future__ import annotations

from dataclasses import dataclass

EFFICIENCY = 0.02  # share of the dense tensor-core peak that small-convnet training reaches (see above)
CPU_KIND = "cpu"  # not in the table: measured on this machine (orchestrator/dry_run.measured_rate)
DEFAULT_GPU_KIND = "h100"  # what a config with resources.gpus_per_trial > 0 is priced at by default
MEASURE_SCRIPT = "benchmarks/gpu_check.py"


@dataclass(frozen=True)
class DeviceRate:
    kind: str  # the name --device-kind takes (lowercase)
    card: str  # the card the numbers are for
    precision: str  # what autocast trains in on it: "bf16", or "fp16" on cards without bf16
    peak_tflops: float  # dense tensor-core peak at that precision, TFLOP/s (no structured sparsity)
    peak_source: str  # where the peak is published
    measured: tuple[float, str] | None = None  # (MAC/s, device name) from MEASURE_SCRIPT; preferred when set

    @property
    def macs_per_second(self) -> float:
        if self.measured is not None:
            return self.measured[0]
        return self.peak_tflops * 1e12 / 2 * EFFICIENCY

    @property
    def source(self) -> str:
        if self.measured is not None:
            return f"measured by {MEASURE_SCRIPT} on {self.measured[1]}"
        return f"public {self.precision} peak x {EFFICIENCY * 100:g}% efficiency"


# kind -> (MAC/s, the device it ran on, as torch.cuda.get_device_name says it), from MEASURE_SCRIPT
# (not written yet): training MACs per second of one whole GPU, counted as dry_run.epoch_macs counts
# them (3 forward passes per trained image), with as many trials sharing it as the sweeps run.
MEASURED: dict[str, tuple[float, str]] = {}

_PEAKS = (
    # kind, card, precision, dense TFLOP/s, source (datasheet figures "with sparsity" are halved)
    ("h200", "NVIDIA H200 SXM", "bf16", 989.0, "NVIDIA H200 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity"),
    ("h100", "NVIDIA H100 SXM", "bf16", 989.0, "NVIDIA H100 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity"),
    ("h100-pcie", "NVIDIA H100 PCIe", "bf16", 756.0,
     "NVIDIA H100 datasheet: BF16 Tensor Core 1,513 TFLOPS with sparsity"),
    ("a100", "NVIDIA A100 (SXM or PCIe, 40 or 80 GB)", "bf16", 312.0,
     "NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOPS (624 with sparsity)"),
    ("l40s", "NVIDIA L40S", "bf16", 362.0, "NVIDIA L40S datasheet: BF16 Tensor Core 733 TFLOPS with sparsity"),
    ("a10", "NVIDIA A10", "bf16", 125.0, "NVIDIA A10 datasheet: BF16 Tensor Core 125 TFLOPS (250 with sparsity)"),
    ("l4", "NVIDIA L4", "bf16", 121.0, "NVIDIA L4 datasheet: BF16 Tensor Core 242 TFLOPS with sparsity"),
    ("v100", "NVIDIA V100 SXM2", "fp16", 125.0, "NVIDIA V100 datasheet: Tensor Performance 125 TFLOPS (no bf16)"),
    ("t4", "NVIDIA T4", "fp16", 65.0, "NVIDIA T4 datasheet: Mixed Precision (FP16/FP32) 65 TFLOPS (no bf16)"),
)

RATES: dict[str, DeviceRate] = {
    kind: DeviceRate(kind, card, precision, peak, source, MEASURED.get(kind))
    for kind, card, precision, peak, source in _PEAKS
}


def known_kinds() -> list[str]:
    """Every name --device-kind takes: the table's kinds, then cpu."""
    return [*RATES, CPU_KIND]


def check_kind(kind: str | None) -> str | None:
    """`kind` lowercased, or None for the default; an unknown kind is a UserError naming the known ones."""
    from trainables.errors import UserError

    if kind is None:
        return None
    name = kind.strip().lower()
    if name not in RATES and name != CPU_KIND:
        raise UserError(f"unknown device kind '{kind}' for --device-kind (known: {', '.join(known_kinds())})")
    return name


def default_kind(gpus_per_trial: float) -> str:
    """The kind a config is priced at without --device-kind: h100 when its trials hold GPUs, else cpu."""
    return DEFAULT_GPU_KIND if gpus_per_trial > 0 else CPU_KIND
