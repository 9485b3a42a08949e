"""The built wheel works on its own: `ltkd --version` and `ltkd sweep --list` (the packaged paper configs)
from a fresh virtual environment holding only the wheel, outside this checkout. The dependencies are
this environment's (torch is not downloaded again): the new environment reads them through a .pth file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _source_copy(target: Path) -> Path:
    """The checkout's tracked files (what a git clone holds), so the build writes nothing here."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the files a clone holds are unknown")
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


@pytest.mark.packaging
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    source = _source_copy(tmp_path / "clone")
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("ltkd_sweep-*.whl")

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # This environment's packages, after the new one's own: the wheel's modules come from the new one.
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}:{env['PATH']}"
    run = tmp_path / "elsewhere"
    run.mkdir()
    ltkd = str(env_dir / "bin" / "ltkd")
    shown = subprocess.run([ltkd, "--version"], cwd=run, env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.strip() == f"ltkd-sweep {version('ltkd-sweep')}", shown.stderr
    listed = subprocess.run([ltkd, "sweep", "--list"], cwd=run, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines() if not line.startswith(" ")] == \
        [f"paper:table{n}" for n in range(1, 7)]
    where = subprocess.run([str(python), "-c", "import orchestrator; print(orchestrator.__file__)"], cwd=run, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(purelib), where  # the wheel's copy, not this checkout's
