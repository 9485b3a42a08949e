"""Sweep config types and the JSON Schema of `ltkd config schema`.

Every field of every config dataclass, given a value of a wrong type, is refused with one line
naming its full key path and the expected type (the field list is read from the dataclasses, so a
new field is covered without editing this file). The schema says the same: it accepts the
quickstart and the tests' tiny config, and refuses unknown keys, wrong types and the limits
`validate` enforces.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from orchestrator import sweep_config
from orchestrator.cli import main as ltkd_main
from orchestrator.sweep_config import SELECTIONS, ConfigError, SweepConfig, json_schema, parse_config
from tests.sweep_helpers import tiny_config
from tests.test_layering import loaded_by

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

QUICKSTART = Path(sweep_config.__file__).with_name("quickstart.toml")


# ------------------------------------------------------------------------------------ the fields, from the dataclasses


def base_config() -> dict:
    """A valid config in which every entry type occurs (a method with a search table, a scheduler)."""
    config = tiny_config("store", scheduler={"asha": False}, tracking={"mlflow_tracking_uri": "file:./mlruns"})
    assert isinstance(config["methods"][-1].get("search"), dict)
    return config


def entry_types() -> set[type]:
    return {obj for obj in vars(sweep_config).values()
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == sweep_config.__name__}


def field_sites(cls=SweepConfig, where: tuple = (), config: dict | None = None):
    """(entry type, field name, declared type, key path in base_config()) of every field reachable from SweepConfig."""
    config = base_config() if config is None else config
    node = config
    for step in where:
        node = node[step]
    for f in dataclasses.fields(cls):
        hint = get_type_hints(cls)[f.name]
        yield cls, f.name, hint, (*where, f.name)
        inner = [a for a in (get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,))
                 if a is not type(None)]
        for option in inner:
            if dataclasses.is_dataclass(option):
                assert isinstance(node.get(f.name), dict), f"base_config() lacks a {option.__name__} at {f.name}"
                yield from field_sites(option, (*where, f.name), config)
            elif get_origin(option) is list and dataclasses.is_dataclass(get_args(option)[0]):
                yield from field_sites(get_args(option)[0], (*where, f.name, len(node[f.name]) - 1), config)


def key_path(path: tuple) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def with_value(config: dict, path: tuple, value: Any) -> dict:
    config = copy.deepcopy(config)
    node = config
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return config


# The rule the parser keeps: a value must have its field's declared type; true/false is never an
# integer or a number; an integer is a number; a table fills an entry (its own keys then decide).
WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
CANDIDATES = {"string": "6", "list": ["x"], "integer": 7, "fraction": 2.5, "boolean": True, "table": {"k": 1},
              "null": None}


def expected_words(hint) -> list[str]:
    if dataclasses.is_dataclass(hint) or get_origin(hint) is dict:
        return ["a table/mapping"]
    if get_origin(hint) is list:
        return ["a list"]
    return [WORDS[hint]]


def mismatch(value: Any, hint: Any, path: str) -> tuple[str, list[str]] | None:
    """Where `value` breaks `hint` and what the message must call the expected type; None: it fits."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return None
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return mismatch(value, options[0], path)
        if isinstance(value, dict) and any(dataclasses.is_dataclass(o) for o in options):
            return None
        if any(mismatch(value, o, path) is None for o in options):
            return None
        return path, [w for o in options for w in expected_words(o)]
    if dataclasses.is_dataclass(hint) or origin is dict:
        return None if isinstance(value, dict) else (path, expected_words(hint))
    if origin is list:
        if not isinstance(value, list):
            return path, ["a list"]
        return next((m for i, v in enumerate(value) if (m := mismatch(v, args[0], f"{path}[{i}]"))), None)
    fits = {bool: isinstance(value, bool), int: type(value) is int, float: type(value) in (int, float),
            str: isinstance(value, str)}[hint]
    return None if fits else (path, expected_words(hint))


WRONG_TYPES = [pytest.param(path, value, problem, id=f"{key_path(path)}={kind}")
               for cls, name, hint, path in field_sites()
               for kind, value in CANDIDATES.items()
               if (problem := mismatch(value, hint, key_path(path)))]


