"""``ArrowTransport``: a remote on any ``pyarrow.fs`` filesystem, and ``open_transport``,
the one place that picks a transport by URL scheme.

``pyarrow.fs.FileSystem.from_uri`` reads the URL (``file://``, ``s3://bucket/prefix`` with
its query parameters ``endpoint_override``, ``scheme``, ``region``..., ``gs://``,
``abfs://``, ``hdfs://``); credentials come from the standard chain and environment, never
from mlvc's config. pyarrow has no conditional write, so compare-and-swap goes through a
lock file on local disks and through ``obstore`` (the ``mlvc[cloud]`` extra) on object
stores, whose conditional puts (create-if-absent, if-match on the ETag) the stores enforce.
Object-store reads go through obstore too when it is installed: one GET per read, where
pyarrow opens a file with a HEAD first.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import blake3

from ..errors import MissingExtra, MissingOnRemote, RemoteError, UsageError
from ..refs.store import fsync_dir

LIST_PAGE = 1000  # keys per listing request on object stores (S3's ListObjectsV2 page)
PART = 10 << 20  # pyarrow's S3 upload part size: a multipart upload costs a request per part
LOCK_WAIT = 10.0  # seconds a local compare-and-swap waits for another writer's lock


def open_transport(remote, environ: Mapping[str, str] = os.environ):
    """The transport for a configured remote (``remotes.config.Remote``) by its URL scheme:
    ``http(s)://`` is an mlvc server (remotes/http.py), everything else pyarrow.fs."""
    scheme = urlsplit(remote.url).scheme
    if scheme in ("http", "https"):
        from .config import token_for
        from .http import ServerTransport  # loaded only for a server remote

        return ServerTransport(remote.url, token_for(remote, environ), name=remote.name)
    return ArrowTransport(remote.url, name=remote.name)


def _has_obstore() -> bool:
    return importlib.util.find_spec("obstore") is not None


