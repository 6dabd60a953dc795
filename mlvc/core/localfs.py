"""File systems whose every change goes through this kernel (by ``statfs`` type): it stamps
their mtimes with its own clock, coarse by one tick at most, and it sees (inotify) every
change made to them. Network and FUSE file systems are neither: their times come from
elsewhere (whole seconds on some), and changes made on other machines raise no event."""

from __future__ import annotations

import os

from .speedups import extension

LOCAL = frozenset({
    0xEF53,  # ext2/3/4
    0x58465342,  # xfs
    0x9123683E,  # btrfs
    0x01021994,  # tmpfs
    0xF2F52010,  # f2fs
    0x2FC12FC1,  # zfs
    0x794C7630,  # overlayfs (a container's own layer)
    0xCA451A4E,  # bcachefs
})  # fmt: skip


def is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies on one of LOCAL (False when it cannot be told: no C speedups,
    or ``statfs`` failed)."""
    c = extension("mlvc._walk")
    if c is None:
        return False
    try:
        return c.fs_magic(os.fspath(path)) in LOCAL
    except OSError:
        return False
