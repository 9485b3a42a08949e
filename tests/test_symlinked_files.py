"""Files appended in run and sweep folders (shared storage) are never appended through a planted symbolic link."""
from __future__ import annotations

import pytest

from orchestrator.studies import opened_storage
from trainables.engine import _append_metrics
from trainables.errors import UserError
from trainables.run_files import METRICS_NAME, TRAIN_LOG_NAME, TrainLog
from trainables.storage import Location


def planted_link(folder, name):
    """`folder/name` as a link to another file of the user's; returns that file."""
    victim = folder.parent / f"{folder.name}-victim.txt"
    victim.write_text("the user's own file\n")
    folder.mkdir(exist_ok=True)
    (folder / name).symlink_to(victim)
    return victim


def test_a_linked_train_log_is_refused_and_its_target_untouched(tmp_path):
    victim = planted_link(tmp_path / "run", TRAIN_LOG_NAME)
    with pytest.raises(UserError, match=f"{TRAIN_LOG_NAME} is a symbolic link; remove it"):
        TrainLog(tmp_path / "run")("epoch 1")
    assert victim.read_text() == "the user's own file\n"


def test_a_linked_metrics_file_is_refused_and_its_target_untouched(tmp_path):
    victim = planted_link(tmp_path / "run", METRICS_NAME)
    with pytest.raises(UserError, match=f"{METRICS_NAME} is a symbolic link; remove it"):
        _append_metrics(tmp_path / "run", {"epoch": 1, "acc": 0.5})
    assert victim.read_text() == "the user's own file\n"


def test_plain_files_are_still_appended(tmp_path):
    TrainLog(tmp_path / "run")("one")
    TrainLog(tmp_path / "run")("two")
    _append_metrics(tmp_path / "run", {"epoch": 1})
    _append_metrics(tmp_path / "run", {"epoch": 2})
    assert [line.split(" ", 2)[2] for line in (tmp_path / "run" / TRAIN_LOG_NAME).read_text().splitlines()] == \
        ["one", "two"]
    assert (tmp_path / "run" / METRICS_NAME).read_text() == '{"epoch": 1}\n{"epoch": 2}\n'


def test_a_linked_optuna_journal_is_refused_and_its_target_untouched(tmp_path):
    victim = planted_link(tmp_path / "sweep", "optuna.journal")
    with pytest.raises(UserError, match="optuna.journal is not a plain file"):
        with opened_storage(Location.parse(tmp_path / "sweep") / "optuna.journal") as storage:
            storage.create_new_study([])
    assert victim.read_text() == "the user's own file\n"
