"""Pack files: objects appended to one file per writer, found through sorted index files.

The public surface is the store (``store.PackedStore``) and the two maintenance verbs that
fsck and gc use (``repair_for_fsck``, ``index_torn_packs``); the index file format
(``index``) and the scanner (``scan``) are private to this package.
"""

from .scan import index_torn_packs, repair_for_fsck

__all__ = ["index_torn_packs", "repair_for_fsck"]
