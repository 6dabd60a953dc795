"""Runs, trees and envs turned into index rows: Arrow tables in the index's column order.

Pure but for reading the object store, and needing no database, so worker processes
(pool.py) can decode batches of a big rebuild in parallel. A run that cannot be read, or
holds values no column can take, becomes a row of ``ingest_errors`` instead, and never
spoils the rest of its batch.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import json
import math
import shlex
from collections.abc import Iterator

from ..core.ahead import ordered
from ..core.ids import ObjectId
from ..core.objects import Run, is_number
from ..core.series_blob import read_series
from ..errors import MlvcError
from ..store.odb import LocalStore
from ..store.typed import decode_object, read_env, walk
from .schema import RUN_ROWS, SHARED_ROWS

READ_THREADS = 8  # object reads in flight while decoding: the disk, not the CPU, is the limit


class _Rows:
    """Rows for some index tables, as tuples in each table's column order."""

    def __init__(self, schemas: dict):
        self.schemas = schemas
        self.rows = {t: [] for t in schemas}

    def error(self, run_id: str | None, object_id: str, message: str) -> None:
        self.rows["ingest_errors"].append((run_id, object_id, message))

    def table(self, name: str):
        import pyarrow as pa

        schema = self.schemas[name]
        columns = list(zip(*self.rows[name], strict=True)) or [[] for _ in schema]
        arrays = [pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)

    def tables(self) -> dict:
        return {name: self.table(name) for name in self.rows}


