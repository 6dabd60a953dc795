"""Where a symbolic link leads, decided before a link is recorded or written.

One rule per side:

- **Commit** records a link only if its target is relative, names neither ``.git`` nor
  ``.mlvc``, and, read as a path, climbs with ``..`` only at its start and never above the
  project root (``record_problem``). ``a/../b`` is refused: if ``a`` is itself a link, ``..``
  leaves wherever ``a`` leads, which a lexical reading cannot see. Links obeying this rule stay
  inside the folder whatever links they pass through, as long as those obey it too, so a run
  checks out into an empty folder (all of it, or any of its sections) without a refusal.
- **Checkout** resolves each link it is about to write as the kernel will (``why_outside``):
  component by component, following every link met on the way (the run's, and those already
  in the destination), and refuses one that leaves the target or passes through ``.git`` or
  ``.mlvc``. This is exact for the state checkout leaves, so a crafted run cannot escape.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..core.objects import is_reserved_name

MAX_HOPS = 40  # links followed while resolving one path (the kernel's ELOOP limit)
PATH_MAX = 4096  # bytes in a path, with its terminating NUL (Linux)
NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, tmpfs)


def shown(text: str, limit: int = 120) -> str:
    """A name or link target from a run, safe to print: control characters escaped, cut."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def record_problem(rel: str, target: str) -> str | None:
    """Why the link at project-relative ``rel`` holding ``target`` may not be recorded."""
    if not target or "\0" in target:
        return "has an empty target"
    if target.startswith("/"):
        return "points outside the project (an absolute target)"
    ups, named = 0, False
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            named = True
            if is_reserved_name(part):
                return f"points into {part} (git's or mlvc's own folder)"
        elif named:
            return (
                "may lead outside the project ('..' after a name climbs out of wherever that "
                "name links to, which can be outside)"
            )
        else:
            ups += 1
            if ups > rel.count("/"):
                return "points outside the project"
    return None


def why_outside(rel: str, target: str, link_at: Callable[[str], str | None]) -> str | None:
    """Why the link at ``rel`` holding ``target`` leads outside its folder, or None.

    ``link_at(path)`` gives the target of the link at a relative path (whose components
    are never links themselves: they are resolved first), or None if no link is there.
    """
    if not target or "\0" in target:
        return "its target is empty"
    if len(target.encode(errors="surrogateescape")) >= PATH_MAX:
        return "its target is too long"
    if target.startswith("/"):
        return "absolute link targets are not allowed"
    here = rel.split("/")[:-1]
    todo = deque(target.split("/"))
    hops, via = 0, ""
    while todo:
        part = todo.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                return f"it points outside the checkout{via}"
            here.pop()
            continue
        if is_reserved_name(part):
            return f"it points into {shown(part)} (git's or mlvc's own folder){via}"
        here.append(part)
        path = "/".join(here)
        link = link_at(path)
        if link is None:
            continue
        hops += 1
        if hops > MAX_HOPS:
            return "it goes round a loop of links"
        via = f" (through {shown(path)} -> {shown(link)})"
        if not link or link.startswith("/"):
            return f"it leads outside the checkout{via}"
        here.pop()
        todo.extendleft(reversed(link.split("/")))
    return None