class ArrowTransport:
    """A remote's files through pyarrow.fs; counts requests and bytes moved."""

    def __init__(self, url: str, name: str = "origin"):
        import pyarrow.fs as pafs

        self.url = url
        self.name = name
        self.scheme = urlsplit(url).scheme or "file"
        try:
            self.fs, base = pafs.FileSystem.from_uri(url)
        except (OSError, ValueError, TypeError) as e:
            raise RemoteError(f"remote {name}: cannot open {url} ({_first_line(e)})") from None
        self.base = base.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.parallel_reads = 1 if self.local else 4  # object stores answer reads at once
        self.last_token: str | None = None  # the version token a successful put_if made
        self._count = threading.Lock()
        self._store = None  # the obstore store, built on first need

    def __repr__(self) -> str:
        return f"ArrowTransport({self.url!r})"

    def _tally(self, requests: int = 1, bytes_in: int = 0, bytes_out: int = 0) -> None:
        with self._count:
            self.requests += requests
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out

    def _full(self, path: str) -> str:
        return f"{self.base}/{path}" if path else self.base

    def _fail(self, what: str, path: str, e: BaseException) -> RemoteError:
        return RemoteError(
            f"remote {self.name}: cannot {what} {self._full(path)} ({_first_line(e)})"
        )

    # -- reading ---------------------------------------------------------------------------

    @contextmanager
    def _reading(self, path: str, errors: type[BaseException]) -> Iterator[None]:
        """A failed read is counted and becomes MissingOnRemote (absent) or RemoteError
        (``errors``: what the library raises for anything else)."""
        try:
            yield
        except FileNotFoundError:
            self._tally()
            raise MissingOnRemote(f"remote {self.name} has no {path}") from None
        except errors as e:
            self._tally()
            raise self._fail("read", path, e) from None

    def listing(self, prefix: str = "") -> dict[str, int]:
        import pyarrow.fs as pafs

        top = self._full(prefix.rstrip("/"))
        try:
            infos = self.fs.get_file_info(
                pafs.FileSelector(top, recursive=True, allow_not_found=True)
            )
        except OSError as e:
            raise self._fail("list", prefix, e) from None
        cut = len(self.base) + 1
        out = {i.path[cut:]: i.size for i in infos if i.type == pafs.FileType.File and i.size >= 0}
        self._tally(1 if self.local else 1 + len(out) // LIST_PAGE)
        return out

    def get(self, path: str) -> bytes:
        if not self.local and _has_obstore():
            import obstore

            with self._reading(path, Exception):
                data = bytes(obstore.get(self._obstore(), self._key(path)).bytes())
            self._tally(bytes_in=len(data))
            return data
        with self._reading(path, OSError), self.fs.open_input_stream(self._full(path)) as f:
            data = f.read()
        self._tally(1 if self.local else 2, bytes_in=len(data))
        return data

    def get_range(self, path: str, offset: int, length: int) -> bytes:
        if not self.local and _has_obstore():
            import obstore

            with self._reading(path, Exception):
                data = bytes(
                    obstore.get_range(self._obstore(), self._key(path), start=offset, length=length)
                )
        else:
            with self._reading(path, OSError), self.fs.open_input_file(self._full(path)) as f:
                data = f.read_at(length, offset)
            if not self.local:
                self._tally()  # pyarrow opens an object with a HEAD request
        self._tally(bytes_in=len(data))
        if len(data) != length:
            raise RemoteError(
                f"remote {self.name}: {path} is shorter than expected ({offset}+{length} bytes)"
            )
        return data

    # -- writing ---------------------------------------------------------------------------

    def put(self, path: str, source: str | os.PathLike | bytes) -> None:
        """Whole or not at all: a temp file renamed on local disks; object stores publish an
        upload (single or multipart) only when it completes."""
        size = len(source) if isinstance(source, bytes | bytearray) else os.path.getsize(source)
        if self.local:
            self._put_local(path, source)
            self._tally(bytes_out=size)
            return
        if _has_obstore():
            self._put_object(path, source, size)
            return
        try:
            with self.fs.open_output_stream(self._full(path)) as out:
                _copy(source, out)
        except OSError as e:
            raise self._fail("write", path, e) from None
        parts = -(-size // PART)
        self._tally(1 if parts <= 1 else parts + 2, bytes_out=size)

    def _put_object(self, path: str, source, size: int) -> None:
        """One PUT, or a multipart upload of PART-sized parts with a few in flight: memory
        stays bounded (pyarrow's stream queues every part a fast disk produces)."""
        import obstore

        try:
            if isinstance(source, bytes | bytearray):
                obstore.put(self._obstore(), self._key(path), bytes(source))
            else:
                obstore.put(self._obstore(), self._key(path), Path(source), chunk_size=PART,
                            max_concurrency=4)  # fmt: skip
        except Exception as e:
            raise self._fail("write", path, e) from None
        finally:
            parts = -(-size // PART)
            self._tally(1 if parts <= 1 or isinstance(source, bytes | bytearray) else parts + 2,
                        bytes_out=size)  # fmt: skip

    def _put_local(self, path: str, source) -> None:
        dest = Path(self._full(path))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "wb") as out:
                _copy(source, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise self._fail("write", path, e) from None

    def modified(self, path: str) -> float | None:
        """When a file was last written (seconds since the epoch), or None if unknown (not
        part of the Transport protocol: fsck --remote ages orphan packs with it)."""
        try:
            info = self.fs.get_file_info(self._full(path))
        except OSError:
            return None
        finally:
            self._tally()
        return info.mtime.timestamp() if info.mtime is not None else None

    def delete(self, path: str) -> None:
        try:
            self.fs.delete_file(self._full(path))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self._fail("delete", path, e) from None
        finally:
            self._tally()

    # -- compare-and-swap ------------------------------------------------------------------

    def read_versioned(self, path: str) -> tuple[bytes | None, str | None]:
        """Content and version token: the ETag on object stores, the content's BLAKE3 on
        local disks (a rename changes it whole)."""
        if self.local or not _has_obstore():
            try:
                data = self.get(path)
            except MissingOnRemote:
                return None, None
            return data, _digest(data) if self.local else None
        import obstore

        try:
            with self._reading(path, Exception):
                got = obstore.get(self._obstore(), self._key(path))
                data = bytes(got.bytes())
        except MissingOnRemote:
            return None, None
        self._tally(bytes_in=len(data))
        return data, got.meta["e_tag"]

    def put_if(self, path: str, data: bytes, token: str | None) -> bool:
        if self.local:
            ok = self._put_if_local(path, data, token)
        else:
            ok = self._put_if_object(path, data, token)
        self._tally(0, bytes_out=len(data) if ok else 0)
        return ok

    def _put_if_object(self, path: str, data: bytes, token: str | None) -> bool:
        if not _has_obstore():
            raise MissingExtra(
                f"remote {self.name}: updating refs on {self.scheme}:// safely (a conditional "
                "write) needs obstore: pip install 'mlvc[cloud]'"
            )
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode = "create" if token is None else {"e_tag": token}
        try:
            result = obstore.put(self._obstore(), self._key(path), data, mode=mode)
        except (AlreadyExistsError, PreconditionError):
            self._tally()
            return False
        except Exception as e:
            self._tally()
            raise self._fail("write", path, e) from None
        self._tally()
        self.last_token = result.get("e_tag")
        return True

    def _put_if_local(self, path: str, data: bytes, token: str | None) -> bool:
        """Under an exclusive lock: compare, then temp file + fsync + rename, like a ref
        write. The lock is a ``flock`` on ``.<name>.lock``, so a writer killed while holding
        it (kill -9 mid-push) releases it with its process and never blocks the next push."""
        dest = Path(self._full(path))
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = _lock(dest.with_name(f".{dest.name}.lock"), self.name)
        self._tally()
        try:
            try:
                now = _digest(dest.read_bytes())
            except FileNotFoundError:
                now = None
            if now != token:
                return False
            self._put_local(path, data)  # under the lock: temp, fsync, rename, fsync dir
        finally:
            os.close(fd)
        self.last_token = _digest(data)
        return True

    # -- obstore ---------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        return f"{self._prefix}/{path}" if self._prefix else path

    def _obstore(self):
        if self._store is None:
            self._store, self._prefix = _object_store(self.url, self.name)
        return self._store

    _prefix = ""


def _object_store(url: str, name: str):
    """(obstore store, key prefix) for the same place pyarrow's URL names."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    prefix = parts.path.strip("/")
    if parts.scheme == "s3":
        from obstore.store import S3Store

        kwargs: dict = {}
        if query.get("region"):
            kwargs["region"] = query["region"]
        endpoint = query.get("endpoint_override")
        if endpoint:
            scheme = query.get("scheme", "https")
            kwargs["endpoint"] = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
            kwargs["virtual_hosted_style_request"] = False
            if kwargs["endpoint"].startswith("http://"):
                kwargs["client_options"] = {"allow_http": True}
        return S3Store(parts.hostname or parts.netloc, **kwargs), prefix
    if parts.scheme in ("gs", "gcs"):
        from obstore.store import GCSStore

        return GCSStore(parts.netloc), prefix
    if parts.scheme in ("abfs", "abfss", "az"):
        from obstore.store import AzureStore

        container, _, host = parts.netloc.partition("@")
        kwargs = {"account_name": host.split(".")[0]} if host else {}
        return AzureStore(container, **kwargs), prefix
    raise UsageError(
        f"remote {name}: {parts.scheme}:// has no compare-and-swap mlvc can use to update "
        "refs safely; use a folder, s3://, gs:// or abfs://"
    )


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= 300 else text[:297] + "..."


def _digest(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def _lock(path: Path, name: str) -> int:
    """An open descriptor holding ``flock(LOCK_EX)`` on ``path`` (waits LOCK_WAIT at most)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RemoteError(
                    f"remote {name}: {path} stayed locked by another push for {LOCK_WAIT:.0f} s; "
                    "try again"
                ) from None
            time.sleep(0.01)


def _copy(source: str | os.PathLike | bytes, out) -> None:
    """Write ``source`` (bytes, or a local file streamed in 8 MiB blocks) to ``out``."""
    if isinstance(source, bytes | bytearray):
        out.write(source)
        return
    with open(source, "rb") as f:
        while block := f.read(8 << 20):
            out.write(block)
