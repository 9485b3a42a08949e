"""metrics.jsonl on shared storage: a line cut short by a crash means an unfinished run; any other odd line
is an error naming the file."""
from __future__ import annotations

import json

import pytest

from orchestrator.studies import run_outcome
from trainables.run_files import METRICS_NAME, MetricsError, parse_metrics, read_metrics
from trainables.storage import Location

EPOCHS = [{"epoch": 1, "acc": 10.0}, {"epoch": 2, "acc": 20.0}]


def run_folder(tmp_path, text: str):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / METRICS_NAME).write_text(text)
    return folder


def lines(history) -> str:
    return "".join(json.dumps(m) + "\n" for m in history)


@pytest.mark.parametrize("torn", ['{"epoch": 3, "ac', '{"epoch": 3, "acc": 30.0', "{", '{"epoch": 3}garbage\n'])
def test_a_torn_last_line_means_the_run_is_unfinished(tmp_path, torn):
    folder = run_folder(tmp_path, lines(EPOCHS) + torn)
    assert read_metrics(folder) == EPOCHS
    assert run_outcome(Location.parse(folder), 3) is None  # as `ltkd status` and `ltkd resume` judge it
    assert run_outcome(Location.parse(folder), 2) == EPOCHS[-1]


@pytest.mark.parametrize("text,line", [
    (lines(EPOCHS[:1]) + '{"epoch": 2, "ac\n' + lines(EPOCHS[1:]), 2),  # torn, then appended to
    (lines(EPOCHS) + "[]\n", 3),  # JSON, not an object
    ("[]\n" + lines(EPOCHS), 1),
    (lines(EPOCHS) + "3\n", 3),
])
def test_any_other_bad_line_is_an_error_naming_the_file_and_line(tmp_path, text, line):
    folder = run_folder(tmp_path, text)
    for read in (lambda: read_metrics(folder), lambda: run_outcome(Location.parse(folder), 2)):
        with pytest.raises(MetricsError) as refused:
            read()
        message = str(refused.value)
        assert f"{folder / METRICS_NAME} line {line} is not a JSON object" in message and "\n" not in message


def test_blank_lines_and_an_empty_file_are_fine():
    assert parse_metrics("") == []
    assert parse_metrics("\n" + lines(EPOCHS) + "\n\n") == EPOCHS


def test_a_line_without_an_epoch_is_no_finished_run(tmp_path):
    assert run_outcome(Location.parse(run_folder(tmp_path, '{"acc": 1}\n')), 1) is None
