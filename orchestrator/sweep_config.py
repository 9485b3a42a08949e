"""Sweep configuration files (TOML or YAML): typed dataclasses, validated before Ray starts.

Every key is checked: an unknown key or an impossible value is an error that names the key
(`methods[2].search.n_trials must be >= 1, got 0`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

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


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "a table/mapping"}


def _shown(value: Any) -> str:
    """A value as an error message shows it: scalars as written, containers by their kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (str, int, float)):
        return repr(value)
    return {list: "list", tuple: "list", dict: "table"}.get(type(value), type(value).__name__)


def _type_name(hint: Any) -> str:
    origin = get_origin(hint) or hint
    if dataclasses.is_dataclass(origin):
        return _TYPE_NAMES[dict]
    return _TYPE_NAMES.get(origin, getattr(origin, "__name__", str(origin)))


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> dict[str, Any]:
    return get_type_hints(cls)


def _typed(value: Any, hint: Any, path: str) -> Any:
    """`value` checked against the declared type `hint` (nested dataclasses built), or a ConfigError naming `path`.

    bool never counts as an integer or number; an integer is accepted where a number (float) is declared.
    """
    if hint is Any:
        return value
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1:
            return _typed(value, options[0], path)
        for option in options:
            try:
                return _typed(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path} must be {' or '.join(map(_type_name, options))}, got {_shown(value)}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {_shown(value)}")
        item = args[0] if args else Any
        return [_typed(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be {_TYPE_NAMES[dict]}, got {_shown(value)}")
        key_hint, value_hint = args if args else (Any, Any)
        for key in value:
            _typed(key, key_hint, f"{path} key {_shown(key)}")
        return {k: _typed(v, value_hint, f"{path}.{k}") for k, v in value.items()}
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{path} must be {_type_name(hint)}, got {_shown(value)}")
    return value


def _build(cls, values: Any, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types by name.

    Every value is checked against its field's declared type (str, int, float, bool, list[...],
    dict[...], X | None, a nested entry); the ranges are checked by `validate`.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a table/mapping, got {_shown(values)}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known), key=str)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known: {', '.join(known)})")
    hints = _field_types(cls)
    kwargs = {}
    for name, value in values.items():
        path = f"{where}.{name}" if where else name
        if name == "search" and cls is MethodEntry and isinstance(value, bool):
            value = {} if value else None  # search = true: the default space; false: no search
        kwargs[name] = _typed(value, hints[name], path)
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
    if path.is_dir():
        raise ConfigError(f"sweep config {path} is a folder; pass a .toml, .yaml or .json file")
    if not path.exists():
        raise ConfigError(f"sweep config {path} not found")
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"sweep config {path}: use a .toml, .yaml/.yml or .json file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"sweep config {path} cannot be read ({exc.strerror or exc}); pass a readable "
                          ".toml, .yaml or .json file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"sweep config {path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); "
                          "save it as UTF-8") from None
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
        else:
            values = json.loads(text)
    except Exception as exc:
        raise ConfigError(f"sweep config {path} is not valid {path.suffix[1:].upper()}: {exc}".splitlines()[0]) from None
    return parse_config(values)


# ---------------------------------------------------------------------------------------------- checks


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,100}")


def check_sweep_name(value: Any, key: str = "name") -> None:
    """A sweep's name is one folder under its storage: 1-100 letters, digits, '.', '_', '-'; not '.' or '..'."""
    if not (isinstance(value, str) and NAME_PATTERN.fullmatch(value) and value not in (".", "..")):
        raise ConfigError(f"{key} must be 1 to 100 letters, digits, '.', '_' or '-' (not '.' or '..'), got "
                          f"{_shown(value)}; pick a plain name: it is the sweep's folder under storage")


def check_storage(value: Any, key: str = "storage") -> None:
    """A storage folder or URI that Location can open (and that carries no credentials)."""
    from trainables.storage import Location

    if not isinstance(value, str) or value.strip() == "":
        raise ConfigError(f"{key} must be a folder or URI (e.g. sweeps or s3://bucket/sweeps), got {_shown(value)}")
    try:
        Location.parse(value)
    except UserError as exc:
        raise ConfigError(str(exc) if key == "storage" else f"{key}: {exc}") from None
    except ValueError as exc:  # urlsplit: a malformed URI
        raise ConfigError(f"{key} is not a folder or URI ({exc}); pass e.g. sweeps or s3://bucket/sweeps") from None


def validate(config: SweepConfig) -> None:
    """Every impossible value, named by its key. Touches no file and starts nothing."""
    from search_spaces import get_space
    from trainables.config import check_device, check_imbalance_factor
    from trainables.data.sources import DATASETS
    from trainables.distillers import get_method
    from trainables.models import MODELS

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    def need_user(check, *args) -> None:  # a shared check of a run setting, as a ConfigError
        try:
            check(*args)
        except UserError as exc:
            raise ConfigError(str(exc)) from None

    check_sweep_name(config.name)
    check_storage(config.storage)
    need_user(check_device, config.device, "device")
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
        need(isinstance(entry.name, str), f"{where}.name must be a string, got {_shown(entry.name)}")
        need(entry.name in DATASETS, f"{where}.name: unknown dataset '{entry.name}' (known: {', '.join(DATASETS)})")
        need(isinstance(entry.imbalance_factors, list) and len(entry.imbalance_factors) >= 1,
             f"{where}.imbalance_factors must be a non-empty list")
        for factor in entry.imbalance_factors:
            need_user(check_imbalance_factor, entry.name, factor, f"{where}.imbalance_factors: each factor")
        class_counts[entry.name] = DATASETS[entry.name].num_classes
    for i, pair in enumerate(config.pairs):
        for role in ("teacher", "student"):
            arch = getattr(pair, role)
            need(isinstance(arch, str) and arch in MODELS,
                 f"pairs[{i}].{role}: unknown architecture {_shown(arch)} (known: {', '.join(MODELS)})")
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
            need(isinstance(entry.search.n_trials, int) and not isinstance(entry.search.n_trials, bool),
                 f"{where}.search.n_trials must be an integer, got {_shown(entry.search.n_trials)}")
            need(entry.search.n_trials >= 1, f"{where}.search.n_trials must be >= 1, got {entry.search.n_trials!r}")
            try:
                space = get_space(entry.method)
                for dataset in config.datasets:
                    for factor in dataset.imbalance_factors:
                        space.check_overrides(entry.search.space, num_classes=class_counts[dataset.name],
                                              imbalance_factor=factor)
            except ValueError as exc:
                raise ConfigError(f"{where}.search.space: {exc}") from None
