"""Create-if-absent on S3 with a conditional write: the exclusive create pyarrow's S3 client lacks.

S3 (since 2024), MinIO and moto refuse a `PutObject` with `If-None-Match: *` when the key exists
(412), and answer 409 to one racing another conditional write of the key, so of two creators
exactly one wins. pyarrow cannot send that header; boto3 can, and is optional (the `s3` extra):
without it, for any other store, or for a storage URI with options boto3 would not be told about
(it might then reach another store than pyarrow does), `create_if_absent` returns None and the
lease falls back to its best effort (write, pause, read back).
"""
from __future__ import annotations

import functools
from urllib.parse import parse_qsl, urlsplit

from trainables.storage import Location

# The pyarrow S3 options (URI query) that mean the same to boto3; any other one keeps the best effort.
_SAME_MEANING = {"endpoint_override", "scheme", "region"}


def s3_client_options(location: Location) -> dict[str, str] | None:
    """boto3 client arguments reaching the store pyarrow reaches for `location`, or None where they may not."""
    parts = urlsplit(location.uri)
    if parts.scheme != "s3":
        return None
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if set(options) - _SAME_MEANING:
        return None
    client: dict[str, str] = {}
    endpoint = options.get("endpoint_override")
    if endpoint:
        client["endpoint_url"] = endpoint if "://" in endpoint else f"{options.get('scheme') or 'https'}://{endpoint}"
    if options.get("region"):
        client["region_name"] = options["region"]
    return client


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str | None, region_name: str | None):
    import boto3  # credentials come from the environment, as for pyarrow

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region_name)


def create_if_absent(location: Location, data: bytes) -> bool | None:
    """Write `data` at `location` only if nothing is there: True when written, False when it exists
    (or a racing create holds it), None when no conditional write can be made here (see above)."""
    options = s3_client_options(location)
    if options is None:
        return None
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return None
    bucket, _, key = location.path[len("s3://"):].partition("/")
    try:
        _client(options.get("endpoint_url"), options.get("region_name")).put_object(
            Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (409, 412):  # it exists; or another conditional create of it is in flight
            return False
        return None  # e.g. a store that does not implement the condition: the best effort decides
    except BotoCoreError:  # no credentials boto3 can find, an endpoint it cannot reach: the best effort decides
        return None
    return True
