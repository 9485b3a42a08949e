"""Logit losses (KD, DKD, DIST, BKD, LTKD) against plain float64 references, plus the registry.

Every reference below is written out with explicit Python loops over samples, groups and classes
in double precision, and uses none of the library's helpers.
"""
from __future__ import annotations

import math
import os
import time

import pytest
import torch

from trainables.data.groups import class_groups
from trainables.distillers import (
    METHODS,
    DistillContext,
    UnknownMethodError,
    bkd_loss,
    dist_loss,
    dkd_loss,
    get_method,
    kd_loss,
    kl_decomposition,
    ltkd_loss,
    warmup_factor,
)
from trainables.distillers.base import Hyperparameter
from trainables.distillers.ltkd import LTKD, make_layout
from trainables.models.base import ModelOutput


# ----------------------------------------------------------------------------- plain references
def softmax_plain(z, temperature=1.0):
    """softmax(z / T) of a list of floats, in Python floats."""
    zs = [float(v) / temperature for v in z]
    m = max(zs)
    e = [math.exp(v - m) for v in zs]
    s = sum(e)
    return [v / s for v in e]


def kl_plain(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def members_plain(groups):
    groups = [int(g) for g in groups]
    return [[c for c in range(len(groups)) if groups[c] == g] for g in range(max(groups) + 1)]


def decomposition_plain(zs, zt, groups, temperature):
    """Per-sample (kl, cross, weighted_within, uniform_within) lists."""
    members = members_plain(groups)
    out = []
    for row_s, row_t in zip(zs.tolist(), zt.tolist()):
        ps, pt = softmax_plain(row_s, temperature), softmax_plain(row_t, temperature)
        pg_s = [sum(ps[c] for c in m) for m in members]
        pg_t = [sum(pt[c] for c in m) for m in members]
        within = []
        for g, m in enumerate(members):
            within.append(kl_plain([pt[c] / pg_t[g] for c in m], [ps[c] / pg_s[g] for c in m]))
        out.append((kl_plain(pt, ps), kl_plain(pg_t, pg_s),
                    sum(pg_t[g] * within[g] for g in range(len(members))), sum(within)))
    return out


def group_totals_plain(zt, groups, temperature):
    """P_G = sum over the batch of the teacher's group probabilities."""
    members = members_plain(groups)
    totals = [0.0] * len(members)
    for row in zt.tolist():
        pt = softmax_plain(row, temperature)
        for g, m in enumerate(members):
            totals[g] += sum(pt[c] for c in m)
    return totals


def ltkd_plain(zs, zt, groups, *, alpha, beta, temperature, rebalance=True, uniform_within=True, totals=None,
               within_norm="sum"):
    """SPEC section 1, term by term; `totals` overrides the batch's P_G (global statistics).
    within_norm "mean" divides the within term (the sum over groups) by the group count."""
    members = members_plain(groups)
    n_groups = len(members)
    if totals is None:
        totals = group_totals_plain(zt, groups, temperature)
    p_avg = sum(totals) / n_groups
    scale = [p_avg / totals[g] for g in range(n_groups)]
    losses = []
    for row_s, row_t in zip(zs.tolist(), zt.tolist()):
        ps, pt = softmax_plain(row_s, temperature), softmax_plain(row_t, temperature)
        pg_s = [sum(ps[c] for c in m) for m in members]
        pg_t = [sum(pt[c] for c in m) for m in members]
        if rebalance:
            norm = sum(scale[g] * pg_t[g] for g in range(n_groups))
            q = [scale[g] * pg_t[g] / norm for g in range(n_groups)]
        else:
            q = pg_t
        cross = kl_plain(q, pg_s)
        within = 0.0
        for g, m in enumerate(members):
            kl_g = kl_plain([pt[c] / pg_t[g] for c in m], [ps[c] / pg_s[g] for c in m])
            within += kl_g if uniform_within else pg_t[g] * kl_g
        if within_norm == "mean":
            within /= n_groups
        losses.append(alpha * cross + beta * within)
    return temperature ** 2 * sum(losses) / len(losses)


def kd_plain(zs, zt, temperature):
    vals = [kl_plain(softmax_plain(t, temperature), softmax_plain(s, temperature))
            for s, t in zip(zs.tolist(), zt.tolist())]
    return temperature ** 2 * sum(vals) / len(vals)


def dkd_plain(zs, zt, targets, *, alpha, beta, temperature):
    vals = []
    for row_s, row_t, y in zip(zs.tolist(), zt.tolist(), targets.tolist()):
        ps, pt = softmax_plain(row_s, temperature), softmax_plain(row_t, temperature)
        b_s, b_t = [ps[y], 1.0 - ps[y]], [pt[y], 1.0 - pt[y]]
        tckd = kl_plain(b_t, b_s)
        others = [c for c in range(len(row_s)) if c != y]
        nckd = kl_plain(softmax_plain([row_t[c] for c in others], temperature),
                        softmax_plain([row_s[c] for c in others], temperature))
        vals.append(alpha * tckd + beta * nckd)
    return temperature ** 2 * sum(vals) / len(vals)


def pearson_plain(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb)


def dist_plain(zs, zt, *, beta, gamma, tau):
    ys = [softmax_plain(r, tau) for r in zs.tolist()]
    yt = [softmax_plain(r, tau) for r in zt.tolist()]
    n, c = len(ys), len(ys[0])
    inter = 1.0 - sum(pearson_plain(ys[i], yt[i]) for i in range(n)) / n
    intra = 1.0 - sum(pearson_plain([ys[i][j] for i in range(n)], [yt[i][j] for i in range(n)])
                      for j in range(c)) / c
    return tau ** 2 * (beta * inter + gamma * intra)


def bkd_plain(zs, zt, counts, *, temperature, b=0.9999):
    w = [(1.0 - b) / (1.0 - b ** n) for n in counts]
    total = sum(w)
    w = [v / total * len(counts) for v in w]
    vals = []
    for row_s, row_t in zip(zs.tolist(), zt.tolist()):
        pt = softmax_plain(row_t, temperature)
        raw = [pt[c] * w[c] for c in range(len(pt))]
        norm = sum(raw)
        vals.append(kl_plain([v / norm for v in raw], softmax_plain(row_s, temperature)))
    return temperature ** 2 * sum(vals) / len(vals)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine thread
    hand-offs dominate; restore the setting afterwards so other test modules are unaffected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def logits(n, c, seed, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)


def permuted(groups, seed):
    """The same group sizes, scattered over class indices (groups not contiguous)."""
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed))
    return groups[perm]


