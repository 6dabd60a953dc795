"""``mlvc export iceberg``: Iceberg tables read back with pyiceberg's own scan and compared with
``mlvc query`` over the same repository; incremental; S3 with a given catalog; the extra
missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from export_helpers import TABLES, build, live_runs, rows

from mlvc import Repo

pytest.importorskip("pyiceberg")

EXPORTED = ("runs", "params", "metrics", "metric_summary", "tags", "refs", "tree_files")


def scan(catalog_uri: str, warehouse: str, table: str, **props):
    from pyiceberg.catalog.sql import SqlCatalog

    # the catalog's name is part of a SQL catalog's rows: mlvc writes as "mlvc"
    catalog = SqlCatalog("mlvc", uri=catalog_uri, warehouse=warehouse, **props)
    return catalog.load_table(f"mlvc.{table}").scan().to_arrow()


def local_rows(repo: Repo, table: str):
    sql = TABLES.get(table, f"SELECT * FROM {table}")
    return rows(repo.query(sql))


def test_iceberg_round_trip_through_pyiceberg(repo, cli, tmp_path):
    build(repo)
    dest = tmp_path / "lake"
    report = json.loads(cli("export", "iceberg", str(dest), "--json").output)
    assert report["runs_added"] == report["runs_total"] == 6
    uri = f"sqlite:///{dest}/catalog.db"
    for table in EXPORTED:
        got = scan(uri, f"file://{dest}", table)
        assert rows(got) == local_rows(repo, table), table
    metrics = scan(uri, f"file://{dest}", "metrics")
    assert sum(1 for v in metrics["value"].to_pylist() if v != v) == 3  # NaN kept
    # incremental: two more runs, only they are appended; then nothing
    live_runs(repo, 2, offset=10)
    second = json.loads(cli("export", "iceberg", str(dest), "--json").output)
    assert second["runs_added"] == 2 and second["runs_total"] == 8
    for table in EXPORTED:
        assert rows(scan(uri, f"file://{dest}", table)) == local_rows(repo, table), table
    third = json.loads(cli("export", "iceberg", str(dest), "--json").output)
    assert third["runs_added"] == 0 and third["files_written"] == 0
    assert "up to date" in cli("export", "iceberg", str(dest)).output


def test_plain_duckdb_reads_the_iceberg_data_files(repo, cli, tmp_path):
    """Without any catalog, the tables' Parquet files hold the same rows (what an engine's
    Iceberg reader reads through the metadata)."""
    import duckdb

    build(repo)
    dest = tmp_path / "lake"
    cli("export", "iceberg", str(dest))
    got = duckdb.sql(
        f"SELECT * FROM read_parquet('{dest}/mlvc/runs/data/**/*.parquet')"
    ).to_arrow_table()
    assert rows(got) == local_rows(repo, "runs")


def test_iceberg_on_s3_with_a_given_catalog(repo, cli, s3_bucket, tmp_path):
    server, bucket = s3_bucket
    build(repo)
    url = server.url(bucket, "lake")
    result = cli("export", "iceberg", url, ok=False)
    assert result.exit_code == 2 and "needs --catalog" in result.output
    catalog = f"sqlite:///{tmp_path}/catalog.db"
    cli("export", "iceberg", url, "--catalog", catalog)
    props = {
        "s3.endpoint": f"http://{server.endpoint}",
        "s3.region": "us-east-1",
        "s3.force-virtual-addressing": "false",
    }
    for table in ("runs", "metrics", "params"):
        got = scan(catalog, f"s3://{bucket}/lake", table, **props)
        assert rows(got) == local_rows(repo, table), table
    import pyarrow.fs as pafs

    fs, _ = pafs.FileSystem.from_uri(url)
    listed = fs.get_file_info(pafs.FileSelector(f"{bucket}/lake/mlvc/runs", recursive=True))
    assert any(i.path.endswith(".metadata.json") for i in listed)


def test_a_bad_catalog_is_one_line(repo, cli, tmp_path):
    build(repo)
    result = cli("export", "iceberg", str(tmp_path / "lake"), "--catalog", "mysql://x", ok=False)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "--catalog" in result.output
    result = cli(
        "export",
        "iceberg",
        str(tmp_path / "lake"),
        "--catalog",
        "sqlite:////nonexistent/d/c.db",
        ok=False,
    )
    assert result.exit_code == 2 and "cannot open the Iceberg catalog" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_without_pyiceberg_the_command_names_the_extra(project, tmp_path):
    """pyiceberg made unimportable in a child process: exit 20 naming the pip extra."""
    code = (
        "import sys\n"
        "sys.modules['pyiceberg'] = None\n"
        "from mlvc.cli import main\n"
        f"main(['export', 'iceberg', {str(tmp_path / 'lake')!r}])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 20, out.stderr
    assert "pip install 'mlvc[iceberg]'" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "lake").exists()


CRASHER = """
import sys
from mlvc import Repo
Repo(sys.argv[1]).export_iceberg(sys.argv[2])
"""


def test_kill_9_mid_iceberg_export_leaves_no_duplicates(repo, tmp_path):
    build(repo)
    dest = tmp_path / "lake"
    Repo(repo.root).export_iceberg(str(dest))
    env = {**os.environ, "MLVC_INDEX_SYNC": "inline"}
    params_meta = dest / "mlvc" / "params" / "metadata"
    ahead = 0  # kills that left params a commit ahead of runs
    for i, delay in enumerate((0.0, 0.05, 0.15, 0.3)):
        live_runs(repo, 1, offset=50 + i)
        before = len(os.listdir(params_meta))
        proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(repo.root), str(dest)], env=env)
        while proc.poll() is None and len(os.listdir(params_meta)) == before:
            time.sleep(0.002)  # params is committed first, runs last
        time.sleep(delay)
        proc.kill()
        proc.wait()
        runs = scan(f"sqlite:///{dest}/catalog.db", f"file://{dest}", "runs").num_rows
        ahead += runs < repo.query("SELECT count(*) FROM runs")[0][0].as_py()
    assert ahead  # at least one export died between its first commit and its last
    Repo(repo.root).export_iceberg(str(dest))
    uri = f"sqlite:///{dest}/catalog.db"
    for table in EXPORTED:
        assert rows(scan(uri, f"file://{dest}", table)) == local_rows(repo, table), table
