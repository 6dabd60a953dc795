"""``RepoContext``: an open repository, as every layer below the public API receives it.

It holds the narrow things those layers use — where the repository is (``layout``), the
folder runs are captured from (``root``: the project, or a scratch worktree), the object
``store``, the ``refs``, the ``settings`` read at the edge — and opens the index and the
stat cache on first use. The public ``mlvc.Repo`` owns one and passes it down; lower layers
never see ``Repo``, so they cannot reach back up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.layout import Layout
from ..core.settings import Settings
from ..refs.resolve import resolve
from ..refs.store import RefStore
from ..store.pack.store import PackedStore

if TYPE_CHECKING:
    from ..core.ids import ObjectId
    from ..index.index import Index
    from .statcache import FileHasher, StatCache


@dataclass
class RepoContext:
    layout: Layout
    root: Path
    store: PackedStore
    refs: RefStore
    settings: Settings = field(default_factory=Settings)
    _index: Index | None = field(default=None, repr=False)
    _stat_cache: StatCache | None = field(default=None, repr=False)

    @classmethod
    def open(cls, layout: Layout, settings: Settings, root: Path | None = None) -> RepoContext:
        """A context over the repository at ``layout`` (its store and refs opened here)."""
        return cls(
            layout,
            Path(root) if root is not None else layout.root,
            PackedStore(layout.objects, layout.tmp),
            RefStore(layout.dir),
            settings,
        )

    @property
    def dir(self) -> Path:
        """The ``.mlvc`` folder."""
        return self.layout.dir

    @property
    def index(self) -> Index:
        """The DuckDB index (a cache of objects and refs), opened lazily."""
        if self._index is None:
            from ..index.index import Index

            self._index = Index(self.layout.dir, self.store, self.refs, settings=self.settings)
        return self._index

    @property
    def stat_cache(self) -> StatCache:
        """(path, size, mtime, inode, ctime) -> id for the files under ``root``; a cache."""
        if self._stat_cache is None:
            from .statcache import StatCache

            self._stat_cache = StatCache(self.layout.statcache, self.root, self.layout.tmp)
        return self._stat_cache

    def file_hasher(self) -> FileHasher:
        """The hasher commits give ``build_tree``: the stat cache and the hashing threads."""
        from .statcache import FileHasher

        return FileHasher(self.store, self.stat_cache, self.settings.threads)

    def author(self) -> str:
        return self.settings.who()

    def head(self) -> ObjectId | None:
        return self.refs.read("HEAD")

    def resolve(self, spec: str) -> ObjectId:
        """A run id from anything a user may type: id, prefix, name, tag, HEAD~N."""
        return resolve(self.refs, self.store, spec)

    def with_worktree(self, path: str | os.PathLike) -> RepoContext:
        """The same store and refs, capturing runs from ``path`` (a scratch checkout)."""
        return replace(self, root=Path(path).resolve(), _index=None, _stat_cache=None)

    def fresh(self, worktree: str | os.PathLike | None = None) -> RepoContext:
        """A context with store and refs of its own (for another thread), optionally on a
        worktree."""
        ctx = RepoContext.open(self.layout, self.settings, self.root)
        return ctx.with_worktree(worktree) if worktree is not None else ctx
