"""dist: its registry entry (name, label, hyperparameters, published defaults); torch-free.

The loss and its Distiller: trainables/distillers/dist.py. DIST (Huang et al. 2022, KD from a stronger teacher): Pearson-correlation relations.
"""
from __future__ import annotations

from trainables.methods.spec import Hyperparameter, METHODS, MethodSpec


# DIST paper / official code: beta = gamma = 1 everywhere. CIFAR-100: tau 4, CE 1, DIST loss
# weight 2 (SPEC section 2). ImageNet: tau 1 (the paper's ImageNet setting); we keep the loss
# weight at 2 there too for want of a different published value. ce_weight 1.
STYLE_DEFAULTS = {"cifar": {"beta": 1.0, "gamma": 1.0, "tau": 4.0, "kd_weight": 2.0, "ce_weight": 1.0},
                  "imagenet": {"beta": 1.0, "gamma": 1.0, "tau": 1.0, "kd_weight": 2.0, "ce_weight": 1.0}}


SPEC = METHODS.add(MethodSpec(
    name="dist",
    label="DIST",
    kind="logit",
    hyperparameters=(
        Hyperparameter("beta", 1.0, float, 0.0, None, "weight of the inter-class relation (per sample)"),
        Hyperparameter("gamma", 1.0, float, 0.0, None, "weight of the intra-class relation (per class)"),
        Hyperparameter("tau", 4.0, float, 0.01, 100.0, "softmax temperature (loss scales by tau^2)",
                       aliases=("temperature",)),
        Hyperparameter("kd_weight", 2.0, float, 0.0, None, "weight of the DIST term"),
    ),
    implementation="trainables.distillers.dist",
    table_row=4,
    style_defaults=STYLE_DEFAULTS,
    description="DIST: Pearson-correlation match of predictions, inter- and intra-class",
    guesses={"imagenet": {"kd_weight": "CIFAR's DIST weight 2, kept for want of a published ImageNet one"}},
))
