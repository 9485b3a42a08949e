"""Sweep configuration files (TOML or YAML): typed dataclasses, validated before Ray starts.

Every key is checked: an unknown key or an impossible value is an error that names the key
(`methods[2].search.n_trials must be >= 1, got 0`). `json_schema()` states the same keys, types,
defaults and choices as a JSON Schema for editors (`ltkd config schema`).

The comparison protocol (issue 13) lives here too, each rule in one place:
- `selection` ("val", the default, or "test", the paper's protocol): what searches maximise,
  `SweepConfig.objective_metric` ("val_" + objective, or objective itself); with "test" every epoch
  must evaluate the test set (`test_every` 1: Tune and ASHA read the metric in every result);
- `search_seeds` (default one seed not in `seeds`): the seed(s) search trials train with, so a
  final run is never a search trial reused;
- `teacher_seeds` (default: equal to `seeds`, paired one to one, so the spread includes the
  teacher's; one seed: one teacher per setting serves every student seed), `SweepConfig.teacher_seed_for`;
- `search_baselines` (default true): every method entry with a search space and no `search` key
  gets the searched entries' n_trials, `SweepConfig.search_for`; `search = false` keeps an
  entry at its defaults;
- per dataset entry `validation_per_class` (default: the dataset's own with selection "val", 0
  with "test"), `SweepConfig.validation_per_class_for`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import importlib.util
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from trainables.config import SEED_MAX, TEACHER_CACHE_DTYPES, TEACHER_CACHE_MODES, is_seed
from trainables.errors import UserError
from trainables.metrics import OBJECTIVES, validation_twin


class ConfigError(UserError):
    pass


@dataclass
class DatasetEntry:
    name: str
    root: str | None = None
    imbalance_factors: list[float] = field(default_factory=lambda: [100.0])
    # Balanced validation images per class, held out of the training pool before the long-tailed
    # subsample. None: the dataset's default with selection "val", 0 (no split) with "test".
    validation_per_class: int | None = None


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
    # What the config says, kept as written so sweep.json round-trips: a search table (searched);
    # false (`search = false`: never searched, the defaults + hparams); None (no `search` key:
    # searched with the searched entries' budget when search_baselines is on, see
    # SweepConfig.search_for, else run at the defaults + hparams).
    search: SearchEntry | bool | None = None

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
    # Trials at once: 0 = as many as the cluster holds when the driver starts (its CPUs and GPUs over
    # the above). Set it on an autoscaling cluster, whose size at start is not its size.
    max_concurrent_trials: int = 0


@dataclass
class TrackingEntry:
    """Where trials' per-epoch metrics also go, besides the Parquet store and the TensorBoard files in
    every run folder (always written). Each needs its optional package: pip install 'ltkd-sweep[wandb]'
    or 'ltkd-sweep[mlflow]'; the login or tracking server comes from their usual environment variables."""

    wandb_project: str | None = None  # Weights & Biases project; a trial's group is sweep/cell, its job type its stage
    wandb_entity: str | None = None
    mlflow_experiment: str | None = None  # MLflow experiment name
    mlflow_tracking_uri: str | None = None  # None: MLflow's default (MLFLOW_TRACKING_URI or ./mlruns)


TRACKING_PACKAGES = {"wandb_project": ("wandb", "wandb"), "mlflow_experiment": ("mlflow", "mlflow")}


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
    teacher_cache_dtype: str = "float32"  # how the cache stores logits: float32, or float16 (half the size)
    # Every run evaluates its test set every test_every epochs and at the last; validation every epoch.
    test_every: int = 1
    # Every run checkpoints after an epoch once this many seconds have passed since its last checkpoint,
    # and after its last epoch; 0 = every epoch; None = the device's default (trainables/config.py RunConfig).
    checkpoint_every_seconds: float | None = None
    deterministic: bool = False  # deterministic kernels on GPUs (trainables/config.py RunConfig)
    selection: str = "val"  # val: searches maximise the validation metric; test: the test metric (the paper's)
    search_seeds: list[int] | None = None  # None: [max(seeds) + 1], a seed no final run uses
    # None: the same as seeds (each student seed distils from its own teacher, so the spread over seeds
    # includes the teacher's); one seed: one teacher serves every student seed (student noise only).
    teacher_seeds: list[int] | None = None
    search_baselines: bool = True  # method entries without a `search` key get the searched entries' n_trials
    tracking: TrackingEntry = field(default_factory=TrackingEntry)

    def __post_init__(self) -> None:
        if self.teacher_seeds is None and isinstance(self.seeds, list):
            self.teacher_seeds = list(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ------------------------------------------------------------------ the protocol, in one place

    @property
    def objective_metric(self) -> str:
        """The metric every search reads (Optuna's value, the best trial, ASHA, progress, status).

        With selection "val" it is the validation split's ("val_acc" for objective "acc"): a search
        never reads a test metric. With "test" it is the test metric itself (the paper's protocol).
        """
        return validation_twin(self.objective) if self.selection == "val" else self.objective

    @property
    def search_seed_list(self) -> list[int]:
        """The seeds search trials train with: `search_seeds`, or one seed that no final run uses."""
        if self.search_seeds is not None:
            return list(self.search_seeds)
        return [max(self.seeds) + 1]

    @property
    def search_seed(self) -> int:
        """The one seed of every search trial (validate allows exactly one)."""
        return self.search_seed_list[0]

    def teacher_seed_for(self, seed: int | None) -> int:
        """The teacher seed a student of `seed` distils from (None: a search trial).

        teacher_seeds equal to seeds pairs them one to one; otherwise (one teacher seed) the first
        teacher seed serves every student. Search trials always use the first teacher seed.
        """
        if seed is not None and sorted(self.teacher_seeds) == sorted(self.seeds) and seed in self.teacher_seeds:
            return seed
        return self.teacher_seeds[0]

    def validation_per_class_for(self, entry: DatasetEntry) -> int:
        if entry.validation_per_class is not None:
            return entry.validation_per_class
        from trainables.data.sources import default_validation_per_class

        return default_validation_per_class(entry.name) if self.selection == "val" else 0

    def baseline_trials(self) -> int | None:
        """The budget search_baselines gives: the most n_trials of any explicitly searched entry."""
        explicit = [m.search.n_trials for m in self.methods if isinstance(m.search, SearchEntry)]
        return max(explicit) if explicit else None

    def search_for(self, entry: MethodEntry) -> SearchEntry | None:
        """The search an entry gets, or None (run at its defaults + hparams).

        An explicit search table is used as written; `search = false` is never searched. An entry
        without a `search` key is searched, when search_baselines is on and its method has a search
        space, with the budget of the explicitly searched entries (equal budgets) over the method's
        default space, its own fixed hparams held fixed (an ablation stays an ablation).
        """
        if isinstance(entry.search, SearchEntry):
            return entry.search
        if entry.search is True:  # asked for: the same budget as the searched entries, whatever search_baselines
            return SearchEntry(n_trials=self.baseline_trials() or SearchEntry.n_trials, space=dict(entry.hparams))
        if entry.search is not None or not self.search_baselines:
            return None
        budget = self.baseline_trials()
        if budget is None or not has_search_space(entry.method):
            return None
        return SearchEntry(n_trials=budget, space=dict(entry.hparams))

    def budget_warning(self) -> str | None:
        """One line when searched entries get different numbers of trials (unequal budgets favour the
        larger); None when every search has the same budget."""
        budgets = {}
        for entry in self.methods:
            search = self.search_for(entry)
            if search is not None:
                budgets[entry.label] = search.n_trials
        if len(set(budgets.values())) > 1:
            listed = ", ".join(f"{label} {n}" for label, n in budgets.items())
            return (f"warning: the searches have different budgets ({listed} trials): a method searched more "
                    f"has more chances to find a good setting; tables state each method's trials")
        return None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


SELECTIONS = ("val", "test")


def need_user(check, *args, **kwargs) -> None:
    """A shared check of a run setting (trainables/config.py), its UserError as a ConfigError."""
    try:
        check(*args, **kwargs)
    except UserError as exc:
        raise ConfigError(str(exc)) from None


def has_search_space(method: str) -> bool:
    from search_spaces import SPACES

    return method in SPACES

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
        tables = [o for o in options if dataclasses.is_dataclass(o)]
        if isinstance(value, dict) and len(tables) == 1:  # a table for an entry: its own errors name the key
            return _typed(value, tables[0], path)
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
            kwargs[name] = value  # true: searched with the others' budget (search_for); false: never searched
            continue
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


def load_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """The config in a TOML, YAML or JSON file, with `--set KEY=VALUE` overrides merged in before it is checked."""
    from orchestrator.overrides import apply_overrides

    return parse_config(apply_overrides(read_config_values(path), overrides))


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The raw mapping a config file holds (neither typed nor checked)."""
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
    return values


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
    from trainables.config import check_checkpoint_every_seconds, check_device, check_test_every, check_trial_gpus
    from trainables.data.sources import DATASETS
    from trainables.methods import get_method
    from trainables.model_catalog import model_catalog

    models = model_catalog()  # names, styles: read without importing torch

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    check_sweep_name(config.name)
    check_storage(config.storage)
    need_user(check_device, config.device, "device")
    need(len(config.datasets) >= 1, "datasets must list at least one dataset")
    need(len(config.pairs) >= 1, "pairs must list at least one teacher/student pair")
    need(len(config.methods) >= 1, "methods must list at least one method")
    need(_seed_list(config.seeds), f"seeds must be a non-empty list of distinct integers{SEED_RANGE}, got {config.seeds!r}")
    need(is_seed(config.data_seed), f"data_seed must be an integer{SEED_RANGE}, got {config.data_seed!r}")
    for key in ("teacher_epochs", "student_epochs", "batch_size"):
        value = getattr(config, key)
        need(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1),
             f"{key} must be an integer >= 1, got {value!r}")
    need(config.teacher_cache in TEACHER_CACHE_MODES, f"teacher_cache must be on, auto or off, got {config.teacher_cache!r}")
    need(config.teacher_cache_dtype in TEACHER_CACHE_DTYPES,
         f"teacher_cache_dtype must be one of {', '.join(TEACHER_CACHE_DTYPES)}, "
         f"got {_shown(config.teacher_cache_dtype)}")
    need_user(check_test_every, config.test_every)
    need_user(check_checkpoint_every_seconds, config.checkpoint_every_seconds)
    need(config.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}, got {config.objective!r}")
    _validate_protocol(config, need)
    need(isinstance(config.max_retries, int) and config.max_retries >= 0, f"max_retries must be >= 0, got {config.max_retries!r}")
    for key, (module, extra) in TRACKING_PACKAGES.items():
        if getattr(config.tracking, key) is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(f"tracking.{key} needs the {module} package: pip install 'ltkd-sweep[{extra}]' "
                              f"(or remove tracking.{key})")
    need(isinstance(config.scheduler.asha, bool), "scheduler.asha must be true or false")
    need(isinstance(config.scheduler.grace_period, int) and config.scheduler.grace_period >= 1,
         f"scheduler.grace_period must be an integer >= 1, got {config.scheduler.grace_period!r}")
    need(isinstance(config.scheduler.reduction_factor, int) and config.scheduler.reduction_factor >= 2,
         f"scheduler.reduction_factor must be an integer >= 2, got {config.scheduler.reduction_factor!r}")
    need(_number(config.resources.cpus_per_trial) and config.resources.cpus_per_trial > 0,
         f"resources.cpus_per_trial must be > 0, got {config.resources.cpus_per_trial!r}")
    need(isinstance(config.deterministic, bool), f"deterministic must be true or false, got {config.deterministic!r}")
    need_user(check_trial_gpus, config.resources.gpus_per_trial, "resources.gpus_per_trial")
    _validate_device(config, need)
    concurrent = config.resources.max_concurrent_trials
    need(isinstance(concurrent, int) and not isinstance(concurrent, bool) and concurrent >= 0,
         f"resources.max_concurrent_trials must be a whole number >= 0 (0: as many as the cluster holds), "
         f"got {concurrent!r}")

    class_counts = {}
    for i, entry in enumerate(config.datasets):
        where = f"datasets[{i}]"
        need(isinstance(entry.name, str), f"{where}.name must be a string, got {_shown(entry.name)}")
        need(entry.name in DATASETS, f"{where}.name: unknown dataset '{entry.name}' (known: {', '.join(DATASETS)})")
        need(isinstance(entry.imbalance_factors, list) and len(entry.imbalance_factors) >= 1,
             f"{where}.imbalance_factors must be a non-empty list")
        _validate_validation_split(config, entry, where, need)
        class_counts[entry.name] = DATASETS[entry.name].num_classes
    for i, pair in enumerate(config.pairs):
        for role in ("teacher", "student"):
            arch = getattr(pair, role)
            need(isinstance(arch, str) and arch in models,
                 f"pairs[{i}].{role}: unknown architecture {_shown(arch)} (known: {', '.join(models)})")
        need(models[pair.teacher].style == models[pair.student].style,
             f"pairs[{i}]: teacher {pair.teacher} is {models[pair.teacher].style}-style but student {pair.student} is "
             f"{models[pair.student].style}-style; pair models of the same input style")
        for entry in config.datasets:
            need(models[pair.student].style == DATASETS[entry.name].style,
                 f"pairs[{i}]: {pair.student} is {models[pair.student].style}-style but dataset {entry.name} is "
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
        need(entry.search is None or isinstance(entry.search, (bool, SearchEntry)),
             f"{where}.search must be a table/mapping or true or false, got {_shown(entry.search)}")
        if isinstance(entry.search, SearchEntry):
            need(isinstance(entry.search.n_trials, int) and not isinstance(entry.search.n_trials, bool),
                 f"{where}.search.n_trials must be an integer, got {_shown(entry.search.n_trials)}")
            need(entry.search.n_trials >= 1, f"{where}.search.n_trials must be >= 1, got {entry.search.n_trials!r}")
        search = config.search_for(entry)
        if search is not None:
            # A search search_baselines gives holds the entry's hparams fixed: a problem is theirs.
            key = f"{where}.search.space" if isinstance(entry.search, SearchEntry) else f"{where}.hparams"
            try:
                space = get_space(entry.method)
                for dataset in config.datasets:
                    for factor in dataset.imbalance_factors:
                        space.check_overrides(search.space, num_classes=class_counts[dataset.name],
                                              imbalance_factor=factor)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from None


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


SEED_RANGE = f" from 0 to {SEED_MAX} (2**63 - 1)"


def _seed_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) >= 1 and all(is_seed(s) for s in value) and len(set(value)) == len(value)


def _validate_device(config: SweepConfig, need) -> None:
    """The device agrees with the trials' GPU share: Ray shows a trial with a share only its own GPU
    (as cuda:0) and gives none to a trial without one."""
    gpus = config.resources.gpus_per_trial
    need(not config.device.startswith("cuda:"),
         f"device = \"{config.device}\": a trial sees only its own GPU, as cuda:0; use device = \"cuda\" or \"auto\"")
    need(config.device != "cuda" or gpus > 0,
         "device = \"cuda\" with resources.gpus_per_trial = 0: Ray gives a trial a GPU only when it asks for one; "
         "set resources.gpus_per_trial (1, or a fraction such as 0.25)")
    need(config.device not in ("cpu", "mps") or gpus == 0,
         f"device = \"{config.device}\" with resources.gpus_per_trial = {gpus:g}: the trials would hold GPUs they "
         "never use; set gpus_per_trial = 0 or device = \"auto\"")


def _validate_protocol(config: SweepConfig, need) -> None:
    """selection (and test_every with it), search_seeds, teacher_seeds, search_baselines: each error one line
    naming its key."""
    need(config.selection in SELECTIONS,
         f"selection must be val (searches maximise the validation split) or test (the paper's protocol: the test "
         f"set), got {_shown(config.selection)}")
    # Tune and ASHA need the searched metric in every epoch's result: with "test" that is the test set's.
    need(config.selection != "test" or config.test_every == 1,
         f"test_every = {config.test_every} with selection = \"test\": searches read the test metric every epoch; "
         "set test_every = 1, or use selection = \"val\" (validation is evaluated every epoch)")
    need(isinstance(config.search_baselines, bool),
         f"search_baselines must be true or false, got {_shown(config.search_baselines)}")
    if config.search_seeds is not None:
        need(_seed_list(config.search_seeds),
             f"search_seeds must be a non-empty list of distinct integers{SEED_RANGE}, got {config.search_seeds!r}")
        # One run per search trial: a trial's value is one run's metric (several seeds per trial would
        # need their mean, which the ask/tell loop does not compute).
        need(len(config.search_seeds) == 1,
             f"search_seeds must hold exactly one seed (each search trial trains one run; several seeds per "
             f"trial are not supported), got {config.search_seeds!r}")
        shared = [s for s in config.search_seeds if s in config.seeds]
        need(not shared, f"search_seeds must not overlap seeds (a search trial is never reported as a final run): "
                         f"{shared[0] if shared else ''} is in both; pick a seed not in {config.seeds!r}")
    need(_seed_list(config.teacher_seeds),
         f"teacher_seeds must be a non-empty list of distinct integers{SEED_RANGE}, got {config.teacher_seeds!r}")
    need(len(config.teacher_seeds) == 1 or sorted(config.teacher_seeds) == sorted(config.seeds),
         f"teacher_seeds must be one seed (one teacher serves every student seed) or the same seeds as seeds "
         f"(paired one to one), got {config.teacher_seeds!r} with seeds {config.seeds!r}")


def _validate_validation_split(config: SweepConfig, entry: DatasetEntry, where: str, need) -> None:
    """validation_per_class: an integer >= 0 that leaves every class of the long-tailed set an image.

    The data layer's checks decide (trainables/config.py); a factor that is fine without a holdout
    but empties the tail class with it is reported against validation_per_class.
    """
    from trainables.config import check_imbalance_factor, check_validation_per_class

    key = f"{where}.validation_per_class"
    need(entry.validation_per_class is None or _int(entry.validation_per_class),
         f"{key} must be an integer >= 0, got {_shown(entry.validation_per_class)}")
    need_user(check_validation_per_class, entry.name, entry.validation_per_class, key)
    holdout = config.validation_per_class_for(entry)
    need(holdout >= 1 or config.selection != "val",
         f"{key} must be >= 1 with selection = \"val\" (searches select on the validation split), got 0; "
         "use selection = \"test\" for the paper's protocol without a split")
    for factor in entry.imbalance_factors:
        need_user(check_imbalance_factor, entry.name, factor, f"{where}.imbalance_factors: each factor",
                  validation_per_class=0)
        need_user(check_imbalance_factor, entry.name, factor,
                  f"{key} {holdout} leaves the tail class no training image: imbalance factor",
                  validation_per_class=holdout)


# ---------------------------------------------------------------------------------------------- JSON Schema

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SCHEMA_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _schema_extras() -> dict[tuple[type, str], dict[str, Any]]:
    """What the schema says of a field beyond its type: the choices and limits `validate` checks.

    A necessary condition only (a config the schema accepts can still be refused, e.g. a factor that
    leaves a tail class empty); every limit here is one `validate` enforces, which
    tests/test_config_schema.py checks value by value. The registries read here are torch-free
    (architectures are not: pairs' names stay plain strings).
    """
    from trainables.config import _DEVICE_PATTERN
    from trainables.data.sources import DATASETS
    from trainables.methods import METHODS

    at_least_one = {"minItems": 1}
    seed = {"minimum": 0, "maximum": SEED_MAX}
    seed_list = {"minItems": 1, "uniqueItems": True, "items": seed}
    return {
        (SweepConfig, "name"): {"pattern": f"^{NAME_PATTERN.pattern}$", "not": {"enum": [".", ".."]}},
        (SweepConfig, "storage"): {"pattern": r"\S"},
        (SweepConfig, "datasets"): at_least_one,
        (SweepConfig, "pairs"): at_least_one,
        (SweepConfig, "methods"): at_least_one,
        (SweepConfig, "seeds"): seed_list,
        (SweepConfig, "data_seed"): seed,
        (SweepConfig, "teacher_epochs"): {"minimum": 1},
        (SweepConfig, "student_epochs"): {"minimum": 1},
        (SweepConfig, "batch_size"): {"minimum": 1},
        (SweepConfig, "objective"): {"enum": list(OBJECTIVES)},
        (SweepConfig, "max_retries"): {"minimum": 0},
        (SweepConfig, "device"): {"pattern": f"^(?:{_DEVICE_PATTERN.pattern})$"},
        (SweepConfig, "teacher_cache"): {"enum": list(TEACHER_CACHE_MODES)},
        (SweepConfig, "teacher_cache_dtype"): {"enum": list(TEACHER_CACHE_DTYPES)},
        (SweepConfig, "test_every"): {"minimum": 1},
        (SweepConfig, "checkpoint_every_seconds"): {"minimum": 0},
        (SweepConfig, "selection"): {"enum": list(SELECTIONS)},
        (SweepConfig, "search_seeds"): {**seed_list, "maxItems": 1},
        (SweepConfig, "teacher_seeds"): seed_list,
        (DatasetEntry, "name"): {"enum": list(DATASETS)},
        (DatasetEntry, "imbalance_factors"): {"minItems": 1, "items": {"minimum": 1}},
        (DatasetEntry, "validation_per_class"): {"minimum": 0},
        (MethodEntry, "method"): {"enum": list(METHODS)},
        (SearchEntry, "n_trials"): {"minimum": 1},
        (SchedulerEntry, "grace_period"): {"minimum": 1},
        (SchedulerEntry, "reduction_factor"): {"minimum": 2},
        (ResourcesEntry, "cpus_per_trial"): {"exclusiveMinimum": 0},
        (ResourcesEntry, "gpus_per_trial"): {"minimum": 0, "maximum": 1},
        (ResourcesEntry, "max_concurrent_trials"): {"minimum": 0},
    }


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _type_schema(hint: Any, defs: dict[str, Any], extras: dict) -> dict[str, Any]:
    """The JSON Schema of a declared type, as `_typed` reads it (nested entries go to `defs`)."""
    if hint is Any:
        return {}
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        options = [{"type": "null"} if a is type(None) else _type_schema(a, defs, extras) for a in args]
        if all(set(o) == {"type"} for o in options):  # scalars: one `type` list
            return {"type": [o["type"] for o in options]}
        return {"anyOf": options}
    if dataclasses.is_dataclass(hint):
        if hint.__name__ not in defs:
            defs[hint.__name__] = None  # reserved first: an entry that refers to itself stops here
            defs[hint.__name__] = _entry_schema(hint, defs, extras)
        return {"$ref": f"#/$defs/{hint.__name__}"}
    if origin in (list, tuple):
        return {"type": "array", "items": _type_schema(args[0] if args else Any, defs, extras)}
    if origin is dict:
        value = _type_schema(args[1], defs, extras) if args else {}
        return {"type": "object", **({"additionalProperties": value} if value else {})}
    if hint in _SCHEMA_TYPES:
        return {"type": _SCHEMA_TYPES[hint]}
    raise TypeError(f"no JSON Schema for the declared type {hint!r}; add it to _type_schema (and _typed)")


def _default_json(value: Any) -> Any:
    return asdict(value) if dataclasses.is_dataclass(value) else value


def _entry_schema(cls, defs: dict[str, Any], extras: dict) -> dict[str, Any]:
    """One table (a dataclass): its keys' types, defaults and limits; required keys; no other key."""
    hints = _field_types(cls)
    properties, required = {}, []
    for f in fields(cls):
        extra = extras.get((cls, f.name), {})
        prop = _merged(_type_schema(hints[f.name], defs, extras), extra)
        default = (f.default if f.default is not dataclasses.MISSING else f.default_factory()
                   if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if default is dataclasses.MISSING or (isinstance(default, list) and len(default) < extra.get("minItems", 0)):
            required.append(f.name)  # no default, or one validate refuses (datasets = []): the key must be given
        else:
            prop["default"] = _default_json(default)
        if cls is SweepConfig and f.name == "teacher_seeds":
            prop["description"] = ("default (null): the same seeds as `seeds`, each student seed distilling from "
                                   "its own teacher; one seed: one teacher serves every student seed")
        if cls is MethodEntry and f.name == "search":
            prop["description"] = ("a table: searched; true: searched over the default space; false: never "
                                   "searched; absent: searched when search_baselines gives it a budget")
        properties[f.name] = prop
    schema = {"type": "object", "title": cls.__name__, "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def json_schema() -> dict[str, Any]:
    """The sweep config's JSON Schema (draft 2020-12), derived from the dataclasses `_build` reads:
    every key's type and default, the choices of choice keys, the simple limits of `validate`, and
    no unknown key (additionalProperties false). For editors: `ltkd config schema`."""
    defs: dict[str, Any] = {}
    root = _entry_schema(SweepConfig, defs, _schema_extras())
    return {"$schema": JSON_SCHEMA_DIALECT, "title": "ltkd sweep config",
            "description": "A sweep config for `ltkd sweep CONFIG` (TOML, YAML or JSON); written by `ltkd config schema`.",
            **{k: v for k, v in root.items() if k != "title"}, "$defs": defs}
