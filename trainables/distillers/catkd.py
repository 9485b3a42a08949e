"""CAT-KD (Guo et al. 2023, "Class Attention Transfer Based Knowledge Distillation").

Class activation maps (CAMs): the last feature map (stages[-1], N x D x h x w, the map that the
model pools into `pooled`) through the classifier's weights used as a 1x1 convolution, giving
N x C x h x w. Both models' CAMs are adaptive-average-pooled to `cam_resolution` x
`cam_resolution` (which makes student and teacher sizes equal whatever their h x w), optionally
normalised, and matched with MSE (mean over N x C x r x r) times `beta`.

Facts from the official code (GzyAftermath/CAT-KD, mdistiller/distillers/CAT_KD.py, tools/train.py,
models/*_test):
- the CAM layer is a bias-free 1x1 conv: the teacher's is loaded from its linear classifier's
  weight only (its bias is dropped), the student's is its own classifier (the "_test" models have
  no separate linear layer; logits are the average-pooled CAMs). So the student's CAMs carry
  gradients into the student's classifier weights. Here: CAMs use the classifier weights without
  the bias by default (`cam_bias` = True adds each class's bias to its map); the weights are read
  from `context.student.classifier` / `context.teacher.classifier` at every forward, the student's
  with gradients (they are trained by CE and by this loss, as in the official code), the teacher's
  detached. (Unlike the official "_test" students, the zoo's students keep the bias in their logits.)
- normalisation (IF_NORMALIZE): F.normalize(cam, dim=(2, 3)) after the pooling: each class map of
  each sample divided by its L2 norm over the r x r positions (eps 1e-12). Same here.
- loss: beta * F.mse_loss(pooled student CAMs, pooled teacher CAMs); no temperature, no warm-up
  (the CAT_KD distiller has none), CE weight 1.

Pooling is linear and so is the 1x1 convolution, so pooling the features first and then applying
the classifier weights gives exactly the pooled CAMs; the loss does that (C x r x r instead of
C x h x w maps per sample). `class_activation_maps(features, weight)` returns full-size CAMs.

Defaults per pair (official configs/cifar100/CAT_KD/*.yaml and configs/imagenet/CAT-KD/*.yaml):

| teacher -> student | beta | cam_resolution | normalize |
| --- | --- | --- | --- |
| resnet32x4 -> resnet8x4 | 15 | 2 | no |
| vgg13 -> vgg8 | 4.5 | 2 | no |
| wrn_40_2 -> shufflenetv1 | 80 | 4 | yes |
| resnet50(_cifar) -> mobilenetv2 | 40 | 2 | yes |
| resnet32x4 -> shufflenetv1 | 600 | 4 | yes |
| vgg13 -> mobilenetv2 | 15 | 2 | yes |
| wrn_40_2 -> wrn_40_1 | 1.5 | 2 | no |
| resnet56 -> resnet20 | 0.7 | 2 | no |
| ImageNet resnet34 -> resnet18 | 0.5 | 4 | no |
| ImageNet resnet50 -> mobilenetv1 | 10 | 2 | yes |

The official ImageNet configs are r34_r18 and r50_mv2 (a MobileNetV2 student); the paper's
resnet50 -> MobileNetV1 pair takes the r50_mv2 settings (same teacher, a light MobileNet student).
Fallback for any other pair: CIFAR-style beta 15, resolution 2, normalised (normalised CAMs make
the loss independent of the two models' feature scales, so the weight transfers between pairs;
15 is the smallest official weight for normalised 2x2 CAMs); ImageNet-style the resnet34 ->
resnet18 settings. Re-tune beta for a new pair.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.distillers._common import common_float, no_autocast
from trainables.distillers.base import DistillContext, Distiller
from trainables.models.base import ModelOutput

NORMALIZE_EPS = 1e-12


def class_activation_maps(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    resolution: int | None = None,
) -> torch.Tensor:
    """CAMs of a (N, D, h, w) feature map under classifier weights (C, D) [and bias (C,)].

    Returns (N, C, h, w), or (N, C, r, r) adaptive-average-pooled when `resolution` = r is given
    (computed by pooling the features first, which is exact: both operations are linear).
    Differentiable with respect to the features, the weight and the bias.
    """
    if features.dim() != 4:
        raise ValueError(f"class_activation_maps: features must be (N, D, h, w), got shape {tuple(features.shape)}")
    if weight.dim() != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(f"class_activation_maps: weight must be (classes, {features.shape[1]}) for features with "
                         f"{features.shape[1]} channels, got shape {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"class_activation_maps: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if resolution is not None:
        if resolution < 1:
            raise ValueError(f"class_activation_maps: resolution must be >= 1, got {resolution}")
        features = F.adaptive_avg_pool2d(features, int(resolution))
    cams = torch.einsum("ndhw,cd->nchw", features, weight)
    if bias is not None:
        cams = cams + bias.view(1, -1, 1, 1)
    return cams


def _normalize_maps(cams: torch.Tensor) -> torch.Tensor:
    """Each (sample, class) map divided by its L2 norm over the spatial positions (F.normalize, eps 1e-12)."""
    return F.normalize(cams.flatten(2), dim=2, eps=NORMALIZE_EPS).view_as(cams)


def catkd_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_weight: torch.Tensor,
    *,
    beta: float = 1.0,
    resolution: int = 2,
    normalize: bool = False,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """beta * MSE(pool_r(CAM_s), pool_r(CAM_t)), each CAM optionally L2-normalised per map.

    Features (N, D_s, h_s, w_s) and (N, D_t, h_t, w_t); weights (C, D_s) and (C, D_t) with the same
    C. Computed in float32 at least with autocast off; the teacher's side is a constant, the
    student's features, weight and bias get gradients.
    """
    if student_weight.dim() != 2 or teacher_weight.dim() != 2 or student_weight.shape[0] != teacher_weight.shape[0]:
        raise ValueError(f"catkd_loss: student and teacher classifier weights must be (classes, channels) with the "
                         f"same class count, got {tuple(student_weight.shape)} and {tuple(teacher_weight.shape)}")
    if student_features.dim() != 4 or teacher_features.dim() != 4 or \
            student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(f"catkd_loss: features must be (N, D, h, w) with the same batch, got "
                         f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}")
    with no_autocast(student_features.device):
        fs, ws = common_float(student_features, student_weight)
        bs = None if student_bias is None else student_bias.to(fs.dtype)
        with torch.no_grad():
            ft, wt = common_float(teacher_features.detach(), teacher_weight.detach())
            bt = None if teacher_bias is None else teacher_bias.detach().to(ft.dtype)
            cam_t = class_activation_maps(ft, wt, bt, resolution)
            if normalize:
                cam_t = _normalize_maps(cam_t)
        cam_s = class_activation_maps(fs, ws, bs, resolution)
        if normalize:
            cam_s = _normalize_maps(cam_s)
        return float(beta) * F.mse_loss(cam_s, cam_t.to(cam_s.dtype))


class CATKD(Distiller):
    """CAT-KD as a Distiller. It owns no parameters: the classifiers it reads belong to the models
    (kept as plain references, so they are neither optimised twice nor saved with the distiller)."""

    needs_features = True

    def __init__(self, student_classifier: nn.Linear, teacher_classifier: nn.Linear, *, beta: float,
                 resolution: int, normalize: bool, use_bias: bool = False):
        super().__init__()
        for name, layer in (("student", student_classifier), ("teacher", teacher_classifier)):
            if not isinstance(layer, nn.Linear):
                raise ValueError(f"catkd: the {name}'s classifier must be an nn.Linear, got {type(layer).__name__}")
        if student_classifier.out_features != teacher_classifier.out_features:
            raise ValueError(f"catkd: the student predicts {student_classifier.out_features} classes and the teacher "
                             f"{teacher_classifier.out_features}; they must be the same")
        if use_bias and (student_classifier.bias is None or teacher_classifier.bias is None):
            raise ValueError("catkd: cam_bias needs classifiers with a bias")
        if resolution < 1:
            raise ValueError(f"catkd: cam_resolution must be >= 1, got {resolution}")
        self._classifiers = (student_classifier, teacher_classifier)  # a tuple: not registered as submodules
        self.beta = float(beta)
        self.resolution = int(resolution)
        self.normalize = bool(normalize)
        self.use_bias = bool(use_bias)

    def forward(self, student: ModelOutput, teacher: ModelOutput, targets: torch.Tensor) -> torch.Tensor:
        s_cls, t_cls = self._classifiers
        return catkd_loss(
            student.stages[-1], teacher.stages[-1], s_cls.weight, t_cls.weight,
            beta=self.beta, resolution=self.resolution, normalize=self.normalize,
            student_bias=s_cls.bias if self.use_bias else None,
            teacher_bias=t_cls.bias if self.use_bias else None,
        )

    def extra_repr(self) -> str:
        return (f"beta={self.beta}, resolution={self.resolution}, normalize={self.normalize}, "
                f"cam_bias={self.use_bias}")


def build(context: DistillContext, hp: dict) -> CATKD:
    if context.student is None or context.teacher is None:
        raise ValueError("catkd: needs the student and the teacher models (their classifier weights)")
    for name, model in (("student", context.student), ("teacher", context.teacher)):
        classifier = getattr(model, "classifier", None)
        if not isinstance(classifier, nn.Linear):
            raise ValueError(f"catkd: the {name} model has no nn.Linear `classifier`")
        if classifier.out_features != context.num_classes:
            raise ValueError(f"catkd: the {name}'s classifier predicts {classifier.out_features} classes, "
                             f"the data has {context.num_classes}")
    # No connector, so no dummy forward: a last stage whose channels differ from the classifier's
    # input is reported by class_activation_maps at the first batch.
    return CATKD(context.student.classifier, context.teacher.classifier, beta=hp["beta"],
                 resolution=hp["cam_resolution"], normalize=hp["normalize"], use_bias=hp["cam_bias"])
