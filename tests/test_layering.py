"""The house's rules, checked: which package may import which, and which commands never load torch or Ray.

Dependencies point one way: orchestrator -> results, search_spaces, trainables; results ->
trainables (its torch-free modules); search_spaces -> trainables. The engine, data, models and
methods import neither orchestrator nor results. Commands that only read files (`ltkd --help`,
`ltkd data describe`, and `ltkd status` / `ltkd report` in tests/test_sweep.py) load neither
torch nor Ray.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "trainables": ("orchestrator", "results", "search_spaces"),
    "search_spaces": ("orchestrator", "results"),
    "results": ("orchestrator",),
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every import in a file, function-local ones included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package):
    offences = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                for path in sorted((ROOT / package).rglob("*.py"))
                for name, line in sorted(imported_packages(path)) if name in FORBIDDEN[package]]
    assert not offences, "\n".join(offences)


def test_the_checker_sees_function_local_imports(tmp_path):
    """The rule above would pass vacuously if the scan missed imports inside functions."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from results.store import write_trial\n    import orchestrator.plan\n")
    assert {name for name, _ in imported_packages(path)} == {"results", "orchestrator"}


# What a command loaded, run as `ltkd` runs it, in a fresh interpreter.
PROBE = ("import json, sys\nfrom orchestrator.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
         "except SystemExit as exc:  # --help\n    rc = exc.code\n"
         "print('LOADED ' + json.dumps({'rc': rc, 'heavy': sorted(m for m in ('torch', 'torchvision', 'ray') "
         "if m in sys.modules)}))\n")


def probe(code: str, *args: str, cwd: Path | None = None):
    """Run `code` (which prints 'LOADED ' + JSON) with `args` in a fresh interpreter; that JSON, decoded."""
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                            timeout=600, cwd=cwd or ROOT)
    line = [line for line in result.stdout.splitlines() if line.startswith("LOADED ")]
    assert line, result.stdout + result.stderr
    return json.loads(line[-1][len("LOADED "):])


def loaded_by(*args: str, cwd: Path | None = None) -> dict:
    """{'rc': exit code, 'heavy': which of torch, torchvision, ray the command `ltkd ARGS` imported}."""
    return probe(PROBE, *args, cwd=cwd)


def test_the_probe_sees_torch_when_a_command_loads_it(tmp_path):
    """`ltkd train` imports the engine (torch) before it checks its flags: the probe must say so (else the
    torch-free checks below would prove nothing)."""
    outcome = loaded_by("train", "teacher", "--dataset", "digits", "--imbalance-factor", "10", "--epochs", "0",
                        "--out", tmp_path / "run")
    assert outcome["rc"] == 2 and "torch" in outcome["heavy"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [
    ["--help"],
    ["sweep", "--help"],
    ["report", "--help"],
    ["train", "student", "--help"],
    ["data", "describe", "--dataset", "digits", "--imbalance-factor", "10"],
    ["list", "models"],
    ["sweep", "--list"],
])
def test_commands_that_only_read_never_load_torch_or_ray(args):
    outcome = loaded_by(*args)
    assert outcome["heavy"] == [], f"ltkd {' '.join(args)} loaded {outcome['heavy']}"


def test_a_sweep_driver_validates_and_plans_without_torch():
    """The driver checks architectures by model_catalog, not the registry: importing torch would be
    ~1.9 s of every `ltkd sweep` and `ltkd resume` start, and ~0.3 GB of the driver's memory."""
    code = ("import json, sys\n"
            "from orchestrator.sweep_cli import config_path\n"
            "from orchestrator.sweep_config import load_config\n"
            "from orchestrator.plan import cells, cell_final_runs, plan_summary\n"
            "for name in (None, 'paper:table1'):\n"
            "    config = load_config(config_path(name))\n"
            "    plan_summary(config)\n"
            "    for cell in cells(config):\n"
            "        cell_final_runs(config, cell, None)\n"
            "print('LOADED ' + json.dumps(sorted(m for m in ('torch', 'torchvision') if m in sys.modules)))\n")
    assert probe(code) == []


def test_a_cifar_run_never_imports_torchvision():
    """Importing torchvision loads torch._dynamo (~1.5 s): the engine, the whole model registry and a CIFAR
    model must not (`ltkd plan` builds models to count MACs); building an ImageNet ResNet does."""
    code = ("import json, sys\n"
            "import trainables.engine, trainables.tune_trainable\n"
            "from trainables.models import MODELS, create_model\n"
            "MODELS.names(); create_model('resnet8x4', 100)\n"
            "before = sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules)\n"
            "create_model('resnet18', 10)\n"
            "print('LOADED ' + json.dumps([before, 'torchvision' in sys.modules]))\n")
    assert probe(code) == [[], True]


def device_questions(path: Path) -> list[int]:
    """Lines of a file that ask torch.cuda anything or compare a device's type with "cuda"."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "cuda" and isinstance(node.value, ast.Name) \
                and node.value.id == "torch":
            lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "type" \
                and any(isinstance(part, ast.Constant) and part.value == "cuda" for part in node.comparators):
            lines.append(node.lineno)
    return sorted(lines)


def test_device_decisions_live_in_the_device_module():
    """trainables/device.py alone asks torch.cuda or tests a device's type: every other module reads a RunDevice."""
    offences = [f"{path.relative_to(ROOT)}:{line}" for package in ("trainables", "orchestrator", "results",
                                                                   "search_spaces")
                for path in sorted((ROOT / package).rglob("*.py")) if path != ROOT / "trainables" / "device.py"
                for line in device_questions(path)]
    assert not offences, "\n".join(offences)


def test_the_device_check_sees_both_kinds_of_question(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import torch\nok = torch.cuda.is_available()\nif device.type == 'cuda':\n    pass\n")
    assert device_questions(path) == [2, 3]
