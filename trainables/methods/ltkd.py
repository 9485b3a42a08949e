"""ltkd: its registry entry (name, label, hyperparameters, published defaults); torch-free.

The loss and its Distiller: trainables/distillers/ltkd.py. Long-Tailed Knowledge Distillation (LTKD; arXiv 2506.18496) and the KL decomposition it rests on.
"""
from __future__ import annotations

from trainables.methods.spec import Hyperparameter, METHODS, MethodSpec

WITHIN_NORMS = ("sum", "mean")  # the within term: summed over groups (the paper) or their mean


# Defaults. The paper's text gives no numeric alpha / beta / T (its hyperparameter figure lost
# its numbers), and no official code is public. The authors build on DKD's codebase, and LTKD's
# uniform within-group term plays the part of DKD's NCKD (a KL between renormalised
# distributions that no longer carries the teacher's probability mass as a weight), so we take
# DKD's dataset-level settings: CIFAR-style alpha 1, beta 8, T 4, 20 warm-up epochs;
# ImageNet-style alpha 1, beta 0.5, T 1, warm-up 1 epoch (= none, as DKD's ImageNet configs).
# Optuna searches alpha, beta and T per imbalance factor anyway (search_spaces/).
#
# These CIFAR- and ImageNet-style values are guesses: a run that keeps them is warned. On the
# embedded digits data a study chose better ones (benchmarks/digits_study.py, README "Defaults"):
# alpha 1 with beta in {1, 2, 4, 8} x T in {2, 4}, resnet20 -> resnet8, 10 epochs, 3 student
# seeds, chosen on validation accuracy at imbalance factors 10, 50 and 100. beta 1 won at every
# factor (T 2 at 10 and 50, T 4 at 100; T 2 has the best mean); DKD's beta 8 was the worst at
# every factor (validation accuracy 37.7 / 24.7 / 27.7 at T 4, against 92.0 / 56.7 / 56.3 for
# the winners): the beta-weighted within term, scaled by T^2, swamps the cross-entropy.
DIGITS_STUDY = {"alpha": 1.0, "beta": 1.0, "temperature": 2.0}


STYLE_DEFAULTS = {"cifar": {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20, "ce_weight": 1.0},
                  "imagenet": {"alpha": 1.0, "beta": 0.5, "temperature": 1.0, "warmup_epochs": 1, "ce_weight": 1.0}}


# Every CIFAR- and ImageNet-style default above is a guess: the loss weights and T are DKD's, the
# warm-up is DKD's, and the CE weight 1 is DKD's too (the paper's loss is CE + LTKD, no weight given).
_DKD_VALUES = "DKD's values, since the paper's were lost (on digits beta 8 was the worst of a study)"
GUESSES = {"alpha": _DKD_VALUES, "beta": _DKD_VALUES, "temperature": _DKD_VALUES,
           "warmup_epochs": "DKD's warm-up, the paper gives none",
           "ce_weight": "DKD's CE weight, the paper gives none"}


SPEC = METHODS.add(MethodSpec(
    name="ltkd",
    label="LTKD",
    kind="logit",
    hyperparameters=(
        Hyperparameter("alpha", 1.0, float, 0.0, None, "weight of the (rebalanced) cross-group KL"),
        Hyperparameter("beta", 8.0, float, 0.0, None, "weight of the (reweighted) within-group KL"),
        Hyperparameter("temperature", 4.0, float, 0.01, 100.0, "softmax temperature T (losses scale by T^2)"),
        Hyperparameter("n_groups", 3, int, 1, None, "number of frequency groups (3 = head/medium/tail; C = per class)"),
        Hyperparameter("rebalance", True, bool, help="rebalance the teacher's group probabilities (q) in the cross term"),
        Hyperparameter("uniform_within", True, bool, help="weight every group's within-KL by 1 instead of p_G^T"),
        Hyperparameter("within_norm", "sum", str, help="the within term: sum over groups (the paper) or their "
                       "mean (sum / n_groups: a scale that does not grow with the group count)",
                       choices=WITHIN_NORMS),
        Hyperparameter("warmup_epochs", 20, int, 0, None, "linear warm-up of the distillation term, in epochs"),
    ),
    implementation="trainables.distillers.ltkd",
    table_row=8,
    style_defaults=STYLE_DEFAULTS,
    description="Long-Tailed KD: rebalanced cross-group KL + uniformly weighted within-group KLs",
    studied_defaults={"digits": DIGITS_STUDY},
    guesses={style: GUESSES for style in STYLE_DEFAULTS},
))
