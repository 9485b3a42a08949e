"""Names of files pushed to an object store come from files others could write: none leads out of its folder."""
from __future__ import annotations

import json
import os

import pytest

from trainables.config import RunConfig
from trainables.errors import UserError
from trainables.storage import Location, StorageError
from trainables.teacher_cache import CACHE_DIR_NAME, MANIFEST_NAME, is_data_file_name, open_valid
from trainables.trial import TrialSpec
from trainables.tune_trainable import _share_teacher_caches

GOOD_DATA_FILE = "logits-20250101T120000-4242-0123abcd.bin"


def secret_beside(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("the user's private file")
    return secret


@pytest.mark.parametrize("name", ["../secret", "{secret}", "sub/../../secret", "./../secret", ""])
def test_push_refuses_names_that_leave_the_folder(s3_storage, tmp_path, name):
    secret = secret_beside(tmp_path)
    source = tmp_path / "run"
    (source / "sub").mkdir(parents=True)
    folder = Location.parse(s3_storage) / "run"
    with pytest.raises(StorageError, match="refusing to push"):
        folder.push(source, [name.format(secret=secret)])
    assert not Location.parse(s3_storage).exists() or not any(
        "secret" in key for key in Location.parse(s3_storage).files())


def test_push_refuses_a_symbolic_link_and_a_folder_linked_outside(s3_storage, tmp_path):
    secret = secret_beside(tmp_path)
    source = tmp_path / "run"
    source.mkdir()
    (source / "metrics.jsonl").symlink_to(secret)
    (source / "tensorboard").symlink_to(tmp_path)
    folder = Location.parse(s3_storage) / "run"
    for name in ("metrics.jsonl", "tensorboard/secret"):
        with pytest.raises(StorageError, match="refusing to push"):
            folder.push(source, [name])
    assert folder.files() == {}


def test_push_still_uploads_plain_files_and_subfolders(s3_storage, tmp_path):
    source = tmp_path / "run"
    (source / "tensorboard").mkdir(parents=True)
    (source / "metrics.jsonl").write_text("{}\n")
    (source / "tensorboard" / "events.out").write_text("e")
    folder = Location.parse(s3_storage) / "run"
    folder.push(source, ["metrics.jsonl", "tensorboard/events.out", "missing.txt"])
    assert (folder / "metrics.jsonl").read_text() == "{}\n"
    assert (folder / "tensorboard" / "events.out").read_text() == "e"


def test_cache_data_file_names_are_one_pattern():
    assert is_data_file_name(GOOD_DATA_FILE)
    for name in ["../../../secret", "/etc/passwd", "logits-x.bin", f"sub/{GOOD_DATA_FILE}", f"{GOOD_DATA_FILE}/..",
                 None, 3, ["x"]]:
        assert not is_data_file_name(name), name


def planted_cache(teacher_files, data_file) -> None:
    cache = teacher_files / CACHE_DIR_NAME / "abc"
    cache.mkdir(parents=True)
    (cache / MANIFEST_NAME).write_text(json.dumps({"format_version": 1, "data_file": data_file}))


def student_trial(teacher_uri: str) -> TrialSpec:
    run = RunConfig(dataset="digits", imbalance_factor=100, arch="resnet8", epochs=1, device="cpu")
    return TrialSpec(trial_id="t", stage="final", cell="c", sweep="s", sweep_dir=teacher_uri, run_dir=teacher_uri,
                     run=run, teacher_dir=teacher_uri)


def test_a_planted_cache_manifest_pushes_no_local_file_to_the_store(s3_storage, tmp_path):
    secret = secret_beside(tmp_path)
    teacher_files = tmp_path / "scratch" / "teacher"
    planted_cache(teacher_files, os.path.relpath(secret, teacher_files / CACHE_DIR_NAME / "abc"))
    teacher = Location.parse(s3_storage) / "teachers" / "t"
    with pytest.raises(UserError, match="names a data file that is not logits-<build id>.bin"):
        _share_teacher_caches(student_trial(teacher.uri), teacher_files)
    assert not teacher.exists() or teacher.files() == {}


def test_a_cache_whose_manifest_names_a_foreign_file_is_not_read(tmp_path):
    secret = secret_beside(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / MANIFEST_NAME).write_text(json.dumps({"format": "ltkd-teacher-logits", "data_file": str(secret)}))
    from trainables import teacher_cache

    manifest = json.loads((cache / MANIFEST_NAME).read_text())
    manifest.update(format=teacher_cache.FORMAT, format_version=teacher_cache.FORMAT_VERSION, key={"k": 1},
                    dtype="float32", shape=[1, 1, 4])
    (cache / MANIFEST_NAME).write_text(json.dumps(manifest))
    found, why = open_valid(cache, {"k": 1}, (1, 1, 4))
    assert found is None and "not logits-<build id>.bin" in why
