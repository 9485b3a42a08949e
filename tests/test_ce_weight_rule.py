"""One CE-weight rule for every searched logit method: the same searched range, published defaults kept."""
from __future__ import annotations

import pandas as pd

from orchestrator import dry_run
from orchestrator.sweep_cli import config_path
from orchestrator.sweep_config import load_config
from results.search_effort import search_sentence
from search_spaces import SHARED_CE_WEIGHT, SPACES, get_space
from trainables.methods import METHODS, get_method

SEARCHED_LOGIT = ("kd", "dkd", "dist", "bkd", "ltkd")


def ce_param(method):
    return next((p for p in get_space(method).params if p.name == "ce_weight"), None)


def test_every_searched_logit_method_searches_the_same_ce_weight_range():
    logit = {name for name in SPACES if METHODS[name].kind == "logit"}
    assert logit == set(SEARCHED_LOGIT)
    ranges = {(p.low, p.high, p.log) for p in map(ce_param, SEARCHED_LOGIT)}
    assert ranges == {(SHARED_CE_WEIGHT.low, SHARED_CE_WEIGHT.high, SHARED_CE_WEIGHT.log)}


def test_the_shared_range_holds_every_published_ce_weight():
    for method in SEARCHED_LOGIT:
        for style in ("cifar", "imagenet"):
            published = get_method(method).defaults(style, "resnet32x4", "resnet8x4")["ce_weight"]
            assert SHARED_CE_WEIGHT.low <= published <= SHARED_CE_WEIGHT.high, (method, style)


def test_unsearched_defaults_stay_the_papers():
    assert get_method("kd").defaults("cifar")["ce_weight"] == 0.1
    assert get_method("kd").defaults("cifar")["kd_weight"] == 0.9
    assert get_method("ltkd").defaults("cifar")["ce_weight"] == 1.0


def test_feature_methods_keep_their_ce_weight_out_of_the_search():
    for method in ("reviewkd", "catkd"):
        assert ce_param(method) is None


def test_the_quickstart_plan_shows_each_search_space_and_the_rule(tmp_path):
    config = load_config(config_path(None))
    config.storage = str(tmp_path)
    report = dry_run.plan_report(config, estimate=False)
    lines = {line.split(":")[0]: line for line in report.splitlines()}
    assert "ce_weight 0.1..1 log" in lines["search space of kd"]
    assert "ce_weight 0.1..1 log" in lines["search space of ltkd"]
    assert "n_groups = 3" in lines["search space of ltkd"]
    assert "search space of ce" not in lines
    assert "every searched logit method searches its CE weight over [0.1, 1]" in lines["CE weight"]


def test_a_caption_with_searched_logit_rows_states_the_rule():
    students = pd.DataFrame({"cell": ["a/kd", "a/ltkd", "a/ce"], "row_key": ["kd", "ltkd", "ce"],
                             "method": ["kd", "ltkd", "ce"], "search_trials": [6, 6, 0]})
    text = search_sentence(students, None, str.upper, lambda key: (key,))
    assert "CE weight: every searched logit method searches its CE weight over [0.1, 1] (log scale)" in text
    unsearched = students.assign(search_trials=0)
    assert search_sentence(unsearched, None, str.upper, lambda key: (key,)) is None
