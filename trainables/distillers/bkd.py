"""BKD (Zhang et al. 2023, Balanced KD for long-tailed learning).

The teacher's probabilities p_t = softmax(z_t / T) are reweighted per class by class-balanced
effective-number weights w_c = (1 - b) / (1 - b^{n_c}) (Cui et al. 2019), normalised to sum to C,
and renormalised to a distribution: p_t'_c = w_c p_t_c / sum_k w_k p_t_k. The loss is
T^2 KL(p_t' || softmax(z_s / T)), batch mean; the engine adds the (instance-balanced) CE.

Since p_t' = softmax(z_t / T + log w), the reweighting is a constant shift of the teacher's
scaled logits, which keeps it exact in log space. With uniform counts w = 1 and BKD = KD.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from trainables.distillers._common import check_logits, check_temperature, common_float, no_autocast
from trainables.distillers.base import DistillContext, Distiller
from trainables.distillers.kd import _kd_per_sample
from trainables.models.base import ModelOutput


def effective_number_weights(class_counts, beta_effective: float = 0.9999) -> torch.Tensor:
    """w_c = (1 - b) / (1 - b^{n_c}), normalised to sum to C; float64, shape (C,). b = 0 gives w = 1."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0:
        raise ValueError("bkd: class_counts is empty")
    if bool((counts < 1).any()):
        raise ValueError(f"bkd: every class needs at least one training sample, got counts {counts.tolist()[:10]}...")
    if not 0.0 <= beta_effective < 1.0:
        raise ValueError(f"bkd: beta_effective must be in [0, 1), got {beta_effective!r}")
    b = float(beta_effective)
    # 1 - b^n computed as -expm1(n log b) to keep precision for b close to 1.
    effective = -torch.expm1(counts * torch.log(torch.tensor(b, dtype=torch.float64))) if b > 0 else torch.ones_like(counts)
    weights = (1.0 - b) / effective
    return weights / weights.sum() * counts.numel()


def bkd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    class_counts: Sequence[int] | torch.Tensor,
    *,
    temperature: float,
    beta_effective: float = 0.9999,
) -> torch.Tensor:
    """T^2 KL(reweighted p_t || p_s), batch mean (without the CE; see the module docstring)."""
    check_logits(logits_student, logits_teacher, "bkd_loss")
    check_temperature(temperature, "bkd_loss")
    c = logits_student.shape[1]
    counts = class_counts if isinstance(class_counts, torch.Tensor) else torch.as_tensor(list(class_counts))
    if counts.dim() != 1 or counts.shape[0] != c:
        raise ValueError(
            f"bkd_loss: class_counts must have one entry per class, i.e. shape ({c},) for logits "
            f"{tuple(logits_student.shape)}, got shape {tuple(counts.shape)}"
        )
    log_w = effective_number_weights(counts.cpu(), beta_effective).log()
    return _bkd_from_log_weights(logits_student, logits_teacher, log_w, temperature)


def _bkd_from_log_weights(logits_student, logits_teacher, log_w, temperature):
    with no_autocast(logits_student.device):
        s, t = common_float(logits_student, logits_teacher)
        log_w = log_w.to(device=s.device, dtype=s.dtype)
        inv_t = 1.0 / float(temperature)
        with torch.no_grad():
            xt = t.detach() * inv_t + log_w
        return _kd_per_sample(s * inv_t, xt).mean() * (float(temperature) ** 2)


class BKD(Distiller):
    def __init__(self, class_counts, *, temperature: float, beta_effective: float = 0.9999, kd_weight: float = 1.0):
        super().__init__()
        check_temperature(temperature, "bkd")
        self.temperature = float(temperature)
        self.beta_effective = float(beta_effective)
        self.kd_weight = float(kd_weight)
        # Computed in float64 on the host. The buffer that moves with the distiller is float32 (what
        # float32 and half-precision logits use; MPS has no float64); float64 logits use the host copy.
        self.log_weights_float64 = effective_number_weights(class_counts, self.beta_effective).log()
        self.register_buffer("log_weights", self.log_weights_float64.float(), persistent=False)

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> torch.Tensor:
        zs, zt = student.logits, teacher.logits
        check_logits(zs, zt, "bkd")
        if zs.shape[1] != self.log_weights.shape[0]:
            raise ValueError(
                f"bkd: logits have {zs.shape[1]} classes (shape {tuple(zs.shape)}) but class_counts "
                f"has {self.log_weights.shape[0]} entries"
            )
        log_w = self.log_weights_float64 if torch.float64 in (zs.dtype, zt.dtype) else self.log_weights
        return self.kd_weight * _bkd_from_log_weights(zs, zt, log_w, self.temperature)

    def extra_repr(self) -> str:
        return f"T={self.temperature}, beta_effective={self.beta_effective}, kd_weight={self.kd_weight}"


def build(context: DistillContext, hp: dict) -> BKD:
    if len(context.class_counts) != context.num_classes:
        raise ValueError(
            f"bkd: class_counts has {len(context.class_counts)} entries but num_classes is {context.num_classes}"
        )
    return BKD(context.class_counts, temperature=hp["temperature"], beta_effective=hp["beta_effective"],
               kd_weight=hp["kd_weight"])
