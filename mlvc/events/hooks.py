"""Hooks, as git has them: executables in ``.mlvc/hooks/`` named after what they react to.

- ``.mlvc/hooks/<event type>`` (``run.finished``, ``model_version.created``...) runs after
  the event is recorded, with the event's JSON on stdin, detached: it never blocks the
  process that emitted (a commit, a training loop). Its output is appended to
  ``.mlvc/logs/hooks.log``.
- ``pre-commit``, ``pre-alias`` and ``pre-push`` run before the change, synchronously, with
  what is about to happen as JSON on stdin, and veto it with a non-zero exit: the change does
  not happen, and ``HookRejected`` carries the hook's message. They are killed after
  ``MLVC_HOOK_TIMEOUT`` seconds (default 60), which vetoes too.

A hook file that is not executable is ignored with a warning, as git does. Hooks run in the
project folder with ``MLVC_HOOK`` (its name) and ``MLVC_REPO`` (the project) set.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.events import Event, event_path
from ..core.layout import Layout
from ..errors import HookRejected

log = logging.getLogger("mlvc.events")

PRE_HOOKS = ("pre-commit", "pre-alias", "pre-push")
DEFAULT_TIMEOUT = 60.0
_SHOWN_LINES = 20


def _runnable(layout: Layout, name: str) -> Path | None:
    path = layout.hooks / name
    if not path.is_file():
        return None
    if not os.access(path, os.X_OK):
        log.warning(
            "the hook %s was ignored because it is not executable (chmod +x %s to run it)",
            path,
            path,
        )
        return None
    return path


def _environ(layout: Layout, name: str, environ: Mapping[str, str] | None) -> dict[str, str]:
    return {
        **(os.environ if environ is None else environ),
        "MLVC_HOOK": name,
        "MLVC_REPO": str(layout.root),
    }


def timeout_of(environ: Mapping[str, str] | None) -> float:
    try:
        return float((environ or os.environ).get("MLVC_HOOK_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


def run_pre(
    layout: Layout, name: str, data: dict[str, Any], environ: Mapping[str, str] | None = None
) -> None:
    """Run the hook ``name`` (one of PRE_HOOKS) on ``data``; HookRejected if it exits
    non-zero or times out. No hook, or one not executable: nothing happens."""
    path = _runnable(layout, name)
    if path is None:
        return
    timeout = timeout_of(environ)
    try:
        done = subprocess.run(
            [str(path)],
            input=json.dumps({"hook": name, "data": data}, sort_keys=True, default=str).encode(),
            capture_output=True,
            cwd=layout.root,
            env=_environ(layout, name, environ),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        lines = _lines((e.stderr or b"") + (e.stdout or b""))
        raise HookRejected(name, f"timed out after {timeout:g} s", lines) from None
    except OSError as e:
        raise HookRejected(name, f"could not run ({e.strerror or e})", []) from None
    if done.returncode != 0:
        lines = _lines(done.stderr + done.stdout)
        raise HookRejected(name, f"exit {done.returncode}", lines)


def _lines(output: bytes) -> list[str]:
    text = output.decode("utf-8", "replace")
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return lines[:_SHOWN_LINES]


def run_post(layout: Layout, event: Event, environ: Mapping[str, str] | None = None) -> bool:
    """Start the hook named after ``event``'s type, detached, with the event on stdin;
    True if one was started."""
    path = _runnable(layout, event.type)
    if path is None:
        return False
    layout.hooks_log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            open(event_path(layout, event.id), "rb") as stdin,
            open(layout.hooks_log, "ab") as out,
        ):
            subprocess.Popen(
                [str(path)],
                stdin=stdin,
                stdout=out,
                stderr=out,
                cwd=layout.root,
                env={**_environ(layout, event.type, environ), "MLVC_EVENT_ID": event.id},
                start_new_session=True,
                close_fds=True,
            )
    except OSError as e:
        log.warning("the hook %s could not be started: %s", path, e)
        return False
    return True
