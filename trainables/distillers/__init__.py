"""The distillation losses (torch): one module per method with a teacher.

Each defines its pure loss function, a Distiller wrapping it and `build(context, hparams)`; the
method's registry entry (label, hyperparameters, defaults) is trainables/methods/<name>.py,
which names its module here. `get_method(name)` (re-exported) resolves a registry name.
"""
from trainables.distillers.base import (
    COMMON_HYPERPARAMETERS,
    METHODS,
    DistillContext,
    Distiller,
    Hyperparameter,
    MethodSpec,
    UnknownMethodError,
    get_method,
    warmup_factor,
)
from trainables.distillers.bkd import bkd_loss, effective_number_weights
from trainables.distillers.catkd import catkd_loss, class_activation_maps
from trainables.distillers.reviewkd import hcl_loss
from trainables.distillers.dist import dist_loss
from trainables.distillers.dkd import dkd_loss
from trainables.distillers.kd import kd_loss
from trainables.distillers.ltkd import kl_decomposition, ltkd_loss

__all__ = [
    "COMMON_HYPERPARAMETERS",
    "METHODS",
    "DistillContext",
    "Distiller",
    "Hyperparameter",
    "MethodSpec",
    "UnknownMethodError",
    "get_method",
    "warmup_factor",
    "bkd_loss",
    "effective_number_weights",
    "dist_loss",
    "dkd_loss",
    "kd_loss",
    "kl_decomposition",
    "ltkd_loss",
    "catkd_loss",
    "class_activation_maps",
    "hcl_loss",
]
