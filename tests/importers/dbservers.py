"""Real PostgreSQL and MariaDB servers on 127.0.0.1 for the SQL importer's tests, started
and stopped by the tests themselves (scripts/test.sh installs them when missing).

Neither runs as root (initdb refuses to): as root they run as ``nobody`` (``runuser``), in
a data folder of their own outside pytest's root-only temp folder. Each listens on a free
port of 127.0.0.1 only, with its socket in its data folder; ``stop`` kills it and removes
the folder. ``start_postgres``/``start_mariadb`` return None when the server is not
installed here (the tests then skip, saying so).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DbServer:
    url: str  # SQLAlchemy URL of an empty database "mlflow"
    proc: subprocess.Popen
    folder: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as an unprivileged user when this process is root."""
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mlvc-db-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody", "nogroup" if _has_group("nogroup") else "nobody")
    return folder


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def start_postgres() -> DbServer | None:
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not initdb or not postgres:
        return None
    folder = _folder()
    data = folder / "data"
    subprocess.run(_as_user([initdb, "-D", str(data), "-U", "mlflow", "--auth=trust",
                             "--no-sync", "-E", "UTF8", "--locale=C"]),
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    port = _free_port()
    proc = subprocess.Popen(
        _as_user([postgres, "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                  "-k", str(folder), "-c", "fsync=off", "-c", "synchronous_commit=off",
                  "-c", "full_page_writes=off"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = DbServer("", proc, folder)
    try:
        _wait_port(port, proc, "postgres")
        for _ in range(50):  # listening before it accepts logins
            r = subprocess.run(
                _as_user([_pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port),
                          "-U", "mlflow", "mlflow"]), capture_output=True, timeout=30,
            )  # fmt: skip
            if r.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"createdb failed: {r.stderr.decode()[-300:]}")
    except BaseException:
        server.stop()
        raise
    server.url = f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    return server


def start_mariadb() -> DbServer | None:
    mariadbd = shutil.which("mariadbd") or (
        "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None
    )
    install = shutil.which("mariadb-install-db")
    if not mariadbd or not install:
        return None
    folder = _folder()
    data = folder / "data"
    user = ["--user=nobody"] if os.geteuid() == 0 else []
    subprocess.run([install, "--no-defaults", f"--datadir={data}", *user,
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=180)  # fmt: skip
    port = _free_port()
    proc = subprocess.Popen(
        [mariadbd, "--no-defaults", f"--datadir={data}", *user, f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={folder / 'mysql.sock'}",
         f"--pid-file={folder / 'mysql.pid'}", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0",
         "--innodb-doublewrite=0", "--character-set-server=utf8mb4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = DbServer("", proc, folder)
    try:
        _wait_port(port, proc, "mariadbd")
        import pymysql

        for _ in range(50):
            try:
                con = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
                break
            except pymysql.err.OperationalError:
                time.sleep(0.2)
        else:
            raise RuntimeError("mariadbd does not accept root")
        with con.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
            cur.execute("CREATE USER 'mlflow'@'127.0.0.1' IDENTIFIED BY 'pw'")
            cur.execute("GRANT ALL ON mlflow.* TO 'mlflow'@'127.0.0.1'")
        con.commit()
        con.close()
    except BaseException:
        server.stop()
        raise
    server.url = f"mysql://mlflow:pw@127.0.0.1:{port}/mlflow"
    return server
