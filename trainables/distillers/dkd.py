"""DKD (Zhao et al. 2022, Decoupled KD): alpha TCKD + beta NCKD, scaled by T^2, batch mean.

With p = softmax(z / T) and y the label:
- TCKD = KL(b^T || b^S), b = [p_y, 1 - p_y] (target vs all non-target mass);
- NCKD = KL(p^^T || p^S^), p^ = softmax over the non-target logits only.

The official code builds the non-target softmax by subtracting 1000 from the target logit, which
leaves the target's share non-zero for logits of magnitude ~1e3 and above. Here the non-target
log-sum-exp masks the target with -inf instead, and the KL is written as
<p^^T, x^T - x^S> - (LSE_nt(x^T) - LSE_nt(x^S)) (x = z / T), so the target column never enters and
loss and gradients stay finite for logits of any magnitude. 1 - p_y is exp(LSE_nt - LSE), never
a subtraction.
"""
from __future__ import annotations

import torch

from trainables.distillers._common import (
    check_logits,
    check_targets,
    check_temperature,
    common_float,
    no_autocast,
)
from trainables.distillers.base import DistillContext, Distiller
from trainables.models.base import ModelOutput


def _dkd_terms(xs: torch.Tensor, xt: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (TCKD, NCKD), not scaled by T^2; xs, xt = logits / T (teacher constant)."""
    target_mask = torch.zeros_like(xs, dtype=torch.bool).scatter_(1, targets.unsqueeze(1), True)
    with torch.no_grad():
        xt = xt.detach()
        lse_t = torch.logsumexp(xt, dim=1)
        masked_t = xt.masked_fill(target_mask, float("-inf"))
        lse_nt_t = torch.logsumexp(masked_t, dim=1)
        # binary teacher distribution [p_y, 1 - p_y] in log space
        log_b_t = torch.stack((xt.gather(1, targets.unsqueeze(1)).squeeze(1) - lse_t, lse_nt_t - lse_t), dim=1)
        b_t = log_b_t.exp()
        neg_entropy_b = (b_t * log_b_t).sum(dim=1)
        p_nt = torch.exp(masked_t - lse_nt_t.unsqueeze(1))  # exactly 0 on the target column
        p_nt_xt = (p_nt * xt.masked_fill(target_mask, 0.0)).sum(dim=1)

    lse_s = torch.logsumexp(xs, dim=1)
    lse_nt_s = torch.logsumexp(xs.masked_fill(target_mask, float("-inf")), dim=1)
    log_b_s = torch.stack((xs.gather(1, targets.unsqueeze(1)).squeeze(1) - lse_s, lse_nt_s - lse_s), dim=1)
    tckd = neg_entropy_b - (b_t * log_b_s).sum(dim=1)
    nckd = p_nt_xt - (p_nt * xs).sum(dim=1) - (lse_nt_t - lse_nt_s)
    return tckd, nckd


def dkd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    """T^2 (alpha TCKD + beta NCKD), batch mean. Needs at least 2 classes; teacher detached."""
    check_logits(logits_student, logits_teacher, "dkd_loss")
    n, c = logits_student.shape
    check_targets(targets, n, c, "dkd_loss")
    check_temperature(temperature, "dkd_loss")
    if c < 2:
        raise ValueError(f"dkd_loss: needs at least 2 classes (a non-target class), got logits {tuple(logits_student.shape)}")
    with no_autocast(logits_student.device):
        s, t = common_float(logits_student, logits_teacher)
        targets = targets.to(device=s.device, dtype=torch.long)
        inv_t = 1.0 / float(temperature)
        tckd, nckd = _dkd_terms(s * inv_t, t * inv_t, targets)
        return (alpha * tckd + beta * nckd).mean() * (float(temperature) ** 2)


class DKD(Distiller):
    def __init__(self, *, alpha: float, beta: float, temperature: float):
        super().__init__()
        check_temperature(temperature, "dkd")
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> torch.Tensor:
        return dkd_loss(student.logits, teacher.logits, targets,
                        alpha=self.alpha, beta=self.beta, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, T={self.temperature}"


def build(context: DistillContext, hp: dict) -> DKD:
    return DKD(alpha=hp["alpha"], beta=hp["beta"], temperature=hp["temperature"])
