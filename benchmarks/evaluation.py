"""The share of a cached student epoch spent evaluating, before and after "make evaluation cheap", in one run.

    python benchmarks/evaluation.py [--device cpu|cuda] [--steps N] [--warmup N] [--rounds N] [--threads N]
        [--test-every K] [--sweep-batches 32,64,128,256,1024] [--sweep-images N]

Data: CIFAR-100-LT shapes, random uint8 32x32 images (evaluation and training cost do not depend on
the pixels): the training set has the class counts of imbalance factor 100 after holding out 50
images per class (n_max 450: 9,754 images), the validation split 50 x 100 = 5,000 images, the test
set 100 x 100 = 10,000. Student resnet8x4, freshly initialised; the engine's precision and memory
layout for the device.

Measured in one run, in --rounds rounds; the figures of the least disturbed round (the one that
took least time in all) are reported, and every round's line is printed. A round takes a snapshot
of the student, then goes through the validation split and the test set in 20 chunks of 10 whole
classes; before each chunk it trains the student for --steps / 20 timed steps, then every way below
evaluates the chunk, in an order that rotates from chunk to chunk, so that a machine whose load
changes (a shared one) slows all of them alike:
  - a cached training epoch: the timed steps are the engine's own step (benchmarks/throughput.py's
    `Ours`: trainables.engine.distillation_loss with LTKD + optimizer_step), the teacher's logits
    gathered by image index from a precomputed random table (what a teacher-logit cache lookup
    does); their mean is EXTRAPOLATED to the epoch's steps (ceil(9,754 / 64) = 153);
  - evaluating the validation split and the test set in full (the chunks' sum), the ways:
      (a) before, as the engine did: no_grad, the model as trained, batches of 500 (the engine's
          in-memory evaluation batch before this change);
      (b) before, at the training batch: (a) in batches of 64;
      (c) now: the engine's evaluate under inference_mode, batches of eval_batch_size;
      (d) on CPU, an ablation the engine does not use: (c) under bfloat16 autocast (the engine's CPU
          runs are float32, and bfloat16 logits can change predictions beyond float tolerance).
Then the evaluation share of a cached epoch (evaluation / (training + evaluation)) for each way with
both sets every epoch, and for (c) and (d) with the test set every --test-every epochs (the
validation split every epoch, the test set's time divided by K). Last, images/s of (c) at other batch
sizes (--sweep-images images each, in alternation, the best of --rounds), which is how
eval_batch_size's CPU value was chosen.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import BATCH, CIFAR100_MEAN, CIFAR100_STD, Ours, sync  # noqa: E402
from trainables.config import RunConfig  # noqa: E402
from trainables.data.groups import class_groups  # noqa: E402
from trainables.data.long_tail import long_tail_counts  # noqa: E402
from trainables.data.pipeline import Normalization, TensorBatches  # noqa: E402
from trainables.data.sources import ImageSet, get_dataset, nominal_n_max  # noqa: E402
from trainables.distillers import DistillContext, get_method  # noqa: E402
from trainables.device import resolve_device  # noqa: E402
from trainables.engine import DEFAULT_CHANNELS_LAST, Teacher, evaluate  # noqa: E402
from trainables.models import ModelOutput, create_model  # noqa: E402

CLASSES = 100
HOLDOUT = 50  # validation images per class (CIFAR-100's default split)
TEST_PER_CLASS = 100
OLD_EVAL_BATCH = 500  # trainables/engine.py's in-memory evaluation batch before this change
CHUNK_CLASSES = 10  # the sets are timed in chunks of this many whole classes, every way in turn
N_CHUNKS = 2 * CLASSES // CHUNK_CLASSES  # of the validation split and the test set


class TableTeacher(Teacher):
    """The teacher's logits gathered by image index from a precomputed table: a cache lookup's cost without its file."""

    with_views = True

    def __init__(self, table: torch.Tensor):
        self.table = table

    def outputs(self, inputs: torch.Tensor, index: torch.Tensor, views: torch.Tensor | None) -> ModelOutput:
        logits = self.table[index.to(self.table.device)]
        return ModelOutput(logits, [], logits)


def evaluate_before(model, batches, eval_groups, amp):
    """The engine's evaluation before this change: no_grad on the model as trained (evaluate's body is unchanged)."""
    with torch.no_grad():
        return evaluate.__wrapped__(model, batches, CLASSES, eval_groups, amp)


def evaluate_now(model, batches, eval_groups, amp):
    return evaluate(model, batches, CLASSES, eval_groups, amp)


def timed(fn, device) -> tuple[float, object]:
    """fn()'s seconds and result."""
    sync(device)
    started = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - started, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed training steps per round, spread over its 20 chunks (CPU 40, GPU 300)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed training steps first (CPU 3, GPU 30)")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions; the least disturbed is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: every core)")
    parser.add_argument("--test-every", type=int, default=5, help="K of the amortised lines (default 5)")
    parser.add_argument("--sweep-batches", default="32,64,128,256,1024",
                        help="evaluation batch sizes whose images/s are measured last")
    parser.add_argument("--sweep-images", type=int, default=1024, help="images per batch size of that sweep")
    args = parser.parse_args(argv)
    wall = time.perf_counter()
    run_device = resolve_device(args.device)
    device = run_device.device
    cpu = device.type == "cpu"
    steps = args.steps or (40 if cpu else 300)
    steps_per_chunk = max(1, round(steps / N_CHUNKS))
    warmup = args.warmup if args.warmup is not None else (3 if cpu else 30)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    amp = run_device.amp_dtype
    channels_last = DEFAULT_CHANNELS_LAST

    # ---------------------------------------------------------------- data and models
    counts = long_tail_counts(nominal_n_max(get_dataset("cifar100"), HOLDOUT), CLASSES, 100)
    rng = np.random.default_rng(0)

    def image_set(labels: np.ndarray) -> ImageSet:
        return ImageSet(labels=labels.astype(np.int64),
                        images=rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8))

    train = image_set(rng.permutation(np.repeat(np.arange(CLASSES), counts)))
    # labels sorted by class: a chunk holds whole classes
    sets = {"val": image_set(np.repeat(np.arange(CLASSES), HOLDOUT)),
            "test": image_set(np.repeat(np.arange(CLASSES), TEST_PER_CLASS))}
    normalization = Normalization(CIFAR100_MEAN, CIFAR100_STD)
    new_batch = run_device.eval_batch_size(32, BATCH)

    def eval_batches(images: ImageSet, size: int) -> TensorBatches:
        return TensorBatches(images, size, device, normalization, augment=False, channels_last=channels_last)

    ways = {"a": (OLD_EVAL_BATCH, "(a) before: no_grad, model as trained, batch 500"),
            "b": (BATCH, f"(b) before, at the training batch: no_grad, model as trained, batch {BATCH}"),
            "c": (new_batch, f"(c) now: inference_mode, batch {new_batch}")}
    if cpu:
        ways["d"] = (new_batch, "(d) ablation, not used: (c) under CPU bfloat16 autocast")
    precision = {"a": amp, "b": amp, "c": amp, "d": torch.bfloat16}
    chunks = [(part, first) for part, images in sets.items()
              for first in range(0, len(images), CHUNK_CLASSES * len(images) // CLASSES)]
    chunk_batches = {(size, part, first): eval_batches(sets[part].subset(
        np.arange(first, first + CHUNK_CLASSES * len(sets[part]) // CLASSES)), size)
        for size in {size for size, _ in ways.values()} for part, first in chunks}
    train_batches = TensorBatches(train, BATCH, device, normalization, channels_last=channels_last)
    epoch_steps = len(train_batches)
    eval_groups = class_groups(counts, 3)

    torch.manual_seed(0)
    student = create_model("resnet8x4", CLASSES).to(device)
    if channels_last:
        student = student.to(memory_format=torch.channels_last)
    hparams = RunConfig(dataset="cifar100", role="student", arch="resnet8x4", method="ltkd", teacher="x",
                        teacher_arch="resnet32x4").resolved().hparams
    ltkd = get_method("ltkd").build(DistillContext(num_classes=CLASSES, class_counts=tuple(counts)),
                                    dict(hparams)).to(device)
    table = torch.randn(len(train), CLASSES, generator=torch.Generator().manual_seed(1)).mul_(3).to(device)
    trainer = Ours("train", "training", train_batches, TableTeacher(table), student, ltkd, device, amp)

    print(f"evaluation cost of resnet8x4 on CIFAR-100-LT shapes: training {len(train)} images (imbalance factor 100, "
          f"{HOLDOUT} per class held out), validation {len(sets['val'])}, test {len(sets['test'])}")
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if not cpu else f", {os.cpu_count()} cores")
          + f", torch threads {torch.get_num_threads()}; precision {amp or 'fp32'}, channels_last {channels_last}")
    print(f"{args.rounds} rounds, each: the validation and test sets in {N_CHUNKS} chunks of {CHUNK_CLASSES} classes, "
          f"each chunk evaluated by every way in turn (who goes first rotates), {steps_per_chunk} timed training "
          f"step(s) before every chunk (after {warmup} warm-up steps)")
    try:
        print(f"machine load average before: {os.getloadavg()[0]:.2f} (1 min)")
    except OSError:
        pass

    # ---------------------------------------------------------------- rounds
    rounds = []  # per round: step, {(way, part): seconds}, round seconds
    changed = {way: 0 for way in ways if way in "cd"}
    prob_change = {way: 0.0 for way in changed}
    for r in range(args.rounds):
        snapshot = copy.deepcopy(student)  # what this round evaluates; training goes on meanwhile
        snapshot.eval()
        totals = {(way, part): 0.0 for way in ways for part in sets}
        train_time = 0.0
        student.train()
        trainer.start()
        for _ in range(warmup):
            trainer.step()
        for k, (part, first) in enumerate(chunks):
            took, _ = timed(lambda: [trainer.step() for _ in range(steps_per_chunk)], device)
            train_time += took
            order = list(ways)[k % len(ways):] + list(ways)[:k % len(ways)]
            got = {}
            for way in order:
                batches = chunk_batches[ways[way][0], part, first]
                run = evaluate_before if way in "ab" else evaluate_now
                took, got[way] = timed(lambda: run(snapshot, batches, eval_groups, precision[way]), device)
                totals[way, part] += took
            per_class = TEST_PER_CLASS if part == "test" else HOLDOUT
            for way in changed:
                changed[way] += int(np.abs(got["a"][0] - got[way][0]).sum() * per_class + 0.5)
                prob_change[way] = max(prob_change[way], float(np.abs(got["a"][1] - got[way][1]).max()))
        step = train_time / (steps_per_chunk * len(chunks))
        rounds.append((step, totals, train_time + sum(totals.values())))
        line = "   ".join(f"{way} {totals[way, 'val'] + totals[way, 'test']:6.1f} s" for way in ways)
        print(f"  round {r + 1}: training step {step * 1e3:6.1f} ms   val+test: {line}   round {rounds[-1][2]:.0f} s",
              flush=True)

    for way in changed:  # tests/test_engine.py checks a trained model; this one predicts few classes
        print(f"  same metrics? ({way}) vs (a), every chunk of every round: {changed[way]} correct predictions gained "
              f"or lost (net, per class); largest group probability change {prob_change[way]:.1e} (a weak check: "
              "a fresh model on random images)")

    # ---------------------------------------------------------------- shares of a cached epoch
    best_round = min(range(len(rounds)), key=lambda i: rounds[i][2])
    step, med, _ = rounds[best_round]
    train_epoch = step * epoch_steps
    per_epoch = {way: med[way, "val"] + med[way, "test"] for way in ways}
    amortised = {way: med[way, "val"] + med[way, "test"] / args.test_every for way in ways if way in "cd"}

    def share(evaluation: float) -> str:
        return f"{100 * evaluation / (train_epoch + evaluation):5.1f} % of a {train_epoch + evaluation:6.1f} s epoch"

    print(f"\nROUND {best_round + 1}, the least disturbed:")
    print(f"CACHED TRAINING EPOCH: {step * 1e3:.1f} ms per step x {epoch_steps} steps = {train_epoch:.1f} s "
          f"(EXTRAPOLATED from {steps_per_chunk * len(chunks)} timed steps)")
    print("EVALUATION, seconds: validation + test = total")
    for way, (_, label) in ways.items():
        print(f"  {label:<70} {med[way, 'val']:6.2f} + {med[way, 'test']:6.2f} = {per_epoch[way]:6.2f} s")
    print(f"  speed-up of (c) over (a): {per_epoch['a'] / per_epoch['c']:.2f} x; over (b): "
          f"{per_epoch['b'] / per_epoch['c']:.2f} x")
    print("EVALUATION SHARE of a cached epoch (evaluation / (training + evaluation)):")
    for way in ways:
        print(f"  ({way}) validation + test every epoch:                {share(per_epoch[way])}")
    for way, seconds_k in amortised.items():
        print(f"  ({way}) test_every = {args.test_every} (validation every epoch): {share(seconds_k)}   "
              f"[{per_epoch['a'] / seconds_k:.2f} x less evaluation than (a)]")

    # ---------------------------------------------------------------- the batch size
    sizes = [int(s) for s in args.sweep_batches.split(",") if s.strip()]
    sweep_set = sets["test"].subset(np.arange(min(args.sweep_images, len(sets["test"]))))
    student.eval()
    rates = {size: [] for size in sizes}
    for _ in range(args.rounds):
        for size in sizes:
            batches = eval_batches(sweep_set, size)
            evaluate_now(student, eval_batches(sweep_set.subset(np.arange(min(size, len(sweep_set)))), size),
                         eval_groups, amp)  # warm-up at this shape
            took, _ = timed(lambda: evaluate_now(student, batches, eval_groups, amp), device)
            rates[size].append(len(sweep_set) / took)
    best = max(sizes, key=lambda s: max(rates[s]))
    print(f"\n(c) at other evaluation batch sizes, images/s over {len(sweep_set)} images (best of {args.rounds}; "
          f"ratio to batch {new_batch}, the engine's choice on {device.type}):")
    reference = max(rates[new_batch]) if new_batch in rates else None
    for size in sizes:
        rate = max(rates[size])
        ratio = f"  {rate / reference:.2f} x" if reference else ""
        print(f"  batch {size:>5}: {rate:8.0f} images/s{ratio}{'   <- fastest here' if size == best else ''}")
    print(f"\ntotal benchmark time {time.perf_counter() - wall:.0f} s")
    try:
        print(f"machine load average after: {os.getloadavg()[0]:.2f} (1 min)")
    except OSError:
        pass


if __name__ == "__main__":
    main()