GROUPINGS = {
    "3_uneven": torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]),  # sizes 5, 3, 3
    "3_permuted": permuted(torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]), 1),
    "3_singletons": torch.tensor([1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]),  # two single-class groups
    "n_eq_C": torch.arange(11),
    "n_eq_C_permuted": permuted(torch.arange(11), 2),
    "one_group": torch.zeros(11, dtype=torch.long),
    "5_permuted": permuted(torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]), 3),
    "very_uneven": torch.tensor([0] * 9 + [1, 2]),  # grid would be too padded: scatter kernel
    "from_counts": class_groups([50, 3, 40, 7, 22, 1, 9, 30, 2, 15, 5], 3),
}
KERNELS = ("auto", "scatter")


# ----------------------------------------------------------------------------- the identity
@pytest.mark.parametrize("name", sorted(GROUPINGS))
def test_kl_identity_matches_plain_decomposition(name):
    groups = GROUPINGS[name]
    for seed, temperature in ((0, 1.0), (1, 4.0), (2, 2.5)):
        zs, zt = logits(6, 11, seed), logits(6, 11, seed + 100)
        cross, within = kl_decomposition(zs, zt, groups, temperature, reduction="none")
        plain = decomposition_plain(zs, zt, groups, temperature)
        for i, (kl, cross_p, within_p, _) in enumerate(plain):
            assert abs(float(cross[i]) + float(within[i]) - kl) < 1e-6
            assert abs(float(cross[i]) - cross_p) < 1e-6
            assert abs(float(within[i]) - within_p) < 1e-6
        mean_cross, mean_within = kl_decomposition(zs, zt, groups, temperature)
        assert torch.allclose(mean_cross, cross.mean()) and torch.allclose(mean_within, within.mean())
        kd_t = kd_loss(zs, zt, temperature) / temperature ** 2  # KD is T^2-scaled, the identity is not
        assert abs(float(mean_cross + mean_within - kd_t)) < 1e-6


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", sorted(GROUPINGS))
def test_ltkd_without_switches_is_kd(name, kernel):
    groups = GROUPINGS[name]
    zs, zt = logits(7, 11, 5), logits(7, 11, 6)
    for temperature in (1.0, 4.0):
        got = ltkd_loss(zs, zt, groups, alpha=1.0, beta=1.0, temperature=temperature,
                        rebalance=False, uniform_within=False, kernel=kernel)
        assert abs(float(got) - kd_plain(zs, zt, temperature)) < 1e-9
        assert abs(float(got - kd_loss(zs, zt, temperature))) < 1e-9


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", sorted(GROUPINGS))
def test_ltkd_matches_plain_for_every_switch(name, kernel):
    groups = GROUPINGS[name]
    zs, zt = logits(8, 11, 10), logits(8, 11, 11)
    for rebalance in (True, False):
        for uniform in (True, False):
            for alpha, beta in ((1.0, 8.0), (0.7, 1.3), (0.0, 2.0), (1.5, 0.0)):
                got = ltkd_loss(zs, zt, groups, alpha=alpha, beta=beta, temperature=3.0,
                                rebalance=rebalance, uniform_within=uniform, kernel=kernel)
                want = ltkd_plain(zs, zt, groups, alpha=alpha, beta=beta, temperature=3.0,
                                  rebalance=rebalance, uniform_within=uniform)
                assert abs(float(got) - want) < 1e-9 * max(1.0, abs(want)), (rebalance, uniform, alpha, beta)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", sorted(GROUPINGS))
