"""The staging format of runs in progress, ``.mlvc/live/``: this module is its one owner.

A *staged run* is the folder ``live/<key>/`` that a live run (``mlvc.start_run``) or ``mlvc
run`` writes while its run is in progress. It becomes a recorded run when the run ends, or,
when its process died, when a reaper finds it (mlvc.runs.reaper). gc reads staged runs as
roots (``roots``) and fsck checks them (``check``). No other module spells these names::

    live/<key>/meta.json            what is known of the run (below); rewritten whole, durably
    live/<key>/series/NNNNNNNN.arrow   metric points: one Arrow IPC file per flush, from 1
    live/<key>/recorded             {"id", "move_head"}: the run is stored (before any ref)
    live/<key>/attached             a process started by `mlvc run` joined it (O_EXCL claim)
    live/.reaping-<key>-<pid>-<start>   a dead run claimed by a reaper (one rename wins)
    live/.unstaged-<key>-<random>   a recorded run being removed
    live/.pin-<pid>-<random>/meta.json  {"pid", "proc_start", "ids"}: gc roots of a writer

``meta.json`` is one JSON map:

    pid, proc_start, host   the process the run belongs to (alive while it runs)
    name, message, argv, cwd, started (µs since the epoch)
    parent                  the key of the parent live run, or null
    inputs                  ``Inputs.to_dict()``: code, git, env, data and the paths
    params, tags            {key: value}
    artifacts               {path: [kind, id hex, size]}: files stored already
    models                  {name: record} noted by ``mlvc.models.log_model``
    error                   {type, message, traceback} of a run that raised
    children                ids of the child runs recorded
    mlvc_run                true when ``mlvc run`` staged it (it decides its outputs itself)
    own_outputs             true when its artifacts are only those logged to it, none of the
                            project's configured outputs (a run a server holds for a client)
    attached_name, attached_status   what a script that joined an ``mlvc run`` said

Whatever a staged run holds, reading it never fails: a reaper must record every run that
happened, whatever state its process left it in.
"""

from ...core.faults import crash_point
from .area import check, folders, kind_of, parse_claim, pin, roots
from .run import StagedRun, is_key, last_values, new_key, pid_alive, proc_start

__all__ = [
    "StagedRun",
    "check",
    "crash_point",
    "folders",
    "is_key",
    "kind_of",
    "last_values",
    "new_key",
    "parse_claim",
    "pid_alive",
    "pin",
    "proc_start",
    "roots",
]
