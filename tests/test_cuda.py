"""The GPU path on a real CUDA GPU: skipped where there is none (CI has none; `benchmarks/gpu_check.py` runs them).

tests/test_accelerator.py runs the same branches on the CPU through a fake; these check what only a
GPU can: bf16 and fp16 kernels, the allocator cap, pinned copies, deterministic kernels across a SIGKILL.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainables.checkpoint import load_checkpoint
from trainables.config import RunConfig
from trainables.engine import TeacherOptions, build_run, fit, read_metrics

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parent.parent
QUICK = dict(dataset="digits", imbalance_factor=100, batch_size=64, progress=False, device="cuda",
             checkpoint_every_seconds=0)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher")
    fit(RunConfig(**QUICK, arch="resnet20", epochs=3, seed=0), run_dir, log=None)
    return run_dir


def test_a_teacher_and_an_ltkd_student_train_on_the_gpu_with_the_cache(teacher_dir, tmp_path):
    assert read_metrics(teacher_dir)[-1]["device"] == "cuda:0"
    config = RunConfig(**QUICK, arch="resnet8", role="student", method="ltkd", epochs=2, teacher=str(teacher_dir),
                       teacher_cache="on")
    result = fit(config, tmp_path / "student", log=None)
    assert result.history[-1]["device"] == "cuda:0" and result.history[-1]["acc"] > 0
    cached = build_run(config, tmp_path / "cached", lambda line: None, TeacherOptions(cache="on"))
    live = build_run(config, tmp_path / "live", lambda line: None, TeacherOptions(cache="off"))
    assert cached.teacher.logits.manifest["key"].get("teacher_autocast") == str(cached.amp_dtype).removeprefix("torch.")
    inputs, _, index, views = next(cached.train_batches.epoch(torch.Generator().manual_seed(0), with_views=True))
    with live.run_device.autocast():
        live_logits = live.teacher.outputs(inputs, index, views).logits.float()
    # the index already on the GPU is looked up as it is (no pinning of a device tensor)
    cached_logits = cached.teacher.outputs(inputs, index.cuda(), views.cuda()).logits
    assert cached_logits.device == live_logits.device
    scale = float(live_logits.abs().max())
    assert torch.allclose(cached_logits, live_logits, rtol=2 ** -7, atol=scale * 2 ** -8)


def test_a_quarter_gpu_trial_is_capped_to_its_share(tmp_path):
    fit(RunConfig(**QUICK, arch="resnet8", epochs=1), tmp_path / "run", log=None, trial_gpus=0.25)
    total = torch.cuda.get_device_properties(0).total_memory
    try:
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(int(total * 0.5), dtype=torch.uint8, device="cuda:0")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_bf16_and_fp16_runs_train_to_finite_losses(tmp_path, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    result = fit(RunConfig(**QUICK, arch="resnet8", epochs=2, amp=amp), tmp_path / "run", log=None)
    assert all(m["train_loss"] == m["train_loss"] and m["train_loss"] < 1e3 for m in result.history)
    scaler = load_checkpoint(tmp_path / "run")["scaler"]
    assert bool(scaler) == (amp == "fp16")


def test_a_deterministic_run_killed_and_resumed_equals_one_never_stopped(tmp_path):
    args = [sys.executable, "-m", "orchestrator.cli", "train", "teacher", "--dataset", "digits", "--imbalance-factor",
            "100", "--arch", "resnet8", "--epochs", "6", "--device", "cuda", "--deterministic",
            "--checkpoint-every-seconds", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight = subprocess.run([*args, "--out", str(tmp_path / "straight")], capture_output=True, text=True, env=env,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr
    process = subprocess.Popen([*args, "--out", str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(_lines(tmp_path / "killed" / "metrics.jsonl")) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    resumed = subprocess.run([*args, "--out", str(tmp_path / "killed")], capture_output=True, text=True, env=env,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "killed")
    assert b["history"][-1]["resumed_from"] >= 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def test_a_checkpoint_from_the_gpu_resumes_on_the_cpu(tmp_path):
    config = RunConfig(**QUICK, arch="resnet8", epochs=2)

    def stop(metrics, checkpoint):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "run", callback=stop, log=None)
    result = fit(dataclasses.replace(config, device="cpu"), tmp_path / "run", log=None)
    assert [m["device"] for m in result.history] == ["cuda:0", "cpu"]
