"""Refs: the mutable names that point at immutable runs, changed atomically and logged.

Layout under ``.mlvc/``:
    HEAD               the run the working tree was last committed or checked out as
    refs/runs/<id>     one file per recorded run: the set of all runs (never moves)
    refs/names/<name>  a run name, pointing at the newest run given that name
    refs/tags/<tag>    a tag set with ``mlvc tag`` (git-style, movable)
    refs/models/<name>/versions/<n>   a registered model version: a model tree (never moves)
    refs/models/<name>/aliases/<a>    a symbolic ref (``ref: <version ref>``) to a version
    logs/<ref>         the reflog: ``old new time author message`` per change, append-only

A ref changes by writing ``<ref>.lock`` (O_EXCL), then renaming it over the ref, as git does.
The writer also holds an ``flock`` on its lock file until the rename is done, so a lock file
left by a process killed mid-write (kill -9, a power cut) is told from a live one: the next
writer that finds it unflocked and older than STALE_LOCK seconds removes it (under the
flock, after checking the path still names that file) and goes on.
A symbolic ref holds ``ref: <other ref>`` instead of an id; reading it follows the chain.

Durability: a ref write returns only once the new ref is on disk: the lock file is fsynced
before the rename and its folder after it, and each reflog line is fsynced when appended.
So a commit that has been reported survives a power cut (measured: docs/architecture.md).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.durable import fsync_dir  # noqa: F401 (re-exported: refs.store.fsync_dir)
from ..core.ids import ObjectId
from ..errors import MlvcError, RefExists, RefLocked, RefMoved, UsageError
from ..store.odb import sync_filesystem

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=-]{0,199}$")
LOCK_WAIT = 10.0
log = logging.getLogger("mlvc.refs")
STALE_LOCK = 2.0  # seconds: a lock file older than this that nobody flocks is a dead writer's
ANY = object()  # ``write``'s ``expected`` when the write is no compare-and-swap


def _break_stale(lock: Path) -> bool:
    """Remove ``lock`` if its writer died: nobody flocks it and it is older than STALE_LOCK
    (a live writer flocks its lock right after creating it). True if removed.

    Safe against two breakers and a new writer: the breaker holds the flock of the dead
    file while it checks that the path still names that file and unlinks it; another breaker
    gets the flock only after, and then finds the path gone or naming a new lock."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return True  # gone meanwhile: try to create it again
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if time.time() - st.st_mtime < STALE_LOCK:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer holds it
        try:
            now = os.stat(lock)
        except FileNotFoundError:
            return True
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return True  # another breaker removed it and a new writer made a new one
        os.unlink(lock)
        log.warning("removed %s, left by a writer that died", lock)
        return True
    finally:
        os.close(fd)


def _one_line(text: str) -> str:
    """``text`` as one reflog field: no tab, and none of the characters ``splitlines`` (the
    readers, fsck) breaks a line at (\\r, \\x0b, \\x1c, \\x85, \\u2028, ...), not only \\n."""
    return " ".join(text.replace("\t", " ").splitlines())


def check_ref_name(name: str, what: str = "name") -> str:
    """``name`` if it may be a ref's name; a run ``name`` or ``tag`` also may not read as a
    run address (docs/user-guide.md, "Addressing"): not ``HEAD``, not 4-64 hex digits."""
    if not _NAME.match(name) or name.endswith(".lock") or ".." in name:
        noun = f"run {what}" if what in ("name", "tag") else what
        raise UsageError(
            f"invalid {noun} {name!r}: use letters, digits and . _ - + = "
            "(at most 200, not starting with '.' or '-')"
        )
    if what in ("name", "tag"):
        from ..core.ids import is_hex_prefix

        if name == "HEAD":
            raise UsageError(f"invalid run {what} 'HEAD': HEAD already means the current run")
        if is_hex_prefix(name.lower()):
            raise UsageError(
                f"invalid run {what} {name!r}: 4 or more hex digits read as a run id "
                "prefix; add a letter g-z or a '-'"
            )
    return name


SYMBOLIC = "ref: "
MAX_SYMBOLIC_DEPTH = 5


def check_symbolic_target(ref: str, target: str) -> str:
    """A symbolic ref may only name a ref under ``refs/``: a normal relative path whose
    every part is a valid ref name, so it can never read a file elsewhere."""
    parts = target.split("/")
    if len(parts) < 2 or parts[0] != "refs" or not all(_NAME.match(p) for p in parts[1:]):
        shown = target[:40] + ("..." if len(target) > 40 else "")
        raise MlvcError(
            f"ref {ref} is a symbolic ref to {shown!r}, which is not a ref under refs/; "
            "run `mlvc fsck`"
        )
    return target


