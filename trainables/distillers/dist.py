"""DIST (Huang et al. 2022, KD from a stronger teacher): Pearson-correlation relations.

y = softmax(z / tau); inter = 1 - mean_i pearson(y_s[i, :], y_t[i, :]) (per sample, across
classes); intra = 1 - mean_j pearson(y_s[:, j], y_t[:, j]) (per class, across the batch);
loss = tau^2 (beta inter + gamma intra). The intra term is a batch statistic of the local batch
(as in the official code; it is not all-reduced).
"""
from __future__ import annotations

import torch

from trainables.distillers._common import check_logits, check_temperature, common_float, no_autocast
from trainables.distillers.base import DistillContext, Distiller
from trainables.models.base import ModelOutput

PEARSON_EPS = 1e-8


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int, eps: float = PEARSON_EPS) -> torch.Tensor:
    """Pearson correlation of a and b along `dim`; a constant slice gives 0 (each norm clamped at eps)."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    norm_a = torch.linalg.vector_norm(a, dim=dim).clamp_min(eps)
    norm_b = torch.linalg.vector_norm(b, dim=dim).clamp_min(eps)
    return (a * b).sum(dim=dim) / (norm_a * norm_b)


def dist_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    tau: float = 1.0,
) -> torch.Tensor:
    """tau^2 (beta inter + gamma intra); float32 at least; teacher detached."""
    check_logits(logits_student, logits_teacher, "dist_loss")
    check_temperature(tau, "dist_loss", "tau")
    with no_autocast(logits_student.device):
        s, t = common_float(logits_student, logits_teacher)
        y_s = torch.softmax(s / tau, dim=1)
        with torch.no_grad():
            y_t = torch.softmax(t.detach() / tau, dim=1)
        inter = 1.0 - pearson(y_s, y_t, dim=1).mean()
        intra = 1.0 - pearson(y_s, y_t, dim=0).mean()
        return (float(tau) ** 2) * (beta * inter + gamma * intra)


class DIST(Distiller):
    def __init__(self, *, beta: float, gamma: float, tau: float, kd_weight: float = 1.0):
        super().__init__()
        check_temperature(tau, "dist", "tau")
        self.beta, self.gamma, self.tau, self.kd_weight = float(beta), float(gamma), float(tau), float(kd_weight)

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> torch.Tensor:
        return self.kd_weight * dist_loss(student.logits, teacher.logits, beta=self.beta, gamma=self.gamma, tau=self.tau)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, tau={self.tau}, kd_weight={self.kd_weight}"


def build(context: DistillContext, hp: dict) -> DIST:
    return DIST(beta=hp["beta"], gamma=hp["gamma"], tau=hp["tau"], kd_weight=hp["kd_weight"])
