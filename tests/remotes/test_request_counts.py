"""The transport's request counter is what the S3 server saw: counted from moto's own
access log, for a first push, a no-op push, an incremental push and two pulls."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request

import pytest
from remote_helpers import commit, mlvc, mlvc_json

from mlvc import Repo

_REQUEST = re.compile(rb'" \d{3} ')
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def logged_s3(tmp_path_factory):
    """A moto server of this module's own, its access log (one line a request) in a file."""
    import os

    os.environ.update(CREDENTIALS)
    log = tmp_path_factory.mktemp("moto") / "access.log"
    port = _free_port()
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
    import pyarrow.fs as pafs

    endpoint = f"127.0.0.1:{port}"
    pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                      allow_bucket_creation=True).create_dir("counted")  # fmt: skip
    yield endpoint, log
    proc.terminate()
    proc.wait(10)


def _seen(log) -> int:
    time.sleep(0.2)  # the server writes its log line after answering
    return len(_REQUEST.findall(log.read_bytes()))


def test_counted_requests_are_the_requests_the_server_saw(project, tmp_path, logged_s3):
    endpoint, log = logged_s3
    url = f"s3://counted/m?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    for i in range(30):
        (project / f"f{i}.txt").write_text(f"file {i}\n")
    commit(project, "one", {}, "--name", "exp")
    mlvc(project, "remote", "add", "origin", url)

    def counted(where, *args):
        before = _seen(log)
        got = mlvc_json(where, *args)
        return got.get("requests", got.get("fetch", {}).get("requests")), _seen(log) - before

    assert counted(project, "push") == (7, 7)  # list, pack, idx, runs, marker, refs get+CAS
    assert counted(project, "push") == (1, 1)  # no-op: the listing
    commit(project, "two", {"f3.txt": "changed\n"}, "--name", "exp")
    assert counted(project, "push") == (5, 5)  # list, pack, idx, runs, refs CAS
    clone = tmp_path / "clone"
    mlvc(tmp_path, "clone", "-q", url, clone)
    assert counted(clone, "pull") == (2, 2)  # no-op: listing + refs.json
    commit(project, "three", {"f4.txt": "again\n"}, "--name", "exp")
    mlvc(project, "push", "-q")
    mine, seen = counted(clone, "pull")
    assert mine == seen <= 8  # list, refs, idx, runs, one ranged GET per level
    assert Repo(clone).fsck() == []
