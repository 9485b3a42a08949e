"""Guessed defaults labelled: in `ltkd list methods`, `ltkd list datasets` and the report's captions."""
from __future__ import annotations

import json

import pandas as pd

from orchestrator.cli import main
from results.guessed import guessed_by_row, guessed_sentence
from trainables.guesses import guessed_defaults, guesses_used, recipe_guess
from trainables.methods import get_method


def test_the_guesses_per_method_and_dataset():
    assert set(guessed_defaults(get_method("ltkd"), "cifar100")) == {"alpha", "beta", "temperature", "warmup_epochs",
                                                                     "ce_weight"}
    assert set(guessed_defaults(get_method("ltkd"), "digits")) == {"warmup_epochs", "ce_weight"}  # the rest studied
    assert guessed_defaults(get_method("dist"), "imagenet") == {
        "kd_weight": "CIFAR's DIST weight 2, kept for want of a published ImageNet one"}
    assert guessed_defaults(get_method("dist"), "cifar100") == {}
    assert guessed_defaults(get_method("kd"), "imagenet") == {}
    # TinyImageNet borrows CIFAR-100's method defaults and its training recipe
    assert set(guessed_defaults(get_method("dkd"), "tinyimagenet", "vgg13", "vgg8")) == {
        "alpha", "beta", "temperature", "warmup_epochs", "ce_weight"}
    assert recipe_guess("tinyimagenet") == "cifar100's recipe, borrowed for tinyimagenet"
    assert recipe_guess("cifar100") is None and recipe_guess("imagenet") is None and recipe_guess("digits") is None


def test_a_run_keeps_a_guess_only_at_its_default_and_a_warmup_compares_scaled():
    ltkd = get_method("ltkd")
    defaults = {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "ce_weight": 1.0}
    assert guesses_used(ltkd, "cifar100", {**defaults, "warmup_epochs": 20}, epochs=240) == [
        "alpha", "beta", "temperature", "warmup_epochs", "ce_weight"]
    # 20 of 240 epochs scaled to a 30-epoch run: round(2.5) = 2
    searched = {"alpha": 2.3, "beta": 1.1, "temperature": 3.3, "ce_weight": 0.42, "warmup_epochs": 2}
    assert guesses_used(ltkd, "cifar100", searched, epochs=30) == ["warmup_epochs"]
    assert guesses_used(ltkd, "cifar100", {**searched, "warmup_epochs": 0}, epochs=30) == []


def test_list_methods_marks_each_guessed_default(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "(guessed) = neither published for that dataset nor studied" in out
    lines = out.splitlines()
    ltkd = lines.index(next(line for line in lines if line.startswith("  ltkd ")))
    block = lines[ltkd + 1:ltkd + 5]
    assert any(line.strip().startswith("cifar100: alpha 1 (guessed), beta 8 (guessed), ce_weight 1 (guessed)")
               for line in block)
    assert any(line.strip() == "digits: alpha 1, beta 1, ce_weight 1 (guessed), temperature 2, "
                               "warmup_epochs 20 (guessed)" for line in block)
    assert any("imagenet: beta 1, ce_weight 1, gamma 1, kd_weight 2 (guessed), tau 1" in line for line in lines)
    assert any(line.strip() == "cifar100: ce_weight 0.1, kd_weight 0.9, temperature 4" for line in lines)


def test_list_datasets_marks_a_borrowed_training_recipe(capsys):
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert next(line for line in out if "tinyimagenet" in line).endswith(
        "training recipe (guessed): cifar100's recipe, borrowed for tinyimagenet")
    assert "guessed" not in next(line for line in out if line.strip().startswith("cifar100"))


def record(row_key, method, dataset, hparams, epochs=240, teacher="resnet32x4", student="resnet8x4"):
    return {"row_key": row_key, "method": method, "dataset": dataset, "hparams_json": json.dumps(hparams),
            "planned_epochs": epochs, "epoch": epochs, "teacher_arch": teacher, "arch": student}


def test_the_caption_names_rows_that_kept_guessed_defaults():
    trials = pd.DataFrame([
        record("ltkd", "ltkd", "cifar100", {"alpha": 2.3, "beta": 1.1, "temperature": 3.3, "ce_weight": 0.4,
                                            "warmup_epochs": 20}),
        record("dist", "dist", "imagenet", {"beta": 1.0, "gamma": 1.0, "tau": 1.0, "kd_weight": 2.0,
                                            "ce_weight": 1.0}, epochs=100),
        record("kd", "kd", "cifar100", {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}),
        record("ce", "ce", "cifar100", {"ce_weight": 1.0, "warmup_epochs": 0}),
    ])
    assert guessed_by_row(trials) == {"ltkd": ["warmup_epochs"], "dist": ["kd_weight"]}
    text = guessed_sentence(trials, str.upper, lambda key: (key,))
    assert text == ("Guessed defaults (neither published for the dataset nor studied; `ltkd list methods` marks them) "
                    "kept by DIST kd_weight; LTKD warmup_epochs.")
    published = trials[trials["row_key"].isin(["kd", "ce"])]
    assert guessed_sentence(published, str.upper, lambda key: (key,)) is None


def test_the_caption_says_when_a_datasets_training_recipe_is_borrowed():
    trials = pd.DataFrame([record("kd", "kd", "tinyimagenet", {"temperature": 5.0, "ce_weight": 0.3,
                                                               "kd_weight": 0.5})])
    assert guessed_sentence(trials, str.upper, lambda key: (key,)) == (
        "Training recipe guessed: cifar100's recipe, borrowed for tinyimagenet.")
