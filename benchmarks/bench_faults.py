"""Fault injection (issue 9, item 24): ``kill -9`` mlvc at random instants, then check that
nothing it had reported, and nothing a run had flushed, was lost.

Run as ``.venv/bin/python benchmarks/bench_faults.py [--trials N] [--scenario NAME]``; see
benchmarks/README.md. Prints a Markdown report on stdout (progress on stderr), ``--json FILE``
writes every trial; exits 1 if any trial failed.

Each trial copies a template repository (a small project: code, a data folder with a 6 MiB
file so chunking runs, an ``mlvc.toml`` with ``[track]`` and an entry point), starts one
operation as a subprocess in its own session and sends SIGKILL to its process group after a
random delay drawn within that operation's duration, measured unkilled before the trials.
Scenarios:

    commit            ``mlvc commit`` of new data (a new 6 MiB file, edited small files)
    commit-statcache  ``mlvc commit`` after edits, with the stat cache warm (variant
                      ``status``: ``mlvc status`` ran after the edits, as a user would)
    gc                ``mlvc gc --grace 0`` over packs holding garbage (repack, drop, merge)
    gc-live           the same, over and over while a tracked run logs metrics and
                      artifacts; one of the first five is killed
    index-rebuild     ``mlvc index rebuild``
    index-worker      the detached ingest worker a commit spawns (mlvc/index/worker.py),
                      found in /proc and killed; variant ``no-index`` deleted the index first
    tracked-run       a script using ``mlvc.start_run`` (metrics in a loop + artifacts),
                      killed while starting, mid-loop or mid-``end()``; variant ``reaper``
                      also kills the first ``mlvc runs`` that records it as killed
    run               ``mlvc run main`` after a code edit (its command's process group with it)
    reproduce         ``mlvc reproduce HEAD`` (its command's process group with it)
    commit+gc         ``mlvc commit`` and ``mlvc gc --grace 0`` at once; one or both killed

The oracle, after every kill (and after any surviving process finished): ``mlvc runs``
(records dead live runs as killed), then ``mlvc commit`` must still work (its run is checked
with the others), ``mlvc fsck --json`` must list no problem, ``mlvc log
--json`` must list every run reported committed (present before the trial, or whose command
returned) and every run under ``refs/runs``; every run is checked out with ``mlvc checkout RUN
--to DIR`` and each file's BLAKE3 compared with ``mlvc show RUN --json``; a run the killed
commit left must be whole (HEAD and its name moved to it); a killed tracked run must be
recorded once, as ``killed`` (or ``finished`` if it got that far), with at least every metric
point that was in its live ``series/*.arrow`` blocks on disk at the instant of the kill; no
live run may be left unrecorded; a killed reproduction must leave HEAD alone and record what
it reproduces; no command may print a traceback.

Kill windows: each operation's duration is measured unkilled (median of ``--reps``) before its
trials; an operation started cold is not killed during the first 80% of the interpreter's
start-up (``mlvc --version``); a target that finished before its kill time moves the window
halfway to 1.1x the duration it took, so the window follows the machine's load.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PYTHON = sys.executable
TRACEBACK = "Traceback (most recent call last)"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
CLI_TIMEOUT = 300.0
BIG = 6 << 20  # > 4 MiB: chunked by FastCDC


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the project every template starts from ----------------------------------------------

MLVC_TOML = """\
[track]
data = ["data"]
artifacts = ["out"]
params = ["params.json"]
metrics = ["metrics.json"]

[entry_points.main]
command = "python train.py"
outputs = ["out"]
metrics = ["metrics.json"]
"""

TRAIN_PY = """\
import hashlib, json, os, time
import mlvc

h = hashlib.sha256(open("data/big.bin", "rb").read()).digest()
os.makedirs("out", exist_ok=True)
with open("out/model.bin", "wb") as f:
    f.write(h * 8192)  # 256 KiB, a function of the data
with mlvc.start_run() as run:
    for i in range(200):
        run.log_metric("train.loss", 1.0 / (i + 1), step=i)
        time.sleep(0.002)
with open("metrics.json", "w") as f:
    json.dump({"acc": round(h[0] / 255, 6), "loss": 0.005}, f)
print("trained", h.hex()[:12])
"""

# A tracked run: argv name steps artifact_every. Prints STARTED, ENDING <points>, RUN <id>.
TRACK_PY = """\
import os, sys, time
import mlvc

name, steps, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs("out/ckpt", exist_ok=True)
logged = 0
with mlvc.start_run(name=name, params={"lr": 0.1, "steps": steps}) as run:
    with open("out/ckpt/big.bin", "wb") as f:
        f.write(os.urandom(5 << 20))
    run.log_artifact("out/ckpt/big.bin")
    print("STARTED", flush=True)
    for i in range(steps):
        run.log_metric("t.loss", 1.0 / (i + 1), step=i)
        run.log_metric("t.acc", i / steps, step=i)
        logged += 2
        if i % every == 0:
            p = f"out/ckpt/c{i}.bin"
            with open(p, "wb") as f:
                f.write(os.urandom(64 << 10))
            run.log_artifact(p)
            run.log_text(f"step {i}\\n", f"notes/{i}.txt")
        time.sleep(0.001)
    print(f"ENDING {logged}", flush=True)
print(f"RUN {run.id}", flush=True)
"""

# Unreachable objects: mixed into the pack of a commit (gc repacks it), and a pack of its own
# (gc drops it); chunked garbage too.
GARBAGE_PY = """\
import os, sys
from mlvc import Repo

r = Repo(sys.argv[1])
for _ in range(3):
    r.store.add_bytes(os.urandom(3 << 20))
r.commit("mixed with garbage", params={"garbage": 1})
"""
GARBAGE_ONLY_PY = """\
import os, sys
from mlvc import Repo

r = Repo(sys.argv[1])
for _ in range(4):
    r.store.add_bytes(os.urandom(1 << 20))