def test_every_entry_type_and_field_is_walked():
    sites = list(field_sites())
    assert {cls for cls, *_ in sites} == entry_types()
    assert len(sites) == sum(len(dataclasses.fields(cls)) for cls in entry_types())
    # every field gets at least one wrong-type case
    assert {key_path(path) for _, _, _, path in sites} == {key_path(p.values[0]) for p in WRONG_TYPES}


@pytest.mark.parametrize("path,value,problem", WRONG_TYPES)
def test_a_wrong_type_names_the_key_and_the_expected_type(path, value, problem):
    where, words = problem
    with pytest.raises(ConfigError) as error:
        parse_config(with_value(base_config(), path, value))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{where} must be "), message
    assert all(word in message for word in words) and ", got " in message, message


def integer_sites():
    """(key path, value with a true where an integer belongs, the key the message must name)."""
    for _, _, hint, path in field_sites():
        options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        if int in options:
            yield pytest.param(path, True, key_path(path), id=key_path(path))
        elif any(get_origin(o) is list and get_args(o) == (int,) for o in options):
            yield pytest.param(path, [True], key_path(path) + "[0]", id=key_path(path) + "[0]")


@pytest.mark.parametrize("path,value,where", list(integer_sites()))
def test_true_is_not_an_integer(path, value, where):
    with pytest.raises(ConfigError) as error:
        parse_config(with_value(base_config(), path, value))
    assert str(error.value) == f"{where} must be an integer, got true"


REPORTED = [
    # (TOML of the offending entry, the message); before: a TypeError traceback, and "must be >= 1, got '6'"
    ('[[datasets]]\nname = ["digits"]\n', "datasets[0].name must be a string, got list"),
    ('[[datasets]]\nname = "digits"\n[[methods]]\nmethod = "ce"\n[[methods]]\nmethod = "ltkd"\n'
     '[methods.search]\nn_trials = "6"\n', "methods[1].search.n_trials must be an integer, got '6'"),
]


@pytest.mark.parametrize("entries,message", REPORTED)
def test_the_reported_cases_are_one_line_from_ltkd_sweep(tmp_path, capsys, entries, message):
    store = tmp_path / "store"
    text = f'name = "t"\nstorage = "{store}"\n{entries}'
    if "[[methods]]" not in entries:
        text += '[[methods]]\nmethod = "ce"\n'
    text += '[[pairs]]\nteacher = "resnet8"\nstudent = "resnet8"\n'
    path = tmp_path / "c.toml"
    path.write_text(text)
    code = ltkd_main(["sweep", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"ltkd: error: {message}"]
    assert not store.exists()


# ------------------------------------------------------------------------------------ the schema's structure


def schema_objects(schema: dict):
    """Every object schema: the root and each entry in $defs."""
    yield schema
    yield from schema["$defs"].values()


def test_the_schema_covers_every_field_with_its_default_and_forbids_other_keys():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert all(obj["additionalProperties"] is False for obj in schema_objects(schema))
    by_name = {"SweepConfig": schema, **schema["$defs"]}
    assert set(by_name) == {cls.__name__ for cls in entry_types()}
    for cls in entry_types():
        properties = by_name[cls.__name__]["properties"]
        assert list(properties) == [f.name for f in dataclasses.fields(cls)]
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                assert properties[f.name]["default"] == f.default, (cls, f.name)
            elif f.default_factory is not dataclasses.MISSING and f.name not in by_name[cls.__name__].get("required", []):
                default = f.default_factory()
                assert properties[f.name]["default"] == (dataclasses.asdict(default) if dataclasses.is_dataclass(default)
                                                         else default), (cls, f.name)
            else:
                assert f.name in by_name[cls.__name__]["required"], (cls, f.name)
    assert schema["required"] == ["name", "datasets", "pairs", "methods"]  # an empty list is refused: required
    assert schema["properties"]["scheduler"]["default"] == {"asha": False, "grace_period": 2, "reduction_factor": 3}


def test_choice_fields_list_their_choices():
    from trainables.config import TEACHER_CACHE_DTYPES, TEACHER_CACHE_MODES
    from trainables.data.sources import DATASETS
    from trainables.methods import METHODS
    from trainables.metrics import OBJECTIVES

    schema = json_schema()
    top, defs = schema["properties"], schema["$defs"]
    assert top["selection"]["enum"] == list(SELECTIONS) == ["val", "test"]
    assert top["objective"]["enum"] == list(OBJECTIVES)
    assert top["teacher_cache"]["enum"] == list(TEACHER_CACHE_MODES)
    assert top["teacher_cache_dtype"]["enum"] == list(TEACHER_CACHE_DTYPES) == ["float32", "float16"]
    assert defs["MethodEntry"]["properties"]["method"]["enum"] == list(METHODS)
    assert defs["DatasetEntry"]["properties"]["name"]["enum"] == list(DATASETS)
    assert top["device"]["pattern"] == "^(?:auto|cpu|cuda|cuda:[0-9]+|mps)$"
    assert defs["MethodEntry"]["properties"]["search"]["anyOf"] == [
        {"$ref": "#/$defs/SearchEntry"}, {"type": "boolean"}, {"type": "null"}]
    assert defs["SearchEntry"]["properties"]["n_trials"] == {"type": "integer", "minimum": 1, "default": 8}


# ------------------------------------------------------------------------------------ the schema, validating


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")  # installed with ray; not a dependency of its own
    cls = jsonschema.Draft202012Validator
    cls.check_schema(json_schema())
    return cls(json_schema())


def errors(validator, config) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]


