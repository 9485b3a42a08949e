"""Where the quickstart's wall time goes: runs `ltkd sweep` (the digits quickstart) in an empty folder
and splits its wall time, in slot-seconds (wall x the trials Ray runs at once), into:

  - start: from the command's start to the driver's "teachers:" line (imports, planning, Ray's start;
    to the second: the driver's lines carry HH:MM:SS);
  - epochs: the epochs' own time (every epoch's `epoch_seconds` in the Parquet results: training and
    evaluation), which is the work itself;
  - trial set-up: each trial's time outside its epochs (its `wall_seconds` in the results, from the
    trainable's start to its record: data, model, teacher or its cache, checkpoints, the record);
  - between trials: the rest of the slots' time (Tune starting a trial, worker processes starting,
    a slot waiting for a trial whose inputs are not ready, the end of the run).

    python benchmarks/quickstart.py [--keep DIR]

"Orchestration" is everything but the epochs. The slots are the CPUs Ray sees divided by the
quickstart's cpus_per_trial (this machine: 2 / 1).

    python benchmarks/quickstart.py --repeats N [--keep DIR] [--config FILE]

runs the quickstart N times instead, each in its own folder (DIR/repeat-K) with other data and
teacher seeds (repeat K: `--set data_seed=K --set seeds=[3K, 3K+1, 3K+2]`; teacher_seeds default to
seeds, so every repeat has its own teachers; repeat 0 is the plain quickstart), and prints per
column each repeat's Δ of LTKD against its comparator, the Holm-adjusted p, and how many repeats
are positive and significant (results/repeats.py). `--config`: another sweep config (the tests
record a tiny one).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", default=None, help="run in this folder and keep it (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=0, help="run the quickstart N times with other data and "
                        "teacher seeds and summarise LTKD's gain per column (default: one timed run)")
    parser.add_argument("--config", default=None, help="with --repeats: the sweep config (default: the quickstart)")
    args = parser.parse_args(argv)
    if args.repeats:
        return repeats(args.repeats, args.keep, args.config)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="ltkd-quickstart-")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    try:
        started = time.time()
        result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep"], cwd=folder, env=env,
                                capture_output=True, text=True)
        wall = time.time() - started
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:])
            return 1
        return report(folder / "sweeps" / "quickstart", result.stdout, started, wall)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def repeat_overrides(k: int, seeds_per_repeat: int = 3) -> list[str]:
    """The `ltkd sweep` overrides of repeat k: data seed k and its own block of student (= teacher) seeds."""
    seeds = [seeds_per_repeat * k + i for i in range(seeds_per_repeat)]
    return ["--set", f"data_seed={k}", "--set", f"seeds=[{', '.join(map(str, seeds))}]"]


def repeats(n: int, keep: str | None, config: str | None) -> int:
    """Run the sweep n times (one folder each), then print every repeat's Δ per column and the tally."""
    from results.repeats import summarize, summary_lines, sweep_gains

    base = Path(keep or tempfile.mkdtemp(prefix="ltkd-repeats-")).resolve()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "orchestrator.cli", "sweep"] + ([str(Path(config).resolve())] if config else [])
    per_repeat, walls = [], []
    try:
        for k in range(n):
            folder = base / f"repeat-{k}"
            folder.mkdir(parents=True, exist_ok=True)
            started = time.time()
            result = subprocess.run(command + repeat_overrides(k), cwd=folder, env=env, capture_output=True, text=True)
            walls.append(time.time() - started)
            if result.returncode != 0:
                print(f"repeat {k} failed:", result.stdout[-3000:], result.stderr[-3000:])
                return 1
            sweeps = [path.parent for path in folder.glob("sweeps/*/results")]
            per_repeat.append(sweep_gains(str(sweeps[0])))
            print(f"repeat {k} ({' '.join(repeat_overrides(k))}): {walls[-1]:.0f} s wall", flush=True)
        print(f"{n} repeats of `ltkd sweep{' ' + config if config else ''}` on {os.cpu_count()} CPU cores: "
              f"{min(walls):.0f} to {max(walls):.0f} s wall each, {sum(walls) / 60:.1f} min in all")
        print("\n".join(summary_lines(summarize(per_repeat))))
        return 0
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)


def report(sweep: Path, output: str, started: float, wall: float) -> int:
    from orchestrator.sweep import load_sweep_folder
    from results.store import read_results

    config = load_sweep_folder(sweep)
    slots = max(1, int((os.cpu_count() or 1) / config.resources.cpus_per_trial))
    rows = read_results([str(sweep)])
    epochs = rows[rows["row_kind"] == "epoch"]
    final = rows[rows["row_kind"] == "final"]
    epoch_seconds = float(epochs["epoch_seconds"].sum())
    trial_seconds = float(final["wall_seconds"].sum())
    # The driver's "teachers: ..." line (HH:MM:SS, after Ray has started): the start ends there.
    line = re.search(r"^(\d\d):(\d\d):(\d\d) teachers: ", output, re.M)
    day = time.localtime(started)
    ray_up = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, *map(int, line.groups()), 0, 0, -1))
    start_seconds = max(0.0, ray_up - started)
    total = wall * slots
    parts = {
        "start (imports, planning, Ray's start)": start_seconds * slots,
        "epochs (training and evaluation)": epoch_seconds,
        "trial set-up (data, model, teacher, checkpoints, record)": trial_seconds - epoch_seconds,
    }
    parts["between trials (Tune, worker start, waiting slots, the end)"] = total - sum(parts.values())
    print(f"quickstart: {len(final)} trials, {len(epochs)} epochs, {wall:.0f} s wall on {slots} slots "
          f"({total:.0f} slot-seconds)")
    print("| part | slot-seconds | share |")
    print("| --- | ---: | ---: |")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds:.0f} | {seconds / total:.0%} |")
    print(f"orchestration (all but the epochs): {1 - epoch_seconds / total:.0%} of the wall time (target <= 15%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
