"""ReviewKD (Chen et al. 2021, "Distilling Knowledge via Knowledge Review").

The student's feature levels are fused from the deepest to the shallowest by attention-based
fusion (ABF) modules, and each fused level is regressed onto the teacher's feature at the same
level with the hierarchical context loss (HCL).

Levels. A model's levels are some of its `stages` (shallow to deep) followed by its pooled
feature as a 1x1 map (the official CIFAR and ImageNet code both use the pooled feature as the
deepest level). Which stages (the `num_stages` knob; 0 = automatic):

- automatic: a model that exposes 4 or more stages lists a stem first (every zoo model except
  the WRNs; VGG's first block plays that part), which the official code never distils, so its
  candidate stages are stages[1:]; a model with 3 stages (WRN: its three residual groups) keeps
  them all. k = min(candidates of the student, candidates of the teacher, 4) and the deepest k
  candidates of each model are used, plus the pooled level. This reproduces the official level
  layout of every CIFAR pair of the paper (resnet32x4->resnet8x4 and ->shufflenetv1: 3 stages;
  vgg13->vgg8: 4; wrn_40_2->wrn_40_1 and ->shufflenetv1: 3) and of both ImageNet pairs (4), except
  for MobileNetV2 students, whose deepest four stages (8x8 group, 4x4, 2x2, final 1x1 conv) are
  used where the official code took the 16x16 group instead of the final 1x1-conv map;
- num_stages = n > 0: the deepest n stages of each model (n at most the smaller stage count).

Every connector shape is read from one dummy forward of both models at build time (batch 2,
eval mode, no grad; their train/eval flags are restored afterwards), never from per-model tables.

ABF (one per level, shallow to deep in `abfs`): 1x1 conv (no bias) + BN from the student level's
channels to `mid_channels`; for every level but the deepest, fusion with the residual from the
deeper level: the residual is resized to this level's size, a 1x1 conv (with bias) over the
concatenation gives 2 maps, a sigmoid, and x * a0 + residual * a1; then the fused map is
resized to the teacher level's spatial size (nearest-neighbour up, as the official code; adaptive
average pooling down, which the official code never needs), becomes the residual passed to the
next shallower level, and a 3x3 conv (no bias) + BN maps it to the teacher level's channels.
Resizing before the 3x3 conv (rather than after it) is what the official code does with its
`out_shape`, so that student and teacher maps have equal sizes in the loss. Convolution weights
are Kaiming-uniform initialised with a = 1 (the official init). A batch norm that gets a single
value per channel in training (a 1-sample batch at the 1x1 pooled level) normalises with its
running statistics instead of failing.

HCL per level: MSE at full resolution (weight 1) plus MSE after adaptive average pooling to
4x4, 2x2 and 1x1, each used only when smaller than the map (l < min(h, w); the official code
tests l < h on square maps), with weights 1/2, 1/4, 1/8 halving per pooling level that is used;
the weighted sum is divided by the total weight; the levels' losses are summed.

Deviations from the official code (documented, deliberate): the teacher's features are the zoo's
stages, which are post-ReLU for most models, where the official code reads the teacher's
pre-ReLU features; features and the loss run in float32 (autocast off), the teacher's detached.

Defaults (hyperparameters with their sources):
- reviewkd_weight: CIFAR 5.0 (official CIFAR-100/script/reviewKD.sh: 5.0 for every pair of the
  paper, ShuffleNetV1 students included; 8.0 only for ShuffleNetV2 students, which this zoo does
  not have but which get 8.0 if added under a name starting with "shufflenetv2"; 0.6 for
  resnet56->resnet20); ImageNet 1.0 for resnet34->resnet18 (official ImageNet/imagenet_amp.py
  default --review-kd-loss-weight 1.0; mdistiller configs/imagenet/r34_r18/reviewkd.yaml 1.0) and
  8.0 for resnet50->mobilenetv1 (the authors' Paddle config r50_mv1_reviewkd.yaml and mdistiller
  configs/imagenet/r50_mv1/reviewkd.yaml), 1.0 for any other ImageNet pair.
- warmup_epochs: CIFAR 20 (official --kd-warm-up 20; mdistiller WARMUP_EPOCHS 20); ImageNet 1,
  i.e. none (the official ImageNet script has no warm-up; mdistiller WARMUP_EPOCHS 1).
- ce_weight: 1 (official --ce-loss-weight 1.0; mdistiller CE_WEIGHT 1.0).
- mid_channels: 0 = automatic = min(512, channels of the student's deepest level) as in the
  official CIFAR code and mdistiller (resnet8x4 256, vgg8/shufflenetv1/mobilenetv2 512, wrn_40_1
  64, resnet18 512 = the official ImageNet value); ImageNet MobileNetV1 students 256 (official
  ImageNet build_review_kd('mobilenet') and the Paddle config).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainables.distillers._common import common_float, no_autocast, promote
from trainables.distillers.base import DistillContext, Distiller
from trainables.models.base import ModelOutput

HCL_POOL_SIZES = (4, 2, 1)
MAX_AUTO_STAGES = 4
MAX_AUTO_MID_CHANNELS = 512


# ----------------------------------------------------------------------------------- the loss


def hcl_loss(
    student_features: Sequence[torch.Tensor],
    teacher_features: Sequence[torch.Tensor],
    pool_sizes: Sequence[int] = HCL_POOL_SIZES,
) -> torch.Tensor:
    """Hierarchical context loss, summed over the levels (see the module docstring).

    student_features[i] and teacher_features[i] are (N, C, H, W) maps of equal shape. Per level:
    (MSE + sum_j w_j MSE(pool_l_j(fs), pool_l_j(ft))) / (1 + sum_j w_j), with w = 1/2, 1/4, ...
    over the pooling sizes l < min(H, W) in the given order. Computed in float32 at least; the
    teacher's maps are treated as constants.
    """
    if len(student_features) != len(teacher_features):
        raise ValueError(f"hcl_loss: {len(student_features)} student levels but {len(teacher_features)} teacher levels")
    if len(student_features) == 0:
        raise ValueError("hcl_loss: needs at least one level")
    total = None
    for i, (fs, ft) in enumerate(zip(student_features, teacher_features)):
        if fs.dim() != 4 or fs.shape != ft.shape:
            raise ValueError(f"hcl_loss: level {i}: student map {tuple(fs.shape)} and teacher map "
                             f"{tuple(ft.shape)} must be (N, C, H, W) of the same shape")
        with no_autocast(fs.device):
            fs, ft = common_float(fs, ft.detach())
            smallest = min(fs.shape[-2], fs.shape[-1])
            loss = F.mse_loss(fs, ft)
            weight, weight_sum = 1.0, 1.0
            for size in pool_sizes:
                if size >= smallest:
                    continue
                weight /= 2.0
                loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size))
                weight_sum += weight
            loss = loss / weight_sum
        total = loss if total is None else total + loss
    return total


# ----------------------------------------------------------------------------------- modules


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """x (N, C, H, W) resized to `size` (h, w): adaptive average pooling when no side grows,
    else nearest-neighbour interpolation (the official ABF's upsampling)."""
    size = (int(size[0]), int(size[1]))
    h, w = x.shape[-2], x.shape[-1]
    if (h, w) == size:
        return x
    if size[0] <= h and size[1] <= w:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


class _BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that falls back to its running statistics when a training batch holds a single
    value per channel (1 sample at a 1x1 level), where batch statistics cannot be formed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ABF(nn.Module):
    """Attention-based fusion of one student level (see the module docstring)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), _BatchNorm2d(mid_channels))
        self.attention = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None)
        self.project = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                     _BatchNorm2d(out_channels))
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.project[0].weight, a=1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, out_size: Sequence[int]):
        """Returns (the level's output at out_size with the teacher's channels, the fused map to pass on)."""
        x = self.reduce(x)
        if self.attention is not None:
            if residual is None:
                raise ValueError("reviewkd: a fusing ABF needs the residual of the deeper level")
            residual = resize_to(residual, x.shape[-2:])
            att = self.attention(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        x = resize_to(x, out_size)
        return self.project(x), x


def _levels(out: ModelOutput, stage_indices: Sequence[int]) -> list[torch.Tensor]:
    return [out.stages[i] for i in stage_indices] + [out.pooled.reshape(out.pooled.shape[0], -1, 1, 1)]


class ReviewKD(Distiller):
    """ReviewKD as a Distiller: owns the ABF modules (optimised with the student, saved in its checkpoint)."""

    needs_features = True

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 student_stages: Sequence[int], teacher_stages: Sequence[int], *, mid_channels: int,
                 weight: float, pool_sizes: Sequence[int] = HCL_POOL_SIZES):
        super().__init__()
        if len(student_channels) != len(teacher_channels) or len(student_channels) != len(student_stages) + 1 \
                or len(student_stages) != len(teacher_stages):
            raise ValueError("reviewkd: student and teacher need the same number of levels (stages + pooled)")
        if mid_channels < 1:
            raise ValueError(f"reviewkd: mid_channels must be >= 1, got {mid_channels}")
        self.student_stages = tuple(int(i) for i in student_stages)
        self.teacher_stages = tuple(int(i) for i in teacher_stages)
        self.student_channels = tuple(int(c) for c in student_channels)
        self.teacher_channels = tuple(int(c) for c in teacher_channels)
        self.mid_channels = int(mid_channels)
        self.weight = float(weight)
        self.pool_sizes = tuple(int(p) for p in pool_sizes)
        n = len(self.student_channels)
        # abfs[i] serves level i (shallow to deep); the deepest one has nothing to fuse with.
        self.abfs = nn.ModuleList(
            ABF(cs, self.mid_channels, ct, fuse=i < n - 1)
            for i, (cs, ct) in enumerate(zip(self.student_channels, self.teacher_channels))
        )

    def fuse(self, student: ModelOutput, teacher_sizes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """The student's fused levels (shallow to deep), each at the teacher level's size and channels."""
        dtype = self.abfs[0].reduce[0].weight.dtype  # float32 unless the distiller was made float64
        feats = [promote(f).to(dtype) for f in _levels(student, self.student_stages)]
        for i, f in enumerate(feats):
            if f.shape[1] != self.student_channels[i]:
                raise ValueError(f"reviewkd: student level {i} has {f.shape[1]} channels, the distiller was built "
                                 f"for {self.student_channels[i]}")
        results: list[torch.Tensor] = [None] * len(feats)  # type: ignore[list-item]
        residual = None
        for i in reversed(range(len(feats))):
            results[i], residual = self.abfs[i](feats[i], residual, teacher_sizes[i])
        return results

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> torch.Tensor:
        device = student.pooled.device
        with no_autocast(device):
            with torch.no_grad():
                targets_t = [promote(f.detach()) for f in _levels(teacher, self.teacher_stages)]
            for i, f in enumerate(targets_t):
                if f.shape[1] != self.teacher_channels[i]:
                    raise ValueError(f"reviewkd: teacher level {i} has {f.shape[1]} channels, the distiller was "
                                     f"built for {self.teacher_channels[i]}")
            fused = self.fuse(student, [f.shape[-2:] for f in targets_t])
            if fused[0].dtype != targets_t[0].dtype:
                targets_t = [f.to(fused[0].dtype) for f in targets_t]
            return self.weight * hcl_loss(fused, targets_t, self.pool_sizes)

    def extra_repr(self) -> str:
        return (f"student_stages={self.student_stages}, teacher_stages={self.teacher_stages}, "
                f"mid_channels={self.mid_channels}, weight={self.weight}")


# ----------------------------------------------------------------------------------- building


def probe_features(model: nn.Module, input_shape: Sequence[int]) -> ModelOutput:
    """One forward_features of a dummy batch of 2 in eval mode without gradients; the train/eval
    flag of every submodule is restored afterwards."""
    try:
        param = next(model.parameters())
        device, dtype = param.device, (param.dtype if param.is_floating_point() else torch.float32)
    except StopIteration:  # pragma: no cover - every zoo model has parameters
        device, dtype = torch.device("cpu"), torch.float32
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return model.forward_features(torch.zeros(2, *input_shape, device=device, dtype=dtype))
    finally:
        for m, flag in flags:
            m.training = flag


def _candidate_stages(n_stages: int) -> list[int]:
    return list(range(1, n_stages)) if n_stages >= 4 else list(range(n_stages))


def select_stages(n_student: int, n_teacher: int, num_stages: int = 0) -> tuple[list[int], list[int]]:
    """Stage indices (shallow to deep) of the student and the teacher used as ReviewKD levels,
    the pooled level excluded. num_stages 0 = automatic (see the module docstring)."""
    if num_stages < 0:
        raise ValueError(f"reviewkd: num_stages must be >= 0 (0 = automatic), got {num_stages}")
    if num_stages == 0:
        cs, ct = _candidate_stages(n_student), _candidate_stages(n_teacher)
        k = min(len(cs), len(ct), MAX_AUTO_STAGES)
        return (cs[len(cs) - k:] if k else []), (ct[len(ct) - k:] if k else [])
    if num_stages > min(n_student, n_teacher):
        raise ValueError(f"reviewkd: num_stages={num_stages} but the student has {n_student} stages and the "
                         f"teacher {n_teacher}; use at most {min(n_student, n_teacher)} (0 = automatic)")
    return list(range(n_student - num_stages, n_student)), list(range(n_teacher - num_stages, n_teacher))


def build(context: DistillContext, hp: dict) -> ReviewKD:
    if context.student is None or context.teacher is None:
        raise ValueError("reviewkd: needs the student and the teacher models to derive its connector shapes")
    s_out = probe_features(context.student, context.input_shape)
    t_out = probe_features(context.teacher, context.input_shape)
    s_idx, t_idx = select_stages(len(s_out.stages), len(t_out.stages), int(hp["num_stages"]))
    s_channels = [f.shape[1] for f in _levels(s_out, s_idx)]
    t_channels = [f.shape[1] for f in _levels(t_out, t_idx)]
    mid = int(hp["mid_channels"]) or min(MAX_AUTO_MID_CHANNELS, s_channels[-1])
    return ReviewKD(s_channels, t_channels, s_idx, t_idx, mid_channels=mid, weight=hp["reviewkd_weight"])
