"""kd: its registry entry (name, label, hyperparameters, published defaults); torch-free.

The loss and its Distiller: trainables/distillers/kd.py. KD (Hinton et al. 2015): T^2 KL(softmax(z_t / T) || softmax(z_s / T)), batch mean.
"""
from __future__ import annotations

from trainables.methods.spec import Hyperparameter, METHODS, MethodSpec


# mdistiller (DKD's codebase) defaults: CIFAR KD.TEMPERATURE 4, CE_WEIGHT 0.1, KD_WEIGHT 0.9
# (engine/cfg.py); ImageNet configs/imagenet/*/kd.yaml: TEMPERATURE 1, CE 0.5, KD 0.5.
STYLE_DEFAULTS = {"cifar": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9},
                  "imagenet": {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5}}


SPEC = METHODS.add(MethodSpec(
    name="kd",
    label="KD",
    kind="logit",
    hyperparameters=(
        Hyperparameter("temperature", 4.0, float, 0.01, 100.0, "softmax temperature T (loss scales by T^2)"),
        Hyperparameter("kd_weight", 0.9, float, 0.0, None, "weight of the KL term"),
    ),
    implementation="trainables.distillers.kd",
    table_row=2,
    style_defaults=STYLE_DEFAULTS,
    description="Hinton KD: temperature-softened KL to the teacher",
))
