"""Shared fixtures: an S3-protocol object store served on localhost.

No cloud bucket is reachable from CI, so object-store storage is tested against moto's S3 server:
a real HTTP endpoint that pyarrow's own S3 client (the one sweeps use in production) talks to,
from this process, from `ltkd` subprocesses and from Ray workers alike.
"""
from __future__ import annotations

import logging
import os
import uuid

import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_endpoint():
    """host:port of a local S3 server; credentials are in the environment, as users set them."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] (the test extra) serves S3 locally")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {name: os.environ.get(name) for name in S3_ENV}
    os.environ.update(S3_ENV)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_storage(s3_endpoint):
    """A fresh bucket's storage URI, with the endpoint in its query options."""
    import pyarrow.fs as pafs

    bucket = f"ltkd-{uuid.uuid4().hex[:12]}"
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http", allow_bucket_creation=True)
    fs.create_dir(bucket)
    return f"s3://{bucket}/sweeps?endpoint_override={s3_endpoint}&scheme=http"
