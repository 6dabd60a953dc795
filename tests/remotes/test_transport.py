"""ArrowTransport against a folder and a real S3 API (moto): reads, atomic puts, and the
compare-and-swap that refs.json relies on (the stores enforce it, not mlvc)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from remote_helpers import transport_for

from mlvc.errors import MissingExtra, MissingOnRemote, RemoteError, UsageError
from mlvc.remotes.config import Remote
from mlvc.remotes.fs import open_transport


def test_files_ranges_and_listing(remote_url, tmp_path):
    t = transport_for(remote_url)
    assert t.listing("") == {}
    t.put("packs/a.pack", b"0123456789")
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    t.put("packs/b.pack", src)
    assert t.listing("") == {"packs/a.pack": 10, "packs/b.pack": 1000}
    assert t.get("packs/a.pack") == b"0123456789"
    assert t.get_range("packs/a.pack", 3, 4) == b"3456"
    with pytest.raises(MissingOnRemote):
        t.get("nope")
    with pytest.raises(RemoteError, match="shorter"):
        t.get_range("packs/a.pack", 8, 5)
    t.delete("packs/a.pack")
    t.delete("packs/a.pack")  # absent is fine
    assert t.listing("packs") == {"packs/b.pack": 1000}
    assert t.bytes_out == 1010 and t.bytes_in >= 14 and t.requests >= 9


def test_compare_and_swap_is_enforced_by_the_store(remote_url):
    a, b = transport_for(remote_url), transport_for(remote_url)
    assert a.read_versioned("refs.json") == (None, None)
    assert a.put_if("refs.json", b"one", None)  # create-if-absent
    assert not b.put_if("refs.json", b"two", None)  # If-None-Match: * refused
    data, token = b.read_versioned("refs.json")
    assert data == b"one" and token
    assert b.put_if("refs.json", b"two", token)  # If-Match the version read
    assert not a.put_if("refs.json", b"three", token)  # that version is gone
    assert a.get("refs.json") == b"two"
    data, token2 = a.read_versioned("refs.json")
    assert token2 != token and token2 == b.last_token


def test_local_cas_leaves_no_temp_behind(tmp_path):
    t = transport_for("file://" + str(tmp_path / "r"))
    assert t.put_if("refs.json", b"x", None)
    assert not t.put_if("refs.json", b"y", None)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".refs.json.lock", "refs.json"]


def test_a_writer_killed_holding_the_local_lock_blocks_nobody(tmp_path):
    """Regression: an O_EXCL lock file left by a kill -9 mid-push made the next push wait
    and fail ("held by another push"); the lock is now a flock, released with its process."""
    url = "file://" + str(tmp_path / "r")
    code = (
        "import sys, time; from pathlib import Path; from mlvc.remotes.fs import _lock; "
        f"Path({str(tmp_path / 'r')!r}).mkdir(); "
        f"_lock(Path({str(tmp_path / 'r' / '.refs.json.lock')!r}), 'origin'); "
        "print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()  # SIGKILL while holding it
    holder.wait()
    start = time.monotonic()
    assert transport_for(url).put_if("refs.json", b"x", None)
    assert time.monotonic() - start < 1.0


def test_cas_on_an_object_store_needs_the_cloud_extra(s3_bucket, monkeypatch):
    server, bucket = s3_bucket
    t = transport_for(server.url(bucket, "p"))
    monkeypatch.setitem(sys.modules, "obstore", None)  # as if `mlvc[cloud]` was not installed
    t.put("a.bin", b"abc")  # plain reads and writes need only pyarrow
    assert t.get("a.bin") == b"abc"
    with pytest.raises(MissingExtra, match=r"pip install 'mlvc\[cloud\]'"):
        t.put_if("refs.json", b"{}", None)


def test_http_remotes_are_a_seam_for_the_server_transport():
    try:
        import mlvc.remotes.http  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="http"):
            open_transport(Remote("srv", "http://127.0.0.1:1"))


def test_a_bad_url_is_a_clear_error():
    with pytest.raises(RemoteError, match="remote origin: cannot open .*'bogus'") as e:
        transport_for("s3://bucket/p?bogus=1")
    assert "\n" not in str(e.value)
    with pytest.raises(RemoteError) as e:  # no libhdfs here: one line, not pyarrow's 90
        transport_for("hdfs://nohost:1/x")
    assert "\n" not in str(e.value) and len(str(e.value)) < 400