def first_error(validator, config) -> tuple[str, str] | None:
    """(key path, message) of the error an editor shows first (jsonschema's best match, which looks
    inside anyOf: `search` is a table, true, false or null); None: the config is valid."""
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(config))
    return None if error is None else (key_path(tuple(error.absolute_path)), error.message)


def test_the_schema_accepts_the_quickstart_and_the_tiny_config(validator, tmp_path):
    quickstart = tomllib.loads(QUICKSTART.read_text())
    assert errors(validator, quickstart) == []
    assert errors(validator, tiny_config(tmp_path / "store")) == []
    assert errors(validator, base_config()) == []
    # and what the parser also accepts: search = true / false, nulls where allowed, integers for numbers
    assert errors(validator, tiny_config("s", methods=[{"method": "ltkd", "search": True}, {"method": "kd", "search": False}],
                                          teacher_epochs=None, search_seeds=None, resources={"cpus_per_trial": 2})) == []


@pytest.mark.parametrize("change,where", [
    ({"colour": "red"}, ""),
    ({"methods": [{"method": "ltkd", "search": {"n_trails": 3}}]}, "methods[0].search"),
    ({"scheduler": {"asha": True, "grace": 1}}, "scheduler"),
    ({"datasets": [{"name": "digits", "imbalance_factor": [10]}]}, "datasets[0]"),
])
def test_the_schema_refuses_unknown_keys(validator, change, where):
    config = {**tiny_config("s"), **change}
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config(config)
    found = first_error(validator, config)
    assert found and found[0] == where and found[1].startswith("Additional properties are not allowed"), found


@pytest.mark.parametrize("path,value,problem", WRONG_TYPES)
def test_the_schema_refuses_every_wrong_type_the_parser_refuses(validator, path, value, problem):
    found = first_error(validator, with_value(base_config(), path, value))
    assert found and found[0] == problem[0], found  # the key the parser names


# Values just past each limit the schema states (one per (entry, field) of sweep_config._schema_extras):
# the parser refuses each naming the key, so the schema is never stricter than the parser.
PAST_LIMITS = {
    "name": "my sweep", "storage": " ", "datasets": [], "pairs": [], "methods": [], "seeds": [0, 0],
    "data_seed": -1, "teacher_epochs": 0, "student_epochs": 0, "batch_size": 0, "objective": "loss", "max_retries": -1,
    "device": "gpu", "teacher_cache": "always", "teacher_cache_dtype": "bfloat16", "test_every": 0,
    "checkpoint_every_seconds": -1,
    "selection": "train", "search_seeds": [5, 6], "teacher_seeds": [],
    "datasets.0.name": "mnist", "datasets.0.imbalance_factors": [0.5], "datasets.0.validation_per_class": -1,
    "methods.1.method": "fancykd", "methods.1.search.n_trials": 0, "scheduler.grace_period": 0,
    "scheduler.reduction_factor": 1, "resources.cpus_per_trial": 0, "resources.gpus_per_trial": -0.5,
    "resources.max_concurrent_trials": -1,
}


def test_every_limit_of_the_schema_has_a_case():
    sites = {(cls, name): path for cls, name, _, path in field_sites()}
    assert {".".join(map(str, sites[key])) for key in sweep_config._schema_extras()} == set(PAST_LIMITS)


