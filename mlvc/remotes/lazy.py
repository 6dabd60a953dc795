"""A lazy clone's promises: large files left on the remote, fetched when first read.

``mlvc clone --lazy`` fetches run records, trees, environments, metric series and files
under ``LAZY_FROM`` bytes; larger files stay on the remote. The store counts an object as
present when the remote's cached index files list it (``promised``) and, on the first read
of one, calls ``fetch``, which brings it (and its chunks) through the same verified path as
``mlvc fetch``. The marker ``.mlvc/remotes/<name>/lazy`` says which remote promised; the
repository opener (mlvc.api) installs a ``Promisor`` on the store, which never imports this
layer.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..core.ids import ObjectId
from ..store.locks import writing
from .fetch import FetchReport, _Walk, walk_listed
from .state import RemoteState

LAZY_FROM = 1 << 20
MARKER = "lazy"


def promisor_of(layout, store) -> Promisor | None:
    """The promisor of a lazy clone's repository, or None."""
    base = layout.dir / "remotes"
    try:
        names = sorted(p.parent.name for p in base.glob(f"*/{MARKER}"))
    except OSError:
        return None
    return Promisor(layout, store, names[0]) if names else None


def mark_lazy(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    (cache / MARKER).write_text("large files stay on this remote until read\n")


class Promisor:
    """What the remote ``name`` promised this store, and how to keep the promise."""

    def __init__(self, layout, store, name: str):
        self.layout, self.store, self.name = layout, store, name
        self.cache = layout.remote(name)
        self._state: RemoteState | None = None
        self._stamp = None
        self._lock = threading.Lock()

    def _cached(self) -> RemoteState:
        folder = self.cache / "packs"
        try:
            stamp = folder.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if self._state is None or stamp != self._stamp:
            self._state, self._stamp = RemoteState.cached(self.name, self.cache), stamp
        return self._state

    def promised(self, oid: bytes) -> bool:
        return self._cached().has(oid)

    def fetch(self, oid: bytes) -> bool:
        """Bring one promised object (and its chunks), verified; True once it is here."""
        from . import config
        from .fs import open_transport

        with self._lock:
            if self.store._has_record(oid):
                return True
            transport = open_transport(config.get(self.layout, self.name))
            state = RemoteState.load(transport, self.name, self.cache)
            report = FetchReport(self.name, transport.url)
            walk = _Walk(self.store, state, transport, self.name, report)
            with writing(self.layout.dir, self.store):
                walk_listed(walk, {ObjectId(oid)}, self.cache)
            return self.store._has_record(oid)
