"""Start a detached helper process (``python -m MODULE ARGS...``) that outlives its parent.

Used by the index worker (mlvc.index.worker), the webhook deliverer (mlvc.events.deliver) and
the alert watcher (mlvc.runs.watch), which leave their failures with mlvc.core.crashlog: all
are started by a process that must not wait for them (a commit, a training loop), so the
child gets its own session, no terminal, and only the descriptors it is handed (an fd
holding a flock: the lock belongs to the open file description, so it stays held by the
child after the parent closes its copy).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence


def spawn_detached(
    module: str,
    args: Sequence[str],
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
) -> bool:
    """Run ``python -m module *args`` detached (own session, no stdio); True if started.

    ``env`` is added to this process's environment for the child.
    """
    import subprocess

    try:
        subprocess.Popen(
            [sys.executable, "-m", module, *map(str, args)],
            pass_fds=tuple(pass_fds),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **(env or {})},
        )
        return True
    except OSError:
        return False
