"""The command server's file-system monitor: the data folders a served command walked are
watched with inotify, so that the next command walks again only the folders that changed
(git's fsmonitor--daemon is the model). Only through ``mlvc daemon``: a process that starts,
walks and ends has nothing to keep watches in.

**The server** (``Watcher``, single-threaded, in mlvc.launch.server's select loop) holds, per
watched root (a data folder of a project, e.g. ``data``): a watch on each of its folders,
the last listing a command reported for it (the C walk's tuples by folder) with the
*token* it is valid at, and per folder the generation of its last event. Generations
count up: every answer to a command's question (below) first reads every queued event
(a change whose system call has returned is in the queue: inotify is told synchronously)
and marks each event's folder with the current generation, then hands out that
generation as a token and counts one up. So a folder whose mark is at most a listing's
token has not changed since a walk that began after that token was handed out.

**A command** (``Session``, ``SESSION`` in the fork that runs it) asks before each walk of a root,
over its own socket pair: "which folders of this root changed since the token of the
listing I hold?" (it holds the listing the fork copied). It walks those folders again,
each alone (``mlvc._walk.walk`` with MODE_ONE), takes the others from the listing, and
writes what it walked again, with the token the answer gave, to a report descriptor the
server reads when the command ends. The listing's walk order and bytes are what a full
walk returns, so what a commit builds from it (folder signatures, the tree cache) is
unchanged. Asking at walk time, not at the fork, is what makes a command's own earlier
changes (a pre-commit hook rewriting a data file) count.

**Never trusted**, so walked in full (the old listing dropped, the watches made again
from the next full walk): a root on a file system that is not local (NFS, SMB, FUSE: a
change made on another machine is not seen); one that would take the server past
MAX_FOLDERS watches or WATCH_SHARE of the user's inotify watches; one holding a mount
point; one whose folder is another inode than the one watched; any folder created,
deleted or moved inside it (its set of folders is then fixed while it is trusted); a
queue overflow (every root); a change of the mount table. A folder holding a regular file
with other hard links is walked every time (a write through the other name is told to
the other folder's watchers); a link made from outside raises no event in the folder, so
that rule applies from the folder's next walk. A root's first walk through the server is untrusted by construction: it is
watched only once its folders are known, so the second walk makes the first trusted
listing and the third is the first to use it. Its watches are added WATCH_BATCH per turn
of the server's loop (``Watcher.work``), parents first, and its listings count only from
the first answer after the last one is added. Not seen by inotify, as by git's monitor:
writes through a shared ``mmap`` that are never followed by a ``write``, ``utime`` or
close (the file's mtime moves at writeback without an event); writes through a loop device
backed by the file, or by NFS clients of a folder this machine exports. ``MLVC_FSMONITOR=0`` in a
command's environment makes it walk in full.
"""

from __future__ import annotations

import contextvars
import marshal
import os
import socket
import struct
import threading
import time

from .localfs import LOCAL
from .speedups import extension

# inotify(7) event bits (the Linux ABI)
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_UNMOUNT = 0x400, 0x800, 0x2000
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x4000, 0x8000, 0x40000000
IN_ONLYDIR, IN_DONT_FOLLOW = 0x01000000, 0x02000000
MASK = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
    | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
)  # fmt: skip
# a folder's own set of folders changed, or it is gone: the root is dropped
STRUCTURE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
DIR_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows

MODE_ONE, MODE_SHARED = 1, 2  # mlvc._walk.walk modes
BATCH = 65536  # mlvc._walk's default batch
MAX_FOLDERS = 100_000  # watches one root may take (each costs the kernel ~1 KiB)
WATCH_SHARE = 0.5  # of the user's inotify watches (fs.inotify.max_user_watches) we may hold:
# editors and other tools of the same user need the rest
RECORD = struct.Struct(">I")  # a report record's length
ASK_TIME = 1.0  # seconds a command waits for the server's answer before walking in full
RETIRE_BATCH = 1000  # watches removed per drain (each removal queues an IN_IGNORED event:
# removing a big root's at once overflowed the queue, which forgets every root)
REFUSE_FOR = 60.0  # seconds a refused root is not tried again (nesting, the budget...)
MAX_ANSWER = 1 << 16  # bytes of an answer (a datagram); more changed folders: walk in full
WATCH_BATCH = 2000  # watches added per turn of the server's loop (~35 ms): a new root of
# 20k folders took ~350 ms at once, during which the server answered nothing
PENDING = 1 << 62  # a root's ``since`` while its watches are being added (never trusted)

# the served command's line to the monitor: set by the server in the fork that runs it
SESSION: contextvars.ContextVar[Session | None] = contextvars.ContextVar("fsmonitor", default=None)


