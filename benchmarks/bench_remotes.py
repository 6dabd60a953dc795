"""Remotes benchmark (issue 12 item 7): push, clone, pull against a moto S3 server.

Run as ``.venv/bin/python benchmarks/bench_remotes.py [--quick] [--json FILE]``.

Starts a moto S3 server on 127.0.0.1 (its access log, one line a request, is how requests
are counted for every tool), generates the data at run time in a temp folder (one file of
random bytes, 1 GiB; and 20k small text files of ~4 KiB with mixed content), and for each
dataset measures in the same run:

- ``mlvc push`` to a fresh bucket, ``mlvc clone`` of it, ``mlvc pull`` of the run into an
  existing clone of the same project that lacks it, a no-op push and pull, and an
  incremental push after changing one file (the big file: 1 MiB rewritten in its middle);
- the floor: ``pyarrow.fs.copy_files`` of the same files to and from the same server (in a
  child process, so it pays an interpreter start like the CLIs do);
- DVC (``dvc push``, ``dvc fetch`` = download into the cache like ``mlvc pull``, then
  ``dvc checkout``; no-op and incremental push) to the same server, dvc + dvc-s3 installed
  into benchmarks/.dvc-venv by this script (never an mlvc dependency).

Every figure is a median over repetitions, each with its own fresh bucket; ratios are the
median of per-repetition ratios to the baseline timed in the same repetition. Prints a
Markdown report on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_foundation import (  # noqa: E402
    CHILD_ENV,
    MLVC,
    PYTHON,
    machine_facts,
    rmtree,
    run,
    wait_for_index,
    wait_http,
    write_random,
)

DVC_VENV = HERE / ".dvc-venv"
DVC = str(DVC_VENV / "bin" / "dvc")
MiB = 1 << 20
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
CHILD_ENV.update(CREDENTIALS)
CHILD_ENV["DVC_NO_ANALYTICS"] = "1"
_REQUEST = re.compile(rb'" \d{3} ')


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the S3 server -----------------------------------------------------------------------------


class Moto:
    """A moto S3 server process; its werkzeug access log (one line a request) in a file."""

    def __init__(self, work: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log = work / "moto.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=out,
                env=CHILD_ENV,
            )
        try:
            wait_http(f"http://{self.endpoint}/moto-api/", self.proc, 60, "the moto S3 server")
        except RuntimeError:
            self.proc.kill()
            raise
        import pyarrow.fs as pafs

        self.fs = pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            scheme="http",
            region="us-east-1",
            access_key="testing",
            secret_key="testing",
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )
        self._n = 0

    def bucket(self, tag: str) -> str:
        self._n += 1
        name = f"{tag}-{self._n}"
        self.fs.create_dir(name)
        return name

    def drop(self, bucket: str) -> None:
        """Empty and delete a bucket: moto keeps every object in memory."""
        try:
            self.fs.delete_dir(bucket)
        except OSError as e:
            log(f"could not delete bucket {bucket}: {e}")

    def url(self, bucket: str, prefix: str = "mlvc") -> str:
        return (
            f"s3://{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"
        )

    def mark(self) -> int:
        time.sleep(0.3)  # the server writes its log line after answering
        return len(_REQUEST.findall(self.log.read_bytes()))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- data --------------------------------------------------------------------------------------

WORDS = [
    "epoch",
    "loss",
    "accuracy",
    "gradient",
    "tensor",
    "batch",
    "learning",
    "rate",
    "model",
    "layer",
    "weight",
    "bias",
    "dropout",
    "dataset",
    "train",
    "validation",
    "test",
    "sample",
    "label",
    "feature",
    "embedding",
    "token",
]  # noqa: SIM905


def make_small_files(root: Path, n: int, size: int = 4096) -> None:
    """n files of ~size bytes in folders of 200: CSV, JSON and prose, each file distinct."""
    import random

    rnd = random.Random(12)
    for i in range(n):
        folder = root / f"d{i // 200:03d}"
        if i % 200 == 0:
            folder.mkdir(parents=True)
        kind = i % 3
        parts: list[str] = []
        length = 0
        target = size + rnd.randint(-512, 512)
        while length < target:
            if kind == 0:
                s = ",".join(f"{rnd.random():.6f}" for _ in range(6)) + "\n"
            elif kind == 1:
                s = json.dumps({"id": i, rnd.choice(WORDS): rnd.randint(0, 10**9)}) + "\n"
            else:
                s = " ".join(rnd.choice(WORDS) for _ in range(12)) + ".\n"
            parts.append(s)
            length += len(s)
        ext = ("csv", "json", "txt")[kind]
        (folder / f"f{i:05d}.{ext}").write_text("".join(parts)[:target])


def change_one(data: Path, big: bool, k: int) -> None:
    if big:
        f = data / "big.bin"
        with open(f, "r+b") as fh:
            fh.seek(f.stat().st_size // 2 - MiB * (k % 4))
            fh.write(os.urandom(MiB))
    else:
        f = next(iter(sorted((data / "d000").iterdir())))
        f.write_text(f.read_text() + f"changed {k} {time.time()}\n")


# -- tools -------------------------------------------------------------------------------------


def ensure_dvc() -> str:
    """dvc + dvc-s3 in benchmarks/.dvc-venv; returns its version ('' if it cannot be had)."""
    if not Path(DVC).exists():
        log("installing dvc[s3] into benchmarks/.dvc-venv")
        try:
            if not (DVC_VENV / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(DVC_VENV)], check=True)
            subprocess.run(
                [str(DVC_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "dvc[s3]"],
                check=True,
            )
        except (OSError, subprocess.CalledProcessError) as e:
            log(f"dvc could not be installed: {e}")
            return ""
    p = subprocess.run([DVC, "--version"], capture_output=True, text=True, env=CHILD_ENV)
    return p.stdout.strip() if p.returncode == 0 else ""


def mlvc_json(argv: list[str], cwd: Path):
    p = run([MLVC, *argv, "--json"], cwd)
    text = p.out.strip()
    js = json.loads(text) if text else {}
    return p, {**js, **js.get("fetch", {})}  # pull and clone nest the fetch's summary


COPY_CHILD = """
import sys, time, pyarrow.fs as pafs
mode, src, dst, endpoint = sys.argv[1:5]
s3 = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                       access_key="testing", secret_key="testing")
local = pafs.LocalFileSystem()
if mode == "up":
    pafs.copy_files(src, dst, source_filesystem=local, destination_filesystem=s3)
