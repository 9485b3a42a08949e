"""Every architecture's name, style and student learning rate, without importing torch.

A sweep's driver only validates and plans: importing the models (torch: ~1.9 s and ~0.3 GB) just to
check a name and read two fields would be most of its start. `model_catalog()` reads the
`@MODELS.register(name, style=..., student_lr=...)` lines of trainables/models/ as written, or the
registry itself once its models are loaded (a worker, or a test that registered a model of its own).
So a model is still declared in one place, its file; tests check both readings agree.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MODELS_FOLDER = Path(__file__).with_name("models")


@dataclass(frozen=True)
class ModelInfo:
    """What a config is checked and resolved with: trainables.models.ModelSpec without its constructor."""

    name: str
    style: str  # "cifar" or "imagenet"
    student_lr: float


def model_catalog() -> dict[str, ModelInfo]:
    """name -> ModelInfo of every architecture, in the registry's order."""
    registry = sys.modules.get("trainables.models._registry")
    if registry is not None and registry.MODELS.loaded:
        return {name: ModelInfo(name, spec.style, spec.student_lr) for name, spec in registry.MODELS.items()}
    return dict(_declared_models())


@cache
def _declared_models() -> tuple[tuple[str, ModelInfo], ...]:
    """The registrations as written: the modules the package's __init__ imports, in its order (the
    registry's), then any other; names in them are the constants of the package's _registry.py."""
    constants = {node.targets[0].id: ast.literal_eval(node.value)
                 for node in ast.parse((MODELS_FOLDER / "_registry.py").read_text()).body
                 if isinstance(node, ast.Assign) and len(node.targets) == 1
                 and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
                 and isinstance(node.value, ast.Constant)}
    imported = [node.module for node in ast.parse((MODELS_FOLDER / "__init__.py").read_text()).body
                if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module]
    modules = [name for name in imported if not name.startswith("_")]
    modules += sorted(path.stem for path in MODELS_FOLDER.glob("*.py")
                      if not path.stem.startswith("_") and path.stem not in modules)
    out = []
    for module in modules:
        path = MODELS_FOLDER / f"{module}.py"
        for node in ast.parse(path.read_text(), str(path)).body:
            for decorator in getattr(node, "decorator_list", ()):
                if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                        and decorator.func.attr == "register" and getattr(decorator.func.value, "id", None) == "MODELS"):
                    info = _declared(decorator, node.name, path, constants)
                    out.append((info.name, info))
    return tuple(out)


def _declared(call: ast.Call, default_name: str, path: Path, constants: dict) -> ModelInfo:
    """One `@MODELS.register(name, style=..., student_lr=...)`; its arguments are literals or _registry.py's constants."""
    def value(node: ast.expr):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name) and node.id in constants:
            return constants[node.id]
        raise ValueError(f"{path.name}, line {node.lineno}: a @MODELS.register argument must be a literal or a "
                         "constant of trainables/models/_registry.py (model_catalog reads it without importing torch)")

    fields = {keyword.arg: value(keyword.value) for keyword in call.keywords}
    name = value(call.args[0]) if call.args else default_name
    return ModelInfo(name, fields["style"], float(fields["student_lr"]))