class Root:
    """A watched data folder: ``key`` (project root, path below it), ``ident`` (device,
    inode) of the folder, ``since`` (the generation its watches were complete at),
    ``wds`` (folder -> watch), ``listing`` (folder -> the walk's tuple, in walk order)
    valid at ``token``, ``marks`` (folder -> generation of its last event), ``queue``
    (folders still to watch, last first; ``since`` is PENDING until it is empty)."""

    __slots__ = ("key", "ident", "since", "wds", "listing", "token", "marks", "queue")

    def __init__(self, key: tuple[str, str], ident: tuple[int, int], queue: list[str]):
        self.key, self.ident, self.since = key, ident, PENDING
        self.wds: dict[str, int] = {}
        self.listing: dict[str, tuple] | None = None
        self.token = 0
        self.marks: dict[str, int] = {}
        self.queue = queue[::-1]


class Watcher:
    """The server's side: watches, marks, listings; single-threaded."""

    def __init__(self, walker):
        self.c = walker
        self.fd = walker.watch_open()
        self.gen = 1
        self.roots: dict[tuple[str, str], Root] = {}
        self.by_wd: dict[int, tuple[Root, str]] = {}
        self.refused: dict[tuple[str, str], float] = {}  # root -> when (see ``_watch``)
        self.retired: set[int] = set()  # watches of dropped roots, removed a batch a drain
        self.pending: list[Root] = []  # roots whose watches are being added (``work``)
        self.mounts = _mounts()
        self.budget = min(MAX_FOLDERS, int(_user_watches() * WATCH_SHARE))
        self.walks = 0  # walks answered
        self.reused = 0  # folders commands took from a listing instead of walking

    def close(self) -> None:
        os.close(self.fd)

    # -- events ---------------------------------------------------------------------------

    def drain(self) -> None:
        """Read every queued event, marking folders or dropping roots."""
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:  # the queue cannot be read: nothing it held is known
                self._forget_all()
                return
            at = 0
            while at + EVENT.size <= len(data):
                wd, mask, _cookie, n = EVENT.unpack_from(data, at)
                at += EVENT.size + n
                self._event(wd, mask)
        for _ in range(min(RETIRE_BATCH, len(self.retired))):  # the queue is empty now
            try:
                self.c.watch_remove(self.fd, self.retired.pop())
            except OSError:  # gone with its folder already
                pass

    def _forget_all(self) -> None:
        for root in list(self.roots.values()):
            self.drop(root)

    def _event(self, wd: int, mask: int) -> None:
        if mask & IN_Q_OVERFLOW:  # events were lost: nothing is known
            self._forget_all()
            return
        hit = self.by_wd.get(wd)
        if hit is None:  # a watch dropped already (its IN_IGNORED, late events)
            return
        root, folder = hit
        if mask & STRUCTURE or (mask & IN_ISDIR and mask & DIR_EVENTS):
            self.drop(root)
        else:
            root.marks[folder] = self.gen

    def drop(self, root: Root) -> None:
        """Forget a root: its listing and marks (its next walk is in full); its watches
        are removed by the next drains, a batch at a time."""
        for wd in root.wds.values():
            if self.by_wd.pop(wd, None) is not None:
                self.retired.add(wd)
        root.wds.clear()
        self.roots.pop(root.key, None)

    # -- a command's question and report ---------------------------------------------------

    def answer(self, question: bytes) -> bytes:
        """What a command asks before it walks a root: ``(key, ident, token)`` of the listing
        it holds (token 0: none). The answer: ``(token, changed)``, ``changed`` the folders
        with an event since its token, or None when its listing cannot be trusted."""
        key, ident, held = marshal.loads(question)
        self.drain()
        if self.roots and _mounts() != self.mounts:  # a mount inside a root is not an event
            self.mounts = _mounts()
            self._forget_all()
        token = self.gen
        self.gen += 1
        self.walks += 1
        root = self.roots.get((key[0], key[1]))
        changed = None
        if root is not None and held and root.ident == tuple(ident) and root.since <= held:
            changed = [f for f, m in root.marks.items() if m > held]
        answer = marshal.dumps((token, changed))
        return answer if len(answer) <= MAX_ANSWER else marshal.dumps((token, None))

    def collect(self, fd: int) -> None:
        """Read the reports a command wrote to ``fd`` (records ``_record`` made)."""
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0) if size else b""
        at = 0
        while at + RECORD.size <= len(data):
            (n,) = RECORD.unpack_from(data, at)
            at += RECORD.size
            if at + n > len(data):  # cut short (the command was killed while writing)
                break
            try:
                key, ident, token, base, folders, reused = marshal.loads(data[at : at + n])
            except (ValueError, EOFError, TypeError):
                break
            at += n
            self.reused += reused
            self._report((key[0], key[1]), tuple(ident), token, base, folders)

    def _report(self, key, ident, token: int, base: int, folders: list[tuple]) -> None:
        """A walk of ``key`` at ``token``: every folder's tuple (``base`` 0), or those walked
        again since the listing at ``base``."""
        root = self.roots.get(key)
        if root is not None and root.ident != ident:
            self.drop(root)
            root = None
        if root is None:
            if not base and time.monotonic() - self.refused.get(key, -REFUSE_FOR) >= REFUSE_FOR:
                self.refused.pop(key, None)
                self._watch(key, ident, [t[0] for t in folders])
            return
        if token < root.since:
            return  # walked before the watches were complete: the next walk is trusted
        if base:
            if root.listing is None or root.token != base:
                return  # another command's report replaced that listing meanwhile
            listing = dict(root.listing)
            listing.update((t[0], t) for t in folders)
        else:
            listing = {t[0]: t for t in folders}
        if listing.keys() != root.wds.keys():  # a folder made before its parent was watched
            self.drop(root)
            return
        if token > root.token:
            root.listing, root.token = listing, token

    def _watch(self, key, ident, folders: list[str]) -> None:
        """Watch every folder of a root a full walk listed (parents first, so a folder
        replaced meanwhile is an event of its watched parent); refuse roots that cannot
        be trusted (see the module's docstring)."""
        base, rel = key
        top = os.path.join(base, rel)
        mounts = _mounts()
        if mounts != self.mounts:  # what is watched was watched under another table
            self._forget_all()
            self.mounts = mounts
        for other in list(self.roots.values()):  # one watch per folder: the root walked
            o = os.path.join(*other.key)  # last wins over one nested in it or holding it
            if top == o or top.startswith(o + os.sep) or o.startswith(top + os.sep):
                self.drop(other)
        try:
            st = os.lstat(top)
            if (st.st_dev, st.st_ino) != ident or self.c.fs_magic(top) not in LOCAL:
                raise _Refused
            queued = sum(len(r.queue) for r in self.pending)
            if len(folders) + len(self.by_wd) + len(self.retired) + queued > self.budget:
                raise _Refused
            if _mounted_at_or_below(mounts, os.path.realpath(top)):
                raise _Refused  # a mounted file or folder: its events go elsewhere
        except _Refused:
            self.refused[key] = time.monotonic()
            return
        except OSError:  # gone meanwhile: a later walk tries again
            return
        root = self.roots[key] = Root(key, ident, folders)
        self.pending.append(root)
        self._add_watches(root)

    def work(self) -> None:
        """Add the next WATCH_BATCH watches of the roots being watched (the server calls it
        between its other work while ``pending`` holds any)."""
        while self.pending:
            root = self.pending[0]
            if self.roots.get(root.key) is not root:  # dropped meanwhile
                self.pending.pop(0)
                continue
            self._add_watches(root)
            return

    def _add_watches(self, root: Root) -> None:
        """Up to WATCH_BATCH of ``root``'s folders watched, parents first (a folder made,
        removed or moved meanwhile is an event of its watched parent, which drops the
        root); once all are, its listings may be trusted from the next generation on."""
        base, ident = root.key[0], root.ident
        try:
            for _ in range(min(WATCH_BATCH, len(root.queue))):
                folder = root.queue.pop()
                path = os.path.join(base, folder)
                if os.lstat(path).st_dev != ident[0]:  # a mount point inside it
                    raise _Refused
                wd = self.c.watch_add(self.fd, path, MASK)  # an existing watch: its wd
                self.retired.discard(wd)
                if wd in self.by_wd:  # this folder is watched already, by another path
                    other = self.by_wd[wd][0]
                    if other is root:  # twice in this root: a bind mount inside it
                        raise _Refused
                    # the project moved (its old root's paths are stale), or one folder
                    # is reached by two paths: the newest walk wins the watch
                    self.drop(other)
                    self.retired.discard(wd)
                root.wds[folder] = wd
                self.by_wd[wd] = (root, folder)
        except _Refused:
            self.drop(root)
            self.refused[root.key] = time.monotonic()
        except OSError as e:  # ENOSPC: the user's watch limit; others: changed meanwhile
            self.drop(root)
            if e.errno == 28:
                self.refused[root.key] = time.monotonic()
        if root.queue or self.roots.get(root.key) is not root:
            return
        root.since = self.gen  # a walk from the next answer on sees every later change
        self.pending.remove(root)

    def status(self) -> str:
        return f"watched={len(self.roots)} walks={self.walks} reused={self.reused}"


