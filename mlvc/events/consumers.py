"""The seam between emitting an event and reacting to it.

``emit`` calls ``wake(ctx, event)`` once the event is durable in the journal. Reacting
belongs here: starting the detached webhook deliverer, running ``.mlvc/hooks/`` post-event
hooks (branch events-delivery fills this in). Rules for what goes here: no network I/O and
nothing slow in the caller's process (spawn a detached worker instead), and nothing that
raises for a consumer's own failure (``emit`` logs one as a warning anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.events import Event
    from ..workspace.context import RepoContext


def wake(ctx: RepoContext, event: Event) -> None:
    """React to ``event``, just written to the journal. No consumers yet: a no-op."""
    return None
