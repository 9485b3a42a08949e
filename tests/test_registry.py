"""The one registry type: registration next to the definition, discovery of a package's modules, errors."""
from __future__ import annotations

import sys
import textwrap

import pytest

from trainables.errors import UserError
from trainables.registry import Registry, UnknownNameError


def test_a_registry_lists_what_registered_and_names_the_known_on_a_miss():
    shapes = Registry("shape")

    @shapes.register("square", sides=4)
    def square():
        return "square"

    shapes.add(type("Spec", (), {"name": "triangle"})())
    assert square() == "square"  # the decorator hands the definition back unchanged
    assert shapes.names() == ["square", "triangle"] and "square" in shapes and len(shapes) == 2
    with pytest.raises(UnknownNameError, match=r"unknown shape 'circle' \(known: square, triangle\)") as caught:
        shapes["circle"]
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)  # one `ltkd: error:` line
    assert shapes.get("circle", None) is None
    with pytest.raises(ValueError, match="'square' is registered twice"):
        shapes.add(square, "square")


def test_make_builds_the_entry_from_the_decorated_object_and_its_fields():
    specs = Registry("model", make=lambda name, obj, style: (name, obj.__name__, style))

    @specs.register("net", style="cifar")
    def build_net():
        pass

    assert specs["net"] == ("net", "build_net", "cifar")


def test_a_package_registry_imports_every_module_once_first_read(tmp_path, monkeypatch):
    """A new entry is its file: nothing imports it by name, the registry finds it."""
    package = tmp_path / "zoo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        from trainables.registry import Registry
        ANIMALS = Registry("animal", package="zoo_pkg")
    """))
    for name in ("cat", "dog"):
        (package / f"{name}.py").write_text(f"from zoo_pkg import ANIMALS\nANIMALS.add('{name}!', '{name}')\n")
    (package / "_helpers.py").write_text("raise RuntimeError('private modules are not entries')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import zoo_pkg

    try:
        assert "zoo_pkg.cat" not in sys.modules  # nothing loaded until the registry is read
        assert sorted(zoo_pkg.ANIMALS.names()) == ["cat", "dog"] and zoo_pkg.ANIMALS["dog"] == "dog!"
    finally:
        for name in [m for m in sys.modules if m == "zoo_pkg" or m.startswith("zoo_pkg.")]:
            del sys.modules[name]


def test_the_project_registries_find_their_entries_and_order_the_tables():
    from results.tables import METHOD_ORDER, dataset_label, method_label
    from search_spaces import SPACES
    from trainables.data.sources import DATASETS
    from trainables.methods import METHODS, table_order

    # The paper's row order (Tables 1-3), from each method's own table_row.
    assert table_order() == ["ce", "kd", "dkd", "dist", "reviewkd", "catkd", "bkd", "ltkd"]
    assert METHOD_ORDER == ("teacher", *table_order())
    assert [method_label(m) for m in METHOD_ORDER] == ["Teacher", "Student", "KD", "DKD", "DIST", "ReviewKD",
                                                       "CAT-KD", "BKD", "LTKD"]
    assert method_label("fancykd") == "FANCYKD"  # results from an installation with more methods
    assert DATASETS.names() == ["cifar100", "tinyimagenet", "imagenet", "digits"]
    assert dataset_label("cifar100") == "CIFAR-100-LT" and dataset_label("svhn") == "svhn"
    assert set(SPACES.names()) == set(METHODS.names()) - {"ce"}  # every method with a teacher is searchable


def test_an_alias_declared_on_a_hyperparameter_reaches_the_cli_and_the_store(tmp_path):
    """DIST's tau is a softmax temperature: `--temperature` sets it and the store's temperature column holds it."""
    import argparse

    from orchestrator.train_cli import method_overrides
    from results.store import TrialRecord, read_results, write_trial
    from trainables.methods import get_method

    assert get_method("dist").knob_for("temperature").name == "tau"
    assert get_method("kd").knob_for("temperature").name == "temperature"
    assert get_method("ce").knob_for("temperature") is None
    assert method_overrides(argparse.Namespace(method="dist", temperature=3.0)) == {"tau": 3.0}
    config = {"dataset": "digits", "method": "dist", "role": "student", "seed": 0,
              "hparams": get_method("dist").resolve({"tau": 2.5})}
    write_trial(str(tmp_path), TrialRecord(sweep="s", trial_id="final/x/seed0", stage="final", cell="x", config=config,
                                           history=[], status="completed", wall_seconds=1.0, device="cpu",
                                           code_version="test"))
    [row] = read_results([str(tmp_path)]).query("row_kind == 'final'")["temperature"]
    assert row == 2.5
