"""The GPU check: one prepared command that runs the `cuda` tests and prints the GPU figures the README quotes.

    python benchmarks/gpu_check.py [--budget-seconds 480] [--skip-tests] [--skip-sweep] [--out DIR]

Made to finish within 8 minutes on one H100. Each part prints the figures it measured and on which
device, and says when it stopped early to stay within its share of the budget:

1. `pytest -m cuda tests/test_cuda.py`: teacher and LTKD student on digits with the cache, the memory
   cap of a quarter-GPU trial, a SIGKILL and a deterministic resume, bf16 and fp16 runs.
2. Student images/s for resnet32x4 -> resnet8x4 on CIFAR-100-LT shapes (`benchmarks/throughput.py`,
   which times, in alternation, an fp32 torchvision DataLoader + live teacher reference against the
   engine's pipeline with the live and with the cached teacher, bf16 and channels_last).
3. The teacher-logit cache build for CIFAR-100-LT at imbalance factor 100 (10,847 images x 162 views,
   resnet32x4 under the run's autocast): timed over all of it, or over what the part's budget allows
   and extrapolated (said so).
4. The training rate `ltkd plan` prices GPU configs at (orchestrator/device_rates.py): resnet8 training
   steps at batch 64, bf16, channels_last, with 1 and with 4 processes sharing the GPU (the sweeps'
   gpus_per_trial = 0.25), in MAC/s counted as `ltkd plan` counts them.
5. A digits sweep of 4 trials per GPU (gpus_per_trial = 0.25): wall time and the GPU's utilisation
   sampled every second by nvidia-smi.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
       "PYTHONUNBUFFERED": "1"}


def say(text: str) -> None:
    print(text, flush=True)


def run_part(name: str, args: list[str], seconds: float, keep=lambda line: True) -> int:
    """Run one part as a subprocess within `seconds`; print its lines that `keep` accepts."""
    say(f"\n== {name} (budget {seconds:.0f} s)")
    started = time.perf_counter()
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=seconds, env=ENV, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        for line in out.splitlines()[-15:]:
            say("  " + line)
        say(f"  STOPPED at its budget after {time.perf_counter() - started:.0f} s")
        return 124
    for line in result.stdout.splitlines():
        if keep(line):
            say("  " + line)
    if result.returncode:
        say("  stderr: " + result.stderr[-2000:])
    say(f"  exit {result.returncode} after {time.perf_counter() - started:.0f} s")
    return result.returncode


def cache_build(seconds: float) -> None:
    """Part 3: the full CIFAR-100-LT (gamma 100) cache build of resnet32x4, or as much as fits, extrapolated."""
    import numpy as np
    import torch

    from trainables import teacher_cache as tcache
    from trainables.data.long_tail import long_tail_counts
    from trainables.data.pipeline import Normalization, TensorBatches
    from trainables.data.sources import ImageSet
    from trainables.device import configure, resolve_device
    from trainables.models import create_model

    say(f"\n== teacher-logit cache build, CIFAR-100-LT at gamma 100, resnet32x4 (budget {seconds:.0f} s)")
    run_device = resolve_device("cuda")
    configure(run_device)
    counts = long_tail_counts(500, 100, 100)
    n = sum(counts)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(100), counts).astype(np.int64)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    batches = TensorBatches(ImageSet(labels=labels, images=images), 64, run_device.device,
                            Normalization((0.5,) * 3, (0.25,) * 3), channels_last=True, pin_memory=True)
    teacher = create_model("resnet32x4", 100).to(run_device.device).to(memory_format=torch.channels_last).eval()
    started, views = time.perf_counter(), 0
    with run_device.autocast():
        for block in tcache.teacher_view_logits(teacher, batches, batch_size=run_device.cache_build_batch_size()):
            views += block.shape[0] * block.shape[1]
            if time.perf_counter() - started > seconds:
                break
    elapsed = time.perf_counter() - started
    total = n * batches.n_views
    what = "measured, whole cache" if views == total else f"EXTRAPOLATED from {views:,} of {total:,} views"
    say(f"  {views / elapsed:,.0f} views/s under {run_device.amp_dtype} autocast, batch "
        f"{run_device.cache_build_batch_size()}; full build {total / (views / elapsed):.0f} s ({what}) on "
        f"{torch.cuda.get_device_name(0)}")


def training_rate(processes: int, seconds: float) -> float:
    """Part 4: resnet8 training MAC/s on this GPU with `processes` processes sharing it."""
    code = (
        "import sys, time, torch\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from trainables.models import create_model\n"
        "from orchestrator.dry_run import model_macs\n"
        "torch.backends.cudnn.benchmark = True\n"
        "m = create_model('resnet8', 100).cuda().to(memory_format=torch.channels_last)\n"
        "opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, fused=True)\n"
        "x = torch.randn(64, 3, 32, 32, device='cuda').contiguous(memory_format=torch.channels_last)\n"
        "y = torch.randint(0, 100, (64,), device='cuda')\n"
        "def step():\n"
        "    with torch.autocast('cuda', dtype=torch.bfloat16):\n"
        "        loss = torch.nn.functional.cross_entropy(m(x).float(), y)\n"
        "    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()\n"
        "for _ in range(30): step()\n"
        "torch.cuda.synchronize(); t = time.perf_counter(); n = 0\n"
        f"while time.perf_counter() - t < {seconds}:\n"
        "    for _ in range(20): step()\n"
        "    n += 20; torch.cuda.synchronize()\n"
        "print(3 * 64 * model_macs('resnet8', 'cifar100', 100) * n / (time.perf_counter() - t))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
             for _ in range(processes)]
    rates = [float(p.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1]) for p in procs]
    return sum(rates)


class GpuSampler(threading.Thread):
    """nvidia-smi's utilisation.gpu every second, while the sweep runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.process = None

    def run(self):
        try:
            self.process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                             "-l", "1"], stdout=subprocess.PIPE, text=True)
        except FileNotFoundError:
            return
        for line in self.process.stdout:
            try:
                self.samples.append(float(line.strip().split(",")[0]))
            except ValueError:
                pass

    def stop(self):
        if self.process is not None:
            self.process.terminate()