class _Decoder(_Rows):
    """Turns run objects and their metric series into rows; needs no database."""

    def __init__(self, schemas: dict):
        super().__init__({t: schemas[t] for t in RUN_ROWS})
        self.summary_schema = schemas["metric_summary"]
        self.series = []  # (run id, Arrow table of key, step, value, timestamp)
        self.trees: set[str] = set()
        self.envs: set[str] = set()
        self.runs = 0  # runs added (indexed, or reported in ingest_errors)
        self.points = 0  # metric rows held: series points and final metrics

    def batch(self) -> tuple[dict, list, list]:
        """The rows' tables, and the trees and envs the runs use."""
        return self.tables(), sorted(self.trees), sorted(self.envs)

    def add(self, oid: ObjectId, run, series) -> None:
        """One run, as read by ``_load``."""
        self.runs += 1
        if isinstance(run, Exception):
            self.error(oid.hex, oid.hex, f"run object unreadable: {run}")
            return
        sizes = {t: len(r) for t, r in self.rows.items()}
        n_series = len(self.series)
        try:
            self._add_run(oid.hex, run, series)
        except Exception as e:  # a run object with values no column can hold
            for t, n in sizes.items():
                del self.rows[t][n:]
            del self.series[n_series:]
            self.error(oid.hex, oid.hex, f"run cannot be indexed: {e}")
            return
        self.points += len(run.metrics) + sum(len(t) for _, t in self.series[n_series:])
        self.trees.update(t.hex for t in run.sections.values() if t is not None)
        if run.env is not None:
            self.envs.add(run.env.hex)

    def _add_run(self, rid: str, run, blob) -> None:
        started, ended = _micros(run.started), _micros(run.ended)
        git = run.git if isinstance(run.git, dict) else {}
        parents = [p.hex for p in run.parents]
        self.rows["runs"].append((
            rid, rid[:10], _text(run.name), _text(run.status), _text(run.message),
            _text(run.author), parents[0] if parents else None, parents, started, started,
            ended, (ended - started) / 1e6 if started and ended else None,
            shlex.join(str(a) for a in run.command), _text(run.cwd),
            _int64(run.exit_code),
            _hex(run.code), _hex(run.data), _hex(run.artifacts), _hex(run.series),
            _hex(run.env), _text(git.get("commit")), _text(git.get("branch")),
            _git_dirty(git), _hex(run.reproduces), _experiment(run.extra),
        ))  # fmt: skip
        params = self.rows["params"]
        for key, value in sorted(run.params.items()):
            if type(value) is float:  # most params: _param's answer without the call
                params.append((rid, key, repr(value), value, "float"))
            else:
                params.append((rid, key, *_param(value)))
        for key, value in sorted(run.tags.items()):
            self.rows["tags"].append((rid, key, _text(value)))
        if isinstance(run.extra.get("live_key"), str):  # run:<live key>/... URIs resolve by it
            self.rows["live_keys"].append((rid, run.extra["live_key"]))
        if run.series is not None:
            try:
                if isinstance(blob, Exception):
                    raise blob
                table = _series_table(blob)
                if len(table):
                    self.series.append((rid, table))
            except Exception as e:  # corrupt, missing or not our Parquet shape
                self.error(rid, run.series.hex, f"metric series unreadable: {e}")
        for key, value in sorted(run.metrics.items()):
            if not is_number(value):
                self.error(rid, rid, f"metric {key!r} is not a number: {value!r}")
                continue
            self.rows["metrics"].append((rid, key, 0, ended, float(value)))

    def tables(self) -> dict:
        """Arrow tables of the batch's rows, by index table, each to be inserted as it is:
        ``series`` (every series point, rows of ``metrics`` too), ``metrics`` (the run
        objects' final metrics whose key has no series in the run), ``metric_summary`` of
        both, and ``levels``, the points of the long series' stored samples (rows of
        ``series_levels``, series.py)."""
        import pyarrow as pa

        from .series import LEVEL_MIN_POINTS, level_points
        from .summary import summarize

        rids = [rid for rid, _ in self.series]
        lengths = [len(t) for _, t in self.series]
        points = self._points()
        summary = summarize(rids, lengths, points, self.summary_schema)
        final = self.rows["metrics"] = _without_series(self.rows["metrics"], summary)
        if final:  # a final metric alone is its summary: its value is last, min and max
            run_ids, keys, _, _, values = zip(*final, strict=True)
            finite = [None if math.isnan(v) else v for v in values]
            alone = pa.table(
                {"run_id": run_ids, "key": keys, "last": [v + 0.0 for v in values],
                 "min": finite, "max": finite, "count": [1] * len(final),
                 "last_step": [0] * len(final)},
                schema=self.summary_schema,
            )  # fmt: skip
            summary = pa.concat_tables([summary.cast(alone.schema), alone])
        return {
            **super().tables(),
            "series": self._series_points(rids, lengths, points),
            "metric_summary": summary,
            "levels": level_points(
                [(rid, _plain(t)) for rid, t in self.series if len(t) > LEVEL_MIN_POINTS]
            ),
        }

    def _points(self):
        """The batch's series points, concatenated (key, step, value, timestamp µs). Blobs
        as runs write them (``_series_table``) are made plain a run of them at a time."""
        import pyarrow as pa

        if not self.series:
            return _series_schema().empty_table()
        ipc = _ipc_schema()
        parts = [
            _plain(pa.concat_tables(list(g))) if as_written else pa.concat_tables(list(g))
            for as_written, g in itertools.groupby(
                (t for _, t in self.series), key=lambda t: t.schema.equals(ipc)
            )
        ]
        return pa.concat_tables(parts).combine_chunks()

    def _series_points(self, rids: list[str], lengths: list[int], points):
        """All series points of the batch as ``metrics`` rows, run_id dictionary-encoded (no
        64-byte copies)."""
        import pyarrow as pa

        schema = self.schemas["metrics"]
        if not rids:
            return schema.empty_table()
        # Each series' index repeated along it, without a Python loop over the points.
        ends = pa.array(list(itertools.accumulate(lengths)), pa.int32())
        which = pa.RunEndEncodedArray.from_arrays(ends, pa.array(range(len(rids)), pa.int32()))
        run_col = pa.DictionaryArray.from_arrays(_run_end_decode(which), pa.array(rids))
        timestamps = points.column("timestamp").cast(schema.field("timestamp").type)
        points = points.set_column(3, "timestamp", timestamps).add_column(0, "run_id", run_col)
        return points.select(schema.names)


def _without_series(final: list[tuple], summary) -> list[tuple]:
    """The final-metric rows (run id, key, ...) whose key has no series in the run, the
    series' keys being those of their ``summary`` rows. Matched in Arrow on run id + key
    (run ids are all 64 hex digits long, so the pair is unambiguous without a separator):
    two Python lists of every summary row cost a tenth of a decode."""
    if not final or not len(summary):
        return final
    import pyarrow as pa
    import pyarrow.compute as pc

    run_ids = summary.column("run_id").cast(pa.string())
    with_series = pc.binary_join_element_wise(run_ids, summary.column("key"), "")
    mine = pa.array([r[0] + r[1] for r in final], pa.string())
    keep = pc.invert(pc.is_in(mine, value_set=with_series)).to_numpy(zero_copy_only=False)
    return [r for r, k in zip(final, keep, strict=True) if k]


