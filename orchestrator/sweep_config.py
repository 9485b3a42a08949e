"""Sweep configuration files (TOML or YAML): typed dataclasses, validated before Ray starts.

Every key is checked: an unknown key or an impossible value is an error that names the key
(`methods[2].search.n_trials must be >= 1, got 0`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from trainables.errors import UserError


class ConfigError(UserError):
    pass


@dataclass
class DatasetEntry:
    name: str
    root: str | None = None
    imbalance_factors: list[float] = field(default_factory=lambda: [100.0])


@dataclass
class PairEntry:
    teacher: str
    student: str


@dataclass
class SearchEntry:
    n_trials: int = 8
    # Overrides of the method's default space: name -> {low, high, log} | {choices: [...]} | a fixed value.
    space: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodEntry:
    method: str
    name: str | None = None  # label of this entry (default: the method); lets one config run LTKD variants
    hparams: dict[str, Any] = field(default_factory=dict)  # fixed hyperparameters over the defaults
    search: SearchEntry | None = None  # None: run at the defaults (+ hparams)

    @property
    def label(self) -> str:
        return self.name or self.method


@dataclass
class SchedulerEntry:
    asha: bool = False
    grace_period: int = 2  # epochs before ASHA may stop a trial
    reduction_factor: int = 3


@dataclass
class ResourcesEntry:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractions share a GPU (scheduling label only: memory is not isolated)


@dataclass
class SweepConfig:
    name: str
    storage: str = "sweeps"  # folder (local or shared, e.g. NFS) or a pyarrow URI; the sweep lives in storage/name
    datasets: list[DatasetEntry] = field(default_factory=list)
    pairs: list[PairEntry] = field(default_factory=list)
    methods: list[MethodEntry] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data_seed: int = 0
    teacher_epochs: int | None = None  # None: the recipe's
    student_epochs: int | None = None
    batch_size: int | None = None
    objective: str = "acc"  # metric the searches maximise: acc, acc_tail, acc_head, acc_medium
    max_retries: int = 2  # times an errored trial is retried from its checkpoint
    scheduler: SchedulerEntry = field(default_factory=SchedulerEntry)
    resources: ResourcesEntry = field(default_factory=ResourcesEntry)
    device: str = "auto"
    teacher_cache: str = "on"  # teacher-logit cache for logit students: on, auto or off (see RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


OBJECTIVES = ("acc", "acc_head", "acc_medium", "acc_tail")

# ---------------------------------------------------------------------------------------------- parsing


def _build(cls, values: Any, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types by name."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a table/mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known: {', '.join(known)})")
    kwargs = {}
    nested = {"datasets": DatasetEntry, "pairs": PairEntry, "methods": MethodEntry}
    for name, value in values.items():
        path = f"{where}.{name}" if where else name
        if name in nested and cls is SweepConfig:
            if not isinstance(value, list):
                raise ConfigError(f"{path} must be a list")
            kwargs[name] = [_build(nested[name], item, f"{path}[{i}]") for i, item in enumerate(value)]
        elif name == "search" and cls is MethodEntry:
            kwargs[name] = None if value in (None, False) else _build(SearchEntry, {} if value is True else value, path)
        elif name == "scheduler":
            kwargs[name] = _build(SchedulerEntry, value, path)
        elif name == "resources":
            kwargs[name] = _build(ResourcesEntry, value, path)
        else:
            kwargs[name] = value
    missing = [f.name for f in fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key '{(where + '.') if where else ''}{missing[0]}'")
    return cls(**kwargs)


def parse_config(values: dict[str, Any]) -> SweepConfig:
    config = _build(SweepConfig, values, "")
    validate(config)
    return config


def load_config(path: str | Path) -> SweepConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep config {path} not found")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            values = tomllib.loads(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ConfigError(f"sweep config {path}: use a .toml, .yaml/.yml or .json file")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"sweep config {path} is not valid {path.suffix[1:].upper()}: {exc}".splitlines()[0]) from None
    return parse_config(values)


# ---------------------------------------------------------------------------------------------- checks


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(config: SweepConfig) -> None:
    """Every impossible value, named by its key. Touches no file and starts nothing."""
    from search_spaces import get_space
    from trainables.data.sources import DATASETS
    from trainables.distillers import get_method
    from trainables.models import MODELS

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(isinstance(config.name, str) and config.name.strip() != "" and "/" not in config.name,
         f"name must be a non-empty folder name, got {config.name!r}")
    need(isinstance(config.storage, str) and config.storage != "", "storage must be a folder or URI")
    need(len(config.datasets) >= 1, "datasets must list at least one dataset")
    need(len(config.pairs) >= 1, "pairs must list at least one teacher/student pair")
    need(len(config.methods) >= 1, "methods must list at least one method")
    need(isinstance(config.seeds, list) and len(config.seeds) >= 1 and all(isinstance(s, int) and not isinstance(s, bool)
         for s in config.seeds) and len(set(config.seeds)) == len(config.seeds),
         f"seeds must be a non-empty list of distinct integers, got {config.seeds!r}")
    need(isinstance(config.data_seed, int), f"data_seed must be an integer, got {config.data_seed!r}")
    for key in ("teacher_epochs", "student_epochs", "batch_size"):
        value = getattr(config, key)
        need(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1),
             f"{key} must be an integer >= 1, got {value!r}")
    need(config.teacher_cache in ("auto", "on", "off"), f"teacher_cache must be on, auto or off, got {config.teacher_cache!r}")
    need(config.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}, got {config.objective!r}")
    need(isinstance(config.max_retries, int) and config.max_retries >= 0, f"max_retries must be >= 0, got {config.max_retries!r}")
    need(isinstance(config.scheduler.asha, bool), "scheduler.asha must be true or false")
    need(isinstance(config.scheduler.grace_period, int) and config.scheduler.grace_period >= 1,
         f"scheduler.grace_period must be an integer >= 1, got {config.scheduler.grace_period!r}")
    need(isinstance(config.scheduler.reduction_factor, int) and config.scheduler.reduction_factor >= 2,
         f"scheduler.reduction_factor must be an integer >= 2, got {config.scheduler.reduction_factor!r}")
    need(_number(config.resources.cpus_per_trial) and config.resources.cpus_per_trial > 0,
         f"resources.cpus_per_trial must be > 0, got {config.resources.cpus_per_trial!r}")
    gpus = config.resources.gpus_per_trial
    need(_number(gpus) and 0 <= gpus and (gpus <= 1 or float(gpus).is_integer()),
         f"resources.gpus_per_trial must be a fraction in [0, 1] or a whole number, got {gpus!r}")

    class_counts = {}
    for i, entry in enumerate(config.datasets):
        where = f"datasets[{i}]"
        need(entry.name in DATASETS, f"{where}.name: unknown dataset '{entry.name}' (known: {', '.join(DATASETS)})")
        need(isinstance(entry.imbalance_factors, list) and len(entry.imbalance_factors) >= 1,
             f"{where}.imbalance_factors must be a non-empty list")
        for factor in entry.imbalance_factors:
            need(_number(factor) and factor >= 1, f"{where}.imbalance_factors: each factor must be >= 1, got {factor!r}")
        class_counts[entry.name] = DATASETS[entry.name].num_classes
    for i, pair in enumerate(config.pairs):
        for role in ("teacher", "student"):
            arch = getattr(pair, role)
            need(arch in MODELS, f"pairs[{i}].{role}: unknown architecture '{arch}' (known: {', '.join(MODELS)})")
        need(MODELS[pair.teacher].style == MODELS[pair.student].style,
             f"pairs[{i}]: teacher {pair.teacher} is {MODELS[pair.teacher].style}-style but student {pair.student} is "
             f"{MODELS[pair.student].style}-style; pair models of the same input style")
        for entry in config.datasets:
            need(MODELS[pair.student].style == DATASETS[entry.name].style,
                 f"pairs[{i}]: {pair.student} is {MODELS[pair.student].style}-style but dataset {entry.name} is "
                 f"{DATASETS[entry.name].style}-style")
    labels = set()
    for i, entry in enumerate(config.methods):
        where = f"methods[{i}]"
        try:
            spec = get_method(entry.method)
        except ValueError as exc:
            raise ConfigError(f"{where}.method: {exc}") from None
        need(entry.label not in labels, f"{where}: the name '{entry.label}' is used twice; give each entry its own name")
        labels.add(entry.label)
        try:
            spec.resolve(entry.hparams)
        except ValueError as exc:
            raise ConfigError(f"{where}.hparams: {exc}") from None
        if entry.search is not None:
            need(isinstance(entry.search.n_trials, int) and entry.search.n_trials >= 1,
                 f"{where}.search.n_trials must be >= 1, got {entry.search.n_trials!r}")
            try:
                space = get_space(entry.method)
                for dataset in config.datasets:
                    for factor in dataset.imbalance_factors:
                        space.check_overrides(entry.search.space, num_classes=class_counts[dataset.name],
                                              imbalance_factor=factor)
            except ValueError as exc:
                raise ConfigError(f"{where}.search.space: {exc}") from None
