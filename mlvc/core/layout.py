"""``Layout``: the one place that names what lives under ``.mlvc/``.

Every module that touches a file of the repository asks a ``Layout`` for its path, so the
on-disk format has one owner (as restic's backend layout does)::

    .mlvc/
      config              format version and hash algorithm (RepoConfig)
      objects/            loose objects ab/cdef...; objects/pack/ packs and their indexes
      refs/ HEAD logs/    refs and their reflogs (mlvc.refs)
      journal/            runs recorded but not yet in the index
      index.duckdb        the index (a cache); index.lock serializes its writers
      index.worker.lock   held by the one detached index worker while it lives
      index.wanted/       markers of readers waiting for index.lock (mlvc.index.lock)
      live/               staged live runs (live/<key>/), claims and pins
      worktrees/          scratch checkouts of parallel `mlvc run -j`
      cache/files/        verified read-only copies for --link hardlink|symlink
      cache/envs/         virtualenvs rebuilt by `reproduce --env recorded`, by env id
                          (<id>/ and <id>.lock; mlvc.exec.envcache)
      statcache           path -> (stat, id) of project files (a cache)
      cache/dists         what the environment capture read of each installed distribution,
                          with the stat data it was read from (a cache; mlvc.capture.env)
      runlist             one JSON line per run: what `mlvc log` shows (a cache of run objects)
      only-checkouts      sections checked out with --only since HEAD
      remotes/<name>/     a remote's cached .idx/.runs files and the refs last seen there
      webhooks/           endpoints.json (no secrets) and its endpoints.lock, secrets/<endpoint>
                          (0600), outbox/<message>.json (deliveries due), deliveries.jsonl
                          (the attempt log), deliver.lock (held by the one deliverer: its pid)
                          (mlvc.events.webhooks, outbox, deliver); logs/hooks.log, deliver.log
      gc.lock             writers shared, gc exclusive
      publishing/         <run id>: the ref moves of a commit under way (finished if killed)
      server.lock         held by the one `mlvc server` serving the repository (its pid, URL)
      events/             <event id>.json: the event journal (mlvc.core.events)
      alerts/             state of metric alert rules per (rule, run) (mlvc.events.alerts)
      hooks/              executables run on events (mlvc.events)
      tmp/                temp files before their rename
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MLVC_DIR = ".mlvc"


@dataclass(frozen=True)
class Layout:
    """Paths of one repository's ``.mlvc`` folder (``dir``)."""

    dir: Path

    @classmethod
    def of(cls, root: str | os.PathLike) -> Layout:
        """The layout of the project folder ``root``."""
        return cls(Path(root) / MLVC_DIR)

    @property
    def root(self) -> Path:
        """The project folder holding ``.mlvc``."""
        return self.dir.parent

    config = property(lambda self: self.dir / "config")
    objects = property(lambda self: self.dir / "objects")
    pack = property(lambda self: self.dir / "objects" / "pack")
    tmp = property(lambda self: self.dir / "tmp")
    refs = property(lambda self: self.dir / "refs")
    logs = property(lambda self: self.dir / "logs")
    journal = property(lambda self: self.dir / "journal")
    index_db = property(lambda self: self.dir / "index.duckdb")
    index_lock = property(lambda self: self.dir / "index.lock")
    index_worker_lock = property(lambda self: self.dir / "index.worker.lock")
    live = property(lambda self: self.dir / "live")
    worktrees = property(lambda self: self.dir / "worktrees")
    cache_files = property(lambda self: self.dir / "cache" / "files")
    cache_envs = property(lambda self: self.dir / "cache" / "envs")
    statcache = property(lambda self: self.dir / "statcache")
    dists = property(lambda self: self.dir / "cache" / "dists")
    runlist = property(lambda self: self.dir / "runlist")
    only_checkouts = property(lambda self: self.dir / "only-checkouts")
    gc_lock = property(lambda self: self.dir / "gc.lock")
    publishing = property(lambda self: self.dir / "publishing")
    server_lock = property(lambda self: self.dir / "server.lock")
    events = property(lambda self: self.dir / "events")
    alerts = property(lambda self: self.dir / "alerts")
    hooks = property(lambda self: self.dir / "hooks")
    worker_log = property(lambda self: self.dir / "logs" / "index-worker.log")
    merge_log = property(lambda self: self.dir / "logs" / "pack-merge.log")
    webhooks = property(lambda self: self.dir / "webhooks")
    webhook_endpoints = property(lambda self: self.dir / "webhooks" / "endpoints.json")
    webhook_secrets = property(lambda self: self.dir / "webhooks" / "secrets")
    outbox = property(lambda self: self.dir / "webhooks" / "outbox")
    deliveries = property(lambda self: self.dir / "webhooks" / "deliveries.jsonl")
    deliver_lock = property(lambda self: self.dir / "webhooks" / "deliver.lock")
    deliver_log = property(lambda self: self.dir / "logs" / "deliver.log")
    webhooks_lock = property(lambda self: self.dir / "webhooks" / "endpoints.lock")
    hooks_log = property(lambda self: self.dir / "logs" / "hooks.log")

    def remote(self, name: str) -> Path:
        """The cache of the remote ``name``: its index and runs files, its refs last seen."""
        return self.dir / "remotes" / name

    def staged(self, key: str) -> Path:
        """The folder of the staged live run ``key``."""
        return self.live / key


def find_root(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) that holds
    ``.mlvc/config``, or None."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MLVC_DIR / "config").is_file():
            return folder
    return None
