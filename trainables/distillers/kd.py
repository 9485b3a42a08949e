"""KD (Hinton et al. 2015): T^2 KL(softmax(z_t / T) || softmax(z_s / T)), batch mean."""
from __future__ import annotations

import torch

from trainables.distillers._common import check_logits, check_temperature, common_float, no_autocast
from trainables.distillers.base import DistillContext, Distiller
from trainables.models.base import ModelOutput


def _kd_per_sample(xs: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """KL(softmax(xt) || softmax(xs)) per row; xt is a constant. Finite for any logit magnitude."""
    with torch.no_grad():
        log_pt = torch.log_softmax(xt.detach(), dim=1)
        pt = log_pt.exp()
        neg_entropy = (pt * log_pt).sum(dim=1)  # pt = 0 only where log_pt is finite (<= 0)
    log_ps = torch.log_softmax(xs, dim=1)
    return neg_entropy - (pt * log_ps).sum(dim=1)


def kd_loss(logits_student: torch.Tensor, logits_teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(z_t / T) || softmax(z_s / T)), batch mean; float32 at least; teacher detached."""
    check_logits(logits_student, logits_teacher, "kd_loss")
    check_temperature(temperature, "kd_loss")
    with no_autocast(logits_student.device):
        s, t = common_float(logits_student, logits_teacher)
        inv_t = 1.0 / float(temperature)
        return _kd_per_sample(s * inv_t, t * inv_t).mean() * (float(temperature) ** 2)


class KD(Distiller):
    def __init__(self, *, temperature: float, kd_weight: float = 1.0):
        super().__init__()
        check_temperature(temperature, "kd")
        self.temperature = float(temperature)
        self.kd_weight = float(kd_weight)

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> torch.Tensor:
        return self.kd_weight * kd_loss(student.logits, teacher.logits, self.temperature)

    def extra_repr(self) -> str:
        return f"T={self.temperature}, kd_weight={self.kd_weight}"


def build(context: DistillContext, hp: dict) -> KD:
    return KD(temperature=hp["temperature"], kd_weight=hp["kd_weight"])
