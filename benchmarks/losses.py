"""Forward + backward time of each logit loss, as a ratio to KD measured in the same run.

    python benchmarks/losses.py [--device cpu|cuda] [--repeats 5] [--min-run-time 0.2] [--threads N]

For batch sizes 64 and 512 and 100 and 1000 classes, times one forward and backward pass of
kd, dkd, dist, bkd, ltkd with 3 groups and ltkd with one group per class (C groups), and prints
the median and the minimum over --repeats measurements (taken round robin over the losses) in
microseconds, each with its ratio to KD. One measurement is the median block time of
torch.utils.benchmark.Timer.blocked_autorange after a warm-up (CUDA is synchronised). On shared
or virtual machines the minimum is the steadier of the two. The goal for LTKD is at most 2x KD.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.data.groups import class_groups  # noqa: E402
from trainables.distillers import bkd_loss, dist_loss, dkd_loss, kd_loss, ltkd_loss  # noqa: E402
from trainables.distillers.bkd import BKD  # noqa: E402
from trainables.distillers.ltkd import LTKD  # noqa: E402
from trainables.models.base import ModelOutput  # noqa: E402


def long_tail_counts(num_classes: int, n_max: int = 500, imbalance: float = 100.0) -> list[int]:
    return [int(n_max * (1.0 / imbalance) ** (i / (num_classes - 1))) for i in range(num_classes)]


def make_losses(num_classes: int, device: torch.device):
    counts = long_tail_counts(num_classes)
    groups3 = class_groups(counts, 3).to(device)
    ltkd3 = LTKD(class_groups(counts, 3), alpha=1.0, beta=8.0, temperature=4.0).to(device)
    ltkdc = LTKD(class_groups(counts, num_classes), alpha=1.0, beta=8.0, temperature=4.0).to(device)
    bkd = BKD(counts, temperature=4.0).to(device)

    def out(z):
        return ModelOutput(z, [], z)

    return {
        "kd": lambda s, t, y: kd_loss(s, t, 4.0),
        "dkd": lambda s, t, y: dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0),
        "dist": lambda s, t, y: dist_loss(s, t, beta=1.0, gamma=1.0, tau=4.0),
        "bkd": lambda s, t, y: bkd(out(s), out(t), y),
        "bkd_fn": lambda s, t, y: bkd_loss(s, t, counts, temperature=4.0),
        "ltkd_3g": lambda s, t, y: ltkd3(out(s), out(t), y),
        "ltkd_Cg": lambda s, t, y: ltkdc(out(s), out(t), y),
        "ltkd_scat": lambda s, t, y: ltkd_loss(s, t, groups3, alpha=1.0, beta=8.0, temperature=4.0, kernel="scatter"),
    }


def time_one(fn, s, t, y, min_run_time: float) -> float:
    def step():
        s.grad = None
        fn(s, t, y).backward()

    for _ in range(5):  # warm-up (allocator, lazy init, CUDA kernels)
        step()
    timer = benchmark.Timer(stmt="step()", globals={"step": step})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="independent measurements per loss, taken round robin")
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: 1 on CPU, for stable timings on shared machines; 0 = torch's default)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {device}, dtype {dtype}, threads {torch.get_num_threads()}, "
          f"repeats {args.repeats} x {args.min_run_time}s")
    header = f"{'batch':>5} {'classes':>7} {'loss':>9} {'us (median)':>12} {'x KD':>6} {'us (min)':>10} {'x KD':>6}"
    print(header)
    print("-" * len(header))
    for batch in (64, 512):
        for classes in (100, 1000):
            losses = make_losses(classes, device)
            s = (torch.randn(batch, classes, device=device) * 3).to(dtype).requires_grad_(True)
            t = (torch.randn(batch, classes, device=device) * 3).to(dtype)
            y = torch.randint(0, classes, (batch,), device=device)
            runs = {name: [] for name in losses}
            for _ in range(args.repeats):  # round robin, so drifts of the machine hit every loss alike
                for name, fn in losses.items():
                    runs[name].append(time_one(fn, s, t, y, args.min_run_time))
            median = {name: sorted(r)[len(r) // 2] for name, r in runs.items()}
            best = {name: min(r) for name, r in runs.items()}
            for name in losses:
                print(f"{batch:>5} {classes:>7} {name:>9} {median[name]:>12.1f} {median[name] / median['kd']:>6.2f}"
                      f" {best[name]:>10.1f} {best[name] / best['kd']:>6.2f}")
    print("bkd = the BKD Distiller (weights precomputed); bkd_fn = bkd_loss recomputing the weights per call;")
    print("ltkd_3g / ltkd_Cg = the LTKD Distiller with 3 / C groups (padded-grid kernel); ltkd_scat = ltkd_loss,")
    print("3 groups, forced onto the scatter kernel (the fallback for very uneven groups)")


if __name__ == "__main__":
    main()
