"""``Transport``: the few operations a remote needs from the store that holds it.

Every remote — a folder, S3, GCS, Azure, HDFS (pyarrow.fs, remotes/fs.py) or an mlvc server
(remotes/http.py) — is reached through this one Protocol, so push, fetch and fsck have one
code path. Paths are relative to the remote's prefix and use ``/``. Every implementation
counts its requests and bytes (tests assert the counts; ``--json`` summaries report them).
"""

from __future__ import annotations

import os
from typing import Protocol


class Transport(Protocol):
    url: str
    requests: int
    bytes_in: int
    bytes_out: int
    parallel_reads: int  # ranged reads a fetch may have in flight at once (1: one at a time)

    def listing(self, prefix: str = "") -> dict[str, int]:
        """Every file under ``prefix`` with its size, in one recursive listing."""
        ...

    def get(self, path: str) -> bytes:
        """A whole file; MissingOnRemote if absent."""
        ...

    def get_range(self, path: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``path`` from ``offset`` (one ranged read)."""
        ...

    def put(self, path: str, source: str | os.PathLike | bytes) -> None:
        """Write a file whole or not at all (a local path is streamed)."""
        ...

    def read_versioned(self, path: str) -> tuple[bytes | None, str | None]:
        """A file's content and a version token (ETag, or a hash), or (None, None)."""
        ...

    def put_if(self, path: str, data: bytes, token: str | None) -> bool:
        """Compare-and-swap: write only if the version is still ``token`` (None: only if the
        file is absent). False when another writer got there first."""
        ...

    def delete(self, path: str) -> None:
        """Remove a file (absent is fine)."""
        ...
