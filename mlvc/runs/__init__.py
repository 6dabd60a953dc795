"""Runs: recording them, and the runs in progress.

Terms:
    run          the commit-like record of one piece of work (mlvc.core.objects.Run)
    record       store a run's objects, then publish it: journal, refs, index (record.py)
    live run     a run in progress from Python (``mlvc.start_run``, live.py)
    staged run   a run in progress on disk, ``.mlvc/live/<key>/``: a live run's, or the one
                 ``mlvc run`` stages for its command (the format: staging/)
    attached     a script under ``mlvc run`` writing into that run's staged run (attached.py)
    finish       record a staged run from what it holds, then unstage it (finish.py)
    reap         record as ``killed`` a staged run whose process died (reaper.py); only
                 commands that write reap, never reads
"""
