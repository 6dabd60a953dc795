"""Foundation benchmarks (issue 2): whole mlvc commands against a baseline measured in the same run.

Run as ``.venv/bin/python benchmarks/bench_foundation.py [--quick]``; see benchmarks/README.md.
Prints a Markdown report (``--out FILE`` also writes it, ``--json FILE`` the raw samples).

The machine is small, shared and noisy, so every figure is a median of several repetitions
and every table gives a ratio to a baseline timed in the same run, in the same repetition
(ratios are medians of the per-repetition ratios). Commands run as subprocesses, as a user
runs them. Data is generated at run time in a temp dir that is removed even on failure.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
MLVC = str(BIN / "mlvc")
PYTHON = sys.executable
DVC = str(HERE / ".peers-venv" / "bin" / "dvc")
MiB = 1 << 20


# -- running and timing commands -------------------------------------------------------------


@dataclass
class Proc:
    seconds: float
    rc: int
    maxrss: int  # bytes: peak RSS (VmHWM) sampled every 20 ms; 0 if never seen
    anon: int  # bytes: peak anonymous RSS (RssAnon) sampled every 20 ms
    out: str
    err: str


class CommandFailed(RuntimeError):
    pass


def env_for_children() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLVC_AUTHOR="bench <bench@example.invalid>",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
    )
    # Users' Pythons cache bytecode; without it every mlvc start compiles mlvc's modules
    # again (about 0.1-0.2 s here), which would be measured as mlvc's start-up.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


CHILD_ENV = env_for_children()


class MemorySampler(threading.Thread):
    """Polls a process's /proc status for its peak RSS (VmHWM) and its anonymous RSS.

    wait4's ru_maxrss is no good here: it also counts the forked copy of this process before
    exec. And RSS counts file pages a process mmaps, so a process that mmaps a 1 GiB file to
    hash it shows 1 GiB while holding little memory of its own; RssAnon tells the two apart.
    """

    def __init__(self, pid: int, every: float = 0.02):
        super().__init__(daemon=True)
        self.path = f"/proc/{pid}/status"
        self.every = every
        self.hwm = 0
        self.anon = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                with open(self.path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.hwm = max(self.hwm, int(line.split()[1]) * 1024)
                        elif line.startswith("RssAnon:"):
                            self.anon = max(self.anon, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                return
            self.done.wait(self.every)


def run(argv: Sequence[str], cwd: Path | str, check: bool = True) -> Proc:
    """Run a command, timing it wall-clock and sampling its memory."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(list(argv), cwd=cwd, stdout=out, stderr=err, env=CHILD_ENV)
        sampler = MemorySampler(p.pid)
        sampler.start()
        _, status, _usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
        sampler.done.set()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        proc = Proc(
            seconds,
            p.returncode,
            sampler.hwm,
            sampler.anon,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
    if check and proc.rc != 0:
        tail = (proc.err.strip() or proc.out.strip()).splitlines()[-5:]
        raise CommandFailed(f"`{' '.join(argv)}` exited {proc.rc}: " + " | ".join(tail))
    return proc


def timed_sync() -> float:
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Wait until ``url`` answers (a server ``proc`` started); RuntimeError naming ``what``
    if the process ends or ``timeout`` seconds pass first."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


def wait_for_index(project: Path, limit: float = 300.0) -> float:
    """Wait until no process holds the project's index lock; returns the seconds waited.

    ``mlvc commit`` hands index ingestion to a detached worker that holds this lock: it
    must finish before the next step is timed, or it would run on that step's time.
    """
    lock = project / ".mlvc" / "index.lock"
    if not lock.exists():
        return 0.0
    t0 = time.perf_counter()
    fd = os.open(lock, os.O_RDWR)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                break
            except BlockingIOError:
                if time.perf_counter() - t0 > limit:
                    break
                time.sleep(0.01)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def can_drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def rmtree(path: Path) -> None:
    """Remove a tree even where tools left read-only folders (dvc's and mlvc's caches)."""

    def fix(func, p, _exc):
        os.chmod(os.path.dirname(p), 0o755)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o755)
        func(p)

    if os.path.lexists(path):
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=fix)
        else:
            shutil.rmtree(path, onerror=fix)


# -- samples, medians, ratios ----------------------------------------------------------------


@dataclass
class Sample:
    """One repetition of one measured step: the command, then a separate os.sync()."""

    seconds: float
    sync: float = 0.0
    maxrss: int = 0
    anon: int = 0
    bg: float = 0.0  # mlvc's detached index worker, still running after the command returned

    @property
    def durable(self) -> float:
        return self.seconds + self.sync


