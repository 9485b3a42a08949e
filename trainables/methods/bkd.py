"""bkd: its registry entry (name, label, hyperparameters, published defaults); torch-free.

The loss and its Distiller: trainables/distillers/bkd.py. BKD (Zhang et al. 2023, Balanced KD for long-tailed learning).
"""
from __future__ import annotations

from trainables.methods.spec import Hyperparameter, METHODS, MethodSpec


# Official BKD code (EricZsy/BalancedKnowledgeDistillation, train_student.py / losses.py):
# T 2, loss = alpha * KD' + CE with alpha 1, CIFAR-100 "Reweight" rule: effective-number weights
# with beta 0.9999 from the first epoch, normalised to sum to C. Same values for every setting:
# the hyperparameters' own defaults below (ce_weight 1, the common default), written out per style
# so that a dataset that borrows them (trainables/guesses.py) says so.
STYLE_DEFAULTS = {style: {"temperature": 2.0, "beta_effective": 0.9999, "kd_weight": 1.0, "ce_weight": 1.0}
                  for style in ("cifar", "imagenet")}


SPEC = METHODS.add(MethodSpec(
    name="bkd",
    label="BKD",
    kind="logit",
    hyperparameters=(
        Hyperparameter("temperature", 2.0, float, 0.01, 100.0, "softmax temperature T (loss scales by T^2)"),
        Hyperparameter("beta_effective", 0.9999, float, 0.0, 0.999999, "effective-number beta of the class weights"),
        Hyperparameter("kd_weight", 1.0, float, 0.0, None, "weight of the class-balanced KL term"),
    ),
    implementation="trainables.distillers.bkd",
    table_row=7,
    style_defaults=STYLE_DEFAULTS,
    description="Balanced KD: KD to class-balanced (effective-number) reweighted teacher probabilities",
))