class _Refused(Exception):
    pass


def _user_watches() -> int:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 8192  # the kernel's old default


def _mounted_at_or_below(mountinfo: bytes, top: str) -> bool:
    """Whether the mount table (/proc/self/mountinfo) has a mount point at ``top`` or
    below it (a bind-mounted file's events go to its source folder's watchers)."""
    below = os.fsencode(top.rstrip("/") + "/")
    for line in mountinfo.splitlines():
        fields = line.split(b" ")
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point == below[:-1] or point.startswith(below):
                return True
    return False


def _unescape(field: bytes) -> bytes:
    """A mountinfo path: space, tab, newline and backslash are written as octal escapes."""
    if b"\\" not in field:
        return field
    out, i = bytearray(), 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            out += field[i : i + 1]
            i += 1
    return bytes(out)


def _mounts() -> bytes:
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            return f.read()
    except OSError:
        return b""


def start() -> Watcher | None:
    """A watcher for the server, or None (no C walk, no inotify, ``MLVC_FSMONITOR=0``)."""
    if os.environ.get("MLVC_FSMONITOR") == "0":
        return None
    walker = extension("mlvc._walk")
    if walker is None or not hasattr(walker, "watch_open"):
        return None
    try:
        return Watcher(walker)
    except OSError:
        return None


