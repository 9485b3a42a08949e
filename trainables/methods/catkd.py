"""catkd: its registry entry (name, label, hyperparameters, published defaults); torch-free.

The loss and its Distiller: trainables/distillers/catkd.py. CAT-KD (Guo et al. 2023, "Class Attention Transfer Based Knowledge Distillation").
"""
from __future__ import annotations

from trainables.methods.spec import Hyperparameter, METHODS, MethodSpec


# (beta, cam_resolution, normalize) from the official configs (module docstring).
_CIFAR_PAIRS = {
    ("resnet32x4", "resnet8x4"): (15.0, 2, False),
    ("vgg13", "vgg8"): (4.5, 2, False),
    ("wrn_40_2", "shufflenetv1"): (80.0, 4, True),
    ("resnet50_cifar", "mobilenetv2"): (40.0, 2, True),
    ("resnet50", "mobilenetv2"): (40.0, 2, True),
    ("resnet32x4", "shufflenetv1"): (600.0, 4, True),
    ("vgg13", "mobilenetv2"): (15.0, 2, True),
    ("wrn_40_2", "wrn_40_1"): (1.5, 2, False),
    ("resnet56", "resnet20"): (0.7, 2, False),
}
_CIFAR_FALLBACK = (15.0, 2, True)
_IMAGENET_PAIRS = {
    ("resnet34", "resnet18"): (0.5, 4, False),
    ("resnet50", "mobilenetv1"): (10.0, 2, True),
}
_IMAGENET_FALLBACK = (0.5, 4, False)


def _defaults_for(dataset_style: str, teacher_arch: str, student_arch: str) -> dict:
    pair = (teacher_arch.lower(), student_arch.lower())
    if dataset_style == "imagenet":
        beta, resolution, normalize = _IMAGENET_PAIRS.get(pair, _IMAGENET_FALLBACK)
    else:
        beta, resolution, normalize = _CIFAR_PAIRS.get(pair, _CIFAR_FALLBACK)
    return {"beta": beta, "cam_resolution": resolution, "normalize": normalize, "cam_bias": False,
            "ce_weight": 1.0, "warmup_epochs": 0}


SPEC = METHODS.add(MethodSpec(
    name="catkd",
    label="CAT-KD",
    kind="feature",
    hyperparameters=(
        Hyperparameter("beta", 15.0, float, 0.0, None, "weight of the CAM transfer loss"),
        Hyperparameter("cam_resolution", 2, int, 1, 64, "side of the pooled class activation maps (2 or 4 officially)"),
        Hyperparameter("normalize", True, bool, help="L2-normalise each pooled class map over its positions"),
        Hyperparameter("cam_bias", False, bool, help="add the classifier bias to the CAMs (not officially)"),
    ),
    implementation="trainables.distillers.catkd",
    table_row=6,
    defaults_for=_defaults_for,
    description="Class attention transfer: MSE between pooled class activation maps",
))
