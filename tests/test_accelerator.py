"""The accelerator path, run on the CPU: a fake CUDA (tests/fake_accelerator.py) takes every GPU branch.

Its tensors live on the CPU, so bf16 autocast, the fp16 gradient scaler, fused SGD and the logit
table "on the device" all run here; the memory cap and RNG calls reach the fake, which checks its
arguments as torch.cuda does (an indexed device, no more RNG states than devices).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tests.fake_accelerator import FakeCuda
from tests.test_engine import Stop, stop_after
from trainables import device as device_module
from trainables.checkpoint import load_checkpoint, save_atomic
from trainables.config import RunConfig
from trainables.device import (ACCELERATOR_CHECKPOINT_SECONDS, CPU_EVAL_BATCH, MEMORY_SHARE_MARGIN, RunDevice,
                               resolve_device)
from trainables.engine import TeacherOptions, build_run, fit
from trainables.errors import UserError

pytestmark = pytest.mark.accelerator

# Checkpoints every epoch, as a CPU run (an accelerator's default is every 60 s): the resume tests stop runs.
QUICK = dict(dataset="digits", imbalance_factor=100, arch="resnet8", batch_size=64, progress=False,
             checkpoint_every_seconds=0)


@pytest.fixture
def fake_gpu():
    """One fake GPU with bfloat16, installed for this test."""
    fake = FakeCuda(count=1)
    previous = device_module.use_backend(fake)
    try:
        yield fake
    finally:
        device_module.use_backend(previous)
        torch.use_deterministic_algorithms(False)


def install(fake: FakeCuda) -> FakeCuda:
    device_module.use_backend(fake)
    return fake


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A CPU-trained teacher (no fake installed)."""
    run_dir = tmp_path_factory.mktemp("teacher")
    fit(RunConfig(**{**QUICK, "arch": "resnet20"}, epochs=2, seed=0, device="cpu"), run_dir, log=None)
    return run_dir


def calls_named(fake: FakeCuda, name: str) -> list[tuple]:
    return [call for call in fake.calls if call[0] == name]


# ----------------------------------------------------------------------------------- resolving the device


def test_a_fractional_gpu_trial_caps_memory_on_an_indexed_device(fake_gpu, tmp_path):
    result = fit(RunConfig(**QUICK, epochs=1), tmp_path / "run", log=None, trial_gpus=0.25)
    assert calls_named(fake_gpu, "set_memory_fraction") == [("set_memory_fraction", 0.25 * MEMORY_SHARE_MARGIN,
                                                            torch.device("cuda", 0))]
    assert result.metrics["device"] == "cuda:0"


def test_a_whole_gpu_trial_and_a_run_outside_ray_set_no_cap(fake_gpu, tmp_path):
    fit(RunConfig(**QUICK, epochs=1), tmp_path / "trial", log=None, trial_gpus=1)
    fit(RunConfig(**QUICK, epochs=1, device="cuda"), tmp_path / "outside", log=None)
    assert calls_named(fake_gpu, "set_memory_fraction") == []


def test_a_trial_without_gpus_on_a_gpu_node_trains_on_the_cpu_and_never_asks_the_gpu(tmp_path):
    fake = FakeCuda(count=2)
    previous = device_module.use_backend(fake)
    try:
        result = fit(RunConfig(**QUICK, epochs=2), tmp_path / "run", log=None, trial_gpus=0)
    finally:
        device_module.use_backend(previous)
    assert {m["device"] for m in result.history} == {"cpu"}
    assert fake.calls == []  # not even a checkpoint's RNG state: a CPU run never initialises CUDA
    assert load_checkpoint(tmp_path / "run")["rng"]["cuda"] == []


def test_a_cpu_run_on_a_gpu_machine_never_asks_the_gpu(fake_gpu, tmp_path):
    fit(RunConfig(**QUICK, epochs=2, device="cpu"), tmp_path / "run", log=None)
    assert fake_gpu.calls == []


@pytest.mark.parametrize("name,gpus,message", [
    ("auto", 2, "a fraction of a GPU or 1, got 2: a run trains on one device"),
    ("auto", 1.5, "a fraction of a GPU or 1"),
    ("cuda:1", 1, "a trial sees only its own GPU, as cuda:0"),
    ("cuda", 0, "in a Ray trial that holds no GPU: set resources.gpus_per_trial"),
    ("cuda:3", None, "asked for but 1 GPU is visible"),
])
def test_impossible_devices_are_refused_with_one_line(fake_gpu, name, gpus, message):
    with pytest.raises(UserError, match=message) as caught:
        resolve_device(name, trial_gpus=gpus)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("settings,message", [
    ({"resources": {"gpus_per_trial": 2}}, "resources.gpus_per_trial must be 0, a fraction of a GPU or 1, got 2"),
    ({"device": "cuda:1", "resources": {"gpus_per_trial": 1}}, "a trial sees only its own GPU, as cuda:0"),
    ({"device": "cuda"}, "gpus_per_trial = 0: Ray gives a trial a GPU only when it asks for one"),
    ({"device": "cpu", "resources": {"gpus_per_trial": 0.5}}, "the trials would hold GPUs they never use"),
])
def test_a_sweep_config_asking_for_an_impossible_gpu_use_is_refused_at_load(settings, message):
    from orchestrator.sweep_config import ConfigError, parse_config
    from tests.sweep_helpers import tiny_config

    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(tiny_config("sweeps", **settings))
    assert "\n" not in str(caught.value)


