"""Ingesting runs whose rows the caller already holds: an importer's batch, ingested from the
run objects and metric series it has just written, kept in memory, instead of reading the
series blobs back from the store and decoding their Parquet again.

Only the journal's runs are ingested, as ``Writer.ingest`` does: the runs given are a hint
for the decoding, never a way in. A run given with its series is decoded as ``decode`` would
decode it from the store (``_Decoder``), its series table standing in for the blob; any other
run of the journal (another writer's) is decoded from the store as usual. A crash leaves the
journal entries, which the next ingest applies from the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from ..core.ids import ObjectId
from .decode import _cast_as, _Decoder, _series_schema, no_gc
from .ingest import BATCH_POINTS, Writer, _Seen
from .schema import DECODED, arrow_schema

if TYPE_CHECKING:
    import pyarrow as pa

    from ..core.objects import Run

# run id (hex) -> (its run object, its series points: key, step, timestamp µs, value; or None)
Known = Mapping[str, "tuple[Run, pa.Table | None]"]


class BulkWriter(Writer):
    """``Writer`` whose new runs found in ``known`` are decoded from memory."""

    def __init__(self, path, journal, store, refs, workers: int, known: Known):
        super().__init__(path, journal, store, refs, workers)
        # a run naming a series given without its points is decoded from the store
        self.known = {k: v for k, v in known.items() if v[0].series is None or v[1] is not None}

    def _insert_runs(self, con, run_ids: list[ObjectId], fresh: bool = False, workers=None) -> None:
        mine = [oid for oid in run_ids if oid.hex in self.known]
        rest = [oid for oid in run_ids if oid.hex not in self.known]
        if rest or not mine:
            super()._insert_runs(con, rest, fresh, workers)
        if not mine:
            return
        schemas = {t: arrow_schema(con, t) for t in set(DECODED)}
        seen = _Seen(con, fresh and not rest)  # fresh: the index holds only this ingest's
        with no_gc():
            self._insert_decoded(con, schemas, _decode(schemas, mine, self.known), seen)


def _decode(schemas: dict, oids: list[ObjectId], known: Known):
    """``decode.decode_runs`` of runs held in memory: batches of at most BATCH_POINTS points
    (but for one huge run)."""
    decoder = _Decoder(schemas)
    series_col = schemas["runs"].get_field_index("series_id")
    for oid in oids:
        run, points = known[oid.hex]
        rows = decoder.rows["runs"]
        before = len(rows)
        decoder.add(oid, replace(run, series=None), None)
        added = len(rows) > before and rows[-1][0] == oid.hex
        if added and run.series is not None:  # the row names the blob the run names
            rows[-1] = (*rows[-1][:series_col], run.series.hex, *rows[-1][series_col + 1 :])
            if points is not None and len(points):
                table = _cast_as(points.select(["key", "step", "value", "timestamp"]),
                                 _series_schema())  # fmt: skip
                decoder.series.append((oid.hex, table))
                decoder.points += len(table)
        if decoder.points >= BATCH_POINTS:
            yield decoder.batch()
            decoder = _Decoder(schemas)
    if decoder.runs:
        yield decoder.batch()
