"""Long-Tailed Knowledge Distillation (LTKD; arXiv 2506.18496) and the KL decomposition it rests on.

Notation (SPEC section 1): C classes split into disjoint groups G (Head / Medium / Tail by
default), temperature T, p = softmax(z / T). Group probability p_G = sum_{i in G} p_i, computed
as log p_G = logsumexp(z_G / T) - logsumexp(z / T); within-group probability
p~_{G,i} = p_i / p_G, a softmax over the group's own logits.

The paper's identity (checked to float tolerance in tests/test_losses.py):

    KL(p^T || p^S) = KL(p_G^T || p_G^S) + sum_G p_G^T KL(p~_G^T || p~_G^S)
                     `---- cross ----'   `-------- weighted within --------'

LTKD = T^2 (alpha KL(q || p_G^S) + beta sum_G KL(p~_G^T || p~_G^S)), batch mean, where
q_G = s_G p_G^T / sum_G' s_G' p_G'^T, s_G = P_avg / P_G, P_G = sum over the batch of p_G^T (the
teacher's, at temperature T) and P_avg = mean_G P_G. Under torch.distributed the batch totals
P_G are all-reduced, so they are the global batch's, never a shard's.

Choices the paper leaves open (SPEC section 1), each a switch with this default:
- rebalance=True: the cross term uses q; False uses the teacher's own p_G^T (Table 4's
  "biased" row).
- uniform_within=True: every group's within-KL has weight 1; False keeps the teacher weight
  p_G^T (Table 5). alpha = 0 / beta = 0 give the within-only / cross-only ablations.
- T^2 scaling of both terms (DKD's convention, whose codebase the authors build on); the
  temperature also applies to the batch statistics P_G.
- within_norm="sum": the within term is the plain sum over groups (the paper's weight 1 per
  group); "mean" divides it by the group count. With "sum" the within term grows with the number
  of groups (gradient norm at alpha 1, beta 8, T 4 on 100 classes: about 1 at 3 groups, 4 at 25,
  6 at 50), so a group-count study under "sum" mixes the grouping with the loss scale; "mean"
  keeps the scale comparable across group counts. Either way beta multiplies the result:
  "mean" is exactly "sum" with beta / n_groups.

Implementation: no Python loop over groups. Two kernels compute the same values:

- the padded grid (`_LTKDGrid`, used whenever the groups are near-equal in size, which
  `class_groups` guarantees): classes are gathered once into a (G, m) grid, m = the largest
  group, pads masked; teacher and student share one buffer so every reduction runs once for
  both; the backward is written by hand (the teacher is a constant), which keeps LTKD within
  about 2x the cost of KD (benchmarks/losses.py);
- the scatter kernel (`_group_terms_scatter`, plain autograd, any group sizes) for very uneven
  groups, and for `kl_decomposition`.

Both take group log-sum-exps L_G with each group's own maximum as the stabiliser, and write the
within term as sum_c w_c (x^T_c - x^S_c) - sum_G g_G (L^T_G - L^S_G), x = z / T, with
(w, g) = (p~^T, 1) for uniform weights and (p^T, p_G^T) for teacher weights (each p~_G^T sums to
one over its group), so no within-group log-softmax of the student is materialised.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from trainables.data.groups import class_groups
from trainables.distillers._common import (
    all_reduce_logsumexp,
    check_logits,
    check_temperature,
    common_float,
    group_logsumexp,
    no_autocast,
    prepare_groups,
)
from trainables.distillers.base import DistillContext, Distiller
from trainables.methods.ltkd import WITHIN_NORMS
from trainables.models.base import ModelOutput


class GroupLayout(NamedTuple):
    """Classes re-laid out as a padded (G, m) grid, m = the largest group's size.

    Row g of the grid lists group g's classes (in class order), padded to m. `index` (G * m,)
    maps grid positions to classes (pads repeat one of the group's classes and are masked),
    `inverse` (C,) maps each class to its grid position, `pad` (G, m) marks the pads (None when
    every group has m classes). index / inverse are None when the grid is the identity (groups
    already contiguous, equal-sized and in class order), so no gather is needed at all.
    """

    n_groups: int
    width: int
    index: torch.Tensor | None
    inverse: torch.Tensor | None
    pad: torch.Tensor | None

    def to(self, device: torch.device) -> "GroupLayout":
        def move(t):
            return t if t is None or t.device == device else t.to(device, non_blocking=True)

        return self._replace(index=move(self.index), inverse=move(self.inverse), pad=move(self.pad))


# The padded grid is used while it has at most this many cells per class (class_groups' splits
# have near-equal sizes, so their grids hold at most C + G cells); otherwise the scatter path.
MAX_PADDING_RATIO = 2.0


def make_layout(groups: torch.Tensor, n_groups: int) -> GroupLayout | None:
    """The padded grid of `groups` (validated ids on any device), or None when padding would
    exceed MAX_PADDING_RATIO cells per class (very uneven groups: use the scatter path)."""
    cpu = groups.detach().to("cpu", torch.long)
    num_classes = cpu.numel()
    sizes = torch.bincount(cpu, minlength=n_groups)
    width = int(sizes.max())
    if n_groups * width > MAX_PADDING_RATIO * num_classes:
        return None
    order = torch.argsort(cpu * num_classes + torch.arange(num_classes))  # by group, then class
    starts = torch.cumsum(sizes, 0) - sizes
    slot = torch.arange(width).unsqueeze(0)  # (1, m)
    pad = slot >= sizes.unsqueeze(1)  # (G, m)
    take = torch.where(pad, torch.zeros_like(slot), slot) + starts.unsqueeze(1)  # pads repeat the first class
    index = order[take].flatten()
    inverse = torch.empty(num_classes, dtype=torch.long)
    inverse[index[~pad.flatten()]] = torch.nonzero(~pad.flatten()).flatten()
    identity = not bool(pad.any()) and bool((index == torch.arange(num_classes)).all())
    device = groups.device
    return GroupLayout(
        n_groups=n_groups,
        width=width,
        index=None if identity else index.to(device),
        inverse=None if identity else inverse.to(device),
        pad=pad.to(device) if bool(pad.any()) else None,
    )


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row (first dimension), the sum of a * b over everything else. (vecdot measured faster
    than a batched matmul of (N, 1, K) x (N, K, 1) on CPU, by about 5x at K = 1000.)"""
    n = a.shape[0]
    return torch.linalg.vecdot(a.reshape(n, -1), b.reshape(n, -1))


@torch.no_grad()
def _cross_target(log_pg_t, rebalance, sync_batch_stats, process_group):
    """(q, sum_G q log q): the cross term's teacher distribution, rebalanced or not.

    q_G = s_G p_G / sum_G' s_G' p_G' with s_G = P_avg / P_G; P_avg is common to every group and
    cancels in the normalisation, so log q = log_softmax(log p_G - log P_G). log P_G is the
    log-sum-exp over the batch (all-reduced over ranks), which never underflows.
    """
    if rebalance:
        peak = log_pg_t.amax(dim=0)  # finite: every log p_G is
        tmp = torch.sub(log_pg_t, peak)
        log_totals = tmp.exp_().sum(dim=0).log_().add_(peak)
        if sync_batch_stats:
            log_totals = all_reduce_logsumexp(log_totals, process_group)
        log_q = torch.log_softmax(torch.sub(log_pg_t, log_totals, out=tmp), dim=1)
    else:
        log_q = log_pg_t
    q = log_q.exp()
    return q, _rowdot(q, log_q)


class _LTKDGrid(torch.autograd.Function):
    """The LTKD loss (a scalar) on the padded grid, teacher and student together, with a
    hand-written backward (the teacher is a constant).

    Teacher and student logits are gathered into one (2, N, G, m) buffer, so every group
    reduction runs once for both. With x = z / T, L_G = log sum_{c in G} exp(x_c) = log S_G +
    max_G, shifted = x - max_G, w = p~^T (uniform) or p^T, g = 1 or p_G^T:

    cross  = sum_G q_G (log q_G - log p_G^S)
    within = <w, shifted^T - shifted^S> - sum_G g_G (log S^T_G - log S^S_G)
    loss   = T^2 / N sum_n (alpha cross + beta within)
    d loss / d x^S_c = T^2 / N (alpha (p_G^S - q_G) p~^S_c + beta (g_G p~^S_c - w_c))
    """

    @staticmethod
    def forward(ctx, logits_student, logits_teacher, index, inverse, pad, n_groups, width, temperature,
                alpha, beta, rebalance, uniform_within, sync_batch_stats, process_group):
        n, num_classes = logits_student.shape
        inv_t = 1.0 / temperature
        need_within = beta != 0 and width > 1  # single-class groups: every within-KL is 0
        both = logits_student.new_empty((2, n, n_groups * width))
        if index is not None:
            torch.index_select(logits_teacher.detach(), 1, index, out=both[0])
            torch.index_select(logits_student.detach(), 1, index, out=both[1])
        else:  # identity layout: the scaling pass doubles as the copy
            torch.mul(logits_teacher.detach(), inv_t, out=both[0])
            torch.mul(logits_student.detach(), inv_t, out=both[1])
        both = both.view(2, n, n_groups, width)
        if index is None:  # already scaled: scale the (equal) group maxima by 1 below
            inv_t_grid = 1.0
        else:
            inv_t_grid = inv_t
        if width > 1:
            neg_peak = both.amax(dim=-1, keepdim=True).mul_(-inv_t_grid)
            shifted = torch.add(neg_peak, both, alpha=inv_t_grid, out=both)  # (x - group max) / T, in place
            diff = torch.sub(shifted[0], shifted[1]) if need_within else None  # before the exp
            e = shifted.exp_()
            if pad is not None:
                e.masked_fill_(pad, 0.0)
            sums = e.sum(dim=-1)  # (2, N, G)
            log_sums = sums.log()
            lse = log_sums - neg_peak.squeeze(-1)
        else:
            lse = both.view(2, n, n_groups)
            if inv_t_grid != 1.0:
                lse.mul_(inv_t_grid)
        log_pg = torch.log_softmax(lse, dim=-1)  # (2, N, G): log p_G, teacher then student
        log_pg_t, log_pg_s = log_pg[0], log_pg[1]

        q, neg_entropy_q = _cross_target(log_pg_t, rebalance, sync_batch_stats, process_group)
        per_sample = (neg_entropy_q - _rowdot(q, log_pg_s)).mul_(alpha)
        weights = group_weight = None
        if need_within:
            weights = e[0].div_(sums[0].unsqueeze(-1))  # p~^T, zero on pads
            log_gap = log_sums[0] - log_sums[1]
            if not uniform_within:
                group_weight = log_pg_t.exp()  # p_G^T
                weights.mul_(group_weight.unsqueeze(-1))  # p^T per class
                log_gap.mul_(group_weight)
            within = _rowdot(diff, weights) - log_gap.sum(dim=1)
            per_sample.add_(within, alpha=beta)
        scale = temperature * temperature / n
        ctx.save_for_backward(e[1] if width > 1 else None, sums[1] if width > 1 else None, log_pg_s, q,
                              weights, group_weight, inverse)
        ctx.consts = (n, num_classes, n_groups, width, inv_t, alpha, beta, scale)
        return per_sample.sum() * scale

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        e_s, sums_s, log_pg_s, q, weights, group_weight, inverse = ctx.saved_tensors
        n, num_classes, n_groups, width, inv_t, alpha, beta, scale = ctx.consts
        factor = grad_output * (scale * inv_t)  # chain rule: d/dz = d/dx / T
        # d/dx_c = coef[G(c)] p~^S_c - beta w_c
        coef = log_pg_s.exp().sub_(q)
        if weights is None:
            coef.mul_(factor * alpha)
        else:
            coef.mul_(alpha)
            coef = coef.add_(beta) if group_weight is None else coef.add_(group_weight, alpha=beta)
            coef.mul_(factor)
        if e_s is None:  # width 1: p~^S = 1 (and no within term)
            grid = coef
        else:
            grid = e_s * (coef / sums_s).unsqueeze(-1)
            if weights is not None:
                grid.addcmul_(weights, factor, value=-beta)
            grid = grid.view(n, -1)
        grad = grid.index_select(1, inverse) if inverse is not None else grid.reshape(n, num_classes)
        return (grad,) + (None,) * 13


def _group_terms_scatter(logits_student, logits_teacher, groups, n_groups, temperature, *, rebalance,
                         uniform_within, sync_batch_stats=True, process_group=None):
    """The same terms with scatter-based segment reductions and plain autograd (any group sizes).

    With L_G the per-group log-sum-exp and x = z / T, the within term is
    sum_c w_c (x^T_c - x^S_c) - sum_G g_G (L^T_G - L^S_G), (w, g) = (p~^T, 1) or (p^T, p_G^T).
    """
    n = logits_student.shape[0]
    inv_t = 1.0 / float(temperature)
    xs = logits_student * inv_t
    with torch.no_grad():
        xt = logits_teacher.detach() * inv_t
        lse_g_t, e_t, sums_t = group_logsumexp(xt, groups, n_groups, return_exp=True)
        lse_t = torch.logsumexp(lse_g_t, dim=1, keepdim=True)
        log_pg_t = lse_g_t - lse_t
        if uniform_within:
            w = e_t / sums_t.gather(1, groups.unsqueeze(0).expand(n, -1))
            g_weight = None
        else:
            w = torch.exp(xt - lse_t)
            g_weight = log_pg_t.exp()
        q, neg_entropy_q = _cross_target(log_pg_t, rebalance, sync_batch_stats, process_group)
    lse_g_s = group_logsumexp(xs, groups, n_groups)
    lse_s = torch.logsumexp(lse_g_s, dim=1, keepdim=True)
    cross = neg_entropy_q - (q * (lse_g_s - lse_s)).sum(dim=1)
    lse_gap = lse_g_t - lse_g_s
    if g_weight is not None:
        lse_gap = g_weight * lse_gap
    within = (w * (xt - xs)).sum(dim=1) - lse_gap.sum(dim=1)  # differences first: no cancellation
    return cross, within


def _prepare(logits_student, logits_teacher, groups, temperature, method, n_groups=None):
    check_logits(logits_student, logits_teacher, method)
    check_temperature(temperature, method)
    logits_student, logits_teacher = common_float(logits_student, logits_teacher)
    groups, n_groups = prepare_groups(groups, logits_student.shape[1], logits_student.device, method, n_groups)
    return logits_student, logits_teacher, groups, n_groups


_KERNELS = ("auto", "grid", "scatter")


def within_weight(beta: float, within_norm: str, n_groups: int, method: str = "ltkd") -> float:
    """The within term's weight: beta ("sum", the paper's weight 1 per group) or beta / n_groups ("mean")."""
    if within_norm not in WITHIN_NORMS:
        raise ValueError(f"{method}: within_norm must be one of {', '.join(WITHIN_NORMS)}, got {within_norm!r}")
    return float(beta) / n_groups if within_norm == "mean" else float(beta)


def _check_kernel(kernel: str, method: str) -> bool:
    if kernel not in _KERNELS:
        raise ValueError(f"{method}: kernel must be one of {_KERNELS}, got {kernel!r}")
    return kernel != "scatter"


def kl_decomposition(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    groups: torch.Tensor,
    temperature: float = 1.0,
    *,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's identity KL(p^T || p^S) = cross + weighted_within, term by term.

    Returns (cross, weighted_within): cross = KL(p_G^T || p_G^S) and weighted_within =
    sum_G p_G^T KL(p~_G^T || p~_G^S), with p = softmax(z / T). reduction="mean" (default) gives
    batch means (scalars), "none" per-sample tensors of shape (N,), "sum" batch sums. The terms
    are NOT multiplied by T^2 (KD's and LTKD's losses are), so cross + weighted_within equals
    the plain KL divergence at temperature T. Computed in float32 (float64 inputs stay float64);
    the teacher is treated as a constant. Differentiable w.r.t. the student logits.
    """
    if reduction not in ("mean", "none", "sum"):
        raise ValueError(f"kl_decomposition: reduction must be 'mean', 'none' or 'sum', got {reduction!r}")
    with no_autocast(logits_student.device):
        s, t, g, n_groups = _prepare(logits_student, logits_teacher, groups, temperature, "kl_decomposition")
        cross, within = _group_terms_scatter(s, t, g, n_groups, temperature, rebalance=False,
                                             uniform_within=False, sync_batch_stats=False)
    if reduction == "mean":
        return cross.mean(), within.mean()
    if reduction == "sum":
        return cross.sum(), within.sum()
    return cross, within


def ltkd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    groups: torch.Tensor,
    *,
    alpha: float,
    beta: float,
    temperature: float,
    rebalance: bool = True,
    uniform_within: bool = True,
    n_groups: int | None = None,
    sync_batch_stats: bool = True,
    process_group=None,
    kernel: str = "auto",
    within_norm: str = "sum",
) -> torch.Tensor:
    """LTKD = T^2 (alpha KL(q || p_G^S) + beta W), batch mean (see the module docstring).

    groups: (C,) integer group id per class (0 = head), e.g. from `class_groups`; moved to the
    logits' device if needed. n_groups: the number of groups (default: max id + 1); every id in
    [0, n_groups) must own a class. sync_batch_stats: all-reduce the batch totals P_G across the
    ranks of `process_group` when torch.distributed is initialised (every rank must then call
    the loss, as in a DDP training step). kernel: "auto" (padded-grid kernel when the group sizes
    allow it, else scatter), "grid" (same as auto), "scatter" (force the scatter kernel; for tests
    and benchmarks). within_norm: "sum" (default: the within term sums the groups' KLs, weight 1
    each) or "mean" (that sum divided by n_groups). With rebalance=False, uniform_within=False and
    alpha = beta = 1 this is exactly KD: T^2 KL(p^T || p^S). The LTKD Distiller precomputes the group layout once; this
    function rebuilds it on every call.
    """
    use_grid = _check_kernel(kernel, "ltkd_loss")
    with no_autocast(logits_student.device):
        s, t, g, n_groups = _prepare(logits_student, logits_teacher, groups, temperature, "ltkd_loss", n_groups)
        beta = within_weight(beta, within_norm, n_groups, "ltkd_loss")
        return _ltkd_from_prepared(s, t, g, n_groups, alpha=alpha, beta=beta, temperature=temperature,
                                   rebalance=rebalance, uniform_within=uniform_within, use_grid=use_grid,
                                   sync_batch_stats=sync_batch_stats, process_group=process_group)


def _ltkd_from_prepared(s, t, groups, n_groups, *, alpha, beta, temperature, rebalance, uniform_within,
                        layout=None, use_grid=True, sync_batch_stats=True, process_group=None):
    alpha, beta, temperature = float(alpha), float(beta), float(temperature)
    if use_grid and layout is None:
        layout = make_layout(groups, n_groups)
    if use_grid and layout is not None:
        layout = layout.to(s.device)
        return _LTKDGrid.apply(s, t, layout.index, layout.inverse, layout.pad, layout.n_groups, layout.width,
                               temperature, alpha, beta, bool(rebalance), bool(uniform_within),
                               bool(sync_batch_stats), process_group)
    cross, within = _group_terms_scatter(s, t, groups, n_groups, temperature, rebalance=rebalance,
                                         uniform_within=uniform_within, sync_batch_stats=sync_batch_stats,
                                         process_group=process_group)
    if alpha == 0:
        per_sample = beta * within
    elif beta == 0:
        per_sample = alpha * cross
    else:
        per_sample = alpha * cross + beta * within
    return per_sample.mean() * (temperature ** 2)


class LTKD(Distiller):
    """LTKD as a Distiller. The class groups and their padded-grid layout are non-persistent
    buffers (rebuilt from the class counts at build time), so `.to(device)` moves them."""

    def __init__(self, groups: torch.Tensor, *, alpha: float, beta: float, temperature: float,
                 rebalance: bool = True, uniform_within: bool = True, within_norm: str = "sum"):
        super().__init__()
        groups, n_groups = prepare_groups(groups, len(groups), torch.device("cpu"), "ltkd")
        self.register_buffer("groups", groups.clone(), persistent=False)
        self.n_groups = n_groups
        layout = make_layout(self.groups, n_groups)
        self.use_grid = layout is not None
        self.width = layout.width if layout is not None else 0
        self.register_buffer("layout_index", layout.index if layout is not None else None, persistent=False)
        self.register_buffer("layout_inverse", layout.inverse if layout is not None else None, persistent=False)
        self.register_buffer("layout_pad", layout.pad if layout is not None else None, persistent=False)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        check_temperature(self.temperature, "ltkd")
        self.rebalance = bool(rebalance)
        self.uniform_within = bool(uniform_within)
        self.within_norm = within_norm
        self.within_beta = within_weight(self.beta, within_norm, n_groups)  # beta, or beta / n_groups

    @property
    def layout(self) -> GroupLayout | None:
        if not self.use_grid:
            return None
        return GroupLayout(self.n_groups, self.width, self.layout_index, self.layout_inverse, self.layout_pad)

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> torch.Tensor:
        zs, zt = student.logits, teacher.logits
        with no_autocast(zs.device):
            check_logits(zs, zt, "ltkd")
            if zs.shape[1] != self.groups.shape[0]:
                raise ValueError(
                    f"ltkd: logits have {zs.shape[1]} classes (shape {tuple(zs.shape)}) but the "
                    f"groups cover {self.groups.shape[0]} classes (shape {tuple(self.groups.shape)})"
                )
            zs, zt = common_float(zs, zt)
            if self.use_grid and self.groups.device == zs.device:  # the hot path
                return _LTKDGrid.apply(zs, zt, self.layout_index, self.layout_inverse, self.layout_pad,
                                       self.n_groups, self.width, self.temperature, self.alpha, self.within_beta,
                                       self.rebalance, self.uniform_within, True, None)
            groups = self.groups if self.groups.device == zs.device else self.groups.to(zs.device)
            return _ltkd_from_prepared(zs, zt, groups, self.n_groups, alpha=self.alpha, beta=self.within_beta,
                                       temperature=self.temperature, rebalance=self.rebalance,
                                       uniform_within=self.uniform_within, layout=self.layout,
                                       use_grid=self.use_grid)

    def extra_repr(self) -> str:
        return (f"n_groups={self.n_groups}, alpha={self.alpha}, beta={self.beta}, T={self.temperature}, "
                f"rebalance={self.rebalance}, uniform_within={self.uniform_within}, within_norm={self.within_norm}")


def build(context: DistillContext, hp: dict) -> LTKD:
    counts = list(context.class_counts)
    if len(counts) != context.num_classes:
        raise ValueError(
            f"ltkd: class_counts has {len(counts)} entries but num_classes is {context.num_classes}"
        )
    groups = class_groups(counts, hp["n_groups"])  # raises when n_groups > num_classes
    return LTKD(groups, alpha=hp["alpha"], beta=hp["beta"], temperature=hp["temperature"],
                rebalance=hp["rebalance"], uniform_within=hp["uniform_within"], within_norm=hp["within_norm"])
