"""The transport's request counter is what the S3 server saw: counted from moto's own
access log, for a first push, a no-op push, an incremental push and two pulls."""

from __future__ import annotations

import re
import time

from remote_helpers import commit, mlvc, mlvc_json

from mlvc import Repo

_REQUEST = re.compile(rb'" \d{3} ')


def _seen(log) -> int:
    time.sleep(0.2)  # the server writes its log line after answering
    return len(_REQUEST.findall(log.read_bytes()))


def test_counted_requests_are_the_requests_the_server_saw(project, tmp_path, s3_bucket):
    server, bucket = s3_bucket
    log, url = server.log, server.url(bucket, "m")
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
