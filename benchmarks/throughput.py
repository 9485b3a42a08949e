"""Images per second of distillation epochs: the public KD codebases' setup against ours, in one run.

    python benchmarks/throughput.py [--device cpu|cuda] [--teacher resnet32x4] [--student resnet8x4]
        [--batches N] [--warmup N] [--rounds N] [--threads N] [--workers N] [--build-images N] [--epochs 240]

Data: CIFAR-100-LT-shaped, generated in memory (10,847 random 32x32 RGB images with the class
counts of imbalance factor 100; throughput does not depend on the pixels). Models: freshly
initialised teacher and student (the teacher's weights do not change its cost either). Loss:
cross-entropy + LTKD (the registry's CIFAR defaults), SGD with momentum, batch 64.

Setups, timed in alternation: --rounds rounds, each running --batches timed steps of every
setup in blocks of --block steps, A B C A B C ..., so that a machine whose load drifts (a shared
one) slows them alike; each setup keeps its epoch (and the reference its DataLoader) across
blocks, after --warmup untimed steps. Ratios are taken per round, then the median:

  (a) reference: what public KD codebases do: a torchvision-style CIFAR Dataset over PIL images
      with RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader
      with --workers workers, the live teacher's forward pass every step; fp32, NCHW;
  (b) ours, live teacher: the engine's tensor pipeline (TensorBatches: the uint8 training set on
      the device, batched crop + flip) with the live teacher, and the engine's own step
      (trainables.engine.distillation_loss + optimizer_step, with the engine's default
      precision and memory layout for the device);
  (c) ours, cached teacher: (b) with the teacher's logits looked up in a full-size teacher-logit
      cache (10,847 x 162 x 100 float32 = 703 MB, opened and verified as a trial does). Its
      values are placeholders: only the lookup's cost is measured here.

Then the one-time cost of building the real cache: the teacher's logits of all 162 views of
--build-images images (a subset: on a 2-core CPU a full build takes hours), timed and
extrapolated to all 10,847 x 162 views, and the number of --epochs-epoch trials after which the
cache has paid for itself. Every figure printed says which of these it is.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables import teacher_cache as tcache  # noqa: E402
from trainables.config import RunConfig  # noqa: E402
from trainables.data.long_tail import long_tail_counts  # noqa: E402
from trainables.data.pipeline import Normalization, TensorBatches  # noqa: E402
from trainables.data.sources import ImageSet  # noqa: E402
from trainables.distillers import DistillContext, get_method  # noqa: E402
from trainables.device import resolve_device  # noqa: E402
from trainables.engine import (DEFAULT_CHANNELS_LAST, CachedTeacher, LiveTeacher,  # noqa: E402
                               distillation_loss, optimizer_step)
from trainables.models import ModelOutput, create_model  # noqa: E402

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
BATCH = 64
LR = 0.05


class CifarLike(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR100 does per item: a PIL image from the uint8 array, then the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Setup:
    """One way of training: `start()` begins an epoch, `step()` trains one batch, returning its size."""

    def __init__(self, name: str, label: str):
        self.name, self.label = name, label

    def start(self) -> None:
        raise NotImplementedError

    def step(self) -> int:
        raise NotImplementedError


class Reference(Setup):
    def __init__(self, images, labels, teacher, student, ltkd, device, workers):
        super().__init__("reference", f"(a) reference: PIL DataLoader ({workers} workers) + live teacher, fp32 NCHW")
        from torchvision import transforms

        transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD),
        ])
        self.loader = torch.utils.data.DataLoader(
            CifarLike(images, labels, transform), batch_size=BATCH, shuffle=True, num_workers=workers,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=True)
        self.teacher, self.student, self.ltkd, self.device = teacher, student, ltkd, device
        self.optimizer = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
        self.iterator = None

    def start(self):
        self.iterator = iter(self.loader)

    def step(self):
        try:
            x, y = next(self.iterator)
        except StopIteration:  # a new epoch
            self.start()
            x, y = next(self.iterator)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.no_grad():
            zt = self.teacher(x)
        zs = self.student(x)
        loss = F.cross_entropy(zs, y) + self.ltkd(ModelOutput(zs, [], zs), ModelOutput(zt, [], zt), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return len(y)


class Ours(Setup):
    def __init__(self, name, label, batches, teacher, student, ltkd, device, amp_dtype):
        super().__init__(name, label)
        self.batches, self.teacher, self.student, self.ltkd = batches, teacher, student, ltkd  # teacher: engine.Teacher
        self.device, self.amp_dtype = device, amp_dtype
        self.optimizer = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.generator = torch.Generator().manual_seed(0)
        self.iterator = None

    def start(self):
        self.iterator = self.batches.epoch(self.generator, with_views=True)

    def step(self):
        try:
            inputs, labels, index, views = next(self.iterator)
        except StopIteration:  # a new epoch
            self.start()
            inputs, labels, index, views = next(self.iterator)
        loss = distillation_loss(self.student, self.ltkd, self.teacher, inputs, labels, index, views,
                                 needs_features=False, amp_dtype=self.amp_dtype, ce_weight=1.0, distill_weight=1.0)
        optimizer_step(loss, self.optimizer, self.scaler)
        return len(labels)


def time_blocks(fn, repeats: int, device: torch.device) -> float:
    fn()
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - started) / repeats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--batches", type=int, default=None, help="timed steps per setup and round (CPU 16, GPU 300)")
    parser.add_argument("--block", type=int, default=None, help="steps of one setup before the next one's (CPU 2, GPU 50)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (CPU 3, GPU 30)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin repetitions; medians are reported")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: every core)")
    parser.add_argument("--workers", type=int, default=None, help="reference DataLoader workers (CPU 2, GPU 8)")
    parser.add_argument("--build-images", type=int, default=None,
                        help="images whose 162 views are run through the teacher to time the cache build (CPU 8, GPU 1024)")
    parser.add_argument("--epochs", type=int, default=240, help="epochs of one trial, for the break-even count")
    parser.add_argument("--imbalance-factor", type=float, default=100.0)
    args = parser.parse_args(argv)
    wall = time.perf_counter()
    run_device = resolve_device(args.device)
    device = run_device.device
    cpu = device.type == "cpu"
    batches_n = args.batches or (16 if cpu else 300)
    block = args.block or (2 if cpu else 50)
    warmup = args.warmup if args.warmup is not None else (3 if cpu else 30)
    workers = args.workers if args.workers is not None else (2 if cpu else min(8, os.cpu_count() or 1))
    build_images = args.build_images or (8 if cpu else 1024)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)

    # ---------------------------------------------------------------- data, models, loss
    counts = long_tail_counts(500, 100, args.imbalance_factor)
    n = sum(counts)
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(100), counts)).astype(np.int64)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    torch.manual_seed(0)
    teacher = create_model(args.teacher, 100).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student0 = create_model(args.student, 100)
    hparams = RunConfig(dataset="cifar100", role="student", arch=args.student, method="ltkd", teacher="x",
                        teacher_arch=args.teacher).resolved().hparams
    ltkd = get_method("ltkd").build(DistillContext(num_classes=100, class_counts=tuple(counts)), dict(hparams)).to(device)
    # ours: the engine's defaults for the device (RunConfig amp "auto", channels_last None)
    amp_dtype = run_device.amp_dtype
    channels_last = DEFAULT_CHANNELS_LAST
    normalization = Normalization(CIFAR100_MEAN, CIFAR100_STD)
    train_batches = TensorBatches(ImageSet(labels=labels, images=images), BATCH, device, normalization,
                                  channels_last=channels_last, drop_last=True,
                                  pin_memory=run_device.pin_memory)
    teacher_ours = copy.deepcopy(teacher).to(memory_format=torch.channels_last) if channels_last else teacher

    def student():
        s = copy.deepcopy(student0).to(device)
        return s.to(memory_format=torch.channels_last) if channels_last else s

    print(f"throughput of {args.teacher} -> {args.student} distillation (LTKD), CIFAR-100-LT-shaped data: "
          f"{n} images, imbalance factor {args.imbalance_factor:g}, batch {BATCH}")
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {os.cpu_count()} cores")
          + f", torch threads {torch.get_num_threads()}, reference DataLoader workers {workers}")
    print(f"ours: precision {amp_dtype or 'fp32'}, channels_last {channels_last} (the engine's defaults on {device.type}); "
          f"{batches_n} timed steps per setup and round in alternating blocks of {block}, after {warmup} warm-up "
          f"steps; {args.rounds} rounds")
    try:
        print(f"machine load average before: {os.getloadavg()[0]:.2f} (1 min)")
    except OSError:
        pass

    # ---------------------------------------------------------------- a full-size cache (placeholder values)
    tmp = tempfile.TemporaryDirectory(prefix="ltkd-throughput-")
    shape = (n, train_batches.n_views, 100)

    def placeholder(sink):
        block_rng = np.random.default_rng(1)
        for first in range(0, n, 512):
            sink(block_rng.standard_normal((min(512, n - first), shape[1], shape[2]), dtype=np.float32) * 3)
        return {"teacher_group_prob": [1 / 3] * 3}

    started = time.perf_counter()
    tcache.open_or_build(Path(tmp.name), {"placeholder": True}, shape, placeholder, log=None)
    write_seconds = time.perf_counter() - started
    started = time.perf_counter()
    cache = tcache.open_or_build(Path(tmp.name), {"placeholder": True}, shape, placeholder, log=None)
    open_seconds = time.perf_counter() - started
    copied = cache.to_device(run_device, None)
    print(f"cache: {shape[0]} x {shape[1]} x {shape[2]} float32 = {cache.nbytes / 1e6:.0f} MB; opening it as a trial "
          f"does (read + sha256 of every chunk): {open_seconds:.2f} s; lookups "
          f"{'on ' + str(device) if copied else 'from the host memory map'}")

    setups = [
        Reference(images, labels, teacher, student(), ltkd, device, workers),
        Ours("live", "(b) ours, live teacher: tensor pipeline + live teacher", train_batches,
             LiveTeacher(teacher_ours), student(), ltkd, device, amp_dtype),
        Ours("cached", "(c) ours, cached teacher: tensor pipeline + teacher-logit cache", train_batches,
             CachedTeacher(cache), student(), ltkd, device, amp_dtype),
    ]
    if channels_last:  # ablation: (c) in the reference's NCHW layout, to separate the layout's share
        nchw_batches = TensorBatches(ImageSet(labels=labels, images=images), BATCH, device, normalization,
                                     channels_last=False, drop_last=True, pin_memory=run_device.pin_memory)
        setups.append(Ours("cached_nchw", "(d) ablation: (c) in NCHW layout (the engine's CPU default before issue 8)",
                           nchw_batches, CachedTeacher(cache), copy.deepcopy(student0).to(device), ltkd, device,
                           amp_dtype))
    per_round: dict[str, list[float]] = {s.name: [] for s in setups}
    print("\nsteady state, images/s per round:")
    for r in range(args.rounds):
        for setup in setups:
            setup.start()
            for _ in range(warmup):
                setup.step()
        seconds = {setup.name: 0.0 for setup in setups}
        done = {setup.name: 0 for setup in setups}
        for first in range(0, batches_n, block):
            for setup in setups:
                sync(device)
                started = time.perf_counter()
                done[setup.name] += sum(setup.step() for _ in range(min(block, batches_n - first)))
                sync(device)
                seconds[setup.name] += time.perf_counter() - started
        line = []
        for setup in setups:
            ips = done[setup.name] / seconds[setup.name]
            per_round[setup.name].append(ips)
            line.append(f"{setup.name} {ips:8.1f}")
        print(f"  round {r + 1}: " + "   ".join(line), flush=True)

    median = {name: statistics.median(v) for name, v in per_round.items()}
    def ratio(x, y):
        return [a / b for a, b in zip(per_round[x], per_round[y])]

    ratios = {
        "SPEEDUP, ours (cached teacher) vs reference": ratio("cached", "reference"),
        "  of which the data pipeline + layout: ours (live teacher) vs reference": ratio("live", "reference"),
        "  of which the cache: ours cached vs ours live": ratio("cached", "live"),
    }
    if "cached_nchw" in per_round:
        ratios["  ablation: ours cached in NCHW vs reference"] = ratio("cached_nchw", "reference")
        ratios["  ablation: the layout alone, (c) vs (d)"] = ratio("cached", "cached_nchw")
    print("\nSTEADY-STATE PER-TRIAL THROUGHPUT (cache already built), median over rounds [min, max]:")
    for setup in setups:
        v = per_round[setup.name]
        print(f"  {setup.label:<78} {median[setup.name]:8.1f} images/s  [{min(v):.1f}, {max(v):.1f}]")
    for key, values in ratios.items():
        print(f"  {key:<78} {statistics.median(values):8.2f} x  "
              f"[{min(values):.2f}, {max(values):.2f}] (per-round ratios)")

    # ---------------------------------------------------------------- where the time goes (per batch of 64)
    x_ref = torch.randn(BATCH, 3, 32, 32, device=device)
    x_ours = x_ref.contiguous(memory_format=torch.channels_last) if channels_last else x_ref
    loader_ref = setups[0].loader
    it = iter(loader_ref)
    next(it)
    started = time.perf_counter()
    for _ in range(10):
        next(it)
    pil_ips = 10 * BATCH / (time.perf_counter() - started)
    del it
    generator = torch.Generator().manual_seed(1)
    epoch = train_batches.epoch(generator, with_views=True)

    def ours_data():
        inputs, _, index, views = next(epoch)
        return cache.lookup(index, views), inputs

    with torch.no_grad():
        t_teacher_ref = time_blocks(lambda: teacher(x_ref), 3, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            t_teacher_ours = time_blocks(lambda: teacher_ours(x_ours), 3, device)
    t_data_ours = time_blocks(ours_data, 10, device)
    print(f"\nwhere the time goes, ms per batch of {BATCH}:")
    print(f"  teacher forward, fp32 NCHW (reference): {t_teacher_ref * 1e3:8.1f}    with ours' settings: "
          f"{t_teacher_ours * 1e3:8.1f}")
    for setup in setups:
        print(f"  whole step, {setup.name:<9}: {BATCH / median[setup.name] * 1e3:8.1f}")
    print(f"  ours' data (crop + flip + normalise + cache lookup): {t_data_ours * 1e3:.2f}")
    print(f"  the reference PIL DataLoader alone, no training: {pil_ips:.0f} images/s ({workers} workers; "
          "the cap on its input rate)")

    # ---------------------------------------------------------------- one-time cost of building the cache
    build_batches = TensorBatches(ImageSet(labels=labels[:build_images], images=images[:build_images]), BATCH, device,
                                  normalization, channels_last=channels_last, pin_memory=run_device.pin_memory)
    builder_teacher = teacher_ours
    list(tcache.teacher_view_logits(builder_teacher, build_batches, images=torch.arange(min(2, build_images)),
                                    batch_size=run_device.cache_build_batch_size()))  # warm-up
    sync(device)
    started = time.perf_counter()
    for _ in tcache.teacher_view_logits(builder_teacher, build_batches, images_per_block=min(build_images, 64),
                                        batch_size=run_device.cache_build_batch_size()):
        pass
    sync(device)
    build_seconds = time.perf_counter() - started
    views_built = build_images * shape[1]
    build_rate = views_built / build_seconds
    full_views = n * shape[1]
    full_build = full_views / build_rate + open_seconds
    epoch_live, epoch_cached, epoch_ref = (n / median[k] for k in ("live", "cached", "reference"))
    print("\nONE-TIME CACHE BUILD (per teacher, shared by every trial):")
    print(f"  measured: {build_images} images x {shape[1]} views = {views_built} teacher forwards (fp32) in "
          f"{build_seconds:.1f} s = {build_rate:.1f} views/s")
    print(f"  EXTRAPOLATED to the full cache, {n} x {shape[1]} = {full_views} views: {full_build:,.0f} s "
          f"({full_build / 3600:.2f} h); writing {cache.nbytes / 1e6:.0f} MB measured {write_seconds:.1f} s here")
    saving_live = args.epochs * (epoch_live - epoch_cached)
    saving_ref = args.epochs * (epoch_ref - epoch_cached)
    print(f"  a {args.epochs}-epoch trial takes (steady state, extrapolated from the rates above): reference "
          f"{args.epochs * epoch_ref / 3600:.2f} h, ours live {args.epochs * epoch_live / 3600:.2f} h, ours cached "
          f"{args.epochs * epoch_cached / 3600:.2f} h")
    for what, saving in (("ours with the live teacher", saving_live), ("the reference", saving_ref)):
        if saving > 0:
            trials = full_build / saving
            print(f"  BREAK-EVEN vs {what}: the build has paid for itself after {trials:.2f} trials of {args.epochs} "
                  f"epochs (= {full_build / (saving / args.epochs):.0f} student epochs), i.e. from trial "
                  f"{max(1, math.ceil(trials))} on")
        else:
            print(f"  BREAK-EVEN vs {what}: never (the cached path is not faster here)")
    print(f"\ntotal benchmark time {time.perf_counter() - wall:.0f} s")
    try:
        print(f"machine load average after: {os.getloadavg()[0]:.2f} (1 min)")
    except OSError:
        pass
    cache = None  # frees the mapped file before the temporary folder goes (not `del`: a closure above reads it)
    tmp.cleanup()


if __name__ == "__main__":
    main()