big = r.root / "junk.bin"
big.write_bytes(os.urandom(5 << 20))
r.store.add_file(big)
big.unlink()
r.store.sync()
"""


def write_project(root: Path, rng: random.Random) -> None:
    (root / "src").mkdir(parents=True)
    (root / "data" / "csv").mkdir(parents=True)
    (root / "mlvc.toml").write_text(MLVC_TOML)
    (root / "train.py").write_text(TRAIN_PY)
    (root / "track.py").write_text(TRACK_PY)
    for name in ("model", "features", "util"):
        (root / "src" / f"{name}.py").write_text(f"# {name}\n" + "X = 1\n" * rng.randint(5, 50))
    (root / "params.json").write_text(json.dumps({"lr": 0.01, "epochs": 3}))
    (root / "metrics.json").write_text(json.dumps({"acc": 0.5}))
    (root / "data" / "big.bin").write_bytes(rng.randbytes(BIG))
    for i in range(12):
        rows = "".join(f"{j},{rng.random():.6f}\n" for j in range(100))
        (root / "data" / "csv" / f"part-{i:02d}.csv").write_text("x,y\n" + rows)


def edit_data(root: Path, rng: random.Random, same_size: bool) -> None:
    """New content for some small files (same size when asked) and a new big file."""
    for i in rng.sample(range(12), 3):
        p = root / "data" / "csv" / f"part-{i:02d}.csv"
        old = p.read_bytes()
        new = bytes(rng.choice(b"0123456789") if c in b"0123456789" else c for c in old)
        p.write_bytes(new if same_size else new + b"99,0.5\n")
    (root / "src" / "util.py").write_text(f"X = {rng.randint(0, 10**9)}\n")
    (root / "data" / f"new-{rng.randint(0, 10**9)}.bin").write_bytes(rng.randbytes(BIG))


# -- processes ---------------------------------------------------------------------------


def child_env(tmp: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLVC_") and k not in ("PYTEST_CURRENT_TEST", "PYTHONHASHSEED")
    }
    # MLVC_INDEX_SYNC is left unset: commits hand ingestion to the detached worker, as for users
    env.update(
        MLVC_AUTHOR="Fault Injector <faults@example.com>",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CEILING_DIRECTORIES=str(tmp.parent),
        TMPDIR=str(tmp),
        # the entry point's `python` is this interpreter, which has mlvc installed
        PATH=os.pathsep.join([str(Path(PYTHON).parent), os.environ.get("PATH", "")]),
    )
    return env


def mlvc(*args: str) -> list[str]:
    return [PYTHON, "-m", "mlvc", *args]


class Proc:
    """A child in its own session (its process group is what we kill), output to files."""

    def __init__(self, argv: list[str], cwd: Path, env: dict, logdir: Path, label: str):
        logdir.mkdir(parents=True, exist_ok=True)
        self.label = label
        self.argv = argv
        self.out_path = logdir / f"{label}.out"
        self.err_path = logdir / f"{label}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.t0 = time.monotonic()
            self.p = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.killed = False
        self.t_end: float | None = None

    def poll(self) -> int | None:
        rc = self.p.poll()
        if rc is not None and self.t_end is None:
            self.t_end = time.monotonic()
        return rc

    def kill_at(self, delay: float, t0: float | None = None) -> bool:
        """SIGKILL the process group ``delay`` s after ``t0`` (default: its start), unless it
        exited first; True if it was killed while running."""
        remaining = (self.t0 if t0 is None else t0) + delay - time.monotonic()
        try:
            self.p.wait(timeout=max(remaining, 0))
        except subprocess.TimeoutExpired:
            pass
        if self.poll() is not None:
            return False
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()
        self.t_end = time.monotonic()
        self.killed = True
        return True

    def wait(self, timeout: float = CLI_TIMEOUT) -> int | None:
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            return None
        self.poll()
        return self.p.returncode

    @property
    def duration(self) -> float:
        return (self.t_end or time.monotonic()) - self.t0

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, marker: str, timeout: float = 120.0) -> float | None:
        """Monotonic time when ``marker`` first appeared in stdout, None if the process
        exited (or the timeout passed) without printing it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.out():
                return time.monotonic()
            if self.poll() is not None:
                return time.monotonic() if marker in self.out() else None
            time.sleep(0.002)
        return None


def processes_under(path: Path, needle: str = "") -> list[int]:
    """Pids whose command line mentions ``path`` (and ``needle``): what our trial left."""
    key = str(path).encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if key in cmd and needle.encode() in cmd:
            out.append(int(d))
    return out


def wait_index_idle(proj: Path, timeout: float = 120.0) -> bool:
    """Wait until no process holds the index lock (a detached worker has finished)."""
    lock = proj / ".mlvc" / "index.lock"
    if not lock.exists():
        return True
    fd = os.open(lock, os.O_RDWR)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return True
            except BlockingIOError:
                time.sleep(0.02)
        return False
    finally:
        os.close(fd)


def run_ids(proj: Path) -> set[str]:
    try:
        return {n for n in os.listdir(proj / ".mlvc" / "refs" / "runs") if HEX64.match(n)}
    except FileNotFoundError:
        return set()


def read_ref(proj: Path, ref: str) -> str:
    try:
        return (proj / ".mlvc" / ref).read_text().strip()
    except OSError:
        return ""


