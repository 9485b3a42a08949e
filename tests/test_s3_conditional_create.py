"""Leases on S3 created with a conditional write (boto3's `IfNoneMatch="*"`), against moto's S3 server."""
from __future__ import annotations

import threading

import pytest

from trainables.locks import Lease
from trainables.storage import Location

pytest.importorskip("boto3", reason="the s3 extra (boto3) adds conditional creates on S3")


def _racing(leases: list[Lease]) -> list[bool]:
    """Every lease's try_acquire, all started at once; whether each won."""
    start = threading.Barrier(len(leases))
    won = [False] * len(leases)

    def contend(index: int) -> None:
        start.wait()
        won[index] = leases[index].try_acquire()
    threads = [threading.Thread(target=contend, args=(index,)) for index in range(len(leases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


def test_of_two_conditional_creates_of_one_key_exactly_the_first_wins(s3_storage):
    from trainables.s3_conditional import create_if_absent

    location = Location.parse(s3_storage) / "sweep" / "driver.lock"
    assert create_if_absent(location, b"first") is True
    assert create_if_absent(location, b"second") is False
    assert location.read_text() == "first"


def test_leases_started_together_on_s3_have_exactly_one_winner(s3_storage):
    location = Location.parse(s3_storage) / "sweep" / "driver.lock"
    for _ in range(5):
        leases = [Lease(location, settle=0.0) for _ in range(4)]  # no pause: only the store's condition decides
        won = _racing(leases)
        assert won.count(True) == 1, won
        winner = leases[won.index(True)]
        assert winner.still_held()
        winner.release()
        assert not location.exists()


def test_options_boto3_would_not_be_told_keep_the_best_effort_create():
    from trainables.s3_conditional import s3_client_options

    assert s3_client_options(Location.parse("s3://bucket/sweeps?endpoint_override=minio.local:9000&scheme=http")) == {
        "endpoint_url": "http://minio.local:9000"}
    assert s3_client_options(Location.parse("s3://bucket/sweeps?region=eu-west-1")) == {"region_name": "eu-west-1"}
    assert s3_client_options(Location.parse("s3://bucket/sweeps?anonymous=true")) is None
    assert s3_client_options(Location.parse("gs://bucket/sweeps")) is None