else:
    local.create_dir(dst)
    # 64 MiB reads: at the default 1 MiB, moto took ~1 s for each ranged GET of a 1 GiB
    # object here (1024 GETs), an artifact of the server, not a floor
    pafs.copy_files(src, dst, source_filesystem=s3, destination_filesystem=local,
                    chunk_size=64 << 20)
"""


def copy_files(mode: str, src: str, dst: str, moto: Moto):
    return run([PYTHON, "-c", COPY_CHILD, mode, src, dst, moto.endpoint], HERE)


def dvc_project(root: Path, data: Path, moto: Moto, bucket: str) -> None:
    root.mkdir()
    run([DVC, "init", "--no-scm", "-q"], root)
    run([DVC, "config", "core.site_cache_dir", str(root / ".dvc" / "site-cache")], root)
    run([DVC, "remote", "add", "-d", "s3", f"s3://{bucket}/dvc"], root)
    run([DVC, "remote", "modify", "s3", "endpointurl", f"http://{moto.endpoint}"], root)
    os.rename(data, root / "data")


# -- one dataset -------------------------------------------------------------------------------


class Table:
    def __init__(self) -> None:
        self.samples: dict[str, list[dict]] = {}

    def add(self, key: str, seconds: float, **kw) -> None:
        self.samples.setdefault(key, []).append({"s": seconds, **kw})

    def med(self, key: str, field: str = "s"):
        vals = [x[field] for x in self.samples.get(key, []) if x.get(field) is not None]
        return statistics.median(vals) if vals else None


def bench_dataset(moto: Moto, work: Path, big: bool, size: int, nfiles: int, reps: int,
                  peer_reps: int, noop_reps: int, dvc: bool) -> Table:  # fmt: skip
    t = Table()
    label = "big" if big else "small"
    src = work / f"{label}-src"  # the data, as files
    src.mkdir()
    log(f"{label}: generating data")
    if big:
        write_random(src / "big.bin", size)
    else:
        make_small_files(src, nfiles)
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    t.total_bytes = total  # type: ignore[attr-defined]

    # the project: a base run, then the data run
    proj = work / f"{label}-proj"
    proj.mkdir()
    run([MLVC, "init"], proj)
    run([MLVC, "commit", "-q", "-m", "base", "--name", "exp", "-p", "x=1"], proj)
    wait_for_index(proj)
    base_bucket = moto.bucket(f"{label}-base")
    run([MLVC, "remote", "add", "base", moto.url(base_bucket)], proj)
    run([MLVC, "push", "-q", "base"], proj)
    template = work / f"{label}-base-clone"  # an existing repo of the project, without the run
    run([MLVC, "clone", "-q", moto.url(base_bucket), str(template)], work)
    shutil.copytree(src, proj / "data", symlinks=True)
    log(f"{label}: mlvc commit of {total / MiB:.0f} MiB")
    run([MLVC, "commit", "-q", "-m", "data", "--name", "exp", "--data", "data"], proj)
    wait_for_index(proj)

    last_bucket = None
    for r in range(reps):
        log(f"{label}: repetition {r + 1}/{reps}")
        # floor: copy_files up and down
        cb = moto.bucket(f"{label}-copy") if r < peer_reps else None
        if cb:
            m0 = moto.mark()
            p = copy_files("up", str(src), f"{cb}/data", moto)
            t.add("copy up", p.seconds, requests=moto.mark() - m0, rss=p.maxrss)
            down = work / f"{label}-copy-down"
            m0 = moto.mark()
            p = copy_files("down", f"{cb}/data", str(down), moto)
            t.add("copy down", p.seconds, requests=moto.mark() - m0, rss=p.maxrss)
            rmtree(down)
            moto.drop(cb)

        # mlvc push, clone, pull
        if last_bucket:
            moto.drop(last_bucket)
        mb = moto.bucket(f"{label}-mlvc")
        run([MLVC, "remote", "add", f"r{r}", moto.url(mb)], proj)
        m0 = moto.mark()
        p, js = mlvc_json(["push", f"r{r}"], proj)
        t.add("mlvc push", p.seconds, requests=js.get("requests"), logged=moto.mark() - m0,
              rss=p.maxrss, sent=js.get("bytes_sent"))  # fmt: skip
        dest = work / f"{label}-clone"
        m0 = moto.mark()
        p, js = mlvc_json(["clone", moto.url(mb), str(dest)], work)
        t.add("mlvc clone", p.seconds, requests=js.get("requests"), logged=moto.mark() - m0,
              rss=p.maxrss, received=js.get("bytes_received"))  # fmt: skip
        wait_for_index(dest)
        rmtree(dest)
        into = work / f"{label}-pull"
        shutil.copytree(template, into, symlinks=True)
        run([MLVC, "remote", "add", "data", moto.url(mb)], into)
        m0 = moto.mark()
        p, js = mlvc_json(["pull", "data"], into)
        t.add("mlvc pull", p.seconds, requests=js.get("requests"), logged=moto.mark() - m0,
              rss=p.maxrss, received=js.get("bytes_received"))  # fmt: skip
        wait_for_index(into)
        if r < reps - 1:
            rmtree(into)
        last_bucket = mb

    # no-op push and pull (against the last bucket), incremental push
    into = work / f"{label}-pull"
    for _ in range(noop_reps):
        m0 = moto.mark()
        p, js = mlvc_json(["push", f"r{reps - 1}"], proj)
        t.add("mlvc no-op push", p.seconds, requests=js.get("requests"),
              logged=moto.mark() - m0, rss=p.maxrss)  # fmt: skip
        m0 = moto.mark()
        p, js = mlvc_json(["pull", "data"], into)
        t.add("mlvc no-op pull", p.seconds, requests=js.get("requests"),
              logged=moto.mark() - m0, rss=p.maxrss)  # fmt: skip
    for r in range(reps):
        change_one(proj / "data", big, r)
        run([MLVC, "commit", "-q", "-m", f"change {r}", "--name", "exp", "--data", "data"], proj)
        wait_for_index(proj)
        m0 = moto.mark()
        p, js = mlvc_json(["push", f"r{reps - 1}"], proj)
        t.add("mlvc incremental push", p.seconds, requests=js.get("requests"),
              logged=moto.mark() - m0, rss=p.maxrss, sent=js.get("bytes_sent"))  # fmt: skip
    rmtree(into)
    moto.drop(last_bucket)
    moto.drop(base_bucket)
    rmtree(template)
    rmtree(proj)

    if dvc:
        log(f"{label}: dvc")
        dproj = work / f"{label}-dvc"
        db = moto.bucket(f"{label}-dvc")
        dvc_project(dproj, src, moto, db)
        run([DVC, "add", "-q", "data"], dproj)
        for r in range(peer_reps):
            if r:
                moto.drop(db)
                db = moto.bucket(f"{label}-dvc")
                run([DVC, "remote", "modify", "s3", "url", f"s3://{db}/dvc"], dproj)
            m0 = moto.mark()
            p = run([DVC, "push", "-q"], dproj)
            t.add("dvc push", p.seconds, requests=moto.mark() - m0, rss=p.maxrss)
            # a second copy of the project without data or cache: fetch, then checkout
            other = work / f"{label}-dvc-other"
            other.mkdir()
            run([DVC, "init", "--no-scm", "-q"], other)
            shutil.copy(dproj / ".dvc" / "config", other / ".dvc" / "config")
            run([DVC, "config", "core.site_cache_dir", str(other / ".dvc" / "site-cache")], other)
            shutil.copy(dproj / "data.dvc", other / "data.dvc")
            m0 = moto.mark()
            p = run([DVC, "fetch", "-q"], other)
            t.add("dvc fetch", p.seconds, requests=moto.mark() - m0, rss=p.maxrss)
            p = run([DVC, "checkout", "-q"], other)
            t.add("dvc checkout", p.seconds)
            if r < peer_reps - 1:
                rmtree(other)
        other = work / f"{label}-dvc-other"
        for _ in range(noop_reps):
            m0 = moto.mark()
            p = run([DVC, "push", "-q"], dproj)
            t.add("dvc no-op push", p.seconds, requests=moto.mark() - m0)
            m0 = moto.mark()
            p = run([DVC, "pull", "-q"], other)
            t.add("dvc no-op pull", p.seconds, requests=moto.mark() - m0)
        for r in range(peer_reps):
            change_one(dproj / "data", big, r)
            run([DVC, "add", "-q", "data"], dproj)
            m0 = moto.mark()
            p = run([DVC, "push", "-q"], dproj)
            t.add("dvc incremental push", p.seconds, requests=moto.mark() - m0)
        moto.drop(db)
        rmtree(other)
        rmtree(dproj)
    rmtree(src)
    return t


# -- report ------------------------------------------------------------------------------------


def fmt(v, digits=2):
    if v is None:
        return "–"
    return f"{v:.{digits}f}"


def ratio(t: Table, a: str, b: str) -> str:
    xs, ys = t.samples.get(a, []), t.samples.get(b, [])
    if not xs or not ys:
        return "–"
    if len(xs) == len(ys) and len(xs) > 1:
        rs = [x["s"] / y["s"] for x, y in zip(xs, ys, strict=True)]
        return f"{statistics.median(rs):.2f}x" + (
            f" ({min(rs):.1f}–{max(rs):.1f})" if len(rs) > 1 else ""
        )
    return f"{t.med(a) / t.med(b):.2f}x"


def render_dataset(t: Table, title: str) -> str:
    total = t.total_bytes  # type: ignore[attr-defined]
    rows = [
        # (label, key, floor key, dvc key)
        ("push to a fresh bucket", "mlvc push", "copy up", "dvc push"),
        ("clone (mlvc) / fetch into cache (dvc)", "mlvc clone", "copy down", "dvc fetch"),
        ("pull into a clone lacking the run / dvc fetch", "mlvc pull", "copy down", "dvc fetch"),
        ("no-op push", "mlvc no-op push", None, "dvc no-op push"),
        ("no-op pull", "mlvc no-op pull", None, "dvc no-op pull"),
        (
            "incremental push (one file changed)",
            "mlvc incremental push",
            None,
            "dvc incremental push",
        ),  # fmt: skip
    ]
    out = [
        f"#### {title} ({total / MiB:,.1f} MiB)",
        "",
        "| operation | n | mlvc s | copy_files s | mlvc / copy_files | dvc s | mlvc / dvc "
        "| mlvc requests (--json / server log) | copy_files requests | dvc requests "
        "| mlvc peak RSS MiB | mlvc MiB moved |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, k, floor, dk in rows:
        n = len(t.samples.get(k, []))
        moved = t.med(k, "sent") if t.med(k, "sent") is not None else t.med(k, "received")
        out.append(
            "| "
            + " | ".join(
                [
                    label,
                    str(n),
                    fmt(t.med(k)),
                    fmt(t.med(floor)) if floor else "",
                    ratio(t, k, floor) if floor else "",
                    fmt(t.med(dk)),
                    ratio(t, k, dk),
                    f"{fmt(t.med(k, 'requests'), 0)} / {fmt(t.med(k, 'logged'), 0)}",
                    fmt(t.med(floor, "requests"), 0) if floor else "",
                    fmt(t.med(dk, "requests"), 0),
                    fmt((t.med(k, "rss") or 0) / MiB, 0),
                    fmt(moved / MiB, 1) if moved is not None else "–",
                ]
            )
            + " |"
        )
    extra = []
    if t.samples.get("dvc checkout"):
        extra.append(f"`dvc checkout` after the fetch (files into the workspace): "
                     f"{fmt(t.med('dvc checkout'))} s.")  # fmt: skip
    for k in ("copy up", "copy down"):
        if t.samples.get(k):
            extra.append(f"copy_files {k.split()[1]}: peak RSS "
                         f"{fmt(t.med(k, 'rss') / MiB, 0)} MiB.")  # fmt: skip
    return "\n".join(out + ([""] + [" ".join(extra)] if extra else []))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB and 2k files, 1 repetition")
    ap.add_argument("--size-mib", type=int, default=None)
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 2 big)")
    ap.add_argument(
        "--peer-reps",
        type=int,
        default=None,
        help="repetitions of copy_files and dvc (default: as --reps, 1 for the small files)",
    )
    ap.add_argument("--no-dvc", action="store_true")
    ap.add_argument("--only", default="big,small")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", default=None, help="write the raw samples here")
    args = ap.parse_args()
    size = (args.size_mib or (64 if args.quick else 1024)) * MiB
    nfiles = args.files or (2000 if args.quick else 20_000)
    reps_small = args.reps or (1 if args.quick else 3)
    reps_big = args.reps or (1 if args.quick else 2)
    t_start = time.time()
    load0 = os.getloadavg()[0]
    dvc_version = "" if args.no_dvc else ensure_dvc()
    os.makedirs(args.dir or tempfile.gettempdir(), exist_ok=True)  # --dir made if new
    work = Path(tempfile.mkdtemp(prefix="mlvc-bench-remotes-", dir=args.dir))
    moto = Moto(work)
    results = {}
    try:
        if "big" in args.only:
            pr = args.peer_reps or reps_big
            results["big"] = bench_dataset(moto, work, True, size, 0, reps_big, pr,
                                           3 if args.quick else 5, bool(dvc_version))  # fmt: skip
        if "small" in args.only:
            pr = args.peer_reps or 1
            results["small"] = bench_dataset(moto, work, False, 0, nfiles, reps_small, pr,
                                             3 if args.quick else 5, bool(dvc_version))  # fmt: skip
    finally:
        moto.stop()
        rmtree(work)
    elapsed = time.time() - t_start
    facts = machine_facts(Path(args.dir or tempfile.gettempdir()))
    moto_v = subprocess.run([PYTHON, "-c", "import moto, pyarrow; print(moto.__version__, "
                             "pyarrow.__version__)"], capture_output=True, text=True)  # fmt: skip
    mv, pv = (moto_v.stdout.split() + ["?", "?"])[:2]
    lines = [
        *facts,
        f"- peers: {dvc_version and 'dvc ' + dvc_version or 'dvc not installed'} (with dvc-s3), "
        f"pyarrow {pv} (copy_files), moto {mv} (server on 127.0.0.1)",
        f"- mode: {'quick' if args.quick else 'full'}; whole run took {elapsed:.0f} s; load "
        f"average (1 min) {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end",
        "",
    ]
    if "big" in results:
        lines += [render_dataset(results["big"], "1. One file of random bytes"), ""]
    if "small" in results:
        lines += [render_dataset(results["small"], f"2. {nfiles:,} small text files"), ""]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({k: v.samples for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
