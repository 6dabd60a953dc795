"""A real S3 API for the remotes tests: a moto server process on 127.0.0.1.

``s3`` (session-scoped) starts ``python -m moto.server`` on a free port and stops it at the
end; each test gets a fresh bucket from ``s3_bucket`` and the URL that pyarrow and mlvc take
(``s3://bucket/prefix?endpoint_override=...&scheme=http&region=us-east-1``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class S3Server:
    endpoint: str  # host:port
    proc: subprocess.Popen
    log: Path  # moto's access log: one line a request

    def url(self, bucket: str, prefix: str = "") -> str:
        path = f"{bucket}/{prefix}".rstrip("/")
        return f"s3://{path}?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"

    def create_bucket(self, name: str) -> None:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            scheme="http",
            region="us-east-1",
            access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            allow_bucket_creation=True,
        )
        fs.create_dir(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A moto S3 server for the whole session (credentials set in this process's env)."""
    os.environ.update(CREDENTIALS)
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "access.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=out,
            env={**os.environ, **CREDENTIALS},
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the moto S3 server did not start")
            time.sleep(0.1)
    yield S3Server(f"127.0.0.1:{port}", proc, log)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def s3_bucket(s3):
    """A fresh, empty bucket: ``(server, bucket name)``."""
    name = f"mlvc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(name)
    return s3, name


@pytest.fixture(params=["file", "s3"])
def remote_url(request, tmp_path):
    """The URL of an empty remote: a folder, or a prefix of a fresh moto S3 bucket."""
    if request.param == "file":
        return "file://" + str(tmp_path / "remote")
    server, bucket = request.getfixturevalue("s3_bucket")
    return server.url(bucket, "team/mlvc")
