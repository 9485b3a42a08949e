"""`ltkd plan CONFIG`: what a sweep would run and roughly what it costs, before anything starts. Writes nothing.

Run counts come from the same planning the driver uses (orchestrator/plan.py); what is already done
is read from the storage (finished teacher run folders, the sweep's Parquet results). The cost is in
hours of training epochs: from the `epoch_seconds` of earlier runs on the same storage with the same
dataset, imbalance factor, architecture and method (and on the same kind of device, GPU or CPU) when
there are any, else from the models' multiply-accumulates (MACs) at a rate:

- a GPU kind (`--device-kind h100`, ...; h100 by default when the config's trials hold GPUs): the
  kind's rate from orchestrator/device_rates.py (no torch, nothing timed), in GPU-hours. The rate is
  one whole GPU's throughput, so GPU-hours = MACs / rate whatever share of a GPU a trial holds (four
  trials at gpus_per_trial = 0.25 share one GPU: each takes about four times as long as alone); a
  trial holding n >= 1 GPUs trains on one of them and is charged n x MACs / rate.
- `cpu` (the default when they hold none): a few training steps timed on this machine's CPU, in
  device-hours.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

from orchestrator.device_rates import CPU_KIND, RATES, check_kind, default_kind
from orchestrator.plan import PlannedRun, cells, layout, student_run, teacher_run, teacher_runs
from orchestrator.studies import run_outcome
from orchestrator.sweep_config import SweepConfig
from search_spaces import ce_weight_rule, get_space, param_text
from trainables.data.sources import get_dataset
from trainables.methods import get_method


@dataclass
class StagePlan:
    name: str
    runs: int  # planned trials
    done: int  # already finished (reused) or ended
    epochs: int  # per run
    keys: list[tuple] = field(default_factory=list)  # `_key` of every run still to run

    @property
    def to_run(self) -> int:
        return self.runs - self.done


def stages(config: SweepConfig) -> list[StagePlan]:
    """Teachers, search and final: planned runs, how many are already done, epochs per run."""
    teachers = teacher_runs(config)
    todo = [t for t in teachers if run_outcome(t.run_dir, t.epochs) is None]
    teacher_stage = StagePlan("teachers", len(teachers), len(teachers) - len(todo),
                              teachers[0].epochs if teachers else 0, [_key(t) for t in todo])
    ended = _ended_trials(config)
    searched = [c for c in cells(config) if c.entry.search is not None]
    search = StagePlan("search", sum(c.entry.search.n_trials for c in searched), 0, 0)
    final = StagePlan("final", len(cells(config)) * len(config.seeds), 0, 0)
    for cell in cells(config):
        probe = _student(config, cell)
        key = _key(probe)
        final.epochs = search.epochs = probe.epochs
        if cell.entry.search is not None:
            done = min(ended.get(("search", cell.key), 0), cell.entry.search.n_trials)
            search.done += done
            search.keys += [key] * (cell.entry.search.n_trials - done)
        done = min(ended.get(("final", cell.key), 0), len(config.seeds))
        final.done += done
        final.keys += [key] * (len(config.seeds) - done)
    return [teacher_stage, search, final]


def _student(config: SweepConfig, cell) -> PlannedRun:
    return student_run(config, cell, config.seeds[0], {}, "final")


def _key(run: PlannedRun) -> tuple:
    r = run.resolved
    return (r.dataset, float(r.imbalance_factor), r.arch, r.method, r.role, r.teacher_arch or "")


def _ended_trials(config: SweepConfig) -> dict[tuple[str, str], int]:
    """(stage, cell) -> trials of the sweep whose results say they ended (completed, stopped early or errored)."""
    folder = layout(config)
    if not folder.results.is_dir():
        return {}
    from results.store import read_results

    frame = read_results([folder.folder.uri], warn=lambda message: None, allow_empty=True, final_only=True)
    if not len(frame):
        return {}
    final = frame[frame["row_kind"] == "final"]
    return {(stage, cell): int(n) for (stage, cell), n in final.groupby(["stage", "cell"]).size().items()}


def cache_builds(config: SweepConfig) -> list[str]:
    """Teachers whose logit cache the sweep would build (logit-method students, in-memory data, cache on)."""
    from trainables.teacher_cache import CACHE_DIR_NAME

    if config.teacher_cache == "off":
        return []
    needed = {}
    for cell in cells(config):
        spec = get_dataset(cell.setting.dataset)
        if get_method(cell.entry.method).kind != "logit" or not spec.in_memory:
            continue
        for seed in {config.teacher_seed_for(None)} | {config.teacher_seed_for(s) for s in config.seeds}:
            teacher = teacher_run(config, cell.setting, seed)
            needed[teacher.run_dir.uri] = teacher
    return [uri for uri, teacher in needed.items() if not (teacher.run_dir / CACHE_DIR_NAME).is_dir()]


# ------------------------------------------------------------------------------------ cost


def earlier_epoch_seconds(config: SweepConfig, on_gpu: bool | None = None) -> dict[tuple, float]:
    """Median seconds per epoch of finished runs on this storage, by (dataset, factor, arch, method, role);
    on_gpu True: only epochs trained on an accelerator, False: only CPU ones (rows naming no device: kept)."""
    from results.store import RESULTS_DIR, read_results

    root = layout(config).storage
    stores = [folder.uri for folder in (root / name for name in root.subfolders()) if (folder / RESULTS_DIR).is_dir()]
    if not stores:
        return {}
    frame = read_results(stores, warn=lambda message: None, allow_empty=True)
    if not len(frame):
        return {}
    rows = frame[(frame["row_kind"] == "epoch") & frame["epoch_seconds"].notna()]
    if on_gpu is not None and "device" in rows:
        device = rows["device"]
        rows = rows[device.isna() | ((device != "cpu") if on_gpu else (device == "cpu"))]
    out = {}
    for key, group in rows.groupby(["dataset", "imbalance_factor", "arch", "method", "role"]):
        out[(key[0], float(key[1]), key[2], key[3], key[4])] = float(group["epoch_seconds"].median())
    return out


@functools.lru_cache(maxsize=None)
def model_macs(arch: str, dataset: str, num_classes: int) -> int:
    """Multiply-accumulates of one image's forward pass (convolutions and linear layers); one count per
    model (building a model and running it costs ~0.05 s, and a paper-scale plan has thousands of runs)."""
    import torch

    from trainables.models import create_model

    size = get_dataset(dataset).image_size
    with torch.random.fork_rng(devices=[]):
        model = create_model(arch, num_classes).eval()
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return total


def measured_rate() -> tuple[float, str]:
    """Training MACs per second of this machine's CPU (a few resnet8 steps at batch 64, 32x32); a
    training step counts 3 forward passes of MACs (forward, and the backward's two). `ltkd plan` times
    the CPU only (`--device-kind cpu`); GPU kinds are priced from orchestrator/device_rates.py."""
    import torch

    from trainables.models import create_model

    with torch.random.fork_rng(devices=[]):
        model = create_model("resnet8", 100).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        inputs = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 100, (64,))

        def step():
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(inputs), labels).backward()
            optimizer.step()

        step()  # warm-up
        started, steps = time.perf_counter(), 0
        while steps < 3 or time.perf_counter() - started < 0.5:
            step()
            steps += 1
        seconds = (time.perf_counter() - started) / steps
    return 3 * 64 * model_macs("resnet8", "cifar100", 100) / seconds, "cpu"


def epoch_macs(config: SweepConfig, key: tuple) -> float:
    """Multiply-accumulates of one epoch of a planned run (`_key(run)`): its training steps (forward and
    backward of the trained model, 3 forward passes; plus the teacher's forward unless its logits come
    from the cache) over the long-tailed set, and the evaluation of the validation and test sets."""
    from trainables.data.long_tail import long_tail_counts
    from trainables.data.sources import nominal_n_max

    dataset, factor, arch, method, role, teacher_arch = key
    spec = get_dataset(dataset)
    holdout = config.validation_per_class_for(next(d for d in config.datasets if d.name == dataset))
    images = sum(long_tail_counts(nominal_n_max(spec, holdout), spec.num_classes, factor))
    student = model_macs(arch, dataset, spec.num_classes)
    per_image = 3 * student
    if teacher_arch and role == "student":
        cached = spec.in_memory and config.teacher_cache == "on" and _is_logit(method)
        per_image += 0 if cached else model_macs(teacher_arch, dataset, spec.num_classes)
    # Validation every epoch, the test set every test_every epochs (ignoring the last epoch's, always evaluated).
    evaluated = spec.num_classes * (holdout + spec.test_per_class / config.test_every)
    return float(images * per_image + evaluated * student)


def plan_report(config: SweepConfig, estimate: bool = True, device_kind: str | None = None) -> str:
    """The lines `ltkd plan` prints. `device_kind`: what the estimate prices MACs at (a kind of
    orchestrator/device_rates.py, or "cpu"); None: h100 when the config's trials hold GPUs, else cpu."""
    chosen = check_kind(device_kind)  # an unknown kind fails before anything is read
    folder = layout(config)
    lines = [f"plan of sweep {config.name} at {folder.folder} (nothing is written; `ltkd sweep` runs it)"]
    planned = stages(config)
    for stage in planned:
        verb = "already finished (reused)" if stage.name == "teachers" else "already ended"
        lines.append(f"{stage.name}: {stage.runs} runs, {stage.done} {verb}, {stage.to_run} to run, "
                     f"{stage.epochs} epochs each = {stage.to_run * stage.epochs} epochs to train")
    budgets = config.budget_warning()
    if budgets:
        lines.append(budgets)
    lines.extend(search_space_lines(config))
    builds = cache_builds(config)
    if builds:
        lines.append(f"teacher-logit caches to build: {len(builds)} (one per teacher of a logit-method student; "
                     "each a forward pass of its teacher over every augmented view of every training image)")
    if not estimate:
        return "\n".join(lines)
    if not sum(stage.to_run for stage in planned):
        lines.append("estimate: nothing left to train")
        return "\n".join(lines)
    gpus = config.resources.gpus_per_trial
    kind = chosen or default_kind(gpus)
    if kind == CPU_KIND:
        lines.append(_cpu_estimate(config, planned))
    else:
        lines.append(_gpu_estimate(config, planned, kind, defaulted=chosen is None))
    return "\n".join(lines)


def search_space_lines(config: SweepConfig) -> list[str]:
    """One line per searched method entry: what its search samples and holds fixed (its first
    setting's space; ranges that adapt to the class count may differ in others), then the CE rule."""
    lines = []
    for cell in {cell.entry.label: cell for cell in cells(config) if cell.entry.search is not None}.values():
        spec = get_dataset(cell.setting.dataset)
        space = get_space(cell.entry.method).resolved(cell.entry.search.space, spec.num_classes,
                                                      cell.setting.imbalance_factor)
        lines.append(f"search space of {cell.entry.label}: "
                     + ", ".join(f"{name} {param_text(param)}" for name, param in space.items()))
    if lines:
        lines.append(f"CE weight: {ce_weight_rule()}")
    return lines


def _cpu_estimate(config: SweepConfig, planned: list[StagePlan]) -> str:
    """Device-hours: earlier CPU epochs, else MACs at a rate timed on this machine's CPU (imports torch)."""
    earlier = earlier_epoch_seconds(config, on_gpu=False)
    rate, device = None, None
    seconds, from_earlier, from_macs = 0.0, 0, 0
    for stage in planned:
        for key in stage.keys:
            known = earlier.get(key[:5])
            if known is not None:
                seconds += known * stage.epochs
                from_earlier += 1
                continue
            if rate is None:
                rate, device = measured_rate()
            seconds += stage.epochs * epoch_macs(config, key) / rate
            from_macs += 1
    how = []
    if from_earlier:
        how.append(f"{from_earlier} runs from the median epoch_seconds of earlier runs on this storage")
    if from_macs:
        how.append(f"{from_macs} runs from the models' MACs at {rate / 1e9:.1f} GMAC/s measured on this machine's "
                   f"{device} (training steps of resnet8; a rough guide: real rates vary with the model)")
    per_trial = config.resources.gpus_per_trial or config.resources.cpus_per_trial
    unit = "GPU" if config.resources.gpus_per_trial else "CPU-slot"
    return (f"estimate: {_duration(seconds)} of training on one device ({'; '.join(how)}); "
            f"each trial holds {per_trial:g} {unit}{'s' if per_trial != 1 else ''}")


def _gpu_estimate(config: SweepConfig, planned: list[StagePlan], kind: str, defaulted: bool) -> str:
    """GPU-hours: earlier GPU epochs x the GPUs a trial holds, else MACs at the kind's rate (no torch
    for the rate; counting MACs builds the models). The rate is a whole GPU's throughput: trials
    sharing a GPU share it, so a fraction of a GPU costs MACs / rate; a trial holding n >= 1 GPUs
    trains on one (the engine uses one device) and is charged n x MACs / rate."""
    gpus = config.resources.gpus_per_trial
    spec = RATES[kind]
    earlier = earlier_epoch_seconds(config, on_gpu=True)
    held = gpus if gpus > 0 else 1.0  # GPUs a trial holds for its epoch_seconds
    charged = max(gpus, 1.0)  # whole-GPU time a trial is charged per MACs / rate
    gpu_seconds, from_earlier, from_macs = 0.0, 0, 0
    for stage in planned:
        for key in stage.keys:
            known = earlier.get(key[:5])
            if known is not None:
                gpu_seconds += known * stage.epochs * held
                from_earlier += 1
                continue
            gpu_seconds += charged * stage.epochs * epoch_macs(config, key) / spec.macs_per_second
            from_macs += 1
    how = []
    if from_earlier:
        how.append(f"{from_earlier} runs from the median epoch_seconds of earlier GPU runs on this storage "
                   f"x {held:g} GPUs held per trial")
    if from_macs:
        how.append(f"{from_macs} runs from the models' MACs at {spec.macs_per_second / 1e12:.3g} TMAC/s for {kind}: "
                   f"{spec.source}; a rough guide: real rates vary with the model")
    if gpus == 0:
        counting = ("GPU-hours = MACs / rate; the config's trials hold no GPU (resources.gpus_per_trial = 0): "
                    "priced as one trial per GPU")
    elif gpus < 1:
        counting = (f"GPU-hours = MACs / rate, a whole GPU's rate; each trial holds {gpus:g} GPUs: {1 / gpus:.3g} "
                    f"trials share each GPU, a trial's own time is its GPU-hours / {gpus:g}")
    elif gpus == 1:
        counting = "GPU-hours = MACs / rate; each trial holds 1 GPU"
    else:
        counting = (f"each trial holds {gpus:g} GPUs and trains on one: GPU-hours = {gpus:g} x MACs / rate, "
                    "a trial's own time is MACs / rate")
    default = f"; {kind} is the default for a GPU config (--device-kind KIND prices another)" if defaulted else ""
    return f"estimate: {_duration(gpu_seconds, 'GPU')} of training ({'; '.join(how)}); {counting}{default}"


def _is_logit(method: str) -> bool:
    return get_method(method).kind == "logit"


def _duration(seconds: float, unit: str = "device") -> str:
    if seconds < 60:
        return f"{seconds:.1f} {unit}-seconds"
    if seconds < 3600:
        return f"{seconds / 60:.1f} {unit}-minutes"
    return f"{seconds / 3600:.1f} {unit}-hours"
