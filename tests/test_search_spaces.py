"""Optuna define-by-run spaces per method: ranges, group-count capping, overrides."""
from __future__ import annotations

import optuna
import pytest

from search_spaces import PAPER_GROUP_COUNTS, SPACES, get_space, paper_group_counts
from trainables.distillers import METHODS, get_method

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample_many(method, overrides=None, num_classes=100, imbalance_factor=100, n=30):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    values = []
    for _ in range(n):
        trial = study.ask()
        values.append(get_space(method).sample(trial, overrides or {}, num_classes, imbalance_factor))
        study.tell(trial, 0.0)
    return values


@pytest.mark.parametrize("method", sorted(SPACES))
def test_every_sample_is_a_valid_configuration_of_its_method(method):
    spec = get_method(method)
    for hparams in sample_many(method):
        resolved = spec.resolve(hparams)
        for param in get_space(method).params:
            value = resolved[param.name]
            if param.choices is not None:
                assert value in param.choices
            else:
                assert param.low <= value <= param.high


def test_ltkd_searches_alpha_beta_temperature_at_three_groups():
    """The paper's tables use 3 groups: the default space fixes n_groups (and leaves within_norm at its default)."""
    assert {p.name for p in get_space("ltkd").params} == {"alpha", "beta", "temperature", "ce_weight"}
    for hparams in sample_many("ltkd", num_classes=100, n=20):
        assert hparams["n_groups"] == 3 and "within_norm" not in hparams
        assert get_method("ltkd").resolve(hparams)["within_norm"] == "sum"


@pytest.mark.parametrize("num_classes,expected", [
    (10, (3, 4, 5, 10)), (100, PAPER_GROUP_COUNTS), (200, PAPER_GROUP_COUNTS), (30, (3, 4, 5, 10, 20, 25, 30)),
])
def test_the_group_count_study_searches_the_counts_on_purpose(num_classes, expected):
    """Table 6: an explicit override searches the paper's counts that fit the class count."""
    assert paper_group_counts(num_classes) == expected
    overrides = {"n_groups": {"choices": list(paper_group_counts(num_classes))}}
    get_space("ltkd").check_overrides(overrides, num_classes=num_classes, imbalance_factor=100)
    drawn = {h["n_groups"] for h in sample_many("ltkd", overrides, num_classes=num_classes, n=200)}
    assert drawn == set(expected)


def test_within_norm_is_searched_only_by_an_override():
    values = sample_many("ltkd", {"within_norm": {"choices": ["sum", "mean"]}, "n_groups": {"choices": [3, 10]}}, n=40)
    assert {v["within_norm"] for v in values} == {"sum", "mean"}
    for v in values:
        assert get_method("ltkd").resolve(v)["within_norm"] == v["within_norm"]
    fixed = sample_many("ltkd", {"within_norm": "mean"}, n=5)
    assert {v["within_norm"] for v in fixed} == {"mean"}


def test_overrides_fix_narrow_and_replace_parameters():
    values = sample_many("ltkd", {"temperature": 4, "alpha": {"low": 1.0, "high": 2.0},
                                  "n_groups": {"choices": [3, 100]}, "rebalance": False})
    assert all(v["temperature"] == 4 and 1.0 <= v["alpha"] <= 2.0 and v["n_groups"] in (3, 100)
               and v["rebalance"] is False for v in values)


@pytest.mark.parametrize("overrides,message", [
    ({"gamma": 1}, "'gamma' is not a hyperparameter of ltkd"),
    ({"alpha": {"low": 3, "high": 1}}, "need low < high"),
    ({"alpha": {"low": 0, "high": 1, "log": True}}, "a log range needs low > 0"),
    ({"alpha": {"lo": 1}}, "unknown range key 'lo'"),
    ({"n_groups": {"choices": [3, 11]}}, "n_groups 11 is more than the 10 classes"),
    ({"beta": -2}, "'beta' must be >= 0"),
    ({"n_groups": 11}, "n_groups 11 is more than the 10 classes"),
    ({"within_norm": {"choices": ["sum", "median"]}}, "'within_norm' must be one of sum, mean, got 'median'"),
    ({"within_norm": {"low": 0, "high": 1}}, "'within_norm' must be one of sum, mean"),
])
def test_impossible_overrides_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_space("ltkd").check_overrides(overrides, num_classes=10, imbalance_factor=100)


def test_methods_without_a_space_say_so():
    unsearchable = sorted(set(METHODS) - set(SPACES))
    assert "ce" in unsearchable
    with pytest.raises(ValueError, match="has no search space"):
        get_space("ce")
