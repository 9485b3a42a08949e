"""The student trained alone ("Student" row): cross-entropy on the labels, no teacher, no Distiller."""
from __future__ import annotations

from trainables.distillers.base import DistillContext, MethodSpec, register


def _build(context: DistillContext, hp: dict) -> None:
    return None


def _defaults_for(dataset_style: str, teacher_arch: str, student_arch: str) -> dict:
    return {"ce_weight": 1.0, "warmup_epochs": 0}


SPEC = register(MethodSpec(
    name="ce",
    label="Student",
    kind="none",
    hyperparameters=(),
    build=_build,
    defaults_for=_defaults_for,
    description="student trained alone with cross-entropy (no teacher)",
))