@dataclass
class Series:
    label: str
    samples: list[Sample] = field(default_factory=list)
    error: str = ""

    def med(self, attr: str = "durable") -> float | None:
        vals = [getattr(s, attr) for s in self.samples]
        return statistics.median(vals) if vals else None


class Bench:
    """Collects series by key; keys keep repetitions of the same step together."""

    def __init__(self, cold_ok: bool):
        self.series: dict[str, Series] = {}
        self.cold_ok = cold_ok
        self.notes: list[str] = []

    def get(self, key: str, label: str | None = None) -> Series:
        if key not in self.series:
            self.series[key] = Series(label or key)
        return self.series[key]

    def measure(
        self,
        key: str,
        argv: Sequence[str],
        cwd: Path | str,
        cold: bool = False,
        label: str | None = None,
    ) -> Proc | None:
        """Time one command (cold: after dropping the page cache), then time a sync."""
        s = self.get(key, label)
        if s.error:
            return None
        if cold:
            drop_caches()
        else:
            os.sync()  # dirty pages of earlier steps must not be flushed on this one's time
        try:
            p = run(argv, cwd)
        except (CommandFailed, OSError) as e:
            s.error = str(e)
            print(f"  ! {key}: {e}", file=sys.stderr)
            return None
        bg = wait_for_index(Path(cwd)) if argv[0] == MLVC else 0.0
        s.samples.append(Sample(p.seconds, timed_sync(), p.maxrss, p.anon, bg))
        return p

    def ratios(self, key: str, base: str, attr: str = "durable") -> list[float]:
        """Per-repetition ratios key/base (paired: the same repetition)."""
        a, b = self.series.get(key), self.series.get(base)
        if not a or not b or a.error or b.error:
            return []
        pairs = zip(a.samples, b.samples, strict=False)
        return [getattr(x, attr) / getattr(y, attr) for x, y in pairs if getattr(y, attr) > 0]

    def ratio(self, key: str, base: str, attr: str = "durable") -> str:
        """Formatted median of the per-repetition ratios, with their range."""
        return fmt_ratio(self.ratios(key, base, attr))


def fmt_ratio(vals: list[float]) -> str:
    """Median of per-repetition ratios, with their range when there are several."""
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1 or f"{min(vals):.1f}" == f"{max(vals):.1f}":
        return f"{med:.2f}x"
    return f"{med:.2f}x ({min(vals):.1f}–{max(vals):.1f})"


