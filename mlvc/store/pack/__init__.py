"""Pack files: objects appended to one file per writer, found through sorted index files.

The public surface is the store (``store.PackedStore``) and the two maintenance verbs that
fsck and gc use (``repair_for_fsck``, ``index_torn_packs``); the index file format
(``index``) and the scanner (``scan``) are private to this package.
"""

__all__ = ["index_torn_packs", "repair_for_fsck"]


def __getattr__(name: str):
    """The scanner's verbs, imported when fsck or gc first asks (a commit never does)."""
    if name in __all__:
        from . import scan

        return getattr(scan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
