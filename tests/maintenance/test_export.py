"""``mlvc export parquet`` and ``mlvc query --remote``: to a folder and to S3 (moto), read back
with plain DuckDB and pyarrow and compared with ``mlvc query`` over the same repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from export_helpers import TABLES, build, live_runs, rows

from mlvc import Repo

MANIFEST = "_mlvc_export.json"


def local(repo: Repo, sql: str) -> pa.Table:
    return repo.query(sql)


def manifest_files(fs, root: str) -> dict[str, list[str]]:
    with fs.open_input_stream(f"{root}/{MANIFEST}") as f:
        doc = json.loads(f.read())
    return {t: [x["path"] for x in v["files"]] for t, v in doc["tables"].items()}


def plain_duckdb(folder: Path, table: str) -> pa.Table:
    """A table of an export read by DuckDB alone (Hive partitions, month kept as text)."""
    pattern = f"{folder}/{table}/**/*.parquet"
    hive = "hive_partitioning=true, hive_types={'month': VARCHAR}"
    return duckdb.sql(f"SELECT * FROM read_parquet('{pattern}', {hive})").to_arrow_table()


def plain_pyarrow(fs, root: str, table: str) -> pa.Table:
    part = ds.partitioning(pa.schema([("month", pa.string())]), flavor="hive")
    return ds.dataset(
        f"{root}/{table}", filesystem=fs, format="parquet", partitioning=part
    ).to_table()


def test_export_to_a_folder_reads_back_with_plain_duckdb_and_pyarrow(repo, cli, tmp_path):
    build(repo)
    dest = tmp_path / "history"
    out = cli("export", "parquet", str(dest), "--json")
    report = json.loads(out.output)
    assert report["runs_added"] == report["runs_total"] == 6
    fs = pafs.LocalFileSystem()
    for table in ("runs", "params", "metrics", "metric_summary", "tags", "refs"):
        want = rows(local(repo, TABLES[table]))
        assert want, table
        if table != "refs":  # refs is a snapshot, not partitioned
            assert rows(plain_duckdb(dest, table)) == want, table
        assert rows(plain_pyarrow(fs, str(dest), table)) == want, table
    # NaN and inf survive as they were logged
    nan = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{dest}/metrics/**/*.parquet') WHERE isnan(value)"
    ).fetchall()[0][0]
    assert nan == local(repo, "SELECT count(*) FROM metrics WHERE isnan(value)")[0][0].as_py() == 3
    # partitioned by the month each run started: March 2024 holds the two old runs
    months = plain_pyarrow(fs, str(dest), "runs").group_by("month").aggregate([("id", "count")])
    by_month = dict(zip(months["month"].to_pylist(), months["id_count"].to_pylist(), strict=True))
    assert by_month["2024-03"] == 2 and sum(by_month.values()) == 6
    assert sorted(os.listdir(dest / "runs")) == sorted(f"month={m}" for m in by_month)
    # the shared tables: every file of every run, through the export's tree_files
    files = duckdb.sql(
        f"""SELECT r.id AS run_id, 'data' AS section, t.path, t.object_id, t.size, t.kind
        FROM read_parquet('{dest}/runs/**/*.parquet') r
        JOIN read_parquet('{dest}/tree_files/*.parquet') t ON t.tree_id = r.data_tree"""
    ).to_arrow_table()
    assert rows(files) == rows(local(repo, "SELECT * FROM files WHERE section = 'data'"))
    assert files.num_rows == 2  # data/train.csv and data/test.csv


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_query_remote_gives_the_same_answer_as_local_query(repo, cli, tmp_path, fmt):
    build(repo)
    dest = tmp_path / "history"
    cli("export", "parquet", str(dest))
    sql = (
        "SELECT r.name, p.key, p.value, p.value_num, m.last, m.min, m.count "
        "FROM runs r JOIN params p ON p.run_id = r.id "
        "LEFT JOIN metric_summary m ON m.run_id = r.id AND m.key = 'loss' "
        "ORDER BY r.name, p.key"
    )
    here = cli("query", "-f", fmt, sql).output
    there = cli("query", "--remote", str(dest), "-f", fmt, sql).output
    assert there == here
    assert "run1" in here and "adam" in here


def test_query_remote_covers_every_table_and_view(repo, cli, tmp_path):
    build(repo)
    dest = tmp_path / "history"
    cli("export", "parquet", str(dest))
    for table, sql in TABLES.items():
        out_local = tmp_path / f"{table}-local.parquet"
        out_remote = tmp_path / f"{table}-remote.parquet"
        cli("query", sql, "-o", str(out_local))
        cli("query", "--remote", f"file://{dest}", sql, "-o", str(out_remote))
        import pyarrow.parquet as pq

        assert rows(pq.read_table(out_remote)) == rows(pq.read_table(out_local)), table


def test_a_second_export_writes_only_the_new_runs(repo, cli, tmp_path):
    build(repo)
    dest = tmp_path / "history"
    first = json.loads(cli("export", "parquet", str(dest), "--json").output)
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in dest.rglob("*.parquet")}
    live_runs(repo, 2, offset=10)
    second = json.loads(cli("export", "parquet", str(dest), "--json").output)
    assert second["runs_added"] == 2 and second["runs_total"] == 8
    assert second["generation"] == first["generation"] + 1
    after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in dest.rglob("*.parquet")}
    # files of the first export untouched (the refs snapshot changed: its file is replaced)
    kept = {p: v for p, v in before.items() if "refs" not in p.parts}
    assert all(after.get(p) == v for p, v in kept.items())
    new = sorted(str(p.relative_to(dest)) for p in set(after) - set(before))
    assert new and all("part-000002-" in p for p in new)
    assert second["rows"]["runs"] == 2 and second["rows"]["metrics"] == 14  # 6 loss + acc
    for table, sql in TABLES.items():
        got = repo_remote_query(dest, sql)
        assert rows(got) == rows(local(repo, sql)), table
    # nothing new: nothing written, the manifest untouched
    manifest = (dest / MANIFEST).read_bytes()
    third = json.loads(cli("export", "parquet", str(dest), "--json").output)
    assert third["runs_added"] == 0 and third["files_written"] == 0
    assert (dest / MANIFEST).read_bytes() == manifest
    assert "up to date" in cli("export", "parquet", str(dest)).output


def repo_remote_query(dest, sql: str) -> pa.Table:
    from mlvc.api.export import query_remote

    return query_remote(str(dest), sql)


def test_export_to_s3_and_to_a_configured_remote(repo, cli, s3_bucket):
    server, bucket = s3_bucket
    build(repo)
    url = server.url(bucket, "team/history")
    cli("export", "parquet", url)
    # staged on local disk under .mlvc/tmp, uploaded, and the stage removed
    assert not [p for p in (repo.dir / "tmp").iterdir() if p.name.startswith("mlvc-export-")]
    fs, root = pafs.FileSystem.from_uri(url)
    for table in ("runs", "params", "metrics", "tags", "metric_summary"):
        assert rows(plain_pyarrow(fs, root, table)) == rows(local(repo, TABLES[table])), table
    sql = "SELECT name, status, started FROM runs ORDER BY started, name"
    assert cli("query", "--remote", url, sql).output == cli("query", sql).output
    # a configured remote: its export lives in export/ beside its packs
    _add_remote(repo, "origin", server.url(bucket, "remote"))
    cli("export", "parquet", "origin")
    info = fs.get_file_info(f"{bucket}/remote/export/{MANIFEST}")
    assert info.type == pafs.FileType.File
    for table, sql in TABLES.items():
        there = json.loads(cli("query", "--remote", "origin", "-f", "json", sql).output)
        there = [{k: v for k, v in r.items() if k != "month"} for r in there]  # the partition
        here = json.loads(cli("query", "-f", "json", sql).output)
        assert here and sorted(there, key=repr) == sorted(here, key=repr), table
    # incremental against S3 as well
    live_runs(repo, 1, offset=20)
    report = json.loads(cli("export", "parquet", "origin", "--json").output)
    assert report["runs_added"] == 1 and report["runs_total"] == 7
    count = "SELECT count(*) AS n FROM runs"
    assert cli("query", "--remote", "origin", count).output == cli("query", count).output
    # a bucket that does not exist: one line, exit 1
    result = cli("export", "parquet", server.url("no-such-bucket", "x"), ok=False)
    assert result.exit_code == 1 and "Bucket 'no-such-bucket' not found" in result.output
    assert len(result.output.strip().splitlines()) == 1


def _add_remote(repo: Repo, name: str, url: str) -> None:
    from mlvc.remotes import config

    config.add(repo.layout, name, url)


def test_query_remote_is_read_only_like_query(repo, cli, tmp_path):
    build(repo)
    dest = tmp_path / "history"
    cli("export", "parquet", str(dest))
    for sql in (
        "DROP TABLE runs",
        "COPY runs TO '/tmp/x.csv'",
        "ATTACH '/tmp/x.db'",
        "SET threads=1",
    ):
        result = cli("query", "--remote", str(dest), sql, ok=False)
        assert result.exit_code == 7, (sql, result.output)
        assert "refused" in result.output and "Traceback" not in result.output
    result = cli("query", "--remote", str(dest), "SELECT * FROM read_csv('/etc/passwd')", ok=False)
    assert result.exit_code == 7 and "disabled" in result.output
    result = cli("query", "--remote", str(dest), "SELECT nope FROM runs", ok=False)
    assert result.exit_code == 7 and "nope" in result.output


@pytest.mark.parametrize(
    ("dest", "words"),
    [
        ("ftp://example.com/x", "unknown scheme 'ftp'"),
        ("s3://KEY:SECRET@bucket/x", "carries credentials"),
        ("http://127.0.0.1:5000", "is an mlvc server"),
        ("s3://", "export destination"),
        ("bad\x00path", "invalid remote URL"),
    ],
)
def test_an_invalid_destination_is_one_line(cli, dest, words):
    result = cli("export", "parquet", dest, ok=False)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.output


def test_a_destination_that_is_a_file_or_a_remote_root_is_refused(repo, cli, tmp_path):
    build(repo)
    (tmp_path / "afile").write_text("x")
    result = cli("export", "parquet", str(tmp_path / "afile"), ok=False)
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    root = tmp_path / "remote"
    root.mkdir()
    (root / "mlvc-remote.json").write_text('{"format": 1}')
    result = cli("export", "parquet", str(root), ok=False)
    assert result.exit_code == 2 and "export/" in result.output
    assert sorted(os.listdir(root)) == ["mlvc-remote.json"]
    _add_remote(repo, "web", "https://mlvc.example.com")
    result = cli("export", "parquet", "web", ok=False)
    assert result.exit_code == 2 and "object-store URL" in result.output
    result = cli("query", "--remote", str(tmp_path / "nothing"), "SELECT 1", ok=False)
    assert result.exit_code == 2 and "no mlvc export" in result.output


def test_a_hostile_manifest_is_refused_and_nothing_outside_is_touched(repo, cli, tmp_path):
    build(repo)
    dest = tmp_path / "history"
    cli("export", "parquet", str(dest))
    victim = tmp_path / "part-000001-0.parquet"
    victim.write_bytes(b"keep me")
    doc = json.loads((dest / MANIFEST).read_text())
    doc["tables"]["runs"]["files"].append({"path": "runs/../../part-000001-0.parquet"})
    (dest / MANIFEST).write_text(json.dumps(doc))
    for args in (("export", "parquet", str(dest)), ("query", "--remote", str(dest), "SELECT 1")):
        result = cli(*args, ok=False)
        assert result.exit_code == 2, result.output
        assert (
            "not an mlvc export manifest" in result.output and len(result.output.splitlines()) == 1
        )
    assert victim.read_bytes() == b"keep me"
    (dest / MANIFEST).write_text("{not json")
    result = cli("export", "parquet", str(dest), ok=False)
    assert result.exit_code == 2 and "not an mlvc export manifest" in result.output


def test_files_a_crashed_export_left_are_removed_and_never_read(repo, cli, tmp_path):
    build(repo)
    dest = tmp_path / "history"
    cli("export", "parquet", str(dest))
    # what a crash leaves: a data file no manifest names, a half-staged generation
    stray = dest / "runs" / "month=2024-03" / "part-000002-0.parquet"
    stray.write_bytes((next((dest / "runs").glob("month=2024-03/*.parquet"))).read_bytes())
    (dest / "_staging" / "000002-dead" / "metrics").mkdir(parents=True)
    count = "SELECT count(*) AS n FROM runs"
    assert cli("query", "--remote", str(dest), count).output == cli("query", count).output
    live_runs(repo, 1, offset=30)
    report = json.loads(cli("export", "parquet", str(dest), "--json").output)
    assert report["removed_leftovers"] == 1 and report["runs_added"] == 1
    assert not (dest / "_staging").exists()
    got = plain_duckdb(dest, "runs")
    assert rows(got) == rows(local(repo, "SELECT * FROM runs"))


CRASHER = """
import os, sys
from mlvc import Repo
Repo(sys.argv[1]).export_parquet(sys.argv[2])
"""


def test_kill_9_mid_export_never_leaves_a_manifest_naming_a_missing_file(repo, tmp_path):
    live_runs(repo, 12)
    dest = tmp_path / "history"
    env = {**os.environ, "MLVC_INDEX_SYNC": "inline"}
    landed = set()
    staging = dest / "_staging"
    for i, delay in enumerate((0.0, 0.02, 0.1, 0.2, 0.3, 0.4, 0.6)):
        live_runs(repo, 1, offset=100 + i)
        before = set(staging.iterdir()) if staging.exists() else set()
        proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(repo.root), str(dest)], env=env)
        while proc.poll() is None and not (staging.exists() and set(staging.iterdir()) - before):
            time.sleep(0.001)  # kill once this export is writing its files
        time.sleep(delay)
        proc.kill()
        proc.wait()
        landed.add(proc.returncode)
        if (dest / MANIFEST).exists():
            listed = manifest_files(pafs.LocalFileSystem(), str(dest))
            for paths in listed.values():
                for p in paths:
                    assert (dest / p).is_file(), p
    assert -9 in landed  # at least one export was killed mid-way
    Repo(repo.root).export_parquet(str(dest))
    for table, sql in TABLES.items():
        assert rows(repo_remote_query(dest, sql)) == rows(local(repo, sql)), table
    # and the folder as plain readers see it holds no leftover either
    assert rows(plain_duckdb(dest, "runs")) == rows(local(repo, "SELECT * FROM runs"))
    assert rows(plain_duckdb(dest, "metrics")) == rows(local(repo, "SELECT * FROM metrics"))


def test_export_of_an_empty_repository_is_queryable(repo, cli, tmp_path):
    dest = tmp_path / "history"
    report = json.loads(cli("export", "parquet", str(dest), "--json").output)
    assert report["runs_total"] == 0 and (dest / MANIFEST).exists()
    out = cli("query", "--remote", str(dest), "-f", "json", "SELECT count(*) AS n FROM metrics")
    assert json.loads(out.output) == [{"n": 0}]


def test_a_killed_exports_local_stage_is_removed_by_the_next_one(repo, cli, s3_bucket):
    server, bucket = s3_bucket
    build(repo)
    tmp = repo.dir / "tmp"
    stale = tmp / "mlvc-export-000001-deadbeef" / "runs"
    stale.mkdir(parents=True)
    (stale / "part-000001-0.parquet").write_bytes(b"half")
    fresh = tmp / "mlvc-export-000001-cafecafe"  # maybe another export's, running now
    fresh.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale.parent, (old, old))
    cli("export", "parquet", server.url(bucket, "h"))
    assert not stale.parent.exists() and fresh.exists()


def test_a_bare_name_that_is_no_remote_is_refused_not_made_a_folder(repo, cli, project):
    build(repo)
    result = cli("export", "parquet", "origin", ok=False)
    assert result.exit_code == 2 and "no remote named 'origin'" in result.output
    assert "mlvc remote add origin URL" in result.output and not (project / "origin").exists()
    result = cli("query", "--remote", "origin", "SELECT 1", ok=False)
    assert result.exit_code == 2 and "no remote named 'origin'" in result.output
    cli("export", "parquet", "./origin")  # an explicit folder is fine
    assert (project / "origin" / MANIFEST).is_file()


def test_query_remote_outside_any_repository(repo, cli, tmp_path, monkeypatch):
    build(repo)
    dest = tmp_path / "history"
    cli("export", "parquet", str(dest))
    here = cli("query", "-f", "json", "SELECT name FROM runs ORDER BY name").output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    there = cli(
        "query", "--remote", f"file://{dest}", "-f", "json", "SELECT name FROM runs ORDER BY name"
    )
    assert there.output == here