def decode_runs(
    store, schemas: dict, run_ids: list[str], max_points: int = 0, check=None
) -> Iterator[tuple[dict, list, list]]:
    """Arrow tables of the rows of these runs, and the trees and envs they use: one batch,
    or several when ``max_points`` (if > 0) bounds the metric points a batch may hold.
    ``check``: called before each run (it may raise to stop: ``Writer.give_way``).

    Pure but for reading the store, so worker processes can run it in parallel. Memory
    stays bounded by the batch: runs with 1,500 metrics of 100 steps each make 150,000
    points per run, and 500 of them at once took gigabytes.
    """
    decoder = _Decoder(schemas)
    oids = [ObjectId.parse(rid) for rid in run_ids]
    with no_gc():
        for oid, (run, series) in zip(oids, _read_ahead(store, oids), strict=True):
            if check is not None:
                check()
            decoder.add(oid, run, series)
            if max_points and decoder.points >= max_points:
                yield decoder.batch()
                decoder = _Decoder(schemas)
        if decoder.runs or not max_points:
            yield decoder.batch()


def _read_ahead(store, oids: list[ObjectId]) -> Iterator[tuple]:
    """``_load`` of each run in order. From a local store one after another: its records
    are in the page cache (a pread or a mapped page), and handing each to a thread cost a
    quarter of a decode's CPU (futures, locks, the GIL passed back and forth). From any
    other store READ_THREADS reads are in flight, so waiting on a disk or a network
    overlaps the decoding."""
    load = functools.partial(_load, store)
    if isinstance(store, LocalStore):
        return map(load, oids)
    return ordered(load, oids, READ_THREADS, "mlvc-index-read")


@contextlib.contextmanager
def no_gc():
    """The cyclic garbage collector paused: decoding makes hundreds of thousands of tuples
    and no cycles, and collections triggered by them cost more than the decoding (a third
    of a rebuild's time, measured)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _NoPandas:
    """An import hook refusing ``pandas`` (see ``arrow_without_pandas``)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas":
            raise ModuleNotFoundError("pandas hidden from pyarrow's probe", name=name)


def arrow_without_pandas() -> None:
    """For a process that only ingests (the index worker, a decode worker): pyarrow's first
    ``pa.array`` of a Python list imports pandas to ask whether the list is a pandas object,
    0.2 s of CPU per process (a tenth of a 10k-run rebuild, a third of a 1M-point ingest).
    pandas is hidden while pyarrow probes once, and pyarrow remembers it has none; an
    explicit ``to_pandas`` later still imports it. Not for a user's process, whose pandas
    objects pyarrow must keep recognising."""
    import sys

    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    hook = _NoPandas()
    sys.meta_path.insert(0, hook)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(hook)


def _load(store, oid: ObjectId) -> tuple:
    """(run or the error reading it, series blob or the error reading it, or None). Both
    verified against their ids; read as views where the store gives them (no copies)."""
    read = getattr(store, "read_view", store.read_bytes)
    try:
        run = decode_object(store, oid, read(oid), Run)
    except MlvcError as e:
        return e, None
    if run.series is None:
        return run, None
    try:
        return run, read(run.series)
    except MlvcError as e:
        return run, e


def shared_rows(store, schemas: dict, trees: list[str], envs: list[str]) -> dict:
    """Rows of these trees and envs (shared by runs, so listed once, when new to the index);
    no tables for none (pyarrow's first table, even empty, imports pandas: 0.25 s)."""
    if not trees and not envs:
        return {}
    rows = _Rows({t: schemas[t] for t in SHARED_ROWS})
    for tree in trees:
        try:
            files = [
                (tree, path, e.id.hex, e.size, e.kind)
                for path, e in walk(store, ObjectId.parse(tree))
            ]
        except MlvcError as e:
            rows.error(None, tree, f"tree unreadable: {e}")
            continue
        rows.rows["tree_files"] += files
    for env in envs:
        try:
            packages = read_env(store, ObjectId.parse(env)).facts.get("packages") or {}
        except MlvcError as e:
            rows.error(None, env, f"env unreadable: {e}")
            continue
        if isinstance(packages, dict):
            rows.rows["env_packages"] += [(env, n, _text(v)) for n, v in sorted(packages.items())]
    return rows.tables()