def test_file_backed_loaders_take_at_most_the_trials_cpus_but_one():
    from trainables.engine import loader_workers

    assert loader_workers(4, None) == 4  # outside Ray: as asked
    assert loader_workers(4, 8) == 4 and loader_workers(8, 4) == 3 and loader_workers(4, 1) == 0


def test_a_gpu_trial_on_a_node_without_cuda_is_refused():
    with pytest.raises(UserError, match="holds 0.5 GPU but CUDA is not available"):
        resolve_device("auto", trial_gpus=0.5, accelerators=FakeCuda(count=0))


def test_the_device_has_its_index_and_the_amp_follows_the_card(fake_gpu):
    assert resolve_device("cuda").accelerator == torch.device("cuda", 0)
    assert resolve_device("auto", trial_gpus=0.5).amp_dtype == torch.bfloat16
    assert resolve_device("auto", "off").amp_dtype is None
    no_bf16 = FakeCuda(count=1, bf16=False)
    assert resolve_device("auto", accelerators=no_bf16).amp_dtype == torch.float16
    with pytest.raises(UserError, match="has no bfloat16; use amp fp16 or auto"):
        resolve_device("auto", "bf16", accelerators=no_bf16)
    assert resolve_device("cpu").amp_dtype is None and not resolve_device("cpu").is_accelerator


def test_evaluation_and_cache_build_batch_sizes_per_device(fake_gpu):
    cpu, gpu = resolve_device("cpu"), resolve_device("cuda")
    assert cpu.eval_batch_size(32, 64) == CPU_EVAL_BATCH == 64
    assert gpu.eval_batch_size(32, 64) == 1024  # CIFAR
    assert gpu.eval_batch_size(64, 64) == 256  # TinyImageNet: as many pixels
    assert gpu.eval_batch_size(224, 512) == 512  # ImageNet: the training batch, which fits already
    assert (cpu.cache_build_batch_size(), gpu.cache_build_batch_size()) == (64, 1024)
    assert (cpu.sync_every, gpu.sync_every) == (1, 32)


# ----------------------------------------------------------------------------------- training on the fake


def test_accelerator_runs_use_fused_sgd_bf16_autocast_and_resume_exactly(fake_gpu, teacher_dir, tmp_path):
    config = RunConfig(**QUICK, role="student", method="ltkd", epochs=3, teacher=str(teacher_dir),
                       teacher_cache="off")
    run = build_run(config, tmp_path / "probe", lambda line: None, TeacherOptions(cache="off"))
    assert run.optimizer.param_groups[0]["fused"] is True and run.amp_dtype == torch.bfloat16
    assert not run.scaler.is_enabled()  # bf16 needs no loss scaling
    straight = fit(config, tmp_path / "straight", log=None)
    with pytest.raises(Stop):
        fit(config, tmp_path / "resumed", callback=stop_after(2), log=None)
    fit(config, tmp_path / "resumed", log=None)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert straight.history[-1]["device"] == "cuda:0"


def test_a_bf16_checkpoint_resumes_under_fp16_and_back(fake_gpu, tmp_path):
    """A bf16 (or float32) checkpoint holds an empty scaler state; an fp16 run resumed from it starts a
    fresh scale (loading the empty state would fail), and its own scaler state survives the next resume."""
    config = RunConfig(**QUICK, epochs=3, amp="bf16")
    with pytest.raises(Stop):
        fit(config, tmp_path / "run", callback=stop_after(1), log=None)
    assert load_checkpoint(tmp_path / "run")["scaler"] == {}
    with pytest.raises(Stop):
        fit(dataclasses.replace(config, amp="fp16"), tmp_path / "run", callback=stop_after(2), log=None)
    scaler = load_checkpoint(tmp_path / "run")["scaler"]
    assert scaler["scale"] > 0
    result = fit(dataclasses.replace(config, amp="bf16"), tmp_path / "run", log=None)
    assert result.history[-1]["epoch"] == 3 and all(m["train_loss"] == m["train_loss"] for m in result.history)


