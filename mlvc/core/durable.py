"""Writing a file so that a reader (or a machine that lost power) sees all of it or none:
a temporary file, fsync, rename over the target, fsync of the folder."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(
    path: Path,
    data: bytes,
    *,
    tmp_dir: Path | None = None,
    tmp_prefix: str | None = None,
    mode: int = 0o644,
    sync: bool = True,
) -> None:
    """Replace ``path`` with ``data`` atomically. The temporary file goes in ``tmp_dir`` (on
    the same filesystem) or beside ``path`` as a dot file, its name starting ``tmp_prefix``
    (default: the target's name); ``mode`` applies from its creation
    (a secret is never readable by others, even for a moment). ``sync=False`` when the caller
    makes it durable otherwise (a later filesystem sync) or may lose it."""
    folder = tmp_dir if tmp_dir is not None else path.parent
    tmp = folder / f"{tmp_prefix or '.' + path.name + '.'}{os.getpid()}-{os.urandom(6).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)
