"""dkd: its registry entry (name, label, hyperparameters, published defaults); torch-free.

The loss and its Distiller: trainables/distillers/dkd.py. DKD (Zhao et al. 2022, Decoupled KD): alpha TCKD + beta NCKD, scaled by T^2, batch mean.
"""
from __future__ import annotations

from trainables.methods.spec import Hyperparameter, METHODS, MethodSpec


# Official DKD settings (mdistiller). CIFAR (engine/cfg.py + configs/cifar100/dkd/*.yaml):
# CE 1, alpha 1, beta 8, T 4, warm-up 20 epochs; beta 6 for vgg13->vgg8, vgg13->mobilenetv2 and
# wrn_40_2->wrn_40_1. ImageNet (configs/imagenet/r34_r18/dkd.yaml, r50_mv1/dkd.yaml): CE 1,
# alpha 1 (the cfg default, not overridden), beta 0.5 (2.0 for resnet50->mobilenetv1), T 1,
# WARMUP 1. mdistiller's factor is min(epoch / WARMUP, 1) with epochs counted from 1, so
# WARMUP 1 means no warm-up; warmup_epochs = 1 gives the same here ((epoch + 1) / 1 >= 1).
_CIFAR_BETA6 = {("vgg13", "vgg8"), ("vgg13", "mobilenetv2"), ("wrn_40_2", "wrn_40_1")}


def _defaults_for(dataset_style: str, teacher_arch: str, student_arch: str) -> dict:
    pair = (teacher_arch.lower(), student_arch.lower())
    if dataset_style == "imagenet":
        beta = 2.0 if pair == ("resnet50", "mobilenetv1") else 0.5
        return {"alpha": 1.0, "beta": beta, "temperature": 1.0, "warmup_epochs": 1, "ce_weight": 1.0}
    beta = 6.0 if pair in _CIFAR_BETA6 else 8.0
    return {"alpha": 1.0, "beta": beta, "temperature": 4.0, "warmup_epochs": 20, "ce_weight": 1.0}


SPEC = METHODS.add(MethodSpec(
    name="dkd",
    label="DKD",
    kind="logit",
    hyperparameters=(
        Hyperparameter("alpha", 1.0, float, 0.0, None, "weight of TCKD (target vs non-target)"),
        Hyperparameter("beta", 8.0, float, 0.0, None, "weight of NCKD (among non-target classes)"),
        Hyperparameter("temperature", 4.0, float, 0.01, 100.0, "softmax temperature T (loss scales by T^2)"),
        Hyperparameter("warmup_epochs", 20, int, 0, None, "linear warm-up of the distillation term, in epochs"),
    ),
    implementation="trainables.distillers.dkd",
    table_row=3,
    defaults_for=_defaults_for,
    description="Decoupled KD: target-class and non-target-class KL terms",
))