class Session:
    """A served command's side: the listings its fork copied, a socket to ask the server,
    a descriptor to report to."""

    def __init__(self, watcher: Watcher, ask: socket.socket, report: int):
        self.roots = watcher.roots
        self.ask, self.report = ask, report
        self.lock = threading.Lock()  # one question at a time on the socket

    def walk(self, walker, base: str, rel: str, junk) -> list[tuple]:
        """``walker.walk(base, rel, junk)``'s answer, walking again only what changed."""
        with self.lock:
            return self._walk(walker, base, rel, junk)

    def _walk(self, walker, base: str, rel: str, junk) -> list[tuple]:
        key = (base, rel)
        try:
            st = os.lstat(os.path.join(base, rel))
        except OSError:
            return walker.walk(base, rel, junk)  # raises as a walk does
        if self.ask is None or not os.path.isabs(base):  # the server resolves no cwd
            return walker.walk(base, rel, junk)
        ident = (st.st_dev, st.st_ino)
        root = self.roots.get(key)
        held = root if root is not None and root.listing is not None else None
        try:
            token, changed = self._ask(key, ident, held.token if held else 0)
        except (OSError, ValueError, EOFError, TypeError):  # no server to ask: walk in full
            self.ask.close()  # and never again: a late answer would answer the next question
            self.ask = None
            return walker.walk(base, rel, junk)
        found = None
        if held is not None and changed is not None:
            found = _again(walker, base, junk, held.listing, changed)
        if found is None:
            out = walker.walk(base, rel, junk, BATCH, MODE_SHARED)
            self._record(key, ident, token, 0, out, 0)
        else:
            out, again = found
            self._record(key, ident, token, held.token, again, len(out) - len(again))
        return [t[:5] for t in out]

    def _ask(self, key, ident, held: int) -> tuple[int, list | None]:
        self.ask.settimeout(ASK_TIME)
        self.ask.sendall(marshal.dumps((key, ident, held)))
        return marshal.loads(self.ask.recv(1 << 24))

    def _record(self, key, ident, token, base, folders, reused) -> None:
        body = marshal.dumps((key, ident, token, base, folders, reused))
        try:
            os.write(self.report, RECORD.pack(len(body)) + body)
        except OSError:
            pass


def _again(walker, base: str, junk, listing: dict, changed: list[str]):
    """(every folder's tuple, the tuples walked again) from ``listing`` with the folders
    ``changed`` (and those holding multiply-linked files) walked again, each alone; None
    when a folder walked again does not have the subfolders the listing has (walk in
    full)."""
    again = set(changed)
    again.update(f for f, t in listing.items() if t[5])
    if not again:
        return list(listing.values()), []
    subs: dict[str, set[str]] = {}
    for folder in listing:
        parent = folder.rpartition("/")[0]
        if parent in listing:
            subs.setdefault(parent, set()).add(folder)
    fresh = {}
    for folder in again:
        if folder not in listing:
            return None
        try:
            (one,), below = walker.walk(base, folder, junk, BATCH, MODE_ONE | MODE_SHARED)
        except (OSError, ValueError):
            return None  # a full walk raises what it must
        if set(below) != subs.get(folder, set()):
            return None
        if one[5] and not listing[folder][5]:
            # a hard link made since (inside the root: its other folder was told, not this
            # one's, and another folder may hold the file's first name): walk in full
            return None
        fresh[folder] = one
    out = [fresh.get(f, t) for f, t in listing.items()]
    return out, [fresh[f] for f in listing if f in fresh]
