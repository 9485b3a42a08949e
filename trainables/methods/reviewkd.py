"""reviewkd: its registry entry (name, label, hyperparameters, published defaults); torch-free.

The loss and its Distiller: trainables/distillers/reviewkd.py. ReviewKD (Chen et al. 2021, "Distilling Knowledge via Knowledge Review").
"""
from __future__ import annotations

from trainables.methods.spec import Hyperparameter, METHODS, MethodSpec


def _defaults_for(dataset_style: str, teacher_arch: str, student_arch: str) -> dict:
    teacher, student = teacher_arch.lower(), student_arch.lower()
    if dataset_style == "imagenet":
        weight = 8.0 if (teacher, student) == ("resnet50", "mobilenetv1") else 1.0
        mid = 256 if student == "mobilenetv1" else 0
        return {"reviewkd_weight": weight, "warmup_epochs": 1, "ce_weight": 1.0, "mid_channels": mid}
    if student.startswith("shufflenetv2"):
        weight = 8.0
    elif (teacher, student) == ("resnet56", "resnet20"):
        weight = 0.6
    else:
        weight = 5.0
    return {"reviewkd_weight": weight, "warmup_epochs": 20, "ce_weight": 1.0, "mid_channels": 0}


SPEC = METHODS.add(MethodSpec(
    name="reviewkd",
    label="ReviewKD",
    kind="feature",
    hyperparameters=(
        Hyperparameter("reviewkd_weight", 5.0, float, 0.0, None, "weight of the hierarchical context loss"),
        Hyperparameter("mid_channels", 0, int, 0, 4096,
                       "channels inside the ABF modules (0 = min(512, the student's deepest channels))"),
        Hyperparameter("num_stages", 0, int, 0, 16,
                       "stages distilled besides the pooled feature, deepest first (0 = automatic)"),
        Hyperparameter("warmup_epochs", 20, int, 0, None, "linear warm-up of the distillation term, in epochs"),
    ),
    implementation="trainables.distillers.reviewkd",
    table_row=5,
    defaults_for=_defaults_for,
    description="Knowledge review: attention-based fusion of student stages, hierarchical context loss",
))