def _run_end_decode(array):
    import pyarrow.compute as pc

    return pc.run_end_decode(array)


def _series_table(data: bytes):
    """A metric series blob (Arrow IPC or Parquet: core/series_blob.py) as a table of key,
    step, value, timestamp (int64 µs), or, when it is as runs write it, as it is stored
    (``_ipc_schema``: ``_plain`` makes it the former, and ``_points`` a batch at once).

    Timestamps may be stored as int64 microseconds or as any Arrow timestamp. Values that
    the index's types cannot hold raise, so one bad blob never spoils a batch.
    """
    import pyarrow as pa

    table = read_series(data)
    if table.schema.equals(_ipc_schema()):  # as runs write it: made plain a batch at a time
        return table
    names = set(table.column_names)
    if not {"key", "step", "value"} <= names:
        raise ValueError("a series needs the columns key, step and value (and timestamp)")
    if "timestamp" not in names:
        table = table.select(["key", "step", "value"])
        table = table.append_column("timestamp", pa.nulls(len(table), pa.int64()))
        return _cast_as(table, _series_schema())
    table = table.select(["key", "step", "value", "timestamp"])
    ts = table.column("timestamp")
    if pa.types.is_timestamp(ts.type):  # stored as UTC: the int64 view is epoch time
        if ts.type.unit != "us":
            ts = ts.cast(pa.timestamp("us", tz=ts.type.tz), safe=False)
        table = table.set_column(3, "timestamp", ts.cast(pa.int64()))
    return _cast_as(table, _series_schema())


@functools.cache
def _series_schema():
    import pyarrow as pa

    return pa.schema(
        [("key", pa.string()), ("step", pa.int64()), ("value", pa.float64()),
         ("timestamp", pa.int64())]
    )  # fmt: skip


@functools.cache
def _ipc_schema():
    """The columns of a series blob as runs write it (runs/finish.py): key, step,
    timestamp (µs, UTC), value."""
    import pyarrow as pa

    return pa.schema(
        [("key", pa.string()), ("step", pa.int64()), ("timestamp", pa.timestamp("us", "UTC")),
         ("value", pa.float64())]
    )  # fmt: skip


def _plain(table):
    """A table of ``_series_schema`` (from one in ``_ipc_schema``, or already plain)."""
    import pyarrow as pa

    if not table.schema.equals(_ipc_schema()):
        return table
    ts = table.column("timestamp").cast(pa.int64())
    return table.select(["key", "step", "value"]).append_column("timestamp", ts)


def _cast_as(table, schema):
    """The table in ``schema``'s types; a cast (which refuses lossy values) only if needed."""
    return table if table.schema == schema else table.cast(schema)


def _micros(t) -> int | None:
    """Run times are int microseconds; 0 means unknown."""
    return t if _int64(t) and t > 0 else None


def _int64(value) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return None


def _text(value) -> str | None:
    return None if value is None else str(value)


def _hex(oid) -> str | None:
    return None if oid is None else oid.hex


def _git_dirty(git: dict) -> bool | None:
    dirty = git.get("dirty")
    if dirty is None and "patch" in git:
        dirty = git["patch"]
    return None if dirty is None else bool(dirty)


def _experiment(extra) -> str:
    """The MLflow experiment a run belongs to: ``extra["experiment_id"]``, else "0"."""
    value = extra.get("experiment_id") if isinstance(extra, dict) else None
    return value if isinstance(value, str) and value else "0"


def _param(value) -> tuple[str | None, float | None, str]:
    """(text form, numeric value, type) of a param value."""
    if isinstance(value, bool):
        return ("true" if value else "false"), None, "bool"
    if isinstance(value, int):
        return str(value), float(value), "int"
    if isinstance(value, float):
        return repr(value), value, "float"
    if value is None:
        return None, None, "null"
    if isinstance(value, str):
        return value, None, "str"
    return json.dumps(value, sort_keys=True, default=str), None, "str"