def test_a_checkpoint_with_every_gpus_rng_state_resumes_on_a_machine_with_fewer(tmp_path):
    """Older checkpoints held every visible GPU's RNG state; a run resumed where fewer GPUs are visible
    (an 8-GPU box's run resumed in a Ray trial, which sees one) takes the state of the GPU it trained on."""
    two = install(FakeCuda(count=2))
    two.states[1] = torch.full((16,), 7, dtype=torch.uint8)
    try:
        config = RunConfig(**QUICK, epochs=2, device="cuda:1")
        with pytest.raises(Stop):
            fit(config, tmp_path / "run", callback=stop_after(1), log=None)
        payload = load_checkpoint(tmp_path / "run")
        assert len(payload["rng"]["cuda"]) == 1  # the run's GPU only
        assert torch.equal(payload["rng"]["cuda"][0], two.states[1])
        # as an older checkpoint: the states of both GPUs, the run's at its index
        payload["rng"]["cuda"] = [two.states[0].clone(), payload["rng"]["cuda"][0]]
        save_atomic(payload, tmp_path / "run" / "checkpoint.pt")
        one = install(FakeCuda(count=1))
        result = fit(dataclasses.replace(config, device="auto"), tmp_path / "run", log=None, trial_gpus=1)
        assert calls_named(one, "set_rng_state") == [("set_rng_state", torch.device("cuda", 0))]
        assert torch.equal(one.states[0], torch.full((16,), 7, dtype=torch.uint8))
        assert [m["resumed_from"] for m in result.history] == [0, 1]
    finally:
        device_module.use_backend(None)


def test_a_gpu_checkpoint_resumes_on_the_cpu(fake_gpu, tmp_path):
    config = RunConfig(**QUICK, epochs=2, amp="fp16")
    with pytest.raises(Stop):
        fit(config, tmp_path / "run", callback=stop_after(1), log=None)
    result = fit(dataclasses.replace(config, device="cpu"), tmp_path / "run", log=None)
    assert [m["device"] for m in result.history] == ["cuda:0", "cpu"]


def test_the_progress_bar_reads_the_loss_every_32_steps_on_an_accelerator(fake_gpu, tmp_path, capsys):
    from trainables.engine import train_one_epoch

    counts = {}
    for name in ("cpu", "cuda"):
        run = build_run(RunConfig(**{**QUICK, "batch_size": 4}, epochs=1, device=name), tmp_path / name,
                        lambda line: None, TeacherOptions())
        capsys.readouterr()
        train_one_epoch(run, 0, show_progress=True)
        counts[name] = (capsys.readouterr().err.count(" loss "), len(run.train_batches))
    steps = counts["cpu"][1]
    assert counts["cpu"][0] == steps
    assert counts["cuda"][0] == steps // 32 + (steps % 32 != 0)


def test_a_run_that_leaves_the_checkpoint_interval_open_gets_the_devices_default(fake_gpu, tmp_path):
    assert resolve_device("cuda").checkpoint_seconds == ACCELERATOR_CHECKPOINT_SECONDS
    assert resolve_device("cpu").checkpoint_seconds == 0
    seen = {}
    for name in ("cpu", "cuda"):
        seen[name] = []
        fit(RunConfig(**{**QUICK, "checkpoint_every_seconds": None}, epochs=2, device=name), tmp_path / name,
            log=None, callback=lambda metrics, checkpoint, out=seen[name]: out.append(checkpoint is not None))
    assert seen == {"cpu": [True, True], "cuda": [False, True]}  # epochs of a second: one checkpoint, the last