def test_within_norm_mean_is_the_sum_divided_by_the_group_count(name, kernel):
    """In float64: the within-only loss under "mean" is the one under "sum" over n_groups (bit for bit
    when n_groups is a power of two, where the division is exact); the full loss matches the plain
    reference with the within term averaged over the groups."""
    groups = GROUPINGS[name]
    n_groups = int(groups.max()) + 1
    zs, zt = logits(8, 11, 70), logits(8, 11, 71)
    for uniform in (True, False):
        common = dict(temperature=3.0, uniform_within=uniform, kernel=kernel)
        summed = ltkd_loss(zs, zt, groups, alpha=0.0, beta=2.0, within_norm="sum", **common)
        mean = ltkd_loss(zs, zt, groups, alpha=0.0, beta=2.0, within_norm="mean", **common)
        assert mean.dtype == summed.dtype == torch.float64
        if n_groups & (n_groups - 1) == 0:
            assert float(mean) == float(summed) / n_groups
        else:
            assert abs(float(mean) - float(summed) / n_groups) <= 4 * torch.finfo(torch.float64).eps * abs(float(mean))
        full = ltkd_loss(zs, zt, groups, alpha=0.7, beta=2.0, within_norm="mean", **common)
        want = ltkd_plain(zs, zt, groups, alpha=0.7, beta=2.0, temperature=3.0, uniform_within=uniform,
                          within_norm="mean")
        assert abs(float(full) - want) < 1e-9 * max(1.0, abs(want))


def test_within_norm_mean_exactly_on_four_groups():
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    zs, zt = logits(6, 11, 72), logits(6, 11, 73)
    for kernel in KERNELS:
        summed = ltkd_loss(zs, zt, groups, alpha=0.0, beta=8.0, temperature=4.0, kernel=kernel)
        mean = ltkd_loss(zs, zt, groups, alpha=0.0, beta=8.0, temperature=4.0, kernel=kernel, within_norm="mean")
        assert float(mean) == float(summed) / 4 and float(mean) > 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_default_within_norm_is_the_old_loss(kernel):
    groups = GROUPINGS["3_permuted"]
    zs, zt = logits(8, 11, 74), logits(8, 11, 75)
    default = ltkd_loss(zs, zt, groups, alpha=1.0, beta=8.0, temperature=4.0, kernel=kernel)
    summed = ltkd_loss(zs, zt, groups, alpha=1.0, beta=8.0, temperature=4.0, kernel=kernel, within_norm="sum")
    assert torch.equal(default, summed)
    assert abs(float(default) - ltkd_plain(zs, zt, groups, alpha=1.0, beta=8.0, temperature=4.0)) < 1e-9
    spec = get_method("ltkd")
    assert spec.resolve()["within_norm"] == "sum"
    distiller = spec.build(_context(), spec.resolve())
    old = LTKD(class_groups(list(_context().class_counts), 3), alpha=1.0, beta=8.0, temperature=4.0)
    out = lambda z: ModelOutput(z, [], z)  # noqa: E731
    assert torch.equal(distiller(out(zs[:, :9]), out(zt[:, :9]), None), old(out(zs[:, :9]), out(zt[:, :9]), None))
    with pytest.raises(ValueError, match="within_norm must be one of sum, mean"):
        ltkd_loss(zs, zt, groups, alpha=1.0, beta=8.0, temperature=4.0, within_norm="max")


def test_string_hyperparameters_take_one_of_their_choices():
    spec = get_method("ltkd")
    assert spec.resolve({"within_norm": "mean"})["within_norm"] == "mean"
    for bad in ("max", "Mean", 1, None, True):
        with pytest.raises(ValueError, match=r"ltkd: hyperparameter 'within_norm' must be one of sum, mean, got"):
            spec.resolve({"within_norm": bad})
    with pytest.raises(ValueError, match="needs its choices"):
        Hyperparameter("mode", "a", str)
    knob = Hyperparameter("size", 2, int, 1, None, choices=(2, 4))
    assert knob.validate(4, "m") == 4
    with pytest.raises(ValueError, match="must be one of 2, 4, got 3"):
        knob.validate(3, "m")


def test_grid_layout_is_used_where_expected():
    assert make_layout(GROUPINGS["3_permuted"], 3) is not None
    assert make_layout(GROUPINGS["n_eq_C"], 11).index is None  # identity: no gather at all
    assert make_layout(GROUPINGS["very_uneven"], 3) is None  # 3 x 9 cells for 11 classes