def fmt_s(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def fmt_x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def fmt_mib(v: int | float | None) -> str:
    return "–" if not v else f"{v / MiB:.0f}"


def bg_note(b: Bench, keys: dict[str, str]) -> str:
    """A sentence on the index work mlvc left running in the background after returning."""
    parts = []
    for desc, key in keys.items():
        s = b.series.get(key)
        if s and s.samples and any(x.bg > 0.01 for x in s.samples):
            parts.append(f"{desc} {statistics.median(x.bg for x in s.samples):.2f} s")
    if not parts:
        return ""
    return (
        "\n\nmlvc's detached index worker went on after the command returned (waited for, "
        "untimed, before the next step; median): " + "; ".join(parts) + "."
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# -- data ------------------------------------------------------------------------------------


def write_random(path: Path, size: int, block: int = 16 * MiB) -> None:
    """Incompressible bytes, like trained weights; no repeated block, so no dedup either."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def make_tree(root: Path, dirs: int, per_dir: int, size: int) -> list[Path]:
    files = []
    for d in range(dirs):
        folder = root / f"d{d:03d}"
        folder.mkdir(parents=True)
        for i in range(per_dir):
            p = folder / f"f{i:04d}.bin"
            p.write_bytes(os.urandom(size))
            files.append(p)
    return files


def copy_tree(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)


# -- tools -----------------------------------------------------------------------------------


def tool_versions() -> dict[str, str]:
    out = {}
    for name, argv in (("git", ["git", "--version"]), ("dvc", [DVC, "--version"])):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, env=CHILD_ENV, timeout=60)
            out[name] = p.stdout.strip() if p.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            out[name] = ""
    return out


def fresh_mlvc(project: Path) -> None:
    rmtree(project / ".mlvc")
    run([MLVC, "init"], project)


def fresh_git(project: Path) -> None:
    rmtree(project / ".git")
    run(["git", "init", "-q"], project)


def fresh_dvc(project: Path) -> None:
    for name in (".git", ".dvc", ".dvcignore", ".gitignore"):
        p = project / name
        rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    for p in project.glob("*.dvc"):
        p.unlink()
    run(["git", "init", "-q"], project)
    run([DVC, "init", "-q"], project)
    # dvc keeps its hash cache (inode, mtime -> md5) outside the repo, keyed by its path;
    # keep it inside .dvc so a fresh repository really hashes from scratch
    with open(project / ".dvc" / "config", "a") as f:
        f.write(f"[core]\n    site_cache_dir = {project / '.dvc' / 'site-cache'}\n")


# -- 1. one 1 GiB file -----------------------------------------------------------------------


def bench_big_file(b: Bench, work: Path, size: int, reps: int, modes: list[str], tools) -> str:
    src = work / "big-src"
    src.mkdir()
    big = src / "big.bin"
    print(f"[1] writing {size / MiB:.0f} MiB of random bytes", file=sys.stderr)
    write_random(big, size)
    projects = {}
    for name in ("mlvc", "git", "dvc"):
        p = work / f"big-{name}"
        p.mkdir()
        if name == "dvc":
            shutil.copyfile(big, p / "big.bin")  # dvc moves the file into its cache
        else:
            os.link(big, p / "big.bin")  # mlvc and git only read it
        projects[name] = p
    base = work / "big-base"
    base.mkdir()
    co = work / "big-co"
    os.sync()
    # git deflates the whole file with zlib: CPU-bound, about a minute per GiB here, and the
    # same warm or cold; one sample of it is enough to place it, more would blow the budget.
    git_reps = 1 if size > 256 * MiB else reps
    pm = projects["mlvc"]

    for rep in range(reps):
        for mode in modes:
            cold = mode == "cold"
            print(f"[1] rep {rep + 1}/{reps} {mode}", file=sys.stderr)
            fresh_mlvc(pm)
            p = b.measure(
                f"big.commit.mlvc.{mode}",
                [MLVC, "commit", "-q", "-m", "big", "--artifacts", "big.bin"],
                pm,
                cold,
            )
            rid = p.out.strip().splitlines()[-1] if p and p.out.strip() else None
            b.measure(
                f"big.commit.base.{mode}",
                ["sh", "-c", f"cp {big} {base}/copy.bin && sync"],
                work,
                cold,
            )
            (base / "copy.bin").unlink(missing_ok=True)
            if not cold and tools.get("git") and rep < git_reps:
                fresh_git(projects["git"])
                b.measure("big.commit.git.warm", ["git", "add", "big.bin"], projects["git"])
            if not cold and tools.get("dvc"):
                fresh_dvc(projects["dvc"])
                b.measure("big.commit.dvc.warm", [DVC, "add", "-q", "big.bin"], projects["dvc"])
            rmtree(co)
            if rid:
                b.measure(
                    f"big.checkout.mlvc.{mode}",
                    [MLVC, "checkout", rid, "--to", str(co), "-q"],
                    pm,
                    cold,
                )
                got = co / "big.bin"
                if not got.exists() or got.stat().st_size != size:
                    b.notes.append(f"the big-file checkout did not produce {got} of {size} bytes")
            rmtree(co)
            co.mkdir()
            b.measure(
                f"big.checkout.base.{mode}",
                ["sh", "-c", f"cp {big} {co}/big.bin && sync"],
                work,
                cold,
            )
            rmtree(co)
    for p in projects.values():
        rmtree(p)
    rmtree(src)

    return render_big_file(b, size, modes, tools)


def render_big_file(b: Bench, size: int, modes: list[str], tools) -> str:
    labels = {
        "commit": {
            "mlvc": "`mlvc commit --artifacts big.bin`",
            "base": "`cp big.bin copy; sync` (baseline)",
            "git": "`git add big.bin`",
            "dvc": "`dvc add big.bin`",
        },
        "checkout": {
            "mlvc": "`mlvc checkout RUN --to DIR`",
            "base": "`cp big.bin DIR/; sync` (baseline)",
        },
    }
    rows = []
    for op, names in labels.items():
        for mode in modes:
            bkey = f"big.{op}.base.{mode}"
            for tool, label in names.items():
                key = f"big.{op}.{tool}.{mode}"
                if tool in ("git", "dvc"):
                    if mode != "warm":
                        continue
                    if not tools.get(tool):
                        rows.append([label, mode, "", f"{tool}: not installed", "", "", "", "", ""])
                        continue
                s = b.series.get(key)
                if s is None:
                    continue
                if s.error:
                    rows.append([label, mode, "", "FAILED: " + s.error[:160], "", "", "", "", ""])
                    continue
                med = s.med()
                mlvc = tool == "mlvc"
                rows.append(
                    [
                        label,
                        mode,
                        str(len(s.samples)),
                        fmt_s(s.med("seconds")),
                        fmt_s(med),
                        (b.ratio(key, bkey)),
                        f"{size / MiB / med:.0f}" if med else "–",
                        fmt_mib(max(x.maxrss for x in s.samples)) if mlvc else "",
                        fmt_mib(max(x.anon for x in s.samples)) if mlvc else "",
                    ]
                )
    head = [
        "command",
        "cache",
        "n",
        "s (command)",
        "s (+ sync)",
        "ratio to baseline (+ sync)",
        "MiB/s (+ sync)",
        "peak RSS MiB",
        "peak anon RSS MiB",
    ]
    return (
        f"### 1. One {size / MiB:.0f} MiB file of random bytes\n\n"
        "Medians of n runs; the ratio is the median of per-run ratios to the baseline timed in the "
        'same repetition. "+ sync" adds a `sync` timed after the command (mlvc syncs before it '
        "returns, git and dvc do not, and mlvc checkout does not). Peak RSS (VmHWM, sampled "
        "every 20 ms) counts the file pages a process mmaps; peak anon RSS is the memory the "
        "process holds of its own.\n\n"
        + table(head, rows)
        + bg_note(b, {f"commit ({m})": f"big.commit.mlvc.{m}" for m in modes})
    )


# -- 2. many small files ---------------------------------------------------------------------


def bench_small_files(
    b: Bench, work: Path, dirs: int, per_dir: int, size: int, reps: int, cold_first: bool, tools
) -> str:
    n = dirs * per_dir
    src = work / "small-src"
    print(f"[2] writing {n} files of {size} bytes", file=sys.stderr)
    make_tree(src / "data", dirs, per_dir, size)
    touched = [
        f"data/d{(i * dirs) // 10:03d}/f{(i * 7) % per_dir:04d}.bin" for i in range(min(10, n))
    ]
    # One project per tool, made once: each repetition starts a fresh repository in it
    # (the tools' own state is removed), so the data is stored from scratch each time.
    projects = {}
    for name in ("mlvc", "git", "dvc"):
        projects[name] = work / f"small-{name}"
        projects[name].mkdir()
        copy_tree(src / "data", projects[name] / "data")
    os.sync()

    def rewrite(project: Path) -> None:
        for rel in touched:
            (project / rel).write_bytes(os.urandom(size))

    def baseline(key: str, cold: bool) -> None:
        dest = work / "small-base"
        rmtree(dest)
        dest.mkdir()
        b.measure(key, ["sh", "-c", f"cp -r {src / 'data'} {dest}/data && sync"], work, cold)
        rmtree(dest)

    commit = [MLVC, "commit", "-q", "-m", "data", "--data", "data"]
    peers = {"git": ["git", "add", "data"], "dvc": [DVC, "add", "-q", "data"]}
    fresh = {"mlvc": fresh_mlvc, "git": fresh_git, "dvc": fresh_dvc}
    for rep in range(reps):
        print(f"[2] rep {rep + 1}/{reps} warm", file=sys.stderr)
        pm = projects["mlvc"]
        fresh_mlvc(pm)
        b.measure("small.first.mlvc", commit, pm)
        b.measure("small.same.mlvc", commit, pm)
        rewrite(pm)
        p = b.measure("small.touched.mlvc", commit, pm)
        rid = p.out.strip().splitlines()[-1] if p and p.out.strip() else None
        baseline("small.first.base", False)
        for tool, argv in peers.items():
            if tools.get(tool):
                fresh[tool](projects[tool])
                b.measure(f"small.first.{tool}", argv, projects[tool])
                b.measure(f"small.same.{tool}", argv, projects[tool])
                rewrite(projects[tool])
                b.measure(f"small.touched.{tool}", argv, projects[tool])
        co = work / "small-co"
        rmtree(co)
        if rid:
            b.measure("small.checkout.mlvc", [MLVC, "checkout", rid, "--to", str(co), "-q"], pm)
            got = sum(1 for _ in (co / "data").rglob("*.bin")) if (co / "data").is_dir() else 0
            if got != n:
                b.notes.append(f"{n}-file checkout wrote {got} of {n} files")
        rmtree(co)
        co.mkdir()
        b.measure(
            "small.checkout.base", ["sh", "-c", f"cp -r {src / 'data'} {co}/data && sync"], work
        )
        rmtree(co)
        if cold_first:
            print(f"[2] rep {rep + 1}/{reps} cold", file=sys.stderr)
            fresh_mlvc(pm)
            b.measure("small.first.mlvc.cold", commit, pm, cold=True)
            baseline("small.first.base.cold", True)
    for p in projects.values():
        rmtree(p)
    rmtree(src)

    return render_small_files(b, n, dirs, size, reps, cold_first, tools)


def render_small_files(
    b: Bench, n: int, dirs: int, size: int, reps: int, cold_first: bool, tools
) -> str:
    ops = [
        ("first", f"first store of {n} files", "small.first.base"),
        ("same", "unchanged re-store", "small.first.base"),
        ("touched", "re-store after rewriting 10 files", "small.first.base"),
        ("checkout", "checkout into a new folder", "small.checkout.base"),
    ]
    if cold_first:
        ops.insert(
            1, ("first.cold", f"first store of {n} files, cold cache", "small.first.base.cold")
        )

    def cell(key: str) -> str:
        s = b.series.get(key)
        if s is None:
            return "–"
        if s.error:
            return "FAILED"
        return fmt_s(s.med())

    rows = []
    for op, desc, bkey in ops:
        if op.startswith("first"):
            op_key, cold_sfx = "first", op[len("first") :]
        else:
            op_key, cold_sfx = op, ""
        mk = f"small.{op_key}.mlvc{cold_sfx}"
        gk = f"small.{op_key}.git{cold_sfx}"
        dk = f"small.{op_key}.dvc{cold_sfx}"
        rows.append(
            [
                desc,
                cell(mk),
                cell(bkey),
                (b.ratio(mk, bkey)),
                cell(gk) if tools.get("git") or op == "checkout" else "not installed",
                (b.ratio(mk, gk)),
                cell(dk) if tools.get("dvc") or op == "checkout" else "not installed",
                (b.ratio(mk, dk)),
            ]
        )
    head = [
        "operation",
        "mlvc s",
        "baseline s",
        "mlvc / baseline",
        "git add s",
        "mlvc / git",
        "dvc add s",
        "mlvc / dvc",
    ]
    return (
        f"### 2. {n} files of {size // 1024} KiB in {dirs} folders (median of {reps})\n\n"
        "Baseline: `cp -r data DEST; sync` for storing, `cp -r` + sync into a new folder for "
        "checkout. All times include a trailing `sync` (mlvc already syncs before it returns; git "
        "and dvc do not).\n\n"
        + table(head, rows)
        + bg_note(
            b,
            {
                "first store": "small.first.mlvc",
                "unchanged": "small.same.mlvc",
                "10 rewritten": "small.touched.mlvc",
            },
        )
    )


# -- 3. query over many runs -----------------------------------------------------------------


OPTIMIZERS = ("adam", "sgd", "adamw", "lion")


def make_runs(root: Path, n: int) -> dict:
    """Write n synthetic runs (20 params, 5 metrics each) through the library; returns seconds."""
    import random

    sys.path.insert(0, str(REPO))
    from mlvc import Repo
    from mlvc.core.objects import Run
    from mlvc.store.typed import write_object

    repo = Repo.init(root)
    rng = random.Random(42)
    t0 = time.perf_counter()
    base_us = 1_700_000_000_000_000
    parent = None
    for i in range(n):
        params = {
            "lr": rng.choice((1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
            "batch_size": rng.choice((16, 32, 64, 128)),
            "optimizer": rng.choice(OPTIMIZERS),
            "epochs": rng.randint(1, 100),
            "dropout": round(rng.random() * 0.5, 3),
            "seed": i,
            "model.layers": rng.randint(2, 48),
            "model.hidden": rng.choice((256, 512, 1024, 2048)),
            "model.heads": rng.choice((4, 8, 16)),
            "model.act": rng.choice(("relu", "gelu", "silu")),
            "data.augment": rng.random() < 0.5,
            "data.shuffle": True,
            "data.name": rng.choice(("cifar10", "imagenet", "mnist")),
            "sched.kind": rng.choice(("cosine", "linear", "step")),
            "sched.warmup": rng.randint(0, 2000),
            "wd": rng.choice((0.0, 0.01, 0.1)),
            "grad_clip": rng.choice((0.5, 1.0, 5.0)),
            "precision": rng.choice(("fp32", "bf16")),
            "label_smoothing": rng.choice((0.0, 0.1)),
            "note": f"trial {i}",
        }
        metrics = {
            "acc": rng.random(),
            "loss": rng.random() * 3,
            "val_acc": rng.random(),
            "val_loss": rng.random() * 3,
            "time_s": rng.random() * 1e4,
        }
        run = Run(
            parents=(parent,) if parent else (),
            message=f"synthetic run {i}",
            author="bench",
            started=base_us + i * 60_000_000,
            ended=base_us + i * 60_000_000 + 30_000_000,
            params=params,
            metrics=metrics,
        )
        oid = write_object(repo.store, run)
        repo.refs.add_run(oid)
        parent = oid
    repo.store.sync()
    repo.refs.write("HEAD", parent, "bench: synthetic runs", "bench")
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    repo.rebuild_index()
    return {"write": t_write, "rebuild": time.perf_counter() - t0}


def lib_query(root: Path, n: int, reps: int) -> dict:
    """``Repo.query`` in this process: the first call, then warm calls."""
    sys.path.insert(0, str(REPO))
    from mlvc import Repo

    repo = Repo(root)
    t0 = time.perf_counter()
    first = repo.query(QUERY)
    out = {"first": time.perf_counter() - t0, "rows": first.num_rows, "warm": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        repo.query(QUERY)
        out["warm"].append(time.perf_counter() - t0)
    out["count"] = repo.query("SELECT count(*) AS n FROM runs_wide").column(0)[0].as_py()
    return out


def child(args: list[str]) -> None:
    """Library-side steps, run in a child so this process stays small (its RSS and fork
    cost would otherwise leak into every later measurement)."""
    what, root, n = args[0], Path(args[1]), int(args[2])
    result = make_runs(root, n) if what == "make-runs" else lib_query(root, n, 20)
    print(json.dumps(result))


QUERY = (
    'SELECT id, "params.lr", "params.optimizer", "metrics.val_acc" FROM runs_wide '
    'WHERE "params.optimizer" = \'adam\' AND "params.batch_size" >= 64 '
    'ORDER BY "metrics.val_acc" DESC LIMIT 10'
)


def bench_query(b: Bench, work: Path, n: int, reps_fast: int, reps_slow: int) -> str:
    root = work / "runs"
    root.mkdir()
    print(f"[3] writing {n} synthetic runs", file=sys.stderr)
    me = [PYTHON, str(Path(__file__).resolve()), "--child"]
    try:
        made = json.loads(run([*me, "make-runs", str(root), str(n)], work).out)
    except (CommandFailed, ValueError) as e:
        b.notes.append(f"creating {n} runs through the library failed: {e}")
        rmtree(root)
        return ""
    b.get("q.create").samples.append(Sample(made["write"]))
    b.get("q.lib_rebuild").samples.append(Sample(made["rebuild"]))
    for rep in range(reps_fast):
        print(f"[3] query rep {rep + 1}/{reps_fast}", file=sys.stderr)
        b.measure("q.python", [PYTHON, "-c", "pass"], root)
        p = b.measure("q.cli", [MLVC, "query", QUERY], root)
        if p is not None and rep == 0:
            lines = [ln for ln in p.out.splitlines() if ln.strip()]
            if len(lines) < 12:
                b.notes.append(f"`mlvc query` printed only: {p.out.strip()[:200]!r}")
        b.measure("q.cli_csv", [MLVC, "query", "--format", "csv", QUERY], root)
    for rep in range(reps_slow):
        print(f"[3] index rebuild rep {rep + 1}/{reps_slow}", file=sys.stderr)
        b.measure("q.rebuild", [MLVC, "index", "rebuild"], root)
    try:
        got = json.loads(run([*me, "lib-query", str(root), str(n)], work).out)
        b.get("q.lib_first").samples.append(Sample(got["first"]))
        b.get("q.lib").samples.extend(Sample(x) for x in got["warm"])
        if got["rows"] != 10:
            b.notes.append(f"Repo.query returned {got['rows']} rows, expected 10")
        if got["count"] != n:
            b.notes.append(f"runs_wide holds {got['count']} rows after rebuild, expected {n}")
    except (CommandFailed, ValueError) as e:
        b.get("q.lib").error = str(e)
    rmtree(root)
    return render_query(b, n, reps_fast, reps_slow)


def render_query(b: Bench, n: int, reps_fast: int, reps_slow: int) -> str:
    if "q.python" not in b.series:
        return f"### 3. Query over {n} runs\n\nFAILED to create the runs (see the problems below)."
    py = b.series["q.python"].med()

    def row(desc: str, key: str, with_ratio: bool = True) -> list[str]:
        s = b.series.get(key)
        if s is None or s.error:
            return [desc, "FAILED: " + (s.error[:120] if s else "not run"), "", ""]
        med = s.med()
        ratio = b.ratio(key, "q.python") if with_ratio else ""
        extra = f"{med - py:.3f}" if with_ratio and py is not None and key != "q.python" else ""
        return [desc, fmt_s(med), ratio, extra]

    rows = [
        row("`python -c pass` (baseline)", "q.python"),
        row("`mlvc query SQL` (table)", "q.cli"),
        row("`mlvc query --format csv SQL`", "q.cli_csv"),
        row("`mlvc index rebuild`", "q.rebuild"),
        row("`Repo.query(SQL)` in process, first call (opens index)", "q.lib_first", False),
        row("`Repo.query(SQL)` in process, warm (median of 20)", "q.lib", False),
        row("`Repo.rebuild_index()` in process, once", "q.lib_rebuild", False),
        row(f"writing {n} runs via the library (objects + run refs, once)", "q.create", False),
    ]
    return (
        f"### 3. Query over {n} synthetic runs, 20 params and 5 metrics each "
        f"(median of {reps_fast}; rebuild {reps_slow})\n\n"
        f"SQL: `{QUERY}`\n\n"
        + table(["command", "s", "ratio to `python -c pass`", "s above start-up"], rows)
    )


# -- 4. start-up -----------------------------------------------------------------------------


def bench_startup(b: Bench, work: Path, reps: int) -> str:
    root = work / "startup"
    root.mkdir()
    (root / "train.py").write_text("print('hi')\n")
    run([MLVC, "init"], root)
    for i in range(5):
        run([MLVC, "commit", "-q", "-m", f"run {i}", "-p", f"lr={i}"], root)
    for _ in range(reps):
        b.measure("s.python", [PYTHON, "-c", "pass"], root)
        b.measure("s.import", [PYTHON, "-c", "import mlvc.cli"], root)
        b.measure("s.help", [MLVC, "--help"], root)
        b.measure("s.log", [MLVC, "log", "-n", "5"], root)
    rmtree(root)
    return render_startup(b, reps)


def render_startup(b: Bench, reps: int) -> str:
    rows = []
    for desc, key in (
        ("`python -c pass` (baseline)", "s.python"),
        ("`python -c 'import mlvc.cli'`", "s.import"),
        ("`mlvc --help`", "s.help"),
        ("`mlvc log -n 5` (repo of 5 runs)", "s.log"),
    ):
        s = b.series[key]
        if s.error:
            rows.append([desc, "FAILED: " + s.error[:120], "", ""])
            continue
        rows.append(
            [
                desc,
                fmt_s(s.med("seconds")),
                (b.ratio(key, "s.python", "seconds")),
                fmt_mib(statistics.median(x.maxrss for x in s.samples)),
            ]
        )
    return f"### 4. Start-up (median of {reps})\n\n" + table(
        ["command", "s", "ratio to `python -c pass`", "peak RSS MiB"], rows
    )


# -- report ----------------------------------------------------------------------------------


def machine_facts(where: Path) -> list[str]:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = sh("free -g | awk '/^Mem:/ {print $2}'")
    df = sh(f"df -T {where} | tail -1 | awk '{{print $1\" \"$2}}'")
    commit = sh(f"git -C {REPO} rev-parse --short HEAD")
    dirty = sh(f"git -C {REPO} status --porcelain -- mlvc")
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {os.cpu_count()} cores (`nproc`), {cpu or platform.processor()}, "
        f"{mem} GiB memory; ran in {where} on {df}",
        f"- python {platform.python_version()}, mlvc at commit {commit}"
        + (" (mlvc/ had uncommitted changes from other engineers)" if dirty else ""),
    ]


def render(b: Bench, meta: dict) -> str:
    """The Markdown report of one run, from its samples and settings."""
    m, tools, sections = meta, meta["tools"], []
    if 1 in m["only"]:
        sections.append(render_big_file(b, m["big"], m["modes"], tools))
    if 2 in m["only"]:
        n = m["dirs"] * m["per_dir"]
        sections.append(
            render_small_files(b, n, m["dirs"], 4096, m["reps_slow"], m["cold_ok"], tools)
        )
    if 3 in m["only"]:
        sections.append(render_query(b, m["nruns"], m["reps_fast"], m["reps_slow"]))
    if 4 in m["only"]:
        sections.append(render_startup(b, m["reps_startup"]))
    report = "\n".join(m["facts"]) + "\n\n" + "\n\n".join(sections) + "\n"
    if b.notes:
        report += "\nProblems seen while measuring:\n\n" + "\n".join(f"- {n}" for n in b.notes)
        report += "\n"
    return report


def dump(b: Bench, meta: dict) -> str:
    series = {
        k: {"label": s.label, "error": s.error, "samples": [vars(x) for x in s.samples]}
        for k, s in b.series.items()
    }
    return json.dumps({"meta": meta, "notes": b.notes, "series": series}, indent=1)


def load(text: str) -> tuple[Bench, dict]:
    raw = json.loads(text)
    meta = raw["meta"]
    b = Bench(meta["cold_ok"])
    b.notes = raw.get("notes", [])
    for k, v in raw["series"].items():
        s = b.get(k, v["label"])
        s.error = v["error"]
        s.samples = [Sample(**x) for x in v["samples"]]
    return b, meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run under a minute")
    ap.add_argument("--only", default="1,2,3,4", help="comma-separated benchmarks to run (1-4)")
    ap.add_argument("--dir", default=None, help="where to make the temp dir (default: $TMPDIR)")
    ap.add_argument("--no-cold", action="store_true", help="skip cold-cache variants")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of slow steps")
    ap.add_argument("--out", default=None, help="also write the Markdown report here")
    ap.add_argument("--json", default=None, help="write raw samples as JSON here")
    ap.add_argument("--render", default=None, metavar="JSON", help="re-render a --json file")
    ap.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    if args.render:
        b, meta = load(Path(args.render).read_text())
        print(render(b, meta))
        return 0

    if args.quick:
        big, dirs, per_dir, nruns = 32 * MiB, 5, 100, 200
        reps_slow, reps_fast = args.reps or 1, 3
    else:
        big, dirs, per_dir, nruns = 1024 * MiB, 100, 200, 10_000
        reps_slow, reps_fast = args.reps or 3, 5
    versions = tool_versions()
    cold_ok = not args.no_cold and not args.quick and can_drop_caches()
    meta = {
        "only": sorted(int(x) for x in args.only.split(",") if x.strip()),
        "big": big,
        "dirs": dirs,
        "per_dir": per_dir,
        "nruns": nruns,
        "reps_slow": reps_slow,
        "reps_fast": reps_fast,
        "reps_startup": max(reps_fast, 5),
        "cold_ok": cold_ok,
        "modes": ["warm", "cold"] if cold_ok else ["warm"],
        "tools": {k: bool(v) for k, v in versions.items()},
    }
    b = Bench(cold_ok)
    os.makedirs(args.dir or tempfile.gettempdir(), exist_ok=True)  # --dir made if new
    work = Path(tempfile.mkdtemp(prefix="mlvc-bench-", dir=args.dir))
    run([MLVC, "--help"], work)  # writes mlvc's bytecode cache before anything is timed

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    load0 = os.getloadavg()[0]
    t_all = time.perf_counter()
    try:
        facts = machine_facts(work)
        only, tools = meta["only"], meta["tools"]
        if 1 in only:
            bench_big_file(b, work, big, reps_slow, meta["modes"], tools)
        if 2 in only:
            bench_small_files(b, work, dirs, per_dir, 4096, reps_slow, cold_ok, tools)
        if 3 in only:
            bench_query(b, work, nruns, reps_fast, reps_slow)
        if 4 in only:
            bench_startup(b, work, meta["reps_startup"])
    finally:
        rmtree(work)

    cold = "page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`)" if cold_ok else "warm only"
    facts += [
        "- peers: "
        + ", ".join(f"{k}: {v or 'not installed'}" for k, v in versions.items())
        + f"; cold cache: {cold}",
        f"- mode: {'--quick' if args.quick else 'full'}; whole run took "
        f"{time.perf_counter() - t_all:.0f} s; load average (1 min) {load0:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end (other work shares these 2 cores)",
    ]
    meta["facts"] = facts
    report = render(b, meta)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    if args.json:
        Path(args.json).write_text(dump(b, meta))
    return 1 if any(s.error for s in b.series.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