def test_deterministic_runs_switch_torch_and_cudnn_and_later_runs_switch_back(fake_gpu, tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []

    def watch(metrics, checkpoint):
        seen.append(torch.are_deterministic_algorithms_enabled())

    fit(RunConfig(**QUICK, epochs=1, device="cuda", deterministic=True), tmp_path / "det", log=None, callback=watch)
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    fit(RunConfig(**QUICK, epochs=1, device="cuda"), tmp_path / "fast", log=None, callback=watch)
    assert seen == [True, False]
    assert calls_named(fake_gpu, "configure") == [("configure", True), ("configure", False)]


# ----------------------------------------------------------------------------------- the teacher on the device


def test_cached_and_live_teacher_agree_under_bf16(fake_gpu, teacher_dir, tmp_path):
    """The cache is built in the live teacher's precision (bf16 autocast here) and says so in its key:
    both give the same logits for the same views, to bf16 rounding (8 bits of mantissa; the two
    forward passes batch the views differently)."""
    config = RunConfig(**QUICK, role="student", method="kd", epochs=1, teacher=str(teacher_dir))
    live = build_run(config, tmp_path / "live", lambda line: None, TeacherOptions(cache="off"))
    cached = build_run(config, tmp_path / "cached", lambda line: None, TeacherOptions(cache="on"))
    assert cached.teacher.logits.device_data is not None  # the table lives "on the device"
    assert cached.teacher.logits.manifest["key"]["teacher_autocast"] == "bfloat16"
    inputs, labels, index, views = next(cached.train_batches.epoch(torch.Generator().manual_seed(0), with_views=True))
    with live.run_device.autocast():
        live_logits = live.teacher.outputs(inputs, index, views).logits.float()
    cached_logits = cached.teacher.outputs(inputs, index, views).logits
    scale = live_logits.abs().max()
    assert torch.allclose(cached_logits, live_logits, rtol=2 ** -7, atol=float(scale) * 2 ** -8)
    # and a float32 (CPU) cache is another cache: a bf16 run never reads float32 logits
    cpu_run = build_run(dataclasses.replace(config, device="cpu"), tmp_path / "cpu", lambda line: None,
                        TeacherOptions(cache="on"))
    assert "teacher_autocast" not in cpu_run.teacher.logits.manifest["key"]
    assert cpu_run.teacher.logits.folder != cached.teacher.logits.folder


def test_the_logit_table_on_the_device_gives_the_host_lookups(fake_gpu, teacher_dir, tmp_path):
    config = RunConfig(**QUICK, role="student", method="kd", epochs=1, teacher=str(teacher_dir))
    run = build_run(config, tmp_path / "run", lambda line: None, TeacherOptions(cache="on"))
    table = run.teacher.logits
    index, views = torch.tensor([0, 5, 9]), torch.tensor([3, 0, 24])
    on_device = table.lookup(index, views)
    table.device_data = None
    assert torch.equal(table.lookup(index, views), on_device)
    assert table.to_device(run.run_device, max_bytes=0) is False  # over the budget: looked up from host memory
    assert table.to_device(RunDevice(torch.device("cpu"))) is False  # a CPU run never copies it


def test_bkd_keeps_its_class_weights_in_a_dtype_every_device_has(teacher_dir):
    from trainables.distillers.bkd import BKD, bkd_loss
    from trainables.models.base import ModelOutput

    counts = [100, 40, 10, 3]
    distiller = BKD(counts, temperature=4.0)
    assert distiller.log_weights.dtype == torch.float32
    zs, zt = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    out = distiller(ModelOutput(zs, [], zs), ModelOutput(zt, [], zt), torch.zeros(5, dtype=torch.long))
    assert torch.equal(out, bkd_loss(zs, zt, counts, temperature=4.0))  # float64 logits keep float64 weights


# ----------------------------------------------------------------------------------- a sweep on a fake GPU


def test_a_sweep_of_four_trials_sharing_one_fake_gpu_ends_with_its_table(tmp_path):
    """A Ray node declaring one GPU, the fake CUDA in every worker: four trials at 0.25 GPU each run at once
    on the GPU (Ray sets CUDA_VISIBLE_DEVICES for them), each caps its memory to its share on cuda:0."""
    import os

    from tests.fake_accelerator import read_call_logs
    from tests.sweep_helpers import run_ltkd, tiny_config, write_config
    from tests.test_sweep import _free_port, ray_auth_env, ray_node, wait_for_nodes

    calls = tmp_path / "calls"
    calls.mkdir()
    env = {**ray_auth_env(), "LTKD_ACCELERATOR_BACKEND": "tests.fake_accelerator:FakeCuda", "LTKD_FAKE_GPUS": "1",
           "LTKD_FAKE_ACCELERATOR_LOG": str(calls),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                     os.environ.get("PYTHONPATH", "")]))}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    config = tiny_config(tmp_path / "sweeps", name="fakegpu", student_epochs=2,
                         methods=[{"method": "ltkd", "search": {"n_trials": 2}}],
                         resources={"cpus_per_trial": 0.25, "gpus_per_trial": 0.25})
    path = write_config(tmp_path / "sweep.json", config)
    with ray_node(env, "--head", f"--port={port}", "--num-gpus=1", "--include-dashboard=false"):
        wait_for_nodes(address, env, 1)
        result = run_ltkd("sweep", path, "--address", address, env=env, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]  # printed at the sweep's end
    assert any("ltkd" in line.lower() for line in table), result.stdout
    caps = [call for log in read_call_logs(calls).values() for call in log if call["call"] == "set_memory_fraction"]
    trials = 1 + 2 + 1  # a teacher, two search trials, one final
    assert len(caps) == trials
    assert {json.dumps(call["args"]) for call in caps} == {json.dumps([0.25 * MEMORY_SHARE_MARGIN, "cuda:0"])}
    from results.store import read_results

    frame = read_results([str(tmp_path / "sweeps" / "fakegpu")], final_only=False)
    epochs = frame[frame["row_kind"] == "epoch"]
    assert set(epochs["device"]) == {"cuda:0"}