def flushed_points(proj: Path) -> dict[str, int]:
    """Rows in every complete series block of every live run on disk, by live dir name."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    out = {}
    base = proj / ".mlvc" / "live"
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        n = 0
        for block in sorted((d / "series").glob("*.arrow")):
            try:
                with pa.memory_map(str(block)) as src:
                    n += ipc.open_file(src).read_all().num_rows
            except (OSError, pa.ArrowInvalid):
                continue  # torn by the kill: never counted as flushed
        out[d.name] = n
    return out


def b3(path: Path) -> str:
    import blake3

    h = blake3.blake3()
    if path.is_symlink():
        h.update(os.readlink(path).encode())
    elif path.stat().st_size:
        h.update_mmap(str(path))
    return h.hexdigest()


# -- one trial ---------------------------------------------------------------------------


@dataclass
class Trial:
    scenario: str
    n: int
    seed: int
    dir: Path
    rng: random.Random = field(init=False)
    proj: Path = field(init=False)
    env: dict = field(init=False)
    variant: str = ""
    target: str = ""  # what was killed
    phase: str = ""
    delay: float | None = None
    killed: bool = False  # False: the target had exited before its kill time
    committed: set[str] = field(default_factory=set)  # reported committed: must survive
    whole: list[tuple[str, str]] = field(default_factory=list)  # (run, name) of killed commits
    tracked: list[dict] = field(default_factory=list)  # live runs whose points must survive
    keep_head: str = ""  # HEAD must still be this after the trial (reproduce never moves it)
    reproduces: str = ""  # a new run not made by a commit must reproduce this run
    before: set[str] = field(default_factory=set)  # runs of the template
    after: str = ""  # the run of the oracle's own commit
    observed: dict = field(default_factory=dict)  # full durations of targets that beat the kill
    failures: list[tuple[str, str]] = field(default_factory=list)
    lost_runs: int = 0
    fsck_problems: int = 0
    lost_points: int = 0
    tracebacks: int = 0
    runs_checked: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.proj = self.dir / "proj"
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.env = child_env(self.dir / "tmp")

    def fail(self, kind: str, detail: str) -> None:
        self.failures.append((kind, detail))

    def scan(self, label: str, text: str) -> None:
        n = text.count(TRACEBACK)
        if n:
            self.tracebacks += n
            tail = text[text.index(TRACEBACK) :].strip().splitlines()
            self.fail("traceback", f"{label}: {tail[-1] if tail else ''}")

    def start(self, argv: list[str], label: str) -> Proc:
        self.transcript.append(f"$ {' '.join(argv)}  # {label}")
        return Proc(argv, self.proj, self.env, self.dir / "logs", label)

    def collect(self, p: Proc) -> None:
        """Scan a finished (or killed) process's output for tracebacks."""
        self.scan(p.label, p.out() + p.err())

    def cli(self, *args: str, ok=(0,), label: str | None = None) -> subprocess.CompletedProcess:
        argv = mlvc(*args)
        try:
            r = subprocess.run(
                argv,
                cwd=self.proj,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            self.fail("hang", f"mlvc {' '.join(args)} ran over {CLI_TIMEOUT:.0f} s")
            return subprocess.CompletedProcess(argv, -9, e.stdout or "", e.stderr or "")
        self.transcript.append(f"$ mlvc {' '.join(args)}  -> {r.returncode}\n{r.stderr[-2000:]}")
        self.scan(label or f"mlvc {args[0]}", r.stdout + r.stderr)
        if r.returncode not in ok:
            last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            self.fail(f"{args[0]} failed", f"mlvc {' '.join(args)}: exit {r.returncode}: {last}")
        return r

    def record(self) -> dict:
        return {
            "scenario": self.scenario,
            "trial": self.n,
            "seed": self.seed,
            "variant": self.variant,
            "target": self.target,
            "phase": self.phase,
            "delay": None if self.delay is None else round(self.delay, 4),
            "killed": self.killed,
            "lost_runs": self.lost_runs,
            "fsck_problems": self.fsck_problems,
            "lost_points": self.lost_points,
            "tracebacks": self.tracebacks,
            "runs_checked": self.runs_checked,
            "failures": [list(f) for f in self.failures],
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
        }


# -- the oracle --------------------------------------------------------------------------


def oracle(t: Trial) -> None:
    proj = t.proj
    t.cli("runs", "--json")  # records live runs whose process died as killed
    check_leftovers(t)
    head = read_ref(proj, "HEAD")
    if t.keep_head and head != t.keep_head:
        t.fail("HEAD moved", f"HEAD moved from {t.keep_head[:10]} to {head[:10]}")
    for rid, name in t.whole:
        if head != rid:
            t.fail(
                "half commit", f"run {rid[:10]} of the killed commit is recorded, HEAD is not it"
            )
        if name and read_ref(proj, f"refs/names/{name}") != rid:
            t.fail("half commit", f"run {rid[:10]} of the killed commit lacks its name {name}")
    # the repository still takes a commit (no stale lock, no poisoned stat cache), and the
    # run it makes is checked with the others
    r = t.cli("commit", "-q", "-m", "after the kill", label="commit after the kill")
    out = r.stdout.strip().splitlines()
    if r.returncode == 0 and out and HEX64.match(out[-1]):
        t.committed.add(out[-1])
        t.after = out[-1]

    r = t.cli("fsck", "--json", ok=(0, 9))
    try:
        problems = json.loads(r.stdout)["problems"]
    except (ValueError, KeyError, TypeError):
        problems = []
        t.fail("fsck output", f"fsck printed no JSON (exit {r.returncode})")
    t.fsck_problems += len(problems)
    for p in problems:
        t.fail("fsck", p)

    r = t.cli("log", "--json")
    try:
        runs = json.loads(r.stdout)
    except ValueError:
        runs = []
        t.fail("log output", f"log printed no JSON (exit {r.returncode})")
    logged = {x["id"] for x in runs}
    refs = run_ids(proj)
    lost = t.committed - logged
    t.lost_runs += len(lost)
    for rid in sorted(lost):
        where = "its ref is gone too" if rid not in refs else "refs/runs still has it"
        t.fail("lost run", f"run {rid} was reported committed but `mlvc log` lacks it ({where})")
    for rid in sorted((refs - logged) - lost):
        t.fail("log misses a run", f"run {rid} is under refs/runs but `mlvc log` lacks it")
    for rid in sorted(logged - refs):
        t.fail("log lists a run without ref", f"`mlvc log` lists {rid}, absent from refs/runs")

    for rid in sorted(refs | logged):
        check_run(t, rid)

    if t.tracked:
        check_tracked(t, runs)
    worker_log = proj / ".mlvc" / "logs" / "index-worker.log"
    if worker_log.exists():
        t.scan("index worker log", worker_log.read_text(errors="replace"))


def check_leftovers(t: Trial) -> None:
    """After reaping, no staged run of a dead process may remain with what it takes to be
    recorded (meta.json with its inputs): a claim a killed reaper left, or a staged run, is
    a run no later ``mlvc runs`` records. Folders without that (killed before start_run
    returned, or while a recorded run's folder was being removed) are counted as notes."""
    base = t.proj / ".mlvc" / "live"
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            meta = json.loads((d / "meta.json").read_text())
        except (OSError, ValueError):
            meta = None
        if meta is None or "inputs" not in meta:
            t.notes.append(
                f"junk live dir {d.name} ({'meta without inputs' if meta else 'no meta'})"
            )
        elif d.name.startswith(".reaping-"):
            t.fail("orphaned reaper claim", f"{d.name} is left under .mlvc/live after `mlvc runs`")
        else:
            t.fail(
                "live run left unrecorded", f"{d.name} is still under .mlvc/live after `mlvc runs`"
            )


def check_run(t: Trial, rid: str) -> None:
    """``mlvc show`` and ``mlvc checkout --to``: every recorded file comes back, verified."""
    t.runs_checked += 1
    r = t.cli("show", rid, "--json", label="mlvc show")
    if r.returncode != 0:
        return
    try:
        shown = json.loads(r.stdout)
    except ValueError:
        t.fail("show output", f"mlvc show {rid[:10]} printed no JSON")
        return
    want = {}
    for sec in ("code", "data", "artifacts"):
        for e in (shown.get(sec) or {}).get("entries", []):
            want[e["path"]] = (e["id"], e["size"])
    made_by_op = rid not in t.before and rid != t.after
    if t.reproduces and made_by_op and shown.get("reproduces") != t.reproduces:
        t.fail(
            "reproduction recorded wrong",
            f"run {rid[:10]} ({shown.get('status')}) made by the killed reproduce records "
            f"reproduces={str(shown.get('reproduces'))[:10]}, not {t.reproduces[:10]}",
        )
    dest = t.dir / "checkouts" / rid[:12]
    r = t.cli("checkout", rid, "--to", str(dest), "-q", label="mlvc checkout")
    if r.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        return
    got = {}
    for folder, _dirs, files in os.walk(dest):
        for f in files:
            p = Path(folder) / f
            got[p.relative_to(dest).as_posix()] = p
    for path in sorted(set(want) - set(got)):
        t.fail("checkout incomplete", f"checkout of {rid[:10]} lacks {path}")
    for path in sorted(set(got) - set(want)):
        t.fail("checkout extra", f"checkout of {rid[:10]} wrote {path}, which the run lacks")
    for path in sorted(set(want) & set(got)):
        if b3(got[path]) != want[path][0]:
            t.fail("checkout wrong bytes", f"checkout of {rid[:10]}: {path} != its recorded id")
    shutil.rmtree(dest, ignore_errors=True)


def check_tracked(t: Trial, runs: list[dict]) -> None:
    """Each tracked run: recorded once, with its status, and every point it had flushed."""
    r = t.cli(
        "query",
        "-f",
        "json",
        "SELECT run_id, count(*) AS n FROM metrics WHERE key LIKE 't.%' GROUP BY run_id",
    )
    try:
        points = {x["run_id"]: x["n"] for x in json.loads(r.stdout)}
    except (ValueError, KeyError, TypeError):
        points = {}
    for tr in t.tracked:
        mine = [x for x in runs if x["name"] == tr["name"]]
        if len(mine) > 1:
            t.fail(
                "duplicate run",
                f"tracked run {tr['name']} is recorded {len(mine)} times: "
                + ", ".join(f"{x['id'][:10]} ({x['status']})" for x in mine),
            )
        if not mine:
            if tr["started"] or tr["flushed"]:
                t.lost_runs += 1
                t.fail("lost run", f"tracked run {tr['name']} (started) is not recorded at all")
                t.lost_points += max(tr["flushed"], tr["logged"] or 0)
            continue
        statuses = {x["status"] for x in mine}
        allowed = set(tr["statuses"])
        if not statuses & allowed:
            t.fail(
                "wrong status",
                f"tracked run {tr['name']} recorded as {sorted(statuses)}, expected one of "
                f"{sorted(allowed)}",
            )
        best = max(points.get(x["id"], 0) for x in mine)
        need = tr["flushed"] if tr["logged"] is None else max(tr["flushed"], tr["logged"])
        if best < need:
            t.lost_points += need - best
            t.fail(
                "lost points",
                f"tracked run {tr['name']} ({tr['phase']}): {need} points flushed before the "
                f"kill, {best} recorded",
            )


# -- scenarios -----------------------------------------------------------------------------
# Each takes a trial and the measured timings (None: measure, no kill) and returns timings.


STARTUP = [0.0]  # seconds `python -m mlvc --version` takes: measured once in main()


def _observe(t: Trial, key: str, p: Proc, t0: float | None = None) -> None:
    """A target that finished before its kill time tells how long it takes now."""
    if not p.killed and p.t_end is not None:
        t.observed[key] = p.t_end - (p.t0 if t0 is None else t0)


def _pick(t: Trial, d: float, cold: bool = False) -> float:
    """A kill time within a measured duration ``d``; for a process started cold, past most
    of the interpreter's start-up (a kill during imports tests nothing of mlvc's)."""
    floor = 0.8 * STARTUP[0] if cold and d > STARTUP[0] else 0.0
    return t.rng.uniform(floor, d)


def _note_new_commit(t: Trial, before: set[str], p: Proc, name: str = "") -> None:
    """After a commit that ran to its end: its printed id is committed. After a kill: a run it
    left must be whole (checked by the oracle)."""
    if p.killed:
        t.whole.extend((rid, name) for rid in sorted(run_ids(t.proj) - before))
        return
    out = p.out().strip().splitlines()
    if p.p.returncode == 0 and out and HEX64.match(out[-1]):
        t.committed.add(out[-1])
    elif p.p.returncode != 0:
        t.fail("commit failed", f"unkilled commit exited {p.p.returncode}: {p.err()[-300:]}")


def sc_commit(t: Trial, timing: dict | None) -> dict:
    edit_data(t.proj, t.rng, same_size=False)
    before = run_ids(t.proj)
    p = t.start(mlvc("commit", "-q", "-m", f"trial {t.n}", "-n", f"trial-{t.n}"), "commit")
    if timing is None:
        p.wait()
        t.collect(p)
        _note_new_commit(t, before, p)
        return {"op": p.duration}
    t.target, t.delay = "commit", _pick(t, timing["op"], cold=True)
    t.killed = p.kill_at(t.delay)
    _observe(t, "op", p)
    t.collect(p)
    _note_new_commit(t, before, p, f"trial-{t.n}")
    return {}


def sc_commit_statcache(t: Trial, timing: dict | None) -> dict:
    t.variant = t.rng.choice(["status", "plain"]) if timing is not None else "status"
    t.cli("status")  # the copy has new inodes: this fills the stat cache for it
    time.sleep(0.05)  # edits after the cache's clock reading, never in its racy tick
    edit_data(t.proj, t.rng, same_size=True)
    time.sleep(0.05)
    if t.variant == "status":
        t.cli("status")
    before = run_ids(t.proj)
    p = t.start(mlvc("commit", "-q", "-m", f"trial {t.n}", "-n", f"trial-{t.n}"), "commit")
    if timing is None:
        p.wait()
        t.collect(p)
        _note_new_commit(t, before, p)
        return {"op": p.duration}
    t.target, t.delay = "commit", _pick(t, timing["op"], cold=True)
    t.killed = p.kill_at(t.delay)
    _observe(t, "op", p)
    t.collect(p)
    _note_new_commit(t, before, p, f"trial-{t.n}")
    return {}


def sc_gc(t: Trial, timing: dict | None) -> dict:
    p = t.start(mlvc("gc", "--grace", "0"), "gc")
    if timing is None:
        p.wait()
        t.collect(p)
        if p.p.returncode != 0:
            t.fail("gc failed", p.err()[-300:])
        return {"op": p.duration}
    t.target, t.delay = "gc", _pick(t, timing["op"], cold=True)
    t.killed = p.kill_at(t.delay)
    _observe(t, "op", p)
    t.collect(p)
    return {}


def _start_tracked(t: Trial, steps: int, every: int) -> tuple[Proc, dict]:
    name = f"track-{t.n}-{t.rng.randint(0, 10**6)}"
    p = t.start([PYTHON, "track.py", name, str(steps), str(every)], f"track-{name}")
    tr = {"name": name, "phase": "", "flushed": 0, "logged": None, "started": False}
    return p, tr


def _finish_tracked(t: Trial, p: Proc, tr: dict) -> None:
    """A tracked run that was not killed: all its points and its run must be there."""
    rc = p.wait()
    t.collect(p)
    m = re.search(r"ENDING (\d+)", p.out())
    tr["started"] = "STARTED" in p.out()
    tr["logged"] = int(m.group(1)) if m else None
    tr["statuses"] = ["finished"]
    rid = re.search(r"RUN ([0-9a-f]{64})", p.out())
    if rid:
        t.committed.add(rid.group(1))
    elif rc != 0:
        t.fail("tracked run failed", f"{tr['name']} exited {rc}: {p.err().strip()[-300:]}")
    t.tracked.append(tr)


def sc_gc_live(t: Trial, timing: dict | None) -> dict:
    """``mlvc gc --grace 0`` over and over while a tracked run logs; one gc is killed."""
    live, tr = _start_tracked(t, steps=3000, every=50)
    if live.wait_for("STARTED") is None:
        _finish_tracked(t, live, tr)
        t.fail("tracked run failed", "the tracked run never started")
        return {}
    # the first gc repacks, later ones find little: each of the first five has its duration
    victim = t.rng.randrange(5) if timing is not None else -1
    durations, i = {}, 0
    while live.poll() is None:
        p = t.start(mlvc("gc", "--grace", "0"), f"gc-{i}")
        if i == victim:
            d = timing.get(f"gc{i}") or max(timing.values(), default=0.5)
            t.target, t.delay = "gc", _pick(t, d, cold=True)
            t.killed = p.kill_at(t.delay)
            _observe(t, f"gc{i}", p)
        elif p.wait() != 0:
            t.fail("gc failed", f"unkilled gc exited {p.p.returncode}: {p.err().strip()[-300:]}")
        elif i < 5:
            durations[f"gc{i}"] = p.duration
        t.collect(p)
        i += 1
    if timing is not None:
        t.variant = f"gc {victim + 1} of {i}"
    _finish_tracked(t, live, tr)
    return durations


def sc_index_rebuild(t: Trial, timing: dict | None) -> dict:
    p = t.start(mlvc("index", "rebuild"), "rebuild")
    if timing is None:
        p.wait()
        t.collect(p)
        return {"op": p.duration}
    t.target, t.delay = "index rebuild", _pick(t, timing["op"], cold=True)
    t.killed = p.kill_at(t.delay)
    _observe(t, "op", p)
    t.collect(p)
    return {}


def sc_index_worker(t: Trial, timing: dict | None) -> dict:
    t.variant = t.rng.choice(["no-index", "pending"]) if timing is not None else "pending"
    if t.variant == "no-index":
        (t.proj / ".mlvc" / "index.duckdb").unlink(missing_ok=True)
    t.committed |= run_ids(t.proj)  # journalled before the trial: reported committed
    before = run_ids(t.proj)
    c = t.start(mlvc("commit", "-q", "-m", f"trigger {t.n}", "-p", f"trial={t.n}"), "commit")
    worker, seen = None, None
    deadline = None
    while True:
        pids = processes_under(t.proj, "mlvc.index.worker")
        if pids:
            worker, seen = pids[0], time.monotonic()
            break
        if c.poll() is not None:
            deadline = deadline or time.monotonic() + 2.0
            if time.monotonic() > deadline:
                break
        time.sleep(0.002)
    c.wait()
    t.collect(c)
    _note_new_commit(t, before, c)
    if worker is None:
        t.notes.append("no index worker was seen (the commit ingested nothing or inline)")
        return {"op": 0.0}
    if timing is None:
        while _alive(worker):
            time.sleep(0.002)
        return {"op": time.monotonic() - seen}
    t.target, t.delay = "index worker", _pick(t, timing["op"])
    time.sleep(max(0.0, seen + t.delay - time.monotonic()))
    if _alive(worker):
        try:
            os.kill(worker, signal.SIGKILL)  # a process our commit started, by its pid
            t.killed = True
        except ProcessLookupError:
            pass
    return {}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def sc_tracked(t: Trial, timing: dict | None) -> dict:
    p, tr = _start_tracked(t, steps=2500, every=200)
    if timing is None:
        t_started = p.wait_for("STARTED")
        t_ending = p.wait_for("ENDING")
        p.wait()
        t.collect(p)
        m = re.search(r"RUN ([0-9a-f]{64})", p.out())
        if not (t_started and t_ending and m):
            t.fail("tracked run failed", p.err()[-300:])
            return {"start": 1.0, "loop": 1.0, "end": 1.0, "reap": 1.0}
        t.committed.add(m.group(1))
        out = {"start": t_started - p.t0, "loop": t_ending - t_started, "end": p.t_end - t_ending}
        # how long `mlvc runs` takes to record a killed run: kill a second one mid-loop
        q, _tr = _start_tracked(t, steps=2500, every=200)
        at = q.wait_for("STARTED")
        q.kill_at(out["loop"] / 2, at)
        r = t.start(mlvc("runs"), "reap")
        r.wait()
        t.collect(r)
        out["reap"] = r.duration
        return out
    t.phase = t.rng.choices(["start", "loop", "end"], weights=[1, 2, 2])[0]
    t.variant = "reaper" if t.phase == "loop" and t.rng.random() < 0.4 else ""
    t.target = "tracked run"
    tr["phase"] = t.phase
    if t.phase == "start":
        t.delay = _pick(t, timing["start"], cold=True)
        t.killed = p.kill_at(t.delay)
    elif t.phase == "loop":
        at = p.wait_for("STARTED")
        t.delay = _pick(t, timing["loop"])
        t.killed = p.kill_at(t.delay, at)
    else:
        at = p.wait_for("ENDING")
        t.delay = _pick(t, timing["end"])
        t.killed = p.kill_at(t.delay, at)
        _observe(t, "end", p, at)
    t.collect(p)
    out = p.out()
    m = re.search(r"ENDING (\d+)", out)
    flushed = flushed_points(t.proj)
    live_dirs = [k for k in flushed if not k.startswith(".")]
    tr["started"] = "STARTED" in out
    tr["flushed"] = sum(flushed.values())
    # the live run gone at the kill means end() recorded it: every logged point must be there
    tr["logged"] = int(m.group(1)) if m and not live_dirs else None
    tr["statuses"] = ["killed"] if t.phase != "end" else ["killed", "finished"]
    if not t.killed:
        tr["statuses"] = ["finished"]
        rid = re.search(r"RUN ([0-9a-f]{64})", out)
        if rid:
            t.committed.add(rid.group(1))
    t.tracked.append(tr)
    if t.variant == "reaper":
        r = t.start(mlvc("runs"), "reaper")
        if r.kill_at(_pick(t, timing["reap"], cold=True)):
            t.killed = True
        else:
            _observe(t, "reap", r)
        t.collect(r)
    return {}


def sc_reproduce(t: Trial, timing: dict | None) -> dict:
    t.keep_head = t.reproduces = read_ref(t.proj, "HEAD")
    p = t.start(mlvc("reproduce", "HEAD"), "reproduce")
    if timing is None:
        p.wait()
        t.collect(p)
        m = re.search(r"recorded as run ([0-9a-f]+)", p.out() + p.err())
        if p.p.returncode not in (0, 1) or not m:  # exit 1: reproduced as DIFFERENT
            t.fail("reproduce failed", f"exit {p.p.returncode}: {p.err()[-300:]}")
        return {"op": p.duration}
    t.target, t.delay = "reproduce", _pick(t, timing["op"], cold=True)
    t.killed = p.kill_at(t.delay)
    _observe(t, "op", p)
    t.collect(p)
    return {}


def sc_run(t: Trial, timing: dict | None) -> dict:
    """``mlvc run main`` right after a code edit, so its code tree is new to the store."""
    (t.proj / "src" / "util.py").write_text(f"X = {t.rng.randint(0, 10**9)}\n")
    p = t.start(mlvc("run", "-q", "main"), "run")
    if timing is None:
        p.wait()
    else:
        t.target, t.delay = "mlvc run", _pick(t, timing["op"], cold=True)
        t.killed = p.kill_at(t.delay)
        _observe(t, "op", p)
    t.collect(p)
    out = p.out().strip().splitlines()
    if not p.killed and p.p.returncode == 0 and out and HEX64.match(out[-1]):
        t.committed.add(out[-1])
    elif not p.killed:
        t.fail("run failed", f"unkilled mlvc run exited {p.p.returncode}: {p.err()[-300:]}")
    return {"op": p.duration} if timing is None else {}


def sc_commit_gc(t: Trial, timing: dict | None) -> dict:
    edit_data(t.proj, t.rng, same_size=False)
    before = run_ids(t.proj)
    offset = t.rng.uniform(0.0, 0.5) if timing is not None else 0.2
    c = t.start(mlvc("commit", "-q", "-m", f"trial {t.n}", "-n", f"trial-{t.n}"), "commit")
    time.sleep(offset)
    g = t.start(mlvc("gc", "--grace", "0"), "gc")
    if timing is None:
        c.wait()
        g.wait()
        for p in (c, g):
            t.collect(p)
        _note_new_commit(t, before, c)
        return {"commit": c.duration, "gc": g.duration}
    t.target = t.rng.choice(["commit", "gc", "both"])
    t.variant = t.target
    if t.target in ("commit", "both"):
        t.delay = _pick(t, timing["commit"], cold=True)
        t.killed = c.kill_at(t.delay)
        _observe(t, "commit", c)
    if t.target in ("gc", "both"):
        d = _pick(t, timing["gc"], cold=True)
        t.delay = d if t.delay is None else t.delay
        if g.kill_at(d):
            t.killed = True
        else:
            _observe(t, "gc", g)
    for p in (c, g):
        if p.wait() is None:
            t.fail("hang", f"{p.label} ran over {CLI_TIMEOUT:.0f} s")
        t.collect(p)
    _note_new_commit(t, before, c, f"trial-{t.n}")
    if not g.killed and g.p.returncode != 0:
        t.fail("gc failed", f"unkilled gc exited {g.p.returncode}: {g.err().strip()[-300:]}")
    return {}


@dataclass
class Scenario:
    name: str
    weight: int
    template: str
    fn: Callable[[Trial, dict | None], dict]


SCENARIOS = [  # name, default trials (of 230), template, function
    Scenario("commit", 28, "base", sc_commit),
    Scenario("commit-statcache", 28, "base", sc_commit_statcache),
    Scenario("gc", 24, "gc", sc_gc),
    Scenario("gc-live", 24, "gc", sc_gc_live),
    Scenario("index-rebuild", 18, "index", sc_index_rebuild),
    Scenario("index-worker", 24, "pending", sc_index_worker),
    Scenario("tracked-run", 34, "base", sc_tracked),
    Scenario("run", 16, "base", sc_run),
    Scenario("reproduce", 16, "base", sc_reproduce),
    Scenario("commit+gc", 18, "gc", sc_commit_gc),
]


# -- templates -----------------------------------------------------------------------------


def _setup_run(argv: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"template setup failed: {' '.join(argv)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def build_templates(base: Path, names: set[str], seed: int) -> dict[str, Path]:
    rng = random.Random(seed)
    out: dict[str, Path] = {}
    tmp = base / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = child_env(tmp)

    def fresh(name: str, src: Path | None = None) -> Path:
        root = base / "templates" / name
        if src is None:
            write_project(root, rng)
            _setup_run(mlvc("init"), root, env)
        else:
            shutil.copytree(src, root, symlinks=True)
        return root

    log("building template repositories")
    root = fresh("base")
    _setup_run(mlvc("commit", "-q", "-m", "first", "-n", "first"), root, env)
    edit_data(root, rng, same_size=False)
    _setup_run(mlvc("commit", "-q", "-m", "second", "-t", "two"), root, env)
    _setup_run(mlvc("run", "-q", "main"), root, env)  # HEAD: a run with a command to reproduce
    _setup_run(mlvc("log"), root, env)
    wait_index_idle(root)
    out["base"] = root
    if "gc" in names:
        root = fresh("gc", out["base"])
        for script in (GARBAGE_PY, GARBAGE_ONLY_PY, GARBAGE_ONLY_PY):
            _setup_run([PYTHON, "-c", script, str(root)], root, env)
        _setup_run(mlvc("log"), root, env)
        wait_index_idle(root)
        out["gc"] = root
    if names & {"index", "pending"}:
        root = fresh("index", out["base"])
        for i in range(2):
            _setup_run(mlvc("commit", "-q", "-m", f"extra {i}", "-p", f"i={i}"), root, env)
        _setup_run(mlvc("log"), root, env)
        wait_index_idle(root)
        out["index"] = root
    if "pending" in names:
        root = fresh("pending", out["index"])
        fd = os.open(root / ".mlvc" / "index.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)  # commits cannot ingest: their runs stay journalled
        try:
            for i in range(3):
                _setup_run(mlvc("commit", "-q", "-m", f"pending {i}", "-p", f"j={i}"), root, env)
        finally:
            os.close(fd)
        out["pending"] = root
    return out


# -- driving -------------------------------------------------------------------------------


def run_trial(sc: Scenario, template: Path, base: Path, n: int, seed: int, timing) -> Trial:
    tdir = base / "trials" / f"{sc.name}-{n:03d}"
    shutil.rmtree(tdir, ignore_errors=True)
    t = Trial(sc.name, n, seed, tdir)
    shutil.copytree(template, t.proj, symlinks=True)
    t.committed = run_ids(t.proj)  # every run of the template was reported committed
    t.before = set(t.committed)
    start = time.monotonic()
    result = {}
    try:
        result = sc.fn(t, timing)
        oracle(t)
    except Exception as e:  # a harness error is reported as a failure, never hidden
        import traceback

        t.fail("harness error", "".join(traceback.format_exception_only(type(e), e)).strip())
        t.notes.append(traceback.format_exc())
    finally:
        settle(t)
    t.seconds = time.monotonic() - start
    t.timing = result  # type: ignore[attr-defined]
    return t


def settle(t: Trial) -> None:
    """Wait for processes our commands left (detached index workers); kill them at last."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and processes_under(t.dir):
        time.sleep(0.05)
    for pid in processes_under(t.dir):
        t.fail("hang", f"a process of the trial still ran a minute after it: {pid}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def measure(sc: Scenario, template: Path, base: Path, reps: int, seed: int) -> dict:
    samples: dict[str, list[float]] = {}
    for i in range(reps):
        t = run_trial(sc, template, base, 900 + i, seed + i, None)
        if t.failures:
            log(f"  {sc.name}: unkilled run {i} already fails the oracle: {t.failures[:3]}")
        for k, v in t.timing.items():  # type: ignore[attr-defined]
            samples.setdefault(k, []).append(v)
        shutil.rmtree(t.dir, ignore_errors=True)
    return {k: statistics.median(v) for k, v in samples.items()}


def adapt(timing: dict, observed: dict) -> None:
    """Follow the machine's load: a target that finished before its kill time moves the
    window halfway to 1.1x the duration it took, so kills keep reaching the op's last steps
    (HEAD and name refs, unstaging) while few trials are wasted past its end."""
    for k, v in observed.items():
        if k in timing:
            timing[k] = 0.5 * timing[k] + 0.5 * 1.1 * v


def plan(total: int, only: str | None) -> list[tuple[Scenario, int]]:
    chosen = [s for s in SCENARIOS if only in (None, s.name)]
    weights = sum(s.weight for s in chosen)
    counts = [max(1, round(total * s.weight / weights)) for s in chosen]
    return list(zip(chosen, counts, strict=True))


def normalize(detail: str) -> str:
    detail = re.sub(r"[0-9a-f]{64}", "<id>", detail)
    detail = re.sub(r"pack-[0-9a-f]{32}", "pack-<token>", detail)
    detail = re.sub(r"\b[0-9a-f]{10,12}\b", "<short>", detail)
    detail = re.sub(r"/tmp/\S*?/proj", "<proj>", detail)
    detail = re.sub(r"@\d+", "@<offset>", detail)
    detail = re.sub(r"--to \S+", "--to <dir>", detail)
    detail = re.sub(r"\.reaping-\S+", ".reaping-<key>-<pid>", detail)
    detail = re.sub(r"track-\d+-\d+", "track-<n>", detail)
    detail = re.sub(
        r"\d+ points flushed before the kill, \d+ recorded",
        "<n> points flushed before the kill, fewer recorded",
        detail,
    )
    detail = re.sub(r"entry '[^']*'", "entry <name>", detail)
    return detail


def startup_time() -> float:
    samples = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run(mlvc("--version"), capture_output=True, check=True)
        samples.append(time.monotonic() - t0)
    return statistics.median(samples)


def machine() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": os.cpu_count(),
        "uname": " ".join(platform.uname()),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def report(
    trials: list[Trial], timings: dict, measured: dict, info: dict, elapsed: float
) -> tuple[str, dict]:
    rows, totals = [], Counter()
    by_sc: dict[str, list[Trial]] = {}
    for t in trials:
        by_sc.setdefault(t.scenario, []).append(t)
    for name, ts in by_sc.items():
        c = Counter(
            trials=len(ts),
            killed=sum(t.killed for t in ts),
            lost_runs=sum(t.lost_runs for t in ts),
            fsck_problems=sum(t.fsck_problems for t in ts),
            lost_points=sum(t.lost_points for t in ts),
            tracebacks=sum(t.tracebacks for t in ts),
            oracle_failures=sum(len(t.failures) for t in ts),
            failed_trials=sum(bool(t.failures) for t in ts),
            failed_unkilled=sum(bool(t.failures) and not t.killed for t in ts),
        )
        totals.update(c)
        d, m = timings.get(name, {}), measured.get(name, {})
        rows.append((name, c, ", ".join(f"{k} {m.get(k, v):.2f}→{v:.2f}" for k, v in d.items())))
    cols = [
        "trials",
        "killed",
        "lost_runs",
        "fsck_problems",
        "lost_points",
        "tracebacks",
        "oracle_failures",
        "failed_trials",
        "failed_unkilled",
    ]
    head = [
        "scenario",
        "trials",
        "killed mid-op",
        "lost runs",
        "fsck problems",
        "lost points",
        "tracebacks",
        "oracle failures",
        "failed trials",
        "of which not killed",
        "kill window s (measured→last)",
    ]
    lines = [
        f"Fault injection: {totals['trials']} trials in {elapsed / 60:.1f} min, "
        f"{info['date']}; {info['nproc']} CPUs, load {info['loadavg'][0]:.1f}, "
        f"Python {info['python']}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, c, d in rows:
        lines.append(f"| {name} | " + " | ".join(str(c[k]) for k in cols) + f" | {d} |")
    lines.append("| **total** | " + " | ".join(f"**{totals[k]}**" for k in cols) + " | |")
    kinds: dict[tuple[str, str, str], list[Trial]] = {}
    for t in trials:
        for key in dict.fromkeys((t.scenario, k, normalize(d)) for k, d in t.failures):
            kinds.setdefault(key, []).append(t)
    if kinds:
        lines += ["", "Distinct failures (scenario, kind: detail — trials):", ""]
        for (sc, kind, detail), ts in sorted(kinds.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
            ex = ", ".join(
                f"#{t.n}"
                + (f" {t.variant}" if t.variant else "")
                + (f" {t.phase}" if t.phase else "")
                for t in ts[:4]
            )
            unkilled = sum(not t.killed for t in ts)
            lines.append(
                f"- {sc}, {kind}: {detail} — {len(ts)} trial(s), {unkilled} of them not killed "
                f"mid-op ({ex})"
            )
    notes = Counter(
        (t.scenario, re.sub(r" \S+ \(", " (", n) if n.startswith("junk") else n)
        for t in trials
        for n in t.notes
        if not n.startswith("Traceback")
    )
    if notes:
        lines += ["", "Notes (not failures):", ""]
        lines += [f"- {sc}: {n} — {k} trial(s)" for (sc, n), k in sorted(notes.items())]
    summary = {
        "machine": info,
        "elapsed_s": round(elapsed, 1),
        "totals": dict(totals),
        "scenarios": {name: dict(c) for name, c, _d in rows},
        "timings": timings,
        "measured": measured,
        "failures": [
            {"scenario": sc, "kind": k, "detail": d, "trials": [t.n for t in ts]}
            for (sc, k, d), ts in kinds.items()
        ],
    }
    return "\n".join(lines), summary


def _terminate(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=230, help="total trials (default 230)")
    ap.add_argument("--seed", type=int, default=9, help="seed of every random choice")
    ap.add_argument("--scenario", choices=[s.name for s in SCENARIOS], help="only this one")
    ap.add_argument("--json", dest="json_out", metavar="FILE", help="write every trial as JSON")
    ap.add_argument("--keep-failures", metavar="DIR", help="copy failed trials' folders here")
    ap.add_argument("--reps", type=int, default=3, help="unkilled runs to measure each op")
    ap.add_argument("--dir", default=None, help="where to make the temporary folder")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, _terminate)  # so the temporary folder is removed
    info = machine()
    started = time.monotonic()
    STARTUP[0] = startup_time()
    os.makedirs(args.dir or tempfile.gettempdir(), exist_ok=True)  # --dir made if new
    base = Path(tempfile.mkdtemp(prefix="mlvc-faults-", dir=args.dir)).resolve()
    trials: list[Trial] = []
    timings: dict[str, dict] = {}
    measured: dict[str, dict] = {}
    try:
        planned = plan(args.trials, args.scenario)
        templates = build_templates(base, {s.template for s, _n in planned}, args.seed)
        rng = random.Random(args.seed)
        for sc, count in planned:
            log(f"{sc.name}: measuring ({args.reps} unkilled runs)")
            timings[sc.name] = measure(sc, templates[sc.template], base, args.reps, args.seed)
            measured[sc.name] = dict(timings[sc.name])
            log(f"{sc.name}: {timings[sc.name]}; {count} trials")
            for n in range(count):
                t = run_trial(
                    sc, templates[sc.template], base, n, rng.randrange(2**32), timings[sc.name]
                )
                trials.append(t)
                adapt(timings[sc.name], t.observed)
                status = (
                    "ok" if not t.failures else f"FAIL {t.failures[0][0]}: {t.failures[0][1][:160]}"
                )
                log(
                    f"  {sc.name} #{n} {t.variant} {t.phase} delay "
                    f"{t.delay if t.delay is None else round(t.delay, 3)} "
                    f"{'killed' if t.killed else 'finished first'}: {status}"
                )
                if t.failures and args.keep_failures:
                    dest = Path(args.keep_failures) / t.dir.name
                    shutil.rmtree(dest, ignore_errors=True)
                    shutil.copytree(t.dir, dest, symlinks=True)
                    (dest / "trial.json").write_text(json.dumps(t.record(), indent=2))
                    (dest / "transcript.txt").write_text("\n".join(t.transcript))
                shutil.rmtree(t.dir, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text, summary = report(trials, timings, measured, info, time.monotonic() - started)
    print(text)
    if args.json_out:
        summary["args"] = vars(args)
        summary["trials"] = [t.record() for t in trials]
        Path(args.json_out).write_text(json.dumps(summary, indent=2, default=str))
    return 1 if any(t.failures for t in trials) else 0


if __name__ == "__main__":
    sys.exit(main())
