"""ce: the student trained alone ("Student" row): cross-entropy on the labels; torch-free.

No teacher, so no Distiller and no loss module: the engine adds the cross-entropy itself.
"""
from __future__ import annotations

from trainables.methods.spec import METHODS, MethodSpec


SPEC = METHODS.add(MethodSpec(
    name="ce",
    label="Student",
    kind="none",
    hyperparameters=(),
    table_row=1,
    description="student trained alone with cross-entropy (no teacher)",
))
