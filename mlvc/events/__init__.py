"""Events (coming, issue 14): the lifecycle tells people when it changes.

Terms: an *event* (``run.finished``, ``model_version.created``...) is written with the change
that caused it, journal style, under ``.mlvc/events/``; *hooks* are executables in
``.mlvc/hooks/`` that receive it; *webhooks* are delivered by a detached worker from a
durable outbox; *alerts* are rules over metrics evaluated after ingest. This layer sits
beside the workspace: recorders above it emit, nothing below imports it.
"""
