"""examples/cluster/: the SLURM batch script runs a real sweep on one faked SLURM node; the `ray up`
file validates against the schema Ray ships; the KubeRay RayJob holds the fields KubeRay requires."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.sweep_helpers import tiny_config, write_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "cluster"

FAKE_SRUN = """#!/bin/bash
# srun on one node: drop srun's own options (and -w's node), run the command here.
while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in -w|--nodelist|-N|-n|-c) shift 2 ;; *) shift ;; esac
done
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/bash
# scontrol show hostnames LIST: one name per line.
[[ $1 == show && $2 == hostnames ]] || exit 1
tr ',' '\\n' <<< "$3"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slurm_script_runs_a_sweep_on_a_ray_head_it_starts(tmp_path):
    from tests.test_sweep import ray_auth_env

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    config = write_config(tmp_path / "sweep.json", tiny_config(
        tmp_path / "unused", name="slurm", teacher_epochs=1, student_epochs=1, methods=[{"method": "ce"}]))
    env = {**ray_auth_env(), "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": socket.gethostname(), "SLURM_NNODES": "1", "SLURM_CPUS_PER_TASK": "2",
           "SLURM_JOB_ID": "1", "LTKD_STORAGE": str(tmp_path / "shared"), "LTKD_HEAD_IP": "127.0.0.1",
           "RAY_PORT": str(_free_port())}
    process = subprocess.Popen(["bash", str(EXAMPLES / "slurm.sh"), str(config)], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=900)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # Ray's processes of this job only (its own session)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, out
    assert f"Ray head on {socket.gethostname()} (127.0.0.1:{env['RAY_PORT']}), 1 node(s)" in out
    assert f"joined the Ray cluster at 127.0.0.1:{env['RAY_PORT']}" in out and "1 nodes, 2 CPUs" in out
    from results.store import read_results

    frame = read_results([str(tmp_path / "shared" / "slurm")])
    finals = frame[(frame["row_kind"] == "final") & (frame["stage"] == "final")]
    assert len(finals) == 1 and set(finals["status"]) == {"completed"}


def test_ray_up_file_validates_against_rays_cluster_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cluster = yaml.safe_load((EXAMPLES / "ray-cluster.yaml").read_text())
    jsonschema.validate(cluster, schema)
    commands = " ".join(cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"])
    assert commands.count("RAY_AUTH_MODE=token ray start") == 2
    assert cluster["head_node_type"] in cluster["available_node_types"]


def test_rayjob_manifest_has_what_kuberay_requires():
    job = yaml.safe_load((EXAMPLES / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].startswith("ltkd sweep ") and "s3://" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["template"]["spec"]["containers"][0]["image"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and group["template"]["spec"]["containers"][0]["image"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert cluster["authOptions"] == {"mode": "token"}
    # Every value of rayStartParams is a string (KubeRay's CRD: map[string]string).
    assert all(isinstance(v, str) for g in [head, *cluster["workerGroupSpecs"]] for v in g["rayStartParams"].values())


@pytest.mark.parametrize("name", ["slurm.sh"])
def test_slurm_script_is_valid_bash(name):
    assert subprocess.run(["bash", "-n", str(EXAMPLES / name)]).returncode == 0
