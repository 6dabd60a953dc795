"""Start a detached helper process (MODULE run as ``__main__`` with ARGS) that outlives its parent.

Used by the index worker (mlvc.index.worker), the webhook deliverer (mlvc.events.deliver) and
the alert watcher (mlvc.runs.watch), which leave their failures with mlvc.core.crashlog: all
are started by a process that must not wait for them (a commit, a training loop), so the
child gets its own session, no terminal, and only the descriptors it is handed (an fd
holding a flock: the lock belongs to the open file description, so it stays held by the
child after the parent closes its copy).

A commit starts two of them (the index worker, and the deliverer when no deliverer runs).
Two process starts back to back cost a commit far more than one (the second fork and exec
compete on the CPU with the first child's start), so inside ``gathered()`` the starts are
collected and made at its end as **one** process, which runs each module's
``main(root, fd)`` in a thread of its own (``mlvc.core.spawn JOBS_JSON``). This
module names the modules only as strings: it imports none of them.
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class _Job:
    module: str
    args: list  # str, or int for a descriptor handed over (a dup owned by the gathering)
    fds: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


_gathering: contextvars.ContextVar[list[_Job] | None] = contextvars.ContextVar(
    "mlvc_spawn_gathering", default=None
)


def spawn_detached(
    module: str,
    args: Sequence[str],
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
) -> bool:
    """Run ``module`` as ``__main__`` with ``args`` detached (own session, no stdio); True if started.

    ``env`` is added to this process's environment for the child. Inside ``gathered()`` the
    start is made at its end (True then means: will be started); a descriptor in
    ``pass_fds`` must then be named in ``args`` by its number, and ``module`` must have a
    ``main(root, fd)`` (the caller may close its copy of the fd at once: a duplicate is
    kept until the start).
    """
    jobs = _gathering.get()
    if jobs is not None:
        kept = {str(fd): os.dup(fd) for fd in pass_fds}
        argv = [kept.get(a, a) for a in map(str, args)]
        jobs.append(_Job(module, argv, list(kept.values()), dict(env or {})))
        return True
    return _start([module, *map(str, args)], pass_fds, env)


def own_python(code: str) -> list[str]:
    """The command that runs ``code`` in this interpreter with this process's mlvc first on
    sys.path. Not ``python -m``: that puts the working directory first, so an ``mlvc`` folder
    in a user's project (another checkout, or a hostile clone) would run in mlvc's place."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [sys.executable, "-c", f"import sys; sys.path[0] = {root!r}; {code}"]


def _start(argv: list[str], pass_fds: Sequence[int], env: Mapping[str, str] | None) -> bool:
    import subprocess

    # the module and its arguments stay words of the command line (``ps`` shows them)
    run = "import runpy; runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
    try:
        subprocess.Popen(
            [*own_python(run), *argv],
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


@contextmanager
def gathered() -> Iterator[None]:
    """Collect the detached starts made inside into one process started at the end (even
    when the body raises: a start promised is made). Nested: the outermost one starts."""
    if _gathering.get() is not None:
        yield
        return
    jobs: list[_Job] = []
    token = _gathering.set(jobs)
    try:
        yield
    finally:
        _gathering.reset(token)
        start_gathered(jobs)


def start_gathered(jobs: list[_Job]) -> bool:
    """Start ``jobs`` as one process (a single job as itself); closes their descriptors
    here, which the child holds by then. False if the start failed: the locks the jobs
    held are let go, and their work waits for the next start (the index journal, the
    event journal)."""
    if not jobs:
        return True
    env: dict[str, str] = {}
    for job in jobs:
        env.update(job.env)
    fds = [fd for job in jobs for fd in job.fds]
    clash = any(env[k] != v for job in jobs for k, v in job.env.items())
    try:
        if len(jobs) == 1 or clash:  # jobs wanting different values of a variable
            return all([_start([j.module, *map(str, j.args)], j.fds, j.env) for j in jobs])
        spec = json.dumps([[j.module, j.args] for j in jobs])
        return _start([__name__, spec], fds, env)
    finally:
        for fd in fds:
            os.close(fd)


def run_jobs(spec: str) -> int:
    """The child of a gathered start: each job's ``module.main(*args)`` in a thread of its
    own (the first job in this thread); the highest exit status."""
    import importlib
    import threading

    jobs = json.loads(spec)
    codes = [1] * len(jobs)

    def run(i: int, module: str, args: list) -> None:
        codes[i] = importlib.import_module(module).main(*args) or 0

    threads = [
        threading.Thread(target=run, args=(i, *job), name=job[0]) for i, job in enumerate(jobs)
    ]
    for t in threads[1:]:
        t.start()
    run(0, *jobs[0])
    for t in threads[1:]:
        t.join()
    return max(codes)


if __name__ == "__main__":
    sys.exit(run_jobs(sys.argv[1]))