def digits_sweep(out: Path, seconds: float) -> None:
    """Part 5: a digits sweep with 4 trials per GPU."""
    config = {
        "name": "gpu-check", "storage": str(out / "sweeps"), "seeds": [0, 1], "teacher_epochs": 12,
        "student_epochs": 30, "checkpoint_every_seconds": 30,
        "datasets": [{"name": "digits", "imbalance_factors": [10, 100]}],
        "pairs": [{"teacher": "resnet20", "student": "resnet8"}],
        "methods": [{"method": "ce"}, {"method": "kd"}, {"method": "ltkd", "search": {"n_trials": 4}}],
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.25},
    }
    path = out / "gpu-check.json"
    path.write_text(json.dumps(config))
    sampler = GpuSampler()
    sampler.start()
    started = time.perf_counter()
    code = run_part("a digits sweep, 4 trials per GPU (gpus_per_trial = 0.25)",
                    [sys.executable, "-m", "orchestrator.cli", "sweep", str(path)], seconds,
                    keep=lambda line: line.startswith("|") or "finished" in line or "trials at once" in line)
    wall = time.perf_counter() - started
    sampler.stop()
    busy = [s for s in sampler.samples]
    if busy:
        say(f"  wall {wall:.0f} s; GPU utilisation (nvidia-smi, every 1 s): mean {sum(busy) / len(busy):.0f}%, "
            f"max {max(busy):.0f}% over {len(busy)} samples (exit {code})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=480, help="the whole check's time (default 8 min)")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--out", default=None, help="where the sweep and logs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        say("gpu_check: no CUDA GPU here; nothing measured")
        return 2
    say(f"device: {torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s), torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}")
    budget = args.budget_seconds
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    if not args.skip_tests:
        failed |= run_part("pytest -m cuda", [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py",
                                              "-p", "no:cacheprovider"], budget * 0.30,
                           keep=lambda line: "passed" in line or "failed" in line or "FAILED" in line or "Error" in line)
    run_part("student images/s, resnet32x4 -> resnet8x4 (benchmarks/throughput.py)",
             [sys.executable, "benchmarks/throughput.py", "--device", "cuda", "--rounds", "2", "--build-images", "256"],
             budget * 0.25, keep=lambda line: line.strip() != "")
    cache_build(budget * 0.10)
    for processes in (1, 4):
        rate = training_rate(processes, seconds=min(20.0, budget * 0.03))
        say(f"\n== training rate for `ltkd plan`: {rate / 1e12:.2f} TMAC/s with {processes} process(es) sharing "
            f"{torch.cuda.get_device_name(0)} (resnet8, batch 64, bf16, channels_last; 3 forward passes of MACs "
            "per trained image, as ltkd plan counts)")
    if not args.skip_sweep:
        digits_sweep(out, budget * 0.25)
    say(f"\nlogs and the sweep: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