@pytest.mark.parametrize("kernel", KERNELS)
def test_ltkd_rebalance_on_hand_made_logits(kernel):
    # Teacher logits T log p: softmax(z / T) = p exactly. Groups {0, 1}, {2}, {3}.
    temperature = 2.0
    groups = torch.tensor([0, 0, 1, 2])
    p_teacher = [[0.4, 0.2, 0.3, 0.1], [0.1, 0.1, 0.2, 0.6]]
    p_student = [[0.25, 0.25, 0.25, 0.25], [0.5, 0.1, 0.1, 0.3]]
    zt = torch.tensor([[temperature * math.log(v) for v in row] for row in p_teacher], dtype=torch.float64)
    zs = torch.tensor([[temperature * math.log(v) for v in row] for row in p_student], dtype=torch.float64)
    # p_G^T = [0.6, 0.3, 0.1] and [0.2, 0.2, 0.6]: P = [0.8, 0.5, 0.7], P_avg = 2/3
    scale = [(2 / 3) / 0.8, (2 / 3) / 0.5, (2 / 3) / 0.7]
    pg_t = [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
    pg_s = [[0.5, 0.25, 0.25], [0.6, 0.1, 0.3]]
    within_t = [[0.4 / 0.6, 0.2 / 0.6], [0.5, 0.5]]
    within_s = [[0.5, 0.5], [0.5 / 0.6, 0.1 / 0.6]]
    total = 0.0
    for b in range(2):
        norm = sum(scale[g] * pg_t[b][g] for g in range(3))
        q = [scale[g] * pg_t[b][g] / norm for g in range(3)]
        assert abs(sum(q) - 1) < 1e-12
        cross = sum(q[g] * math.log(q[g] / pg_s[b][g]) for g in range(3))
        # single-class groups have a within-KL of 0; only group 0 contributes
        within = sum(within_t[b][i] * math.log(within_t[b][i] / within_s[b][i]) for i in range(2))
        total += 1.0 * cross + 8.0 * within
    want = temperature ** 2 * total / 2
    got = ltkd_loss(zs, zt, groups, alpha=1.0, beta=8.0, temperature=temperature, kernel=kernel)
    assert abs(float(got) - want) < 1e-10
    # and the rebalanced target is not the teacher's own group distribution
    unbalanced = ltkd_loss(zs, zt, groups, alpha=1.0, beta=8.0, temperature=temperature,
                           rebalance=False, kernel=kernel)
    assert abs(float(unbalanced) - want) > 1e-3


@pytest.mark.parametrize("kernel", KERNELS)
def test_ablation_switches_isolate_the_terms(kernel):
    groups = GROUPINGS["3_permuted"]
    zs, zt = logits(8, 11, 20), logits(8, 11, 21)
    t = 4.0
    plain = decomposition_plain(zs, zt, groups, t)
    uniform_within = sum(row[3] for row in plain) / len(plain)
    only_within = ltkd_loss(zs, zt, groups, alpha=0.0, beta=2.0, temperature=t, kernel=kernel)
    assert abs(float(only_within) - t ** 2 * 2.0 * uniform_within) < 1e-9
    only_cross = ltkd_loss(zs, zt, groups, alpha=3.0, beta=0.0, temperature=t, kernel=kernel)
    want = ltkd_plain(zs, zt, groups, alpha=3.0, beta=0.0, temperature=t)
    assert abs(float(only_cross) - want) < 1e-9
    unbalanced_cross = ltkd_loss(zs, zt, groups, alpha=1.0, beta=0.0, temperature=t, rebalance=False, kernel=kernel)
    assert abs(float(unbalanced_cross) - t ** 2 * sum(row[1] for row in plain) / len(plain)) < 1e-9


def test_ltkd_zero_for_identical_logits_and_teacher_is_constant():
    groups = GROUPINGS["3_uneven"]
    z = logits(5, 11, 30)
    loss = ltkd_loss(z, z, groups, alpha=1.0, beta=8.0, temperature=4.0, rebalance=False)
    assert abs(float(loss)) < 1e-12
    zs = logits(5, 11, 31).requires_grad_(True)
    zt = logits(5, 11, 32).requires_grad_(True)
    ltkd_loss(zs, zt, groups, alpha=1.0, beta=8.0, temperature=4.0).backward()
    assert zt.grad is None and zs.grad is not None


# ----------------------------------------------------------------------------- baselines
def test_kd_matches_plain():
    zs, zt = logits(6, 9, 40), logits(6, 9, 41)
    for t in (1.0, 4.0):
        assert abs(float(kd_loss(zs, zt, t)) - kd_plain(zs, zt, t)) < 1e-10


def test_dkd_matches_plain():
    zs, zt = logits(7, 9, 50), logits(7, 9, 51)
    targets = torch.tensor([0, 3, 8, 2, 2, 5, 7])
    for alpha, beta, t in ((1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (1.0, 0.0, 2.0), (0.0, 1.0, 3.0)):
        got = dkd_loss(zs, zt, targets, alpha=alpha, beta=beta, temperature=t)
        want = dkd_plain(zs, zt, targets, alpha=alpha, beta=beta, temperature=t)
        assert abs(float(got) - want) < 1e-9


def test_dkd_alpha_beta_one_is_not_kd_but_decomposes_it():
    # KD = TCKD + (1 - p_t^T) NCKD: with the teacher's non-target mass the weights differ.
    zs, zt = logits(5, 6, 52), logits(5, 6, 53)
    targets = torch.tensor([0, 1, 2, 3, 4])
    kd = kd_loss(zs, zt, 2.0)
    dkd = dkd_loss(zs, zt, targets, alpha=1.0, beta=1.0, temperature=2.0)
    assert float(dkd) >= float(kd) - 1e-12


def test_dist_matches_plain():
    zs, zt = logits(6, 8, 60), logits(6, 8, 61)
    for beta, gamma, tau in ((1.0, 1.0, 4.0), (2.0, 0.5, 1.0)):
        got = dist_loss(zs, zt, beta=beta, gamma=gamma, tau=tau)
        assert abs(float(got) - dist_plain(zs, zt, beta=beta, gamma=gamma, tau=tau)) < 1e-9


def test_dist_constant_predictions_do_not_divide_by_zero():
    zs = torch.zeros(4, 5, dtype=torch.float64, requires_grad=True)  # uniform rows: zero variance
    zt = logits(4, 5, 62)
    loss = dist_loss(zs, zt, tau=4.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()


def test_bkd_uniform_counts_is_kd():
    zs, zt = logits(6, 10, 70), logits(6, 10, 71)
    got = bkd_loss(zs, zt, [37] * 10, temperature=2.0)
    assert abs(float(got - kd_loss(zs, zt, 2.0))) < 1e-10


def test_bkd_skewed_counts_matches_plain():
    zs, zt = logits(6, 10, 72), logits(6, 10, 73)
    counts = [500, 300, 180, 100, 60, 35, 20, 12, 7, 5]
    for b in (0.9999, 0.99):
        got = bkd_loss(zs, zt, counts, temperature=2.0, beta_effective=b)
        assert abs(float(got) - bkd_plain(zs, zt, counts, temperature=2.0, b=b)) < 1e-9
    assert abs(float(bkd_loss(zs, zt, counts, temperature=2.0)) - kd_plain(zs, zt, 2.0)) > 1e-3


# ----------------------------------------------------------------------------- gradients
def _gradcheck(fn, *shape, seed=0):
    zs = logits(*shape, seed).requires_grad_(True)
    zt = logits(*shape, seed + 1)
    assert torch.autograd.gradcheck(lambda s: fn(s, zt), (zs,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", ["3_permuted", "3_singletons", "n_eq_C_permuted", "very_uneven"])
def test_gradcheck_ltkd(name, kernel):
    groups = GROUPINGS[name]
    for rebalance, uniform in ((True, True), (True, False), (False, True)):
        _gradcheck(lambda s, t: ltkd_loss(s, t, groups, alpha=1.3, beta=2.0, temperature=2.0,
                                          rebalance=rebalance, uniform_within=uniform, kernel=kernel), 4, 11)


def test_gradcheck_ltkd_distiller():
    for within_norm in ("sum", "mean"):
        distiller = LTKD(GROUPINGS["3_permuted"], alpha=1.0, beta=8.0, temperature=4.0, within_norm=within_norm)
        _gradcheck(lambda s, t: distiller(ModelOutput(s, [], s), ModelOutput(t, [], t), None), 4, 11)


def test_gradcheck_dkd_dist_kd_bkd():
    targets = torch.tensor([1, 0, 4, 2])
    _gradcheck(lambda s, t: dkd_loss(s, t, targets, alpha=1.0, beta=8.0, temperature=4.0), 4, 6)
    _gradcheck(lambda s, t: dist_loss(s, t, beta=1.0, gamma=2.0, tau=4.0), 4, 6)
    _gradcheck(lambda s, t: kd_loss(s, t, 4.0), 4, 6)
    _gradcheck(lambda s, t: bkd_loss(s, t, [50, 20, 9, 4, 2, 1], temperature=2.0), 4, 6)


def _all_losses(groups_for):
    """name -> f(student, teacher) over every loss and LTKD variant, for logits of C classes."""
    def fns(c):
        targets = torch.arange(4) % c
        counts = [max(1, 100 // (k + 1)) for k in range(c)]
        out = {
            "kd": lambda s, t: kd_loss(s, t, 4.0),
            "dkd": lambda s, t: dkd_loss(s, t, targets, alpha=1.0, beta=8.0, temperature=4.0),
            "dkd_t1": lambda s, t: dkd_loss(s, t, targets, alpha=1.0, beta=0.5, temperature=1.0),
            "dist": lambda s, t: dist_loss(s, t, beta=1.0, gamma=1.0, tau=4.0),
            "bkd": lambda s, t: bkd_loss(s, t, counts, temperature=2.0),
        }
        for name, groups in groups_for(c).items():
            for kernel in KERNELS:
                for rb in (True, False):
                    for uw in (True, False):
                        out[f"ltkd_{name}_{kernel}_{rb}_{uw}"] = (
                            lambda s, t, g=groups, k=kernel, r=rb, u=uw: ltkd_loss(
                                s, t, g, alpha=1.0, beta=8.0, temperature=1.0, rebalance=r, uniform_within=u, kernel=k))
        return out
    return fns


LARGE_GROUPS = _all_losses(lambda c: {k: v for k, v in GROUPINGS.items() if len(v) == c})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_logits_give_finite_losses_and_gradients(dtype):
    g = torch.Generator().manual_seed(80)
    for name, fn in LARGE_GROUPS(11).items():
        for trial in range(2):
            zs = (torch.randn(4, 11, generator=g, dtype=torch.float64) * 1e4).to(dtype).requires_grad_(True)
            zt = (torch.randn(4, 11, generator=g, dtype=torch.float64) * 1e4).to(dtype)
            if trial == 1:  # extreme: one class dominates by 1e4 in every row
                zt = torch.zeros_like(zt)
                zt[:, 0] = 1e4
            loss = fn(zs, zt)
            loss.backward()
            assert torch.isfinite(loss), name
            assert torch.isfinite(zs.grad).all(), name


def test_large_logits_ltkd_distiller_and_decomposition():
    distiller = LTKD(GROUPINGS["3_permuted"], alpha=1.0, beta=8.0, temperature=1.0)
    zs = (logits(4, 11, 81, scale=1e4, dtype=torch.float32)).requires_grad_(True)
    zt = logits(4, 11, 82, scale=1e4, dtype=torch.float32)
    loss = distiller(ModelOutput(zs, [], zs), ModelOutput(zt, [], zt), None)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()
    cross, within = kl_decomposition(zs, zt, GROUPINGS["3_permuted"], 1.0)
    assert torch.isfinite(cross) and torch.isfinite(within)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_float32_losses(dtype):
    fns = LARGE_GROUPS(11)
    zs = logits(4, 11, 90, dtype=dtype).requires_grad_(True)
    zt = logits(4, 11, 91, dtype=dtype)
    for name, fn in fns.items():
        zs.grad = None
        loss = fn(zs, zt)
        assert loss.dtype == torch.float32, name
        loss.backward()
        assert zs.grad.dtype == dtype and torch.isfinite(zs.grad).all(), name
        ref = fn(zs.detach().float(), zt.float())
        assert torch.allclose(loss, ref), name


def test_losses_under_autocast_are_float32():
    zs, zt = logits(4, 11, 92, dtype=torch.float32), logits(4, 11, 93, dtype=torch.float32)
    distiller = LTKD(GROUPINGS["3_permuted"], alpha=1.0, beta=8.0, temperature=4.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = [kd_loss(zs, zt, 4.0), ltkd_loss(zs, zt, GROUPINGS["3_permuted"], alpha=1.0, beta=8.0, temperature=4.0),
                distiller(ModelOutput(zs, [], zs), ModelOutput(zt, [], zt), None),
                dist_loss(zs, zt, tau=4.0), dkd_loss(zs, zt, torch.arange(4), alpha=1.0, beta=8.0, temperature=4.0)]
    assert all(o.dtype == torch.float32 for o in outs)
    assert torch.allclose(outs[1], ltkd_loss(zs, zt, GROUPINGS["3_permuted"], alpha=1.0, beta=8.0, temperature=4.0))


# ----------------------------------------------------------------------------- input checks
def test_shape_mismatches_raise_clear_errors():
    zs, zt = logits(4, 11, 100), logits(4, 10, 101)
    groups = GROUPINGS["3_uneven"]
    for call in (lambda: kd_loss(zs, zt, 4.0),
                 lambda: ltkd_loss(zs, zt, groups, alpha=1.0, beta=1.0, temperature=4.0),
                 lambda: kl_decomposition(zs, zt, groups, 4.0),
                 lambda: dist_loss(zs, zt),
                 lambda: bkd_loss(zs, zt, [1] * 11, temperature=2.0),
                 lambda: dkd_loss(zs, zt, torch.zeros(4, dtype=torch.long), alpha=1.0, beta=1.0, temperature=4.0)):
        with pytest.raises(ValueError, match=r"\(4, 11\).*\(4, 10\)"):
            call()
    zt = logits(4, 11, 102)
    with pytest.raises(ValueError, match=r"\(11,\).*\(10,\)"):
        ltkd_loss(zs, zt, torch.zeros(10, dtype=torch.long), alpha=1.0, beta=1.0, temperature=4.0)
    with pytest.raises(ValueError, match=r"\(4,\).*\(3,\)"):
        dkd_loss(zs, zt, torch.zeros(3, dtype=torch.long), alpha=1.0, beta=1.0, temperature=4.0)
    with pytest.raises(ValueError, match=r"\(11,\).*\(5,\)"):
        bkd_loss(zs, zt, [1] * 5, temperature=2.0)
    with pytest.raises(ValueError, match="no class"):
        ltkd_loss(zs, zt, torch.tensor([0] * 5 + [2] * 6), alpha=1.0, beta=1.0, temperature=4.0)
    distiller = LTKD(torch.zeros(10, dtype=torch.long), alpha=1.0, beta=1.0, temperature=4.0)
    with pytest.raises(ValueError, match="10 classes"):
        distiller(ModelOutput(zs, [], zs), ModelOutput(zt, [], zt), None)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(zs, zt, 0.0)


def test_groups_buffer_moves_with_the_distiller():
    distiller = LTKD(GROUPINGS["3_permuted"], alpha=1.0, beta=8.0, temperature=4.0)
    names = {name for name, _ in distiller.named_buffers()}
    assert {"groups", "layout_index", "layout_inverse", "layout_pad"} <= names
    moved = distiller.to("meta")
    assert all(b.device.type == "meta" for b in moved.buffers())


# ----------------------------------------------------------------------------- registry
def _context(counts=(50, 30, 20, 12, 8, 5, 3, 2, 1)):
    return DistillContext(num_classes=len(counts), class_counts=tuple(counts))


def test_registry_names_labels_and_builds():
    expected = {"ce": "Student", "kd": "KD", "dkd": "DKD", "dist": "DIST", "bkd": "BKD", "ltkd": "LTKD"}
    for name, label in expected.items():
        spec = get_method(name)
        assert spec.name == name and spec.label == label and name in METHODS
        for style in ("cifar", "imagenet"):
            hp = spec.resolve(dataset_style=style, teacher_arch="resnet32x4", student_arch="resnet8x4")
            built = spec.build(_context(), hp)
            if name == "ce":
                assert built is None and spec.kind == "none" and not spec.needs_teacher
            else:
                assert spec.kind == "logit" and built is not None
                zs, zt = logits(4, 9, 110, dtype=torch.float32), logits(4, 9, 111, dtype=torch.float32)
                out = built(ModelOutput(zs, [], zs), ModelOutput(zt, [], zt), torch.tensor([0, 1, 2, 8]))
                assert out.dim() == 0 and torch.isfinite(out)
    with pytest.raises(UnknownMethodError):
        get_method("no_such_method")


def test_distillers_equal_their_loss_functions():
    ctx = _context()
    zs, zt = logits(5, 9, 120), logits(5, 9, 121)
    targets = torch.tensor([0, 4, 8, 1, 1])
    out = lambda z: ModelOutput(z, [], z)  # noqa: E731
    kd = get_method("kd").build(ctx, get_method("kd").resolve())
    assert torch.allclose(kd(out(zs), out(zt), targets), 0.9 * kd_loss(zs, zt, 4.0))
    dist = get_method("dist").build(ctx, get_method("dist").resolve())
    assert torch.allclose(dist(out(zs), out(zt), targets), 2.0 * dist_loss(zs, zt, tau=4.0))
    dkd = get_method("dkd").build(ctx, get_method("dkd").resolve())
    assert torch.allclose(dkd(out(zs), out(zt), targets), dkd_loss(zs, zt, targets, alpha=1.0, beta=8.0, temperature=4.0))
    bkd = get_method("bkd").build(ctx, get_method("bkd").resolve())
    assert torch.allclose(bkd(out(zs), out(zt), targets), bkd_loss(zs, zt, ctx.class_counts, temperature=2.0))
    spec = get_method("ltkd")
    for overrides in ({}, {"n_groups": 9}, {"n_groups": 4, "rebalance": False, "uniform_within": False},
                      {"n_groups": 5, "within_norm": "mean"}):
        hp = spec.resolve(overrides)
        ltkd = spec.build(ctx, hp)
        groups = class_groups(list(ctx.class_counts), hp["n_groups"])
        want = ltkd_plain(zs, zt, groups, alpha=hp["alpha"], beta=hp["beta"], temperature=hp["temperature"],
                          rebalance=hp["rebalance"], uniform_within=hp["uniform_within"],
                          within_norm=hp["within_norm"])
        assert abs(float(ltkd(out(zs), out(zt), targets)) - want) < 1e-9


def test_resolve_rejects_unknown_names_and_out_of_range_values():
    spec = get_method("ltkd")
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        spec.resolve({"gamma": 1.0})
    for bad in ({"temperature": -1.0}, {"alpha": -0.1}, {"n_groups": 0}, {"n_groups": 2.5},
                {"rebalance": 1}, {"beta": float("nan")}):
        with pytest.raises(ValueError):
            spec.resolve(bad)
    with pytest.raises(ValueError, match="beta_effective"):
        get_method("bkd").resolve({"beta_effective": 1.0})
    with pytest.raises(ValueError, match="between 1 and the class count"):
        spec.build(_context(), spec.resolve({"n_groups": 10}))  # 9 classes


def test_published_defaults():
    kd = get_method("kd")
    assert kd.resolve() | {} == kd.resolve(dataset_style="cifar")
    c = kd.resolve(dataset_style="cifar")
    assert (c["temperature"], c["ce_weight"], c["kd_weight"]) == (4.0, 0.1, 0.9)
    i = kd.resolve(dataset_style="imagenet")
    assert (i["temperature"], i["ce_weight"], i["kd_weight"]) == (1.0, 0.5, 0.5)
    dkd = get_method("dkd")
    d = dkd.resolve(teacher_arch="resnet32x4", student_arch="resnet8x4")
    assert (d["alpha"], d["beta"], d["temperature"], d["warmup_epochs"], d["ce_weight"]) == (1.0, 8.0, 4.0, 20, 1.0)
    for pair in (("vgg13", "vgg8"), ("vgg13", "mobilenetv2"), ("wrn_40_2", "wrn_40_1")):
        assert dkd.resolve(teacher_arch=pair[0], student_arch=pair[1])["beta"] == 6.0
    assert dkd.resolve(teacher_arch="wrn_40_2", student_arch="shufflenetv1")["beta"] == 8.0
    assert dkd.resolve(dataset_style="imagenet", teacher_arch="resnet34", student_arch="resnet18")["beta"] == 0.5
    assert dkd.resolve(dataset_style="imagenet", teacher_arch="resnet50", student_arch="mobilenetv1")["beta"] == 2.0
    assert dkd.resolve(dataset_style="imagenet")["temperature"] == 1.0
    dist = get_method("dist").resolve()
    assert (dist["tau"], dist["beta"], dist["gamma"], dist["kd_weight"], dist["ce_weight"]) == (4.0, 1.0, 1.0, 2.0, 1.0)
    bkd = get_method("bkd").resolve()
    assert (bkd["beta_effective"], bkd["ce_weight"]) == (0.9999, 1.0)
    ltkd = get_method("ltkd").resolve()
    assert (ltkd["n_groups"], ltkd["rebalance"], ltkd["uniform_within"], ltkd["temperature"],
            ltkd["warmup_epochs"], ltkd["ce_weight"], ltkd["within_norm"]) == (3, True, True, 4.0, 20, 1.0, "sum")
    assert get_method("ltkd").resolve(dataset_style="imagenet")["temperature"] == 1.0
    assert get_method("ce").resolve()["ce_weight"] == 1.0


def test_warmup_factor():
    assert warmup_factor(0, 0) == 1.0
    assert warmup_factor(0, 20) == pytest.approx(1 / 20)
    assert warmup_factor(9, 20) == pytest.approx(0.5)
    assert warmup_factor(19, 20) == 1.0
    assert warmup_factor(100, 20) == 1.0
    assert warmup_factor(0, 1) == 1.0


# ----------------------------------------------------------------------------- all-reduce
def _dist_worker(rank, world_size, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        zs, zt = logits(8, 11, 200), logits(8, 11, 201)  # the global batch, same on every rank
        groups = GROUPINGS["3_permuted"]
        half = slice(4 * rank, 4 * rank + 4)
        s = zs[half].clone().requires_grad_(True)
        results = {}
        for kernel in KERNELS:
            loss = ltkd_loss(s, zt[half], groups, alpha=1.0, beta=8.0, temperature=2.0, kernel=kernel)
            (grad,) = torch.autograd.grad(loss, s)
            results[kernel] = (loss.detach(), grad)
        distiller = LTKD(groups, alpha=1.0, beta=8.0, temperature=2.0)
        results["distiller"] = distiller(ModelOutput(s, [], s), ModelOutput(zt[half], [], zt[half]), None).detach()
        results["local"] = ltkd_loss(s, zt[half], groups, alpha=1.0, beta=8.0, temperature=2.0,
                                     sync_batch_stats=False).detach()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_rebalance_statistics_are_all_reduced(tmp_path):
    import torch.multiprocessing as mp

    world_size = 2
    context = mp.start_processes(_dist_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)),
                                 nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in context.processes:
                proc.kill()
            pytest.fail("distributed workers did not finish in time")
    zs, zt = logits(8, 11, 200), logits(8, 11, 201)
    groups = GROUPINGS["3_permuted"]
    totals = group_totals_plain(zt, groups, 2.0)  # P_G of the global batch
    for rank in range(world_size):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        half = slice(4 * rank, 4 * rank + 4)
        want = ltkd_plain(zs[half], zt[half], groups, alpha=1.0, beta=8.0, temperature=2.0, totals=totals)
        local = ltkd_plain(zs[half], zt[half], groups, alpha=1.0, beta=8.0, temperature=2.0)
        assert abs(want - local) > 1e-4  # the test can tell global from per-shard statistics
        for kernel in KERNELS:
            assert abs(float(got[kernel][0]) - want) < 1e-9, kernel
        assert abs(float(got["distiller"]) - want) < 1e-9
        assert abs(float(got["local"]) - local) < 1e-9
        # the gradient is the single-process one with the global statistics held fixed
        numeric = torch.zeros(4, 11, dtype=torch.float64)
        for i in range(4):
            for c in range(11):
                bumped = []
                for step in (1e-6, -1e-6):
                    z = zs[half].clone()
                    z[i, c] += step
                    bumped.append(ltkd_plain(z, zt[half], groups, alpha=1.0, beta=8.0, temperature=2.0,
                                             totals=totals))
                numeric[i, c] = (bumped[0] - bumped[1]) / 2e-6
        for kernel in KERNELS:
            assert torch.allclose(got[kernel][1], numeric, atol=1e-6), kernel
