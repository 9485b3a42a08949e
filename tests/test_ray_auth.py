"""The Ray auth token of a driver's cluster is this user's alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.ray_auth import RayAuthError, check_token_file

REPO = Path(__file__).resolve().parents[1]


def token_at(folder: Path, folder_mode: int, file_mode: int) -> Path:
    folder.mkdir(parents=True)
    path = folder / "auth_token"
    path.write_text("t" * 32)
    path.chmod(file_mode)
    folder.chmod(folder_mode)
    return path


@pytest.mark.parametrize("folder_mode,file_mode", [(0o755, 0o644), (0o700, 0o640), (0o777, 0o600)])
def test_a_token_file_others_can_read_or_replace_is_refused_in_one_line(tmp_path, folder_mode, file_mode):
    path = token_at(tmp_path / "ray", folder_mode, file_mode)
    with pytest.raises(RayAuthError) as refused:
        check_token_file({"RAY_AUTH_TOKEN_PATH": str(path)})
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and "chmod 600" in message


def test_a_private_token_file_or_one_in_the_environment_is_accepted(tmp_path):
    path = token_at(tmp_path / "ray", 0o700, 0o600)
    check_token_file({"RAY_AUTH_TOKEN_PATH": str(path)})
    check_token_file({"RAY_AUTH_TOKEN": "x", "RAY_AUTH_TOKEN_PATH": str(token_at(tmp_path / "open", 0o755, 0o644))})
    check_token_file({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})


def test_the_private_cluster_of_a_driver_writes_no_token_file_and_has_a_fresh_token(tmp_path):
    """A driver's private cluster, as `ltkd sweep` starts it; its worker tells the token it sees."""
    script = ("import json, os, ray\nfrom orchestrator.sweep import _start_ray\n"
              "_start_ray(None, False, None)\n"
              "print('TOKEN ' + json.dumps(ray.get(ray.remote(lambda: os.environ.get('RAY_AUTH_TOKEN')).remote())))\n"
              "ray.shutdown()\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    tokens = []
    for _ in range(2):  # two drivers, one after the other
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env,
                                timeout=600)
        assert result.returncode == 0, result.stderr
        tokens.append(json.loads(result.stdout.split("TOKEN ", 1)[1]))
    assert all(tokens) and tokens[0] != tokens[1]  # fresh per driver
    token_files = [p for p in home.rglob("*") if "token" in p.name]
    assert token_files == [] or all((p.stat().st_mode & 0o077) == 0 for p in token_files)
    assert not (home / ".ray" / "auth_token").exists()