class RefStore:
    def __init__(self, mlvc_dir: str | os.PathLike):
        self.dir = Path(mlvc_dir)
        self._batch = threading.local()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Write several refs, then make them all durable at once (one ``syncfs`` instead
        of an fsync per file and folder); nothing is reported durable before the end."""
        if getattr(self._batch, "on", False):
            yield
            return
        self._batch.on = True
        self._batch.after = []
        try:
            yield
        finally:
            self._batch.on = False
            sync_filesystem(self.dir)
            after, self._batch.after = self._batch.after, []
            for fn in after:
                fn()

    @property
    def batching(self) -> bool:
        """Whether this thread is inside ``batch()``: files written now in this repository's
        filesystem are made durable by its end (an event written with the refs it reports)."""
        return bool(getattr(self._batch, "on", False))

    def after_batch(self, fn) -> None:
        """Call ``fn()`` once the current batch is durable (at once outside a batch)."""
        if self.batching:
            self._batch.after.append(fn)
        else:
            fn()

    def _fsync(self, fd: int) -> None:
        if not getattr(self._batch, "on", False):
            os.fsync(fd)

    def _fsync_dir(self, folder: Path) -> None:
        if not getattr(self._batch, "on", False):
            fsync_dir(folder)

    def _path(self, ref: str) -> Path:
        return self.dir / ref

    def _text(self, ref: str) -> str:
        try:
            return self._path(ref).read_bytes().decode().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return ""
        except UnicodeDecodeError:
            raise MlvcError(f"ref {ref} holds bytes that are not text; run `mlvc fsck`") from None
        except OSError as e:
            raise MlvcError(
                f"ref {ref} cannot be read ({e.strerror}); check its permissions"
            ) from None

    def read(self, ref: str) -> ObjectId | None:
        return self.read_direct(ref)[0]

    def read_direct(self, ref: str) -> tuple[ObjectId | None, bool]:
        """``read(ref)``, and whether ``ref``'s own file holds the answer (it is not a
        symbolic ref to another): only then may a caller keep the answer for as long as
        that file's identity (``name_stats``) stays the same."""
        text = self._text(ref)
        direct = not text.startswith(SYMBOLIC)
        for _ in range(MAX_SYMBOLIC_DEPTH):
            if not text.startswith(SYMBOLIC):
                break
            text = self._text(check_symbolic_target(ref, text[len(SYMBOLIC) :].strip()))
        if not text:
            return None, direct
        try:
            return ObjectId.parse(text), direct
        except ValueError:
            raise MlvcError(
                f"ref {ref} holds {text[:80]!r}, not a run id; run `mlvc fsck`"
            ) from None

    def read_or_none(self, ref: str) -> ObjectId | None:
        """``read``, with None also for a damaged ref (fsck names it)."""
        try:
            return self.read(ref)
        except MlvcError:
            return None

    def read_symbolic(self, ref: str) -> str | None:
        """The ref a symbolic ref points at, or None if ``ref`` is absent, not symbolic, or
        names something outside ``refs/`` (``read`` raises for that one)."""
        text = self._text(ref)
        if not text.startswith(SYMBOLIC):
            return None
        try:
            return check_symbolic_target(ref, text[len(SYMBOLIC) :].strip())
        except MlvcError:
            return None

    def write(
        self,
        ref: str,
        oid: ObjectId | None,
        message: str = "",
        author: str = "",
        create_only: bool = False,
        symbolic: str | None = None,
        expected: ObjectId | None | object = ANY,
    ) -> None:
        """Point ``ref`` at ``oid`` (or, with ``symbolic``, at another ref) under its lock,
        and log the change. ``create_only`` raises RefExists if the ref is already there,
        checked under the lock, so concurrent creators never both succeed. ``expected``
        makes it a compare-and-swap: RefMoved unless the ref names ``expected`` now (None:
        unless it is absent), checked under the lock."""
        if symbolic:
            check_symbolic_target(ref, symbolic)
        path = self._path(ref)
        self._check_file_or_folder(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock")
        fd = self._take_lock(lock)
        renamed = False
        try:
            if create_only and path.exists():
                raise RefExists(f"ref {ref} already exists")
            old = self.read(ref)
            if expected is not ANY and old != expected:
                now = old.hex if old else "absent"
                raise RefMoved(f"ref {ref} is {now}, not what the writer expected")
            text = f"{SYMBOLIC}{symbolic}" if symbolic else (oid.hex if oid else "")
            if symbolic:
                oid = self.read(symbolic)
            os.write(fd, (text + "\n").encode())
            self._fsync(fd)
            os.replace(lock, path)  # still flocked: nobody takes this for a dead writer's
            renamed = True
            self._fsync_dir(path.parent)
        finally:
            if not renamed:
                lock.unlink(missing_ok=True)
            os.close(fd)
        self._log(ref, old, oid, message, author)

    def _check_file_or_folder(self, ref: str) -> None:
        """A ref is a file: ``refs/a`` and ``refs/a/b`` cannot both exist (nor their reflogs)."""
        for base in (self.dir, self.dir / "logs"):
            path = base / ref
            taken = next((p for p in path.parents if p != base and p.is_file()
                          and base in p.parents), None)  # fmt: skip
            if taken is not None or path.is_dir():
                what = taken.relative_to(base).as_posix() if taken is not None else f"{ref}/..."
                raise UsageError(
                    f"ref {ref} cannot be written: {what} is a ref (or its log) already, and "
                    "a ref name is a file or a folder, not both"
                )

    def delete(self, ref: str, message: str = "", author: str = "") -> bool:
        old = self.read(ref)
        try:
            self._path(ref).unlink()
        except FileNotFoundError:
            return False
        self._fsync_dir(self._path(ref).parent)
        self._log(ref, old, None, message, author)
        return True

    def _take_lock(self, lock: Path) -> int:
        """An fd of the new lock file ``lock``, flocked; waits for a live writer's lock at
        most LOCK_WAIT seconds, and removes a dead writer's."""
        deadline = time.monotonic() + LOCK_WAIT
        delay = 0.001
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if _break_stale(lock):
                    continue
                if time.monotonic() > deadline:
                    raise RefLocked(
                        f"ref lock {lock} is held by another process; if none is running, "
                        "delete the lock file"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else holds it
            return fd

    def _log(self, ref, old, new, message, author) -> None:
        log = self.dir / "logs" / ref
        log.parent.mkdir(parents=True, exist_ok=True)
        line = "\t".join(
            [
                old.hex if old else "-",
                new.hex if new else "-",
                f"{time.time():.6f}",
                _one_line(author),
                _one_line(message),
            ]
        )
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:  # one short O_APPEND write: atomic on local filesystems
            os.write(fd, (line + "\n").encode())
            self._fsync(fd)
        finally:
            os.close(fd)

    def reflog(self, ref: str) -> list[dict]:
        try:
            lines = (self.dir / "logs" / ref).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for ln in lines:
            parts = ln.split("\t")
            if len(parts) == 5:
                old, new, t, author, msg = parts
                out.append(
                    {
                        "old": None if old == "-" else old,
                        "new": None if new == "-" else new,
                        "time": float(t),
                        "author": author,
                        "message": msg,
                    }
                )
        return out

    def list(self, namespace: str) -> dict[str, ObjectId]:
        """Every ref under ``refs/<namespace>/`` by its short name."""
        base = self.dir / "refs" / namespace
        out = {}
        try:
            entries = list(os.scandir(base))
        except FileNotFoundError:
            return out
        for ent in entries:
            if ent.name.endswith(".lock") or ent.name.startswith(".") or not ent.is_file():
                continue
            oid = self.read(f"refs/{namespace}/{ent.name}")
            if oid is not None:
                out[ent.name] = oid
        return out

    def names(self, namespace: str) -> list[str]:
        """The short names of the refs under ``refs/<namespace>/``, without reading them."""
        return sorted(ent.name for ent in self._entries(namespace))

    def name_stats(self, namespace: str) -> dict[str, tuple[int, int, int]]:
        """``names(namespace)``, each with its file's (inode, mtime_ns, size): a ref changes
        only by a rename over it (a new inode), so an unchanged identity is an unchanged
        ref, once its mtime is older than the file system's clock can blur."""
        out = {}
        for ent in self._entries(namespace):
            try:
                st = ent.stat()
            except FileNotFoundError:  # deleted since the listing
                continue
            out[ent.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return out

    def _entries(self, namespace: str) -> list[os.DirEntry]:
        try:
            entries = list(os.scandir(self.dir / "refs" / namespace))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [
            ent
            for ent in entries
            if not ent.name.endswith(".lock") and not ent.name.startswith(".") and _is_file(ent)
        ]

    # -- the set of runs ------------------------------------------------------------------

    def add_run(self, oid: ObjectId) -> None:
        """Record a run as existing; creation only, so no lock is needed."""
        path = self.dir / "refs" / "runs" / oid.hex
        tmp = path.with_name(f".{oid.hex}.{os.urandom(4).hex()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, (oid.hex + "\n").encode())
            self._fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._fsync_dir(path.parent)

    def run_ids(self) -> list[ObjectId]:
        try:
            names = os.listdir(self.dir / "refs" / "runs")
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if len(n) == 64:
                try:
                    out.append(ObjectId(bytes.fromhex(n)))
                except ValueError:
                    continue
        return out

    def has_run(self, oid: ObjectId) -> bool:
        return (self.dir / "refs" / "runs" / oid.hex).exists()


def text_name(name: str) -> bool:
    """Whether a ref's file name is text (UTF-8): one that is not (its undecodable bytes
    read as surrogates) cannot be an index row, and fsck names it."""
    try:
        name.encode()
        return True
    except UnicodeEncodeError:
        return False


def _is_file(ent: os.DirEntry) -> bool:
    """Whether a listed entry is a file (a link to one included); a link that cannot be
    followed (a loop: ELOOP) is not, and ``mlvc fsck`` names it. It made every query fail."""
    try:
        return ent.is_file()
    except OSError:
        return False
