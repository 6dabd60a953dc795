"""Keeping a repository sound and small: ``fsck`` (check and repair), ``gc`` (remove what
nothing reaches), ``du`` (what takes the space); and ``export`` (``export_layout``: its
destination, tables and manifest; ``export_query``: reading one) and ``iceberg``, the index as
Parquet or Iceberg tables where engines bigger than one machine read it (docs/export.md).

Terms:
    reachable     named by a ref, a reflog or journal entry, a live run or a pin, or inside
                  something that is
    grace period  how young an unreachable object must be to be kept anyway (a commit may
                  be writing it); ``GRACE_S`` by default, ``mlvc gc --grace`` otherwise

``GRACE_S`` lives here rather than in ``gc`` so that the CLI can show it in ``--help``
without importing the store.
"""

GRACE_S = 3600.0  # objects and packs younger than this are never removed
