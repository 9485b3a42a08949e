"""Helpers shared by the logit losses: dtype promotion, shape checks, group log-sum-exp, all-reduce.

Conventions used by every loss in this package:

- Losses are computed in float32 at least: half types (float16, bfloat16) are promoted to
  float32, float64 stays float64 (so gradchecks work), and autocast is switched off inside the
  loss so that no operation silently drops back to half precision.
- Probabilities are never summed and then logged: group log-probabilities come from a segment
  log-sum-exp whose stabiliser is the per-group maximum, so they stay finite for logits of any
  magnitude (1e4 and beyond) and for groups of a single class.
- The teacher is a constant: its logits are detached and everything computed from them runs
  without building an autograd graph.
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

_HALF_TYPES = (torch.float16, torch.bfloat16)


def promote(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged; integer tensors -> float32."""
    if t.dtype in _HALF_TYPES or not t.is_floating_point():
        return t.float()
    return t


def common_float(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Promote every tensor (see `promote`) and bring them to one dtype (the widest)."""
    promoted = [promote(t) for t in tensors]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in promoted) else torch.float32
    return tuple(t if t.dtype == dtype else t.to(dtype) for t in promoted)


def no_autocast(device: torch.device):
    """A context that disables autocast for `device`'s type (a no-op where autocast is unsupported)."""
    try:
        if not torch.is_autocast_enabled(device.type):
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # pragma: no cover - device types without autocast
        return contextlib.nullcontext()


def check_logits(logits_student: torch.Tensor, logits_teacher: torch.Tensor, method: str) -> None:
    """Both (N, C) with the same shape, else ValueError naming the shapes."""
    if logits_student.dim() != 2:
        raise ValueError(
            f"{method}: student logits must be 2-D (batch, classes), got shape {tuple(logits_student.shape)}"
        )
    if logits_student.shape[0] == 0 or logits_student.shape[1] == 0:
        raise ValueError(f"{method}: logits must hold at least one sample and one class, got shape "
                         f"{tuple(logits_student.shape)}")
    if logits_teacher.shape != logits_student.shape:
        raise ValueError(
            f"{method}: student logits {tuple(logits_student.shape)} and teacher logits "
            f"{tuple(logits_teacher.shape)} must have the same shape (batch, classes)"
        )


def check_targets(targets: torch.Tensor, batch: int, num_classes: int, method: str) -> None:
    if targets.dim() != 1 or targets.shape[0] != batch:
        raise ValueError(
            f"{method}: targets must have shape ({batch},) to match the logits' batch, got {tuple(targets.shape)}"
        )
    if targets.dtype in (torch.bool,) or targets.is_floating_point() or targets.is_complex():
        raise ValueError(f"{method}: targets must be integer class indices, got dtype {targets.dtype}")


def check_temperature(temperature: float, method: str, name: str = "temperature") -> None:
    if not temperature > 0:
        raise ValueError(f"{method}: {name} must be > 0, got {temperature!r}")


def prepare_groups(
    groups: torch.Tensor | list | tuple,
    num_classes: int,
    device: torch.device,
    method: str,
    n_groups: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Validate a per-class group-id vector and move it to `device`; returns (groups, n_groups).

    groups[c] in [0, n_groups) for every class c, and every group id has at least one class.
    The full check (range, no empty group) reads the values, which on an accelerator costs a
    device sync; Distillers validate once at build time and call the loss kernels directly.
    """
    if not isinstance(groups, torch.Tensor):
        groups = torch.as_tensor(groups)
    if groups.dim() != 1 or groups.shape[0] != num_classes:
        raise ValueError(
            f"{method}: groups must be a 1-D tensor with one group id per class, i.e. shape "
            f"({num_classes},), got shape {tuple(groups.shape)}"
        )
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise ValueError(f"{method}: groups must be integer group ids, got dtype {groups.dtype}")
    cpu = groups.detach().to("cpu", torch.long)
    if cpu.numel() and int(cpu.min()) < 0:
        raise ValueError(f"{method}: group ids must be >= 0, got {int(cpu.min())}")
    found = int(cpu.max()) + 1 if cpu.numel() else 0
    if n_groups is None:
        n_groups = found
    elif found > n_groups:
        raise ValueError(f"{method}: group id {found - 1} is out of range for n_groups={n_groups}")
    sizes = torch.bincount(cpu, minlength=n_groups)
    if n_groups and int(sizes.min()) == 0:
        empty = torch.nonzero(sizes == 0).flatten().tolist()
        raise ValueError(f"{method}: groups {empty} have no class; every group id in [0, {n_groups}) needs one")
    if groups.device != device or groups.dtype != torch.long:
        groups = groups.to(device=device, dtype=torch.long, non_blocking=True)
    return groups, n_groups


def group_logsumexp(x: torch.Tensor, groups: torch.Tensor, n_groups: int, return_exp: bool = False):
    """Per-row log-sum-exp over each group of columns: (N, C) -> (N, G).

    out[n, g] = log sum_{c: groups[c] = g} exp(x[n, c]). The stabiliser is each group's own
    maximum (detached: it cancels mathematically, so the gradient is exact), hence no group
    underflows to log(0) however far its logits lie below the row's maximum. With
    return_exp=True also returns e = exp(x - max of the class's group) (N, C) and the group
    sums S (N, G), so a caller can form within-group softmaxes e / S[:, groups] without a
    second exp pass.
    """
    n = x.shape[0]
    index = groups.unsqueeze(0).expand(n, -1)
    with torch.no_grad():
        gmax = x.new_full((n, n_groups), float("-inf")).scatter_reduce_(
            1, index, x.detach(), reduce="amax", include_self=True
        )
    e = torch.exp(x - gmax.gather(1, index))
    sums = x.new_zeros((n, n_groups)).scatter_add(1, index, e)
    out = sums.log() + gmax
    if return_exp:
        return out, e, sums
    return out


def distributed_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_logsumexp(log_values: torch.Tensor, group=None) -> torch.Tensor:
    """log(sum over ranks of exp(log_values)), element-wise, without leaving log space.

    Equivalent to all-reducing exp(log_values) with SUM, but cannot underflow: the ranks first
    agree on the element-wise maximum (all-reduce MAX), then sum exp(value - max) (all-reduce
    SUM). Returns the input unchanged when torch.distributed is not initialised. Not
    differentiable (used for teacher statistics only).
    """
    if not distributed_ready():
        return log_values
    with torch.no_grad():
        peak = log_values.detach().clone()
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        total = torch.exp(log_values.detach() - peak)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total.log() + peak