@pytest.mark.parametrize("dotted,value", PAST_LIMITS.items(), ids=list(PAST_LIMITS))
def test_the_schema_limits_are_the_parsers(validator, dotted, value):
    path = tuple(int(s) if s.isdigit() else s for s in dotted.split("."))
    config = with_value(base_config(), path, value)
    with pytest.raises(ConfigError) as error:
        parse_config(config)
    assert str(error.value).startswith(key_path(path)), str(error.value)
    assert errors(validator, config), f"the schema accepts {dotted} = {value!r}"


SEED_KEYS = ["seeds", "search_seeds", "teacher_seeds", "data_seed"]


@pytest.mark.parametrize("key", SEED_KEYS)
@pytest.mark.parametrize("seed,accepted", [(-1, False), (0, True), (2 ** 63 - 1, True), (2 ** 63, False),
                                           (10 ** 30, False)])
def test_seeds_have_one_range_in_the_parser_and_the_schema(validator, key, seed, accepted):
    """Seeds outside 0..2**63-1 fail inside every trial (then retried): refused at load, in one line naming the key."""
    value = seed if key == "data_seed" else [seed]
    config = {**base_config(), key: value, **({"seeds": [7]} if key == "search_seeds" else {}),
              **({"seeds": [seed]} if key == "teacher_seeds" and accepted else {})}
    assert (not errors(validator, config)) == accepted, (key, seed)
    if accepted:
        parse_config(config)
        return
    with pytest.raises(ConfigError) as error:
        parse_config(config)
    message = str(error.value)
    assert message.startswith(key) and "from 0 to 9223372036854775807" in message and "\n" not in message


@pytest.mark.parametrize("key", ["seed", "data_seed"])
@pytest.mark.parametrize("seed", [-1, 2 ** 63])
def test_a_run_config_refuses_seeds_out_of_range(key, seed):
    from trainables.config import RunConfig
    from trainables.errors import UserError

    with pytest.raises(UserError, match=f"^{key} must be an integer from 0 to 9223372036854775807"):
        RunConfig(dataset="digits", imbalance_factor=100, arch="resnet8", **{key: seed}).resolved()


# ------------------------------------------------------------------------------------ the command


def test_ltkd_config_schema_prints_or_writes_the_schema(tmp_path, capsys):
    assert ltkd_main(["config", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()
    out = tmp_path / "ltkd.schema.json"
    assert ltkd_main(["config", "schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json_schema() and str(out) in capsys.readouterr().out
    assert ltkd_main(["config", "schema", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ltkd: error: --out {tmp_path} is a folder; pass a file name, e.g. --out ltkd-sweep.schema.json"]


def test_ltkd_config_alone_prints_its_help(capsys):
    assert ltkd_main(["config"]) == 2
    assert "schema" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["config", "schema"], ["config"]])
def test_ltkd_config_never_loads_torch_or_ray(args):
    outcome = loaded_by(*args)
    assert outcome == {"rc": 0 if args == ["config", "schema"] else 2, "heavy": []}


def test_tracking_asks_for_its_package_and_builds_rays_logger_callbacks():
    """W&B and MLflow are optional: a config naming one without its package fails at load, in one line
    naming the extra to install; with the package present the driver hands Tune that logger."""
    import importlib.util

    import orchestrator.sweep as sweep

    if importlib.util.find_spec("wandb") is None:  # the usual case: an optional extra
        with pytest.raises(ConfigError, match=r"tracking.wandb_project needs the wandb package: "
                                              r"pip install 'ltkd-sweep\[wandb\]'"):
            parse_config(tiny_config("store", tracking={"wandb_project": "ltkd"}))
    config = parse_config(tiny_config("store"))
    assert sweep.tracking_callbacks(config) == []  # off unless asked for
    pytest.importorskip("mlflow")  # optional: pip install 'ltkd-sweep[mlflow]'
    config = parse_config(tiny_config("store", tracking={"mlflow_experiment": "ltkd", "mlflow_tracking_uri": "file:./m"}))
    [callback] = sweep.tracking_callbacks(config)
    assert type(callback).__mro__[1].__name__ == "MLflowLoggerCallback"  # labelled per trial: tests/test_trial_tracking.py
    assert (callback.tracking_uri, callback.experiment_name, callback.sweep) == ("file:./m", "ltkd", "tiny")
