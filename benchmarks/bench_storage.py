"""Storage benchmarks (issue 4): whole CLI commands against baselines timed in the same run.

Run as ``.venv/bin/python benchmarks/bench_storage.py [--quick] [--only 1,2] [--out FILE]``.
Prints a Markdown report. Each figure is the median of ``--reps`` repetitions (default 3);
ratios are medians of the per-repetition ratios to ``cp FILE COPY; sync`` timed in the same
repetition (benchmark 1 also times one right after this code's commit, shown beside it). Peers (dvc, git) run beside mlvc when installed; dvc comes from the peers venv
``benchmarks/.peers-venv`` (``benchmarks/peers.sh``), never from mlvc's own venv. Data is
generated in a temp dir that is removed at the end.

1. a new 2 GiB file: commit (durable) and checkout (+ sync) vs ``cp; sync``; dvc, git add;
   with ``--daemon`` also both through a command server (``mlvc daemon``: no interpreter
   start-up or imports; wall time only);
   and the commit into a repository with ``--indexes`` pack indexes (15 runs of 1,000 small
   files first)
2. 20,000 files of 4 KiB: first commit, unchanged re-commit, commit after touching 10
3. ten checkpoints of a 1 GiB weights file, each rewriting 10% of its tensors: store size
4. a safetensors fine-tune: only the last layers and the head change; header edits shift
5. peak RSS committing and checking out a 4 GiB file (``--only 5``; not in ``--quick``)
6. CPU per thread storing and checking out a new big file in one process (``--only 6``): the
   busiest thread's CPU bounds the wall time on an idle machine, and it is measured alike at
   any load; the pipelined and inline paths, and ``--old-src``'s code, in the same run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_faults import processes_under  # noqa: E402
from bench_startup import start_daemon, stop_daemon  # noqa: E402

BIN = Path(sys.executable).parent
MLVC = str(BIN / "mlvc")
DVC = str(HERE / ".peers-venv" / "bin" / "dvc")
MiB, GiB = 1 << 20, 1 << 30
ENV = {
    **os.environ,
    "MLVC_AUTHOR": "bench <bench@example.invalid>",
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "b@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "b@example.invalid",
}
# An installed mlvc runs from compiled bytecode; with this set (as in some shells and CI
# images) every command recompiles ~80 modules first, ~0.25 s that no user pays.
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
ENV["MLVC_DAEMON"] = "0"  # every row runs its own process unless it says otherwise
DAEMON: dict | None = None  # --daemon: the environment whose command server is running


TIME = "/usr/bin/time"  # GNU time: its small RSS is what a child inherits at exec


CPU: list[float] = []  # user + system seconds of the last command run (GNU time), if known
# CPU seconds the rest of the machine used while the last command ran: all CPUs' busy time
# from /proc/stat less the command's own (0.0 when unknown). A slow repetition with a large
# figure here was slowed by something else (another helper, a kernel flusher), not by mlvc.
OTHERS: list[float] = []


def busy_seconds() -> float | None:
    """All CPUs' busy time so far (user, nice, system, irq, softirq, steal), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


WORK_DIR: Path | None = None  # this run's temp folder: only its index workers are waited for


def settle_workers(timeout: float = 60.0) -> None:
    """Wait for the index workers earlier commits left running in the background: each is a
    Python process importing DuckDB (~0.5-1 s of CPU), which would otherwise share the
    cores with the next timed command and take a core from whichever code ran right after
    (the repetitions' spread; the other code's commit came ~0.3 s after this code's)."""
    end = time.monotonic() + timeout
    while WORK_DIR and processes_under(WORK_DIR, "mlvc.index.worker"):
        if time.monotonic() > end:
            return
        time.sleep(0.05)


def run(cmd: str | list, cwd: Path, env: dict | None = None) -> tuple[float, int]:
    """Seconds and peak RSS (bytes, 0 if unknown) of one command, run as a user would.

    The RSS comes from GNU time when installed: a child forked straight from this process
    would report this process's own high-water mark (Linux carries it across exec), which
    after generating GiB-sized test data is far above anything mlvc uses.
    """
    args = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    timed = os.access(TIME, os.X_OK)
    if timed:
        args = [TIME, "-f", "MLVC-BENCH-MAXRSS %M %U %S", *args]
    settle_workers()
    busy = busy_seconds()
    start = time.perf_counter()
    p = subprocess.run(args, cwd=cwd, env=env or ENV, capture_output=True)
    took = time.perf_counter() - start
    after = busy_seconds()
    if p.returncode:
        raise RuntimeError(f"{cmd} failed ({p.returncode}): {p.stderr.decode()[-500:]}")
    rss = 0
    for line in p.stderr.decode(errors="replace").splitlines():
        if line.startswith("MLVC-BENCH-MAXRSS "):
            _tag, kib, user, system = line.split()
            rss = int(kib) * 1024
            CPU[:] = [float(user) + float(system)]
    own = CPU[0] if CPU and timed else 0.0
    OTHERS[:] = [max(0.0, after - busy - own)] if busy is not None and after is not None else []
    return took, rss


PEERS = True  # --no-peers: mlvc and the baselines only
OLD_SRC, OLD_LABEL = "", ""  # --old-src DIR: also time the commit with that checkout's code
INDEXES = 0  # --indexes N: also time the commit into a repository with N pack indexes
ORDER = "baseline-first"  # --order: which of benchmark 1's commit and baseline runs first


def have_dvc() -> bool:
    return PEERS and os.access(DVC, os.X_OK)


def have_git() -> bool:
    return PEERS and shutil.which("git") is not None


def drop(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def write_random(path: Path, size: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MiB)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n


def mlvc_init(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text("print('train')\n")
    run([MLVC, "init", "."], folder)


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def store_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _d, names in os.walk(folder):
        for n in names:
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


# -- 1. a new 2 GiB file --------------------------------------------------------------------


def bench_big_file(tmp: Path, size: int, reps: int) -> list[str]:
    src = tmp / "big.bin"
    write_random(src, size)
    # The generated file is still dirty in the page cache: without this sync the first
    # repetition's `cp; sync` also wrote it back (twice the bytes), and that repetition's
    # ratios came out far too low (0.33x in the quiet run of perf-bigfiles4's merge).
    run("sync", tmp)
    rows: dict[str, list[float]] = {}
    rss: dict[str, list[int]] = {}

    cpu: dict[str, list[float]] = {}
    loads = [os.getloadavg()]
    stats = tmp / "big-stats.jsonl"  # MLVC_BIG_STATS: each put's thread path and sync waits
    ENV["MLVC_BIG_STATS"] = str(stats)
    reps_seen: list[str] = []

    def add(name, secs, base, peak=None):
        rows.setdefault(name, []).append(secs / base)
        rows.setdefault(name + " s", []).append(secs)
        if CPU:
            cpu.setdefault(name, []).append(CPU[0])
        if peak is not None:
            rss.setdefault(name, []).append(peak)

    template = many_indexes(tmp / "template", INDEXES) if INDEXES else None

    def baseline() -> tuple[float, float]:
        CPU.clear()
        secs, _ = run(f"cp {src} {tmp / 'copy.bin'}; sync", tmp)
        others = OTHERS[0] if OTHERS else 0.0
        os.unlink(tmp / "copy.bin")
        rows.setdefault("cp+sync s", []).append(secs)
        if CPU:
            cpu.setdefault("cp+sync", []).append(CPU[0])
        return secs, others

    for rep in range(reps):
        # --order alternate: odd repetitions time the commit first, then the baseline (the
        # command timed right after the other measured slower, whichever it was: 2026-12-02)
        commit_first = ORDER == "alternate" and rep % 2 == 1
        if not commit_first:
            base, base_others = baseline()
        proj = tmp / f"m{rep}"
        mlvc_init(proj)
        os.link(src, proj / "big.bin")
        run("sync", tmp)
        stats.unlink(missing_ok=True)
        CPU.clear()
        secs, peak = run([MLVC, "commit", "-q", "--data", "big.bin"], proj)
        commit_cpu, commit_others = list(CPU), list(OTHERS)
        run("sync", tmp)
        if commit_first:
            base, base_others = baseline()
            after = base
        else:
            # The baseline is timed again right after the commit (after a `sync`), shown
            # beside the first: in the quiet run of perf-bigfiles5's merge `cp; sync` alone
            # moved 0.77-1.50 s between repetitions, as much as the commit did. The ratios
            # stay to the first: loaded, a `cp` right after a commit measured slower than one
            # right after another `cp` (perf-bigfiles6), so a mean would flatter the commit.
            after, _ = run(f"cp {src} {tmp / 'copy.bin'}; sync", tmp)
            os.unlink(tmp / "copy.bin")
        CPU[:], OTHERS[:] = commit_cpu, commit_others
        add("mlvc commit", secs, base, peak)
        others = f"{base_others:.2f} / {OTHERS[0]:.2f}" if OTHERS else ""
        line = describe_put(stats, secs, base, CPU[0] if CPU else 0.0)
        order = "commit first" if commit_first else f"{base:.2f} / {after:.2f}"
        reps_seen.append(f"{order} | {line} {others} |")
        if OLD_SRC:  # the same command on another checkout's code, for a before/after
            drop(proj / ".mlvc")
            run([MLVC, "init", "."], proj)
            run("sync", tmp)
            old = f"PYTHONPATH={OLD_SRC} {MLVC} commit -q --data big.bin"
            secs, peak = run(old, proj)
            add(f"mlvc commit ({OLD_LABEL})", secs, base, peak)
            run("sync", tmp)
            old = f"PYTHONPATH={OLD_SRC} {MLVC} checkout -q HEAD --to {tmp / 'out'} && sync"
            secs, peak = run(old, proj)
            add(f"mlvc checkout + sync ({OLD_LABEL})", secs, base, peak)
            drop(tmp / "out")
            run("sync", tmp)
        secs, peak = run(f"{MLVC} checkout -q HEAD --to {tmp / 'out'} && sync", proj)
        add("mlvc checkout + sync", secs, base, peak)
        drop(tmp / "out")
        drop(proj)
        run("sync", tmp)
        if DAEMON is not None:  # the same two through a command server (wall time only)
            proj = tmp / f"m{rep}-daemon"
            mlvc_init(proj)
            os.link(src, proj / "big.bin")
            run("sync", tmp)
            secs, _ = run([MLVC, "commit", "-q", "--data", "big.bin"], proj, DAEMON)
            CPU.clear()  # GNU time sees the launcher's, not the server's child's
            add("mlvc commit (mlvc daemon)", secs, base)
            run("sync", tmp)
            out = tmp / "out"
            secs, _ = run(f"{MLVC} checkout -q HEAD --to {out} && sync", proj, DAEMON)
            CPU.clear()
            add("mlvc checkout + sync (mlvc daemon)", secs, base)
            drop(out)
            drop(proj)
            run("sync", tmp)
        if template is not None:  # the same commit into a repository with many indexes
            codes = [("", "")] + ([(OLD_SRC, f" ({OLD_LABEL})")] if OLD_SRC else [])
            for k, (code, label) in enumerate(codes if rep % 2 == 0 else codes[::-1]):
                many = tmp / f"m{rep}-indexes{k}"  # the order alternates between repetitions
                shutil.copytree(template, many, symlinks=True)
                os.link(src, many / "big.bin")
                run("sync", tmp)
                env = f"PYTHONPATH={code} " if code else ""
                secs, peak = run(f"{env}{MLVC} commit -q --data big.bin", many)
                add(f"mlvc commit, {INDEXES} indexes{label}", secs, base, peak)
                settle_workers()  # its index worker writes in the folder
                drop(many)
                run("sync", tmp)
        if have_dvc():
            d = tmp / f"d{rep}"
            d.mkdir()
            run([DVC, "init", "--no-scm", "-q"], d)
            os.link(src, d / "big.bin")
            secs, _ = run(f"{DVC} add -q big.bin && sync", d)
            add("dvc add + sync", secs, base)
            drop(d)
        if have_git():
            g = tmp / f"g{rep}"
            g.mkdir()
            run(["git", "init", "-q"], g)
            os.link(src, g / "big.bin")
            secs, _ = run("git add big.bin && sync", g)
            add("git add + sync", secs, base)
            drop(g)
        run("sync", tmp)
    os.unlink(src)
    ENV.pop("MLVC_BIG_STATS", None)
    loads.append(os.getloadavg())
    base_s = rows["cp+sync s"]
    out = [
        f"### 1. A new {size / GiB:g} GiB file (random bytes), {reps} repetitions",
        "",
        f"Baseline `cp FILE COPY; sync`: median {med(base_s):.2f} s "
        f"(range {min(base_s):.2f}–{max(base_s):.2f}). "
        + (
            "Odd repetitions timed the commit first, then the baseline (`--order alternate`). "
            if ORDER == "alternate"
            else ""
        )
        + "Load average before: "
        f"{', '.join(f'{x:.1f}' for x in loads[0])}; after: "
        f"{', '.join(f'{x:.1f}' for x in loads[1])}. CPU s is user + system time of "
        "the whole command (GNU time), median (range); it moves far less with the load than "
        "wall time. Without MLVC_BIG_PIPELINE set, each command picks one or two threads "
        "by the idle CPU it measures as it goes (the old code: by the load average).",
        "",
        "| command | median s | ratio to cp+sync: median (range) | target | CPU s | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    if "cp+sync" in cpu:
        out.append(
            f"| cp+sync (baseline) | {med(base_s):.2f} | 1.00x | | {med(cpu['cp+sync']):.2f} | |"
        )
    targets = {"mlvc commit": "<= 1.3x", "mlvc checkout + sync": "<= 1.1x"}
    for name in rows:
        if name.endswith(" s"):
            continue
        peak = f"{max(rss[name]) / MiB:.0f} MiB" if name in rss else ""
        used = (
            f"{med(cpu[name]):.2f} ({min(cpu[name]):.2f}–{max(cpu[name]):.2f})"
            if name in cpu
            else ""
        )
        r = rows[name]
        out.append(
            f"| {name} | {med(rows[name + ' s']):.2f} | {med(r):.2f}x "
            f"({min(r):.2f}–{max(r):.2f}) | {targets.get(name, '')} | {used} | {peak} |"
        )
    if not have_dvc():
        out.append("| dvc | not run (--no-peers) or not installed | | | | |")
    out.append("| MLflow log_artifact | not installed | | | | |")
    out += [
        "",
        "Each repetition of `mlvc commit` (this code): the baseline's wall in that repetition, "
        "before and right after this code's commit (the ratios are to the first), "
        "then from MLVC_BIG_STATS the windows cut with a helper thread writing (2T) or on one "
        "thread (1T), the put's seconds, the packs' final fsync and the store's syncfs; then "
        "the command's wall, ratio and CPU; last, the CPU seconds the rest of the machine "
        "used while `cp; sync` and then the commit ran (all CPUs' busy time less the "
        "command's own; the kernel flushers writing back cp's copy count there, while the "
        "commit starts its writes from its own threads). Every timed command starts after "
        "a `sync` and once the index "
        "workers of earlier commands have ended.",
        "",
        "| rep | cp+sync s: before / after | windows 2T / 1T | put s | fsync packs s | syncfs s | command s "
        "| ratio | CPU s | others' CPU s: cp / commit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += [f"| {i + 1} | {line}" for i, line in enumerate(reps_seen)]
    return out


def many_indexes(folder: Path, n: int) -> Path:
    """A repository with ``n`` pack indexes, as a user's has between consolidations
    (``MAX_INDEXES`` is 16; a commit past it merges them): ``n`` small runs committed, each
    with 1,000 files of 256 bytes (an index of ~1,000 ids, as a run of 64 MiB of chunks
    makes; with 32 ids most fanout slots are empty and a lookup costs little even in
    Python). A big put looks each of its chunks up in every index."""
    mlvc_init(folder)
    for i in range(n):
        data = folder / "data" / f"s{i}"
        data.mkdir(parents=True)
        for j in range(1000):
            (data / f"f{j}.bin").write_bytes(os.urandom(256))
        run([MLVC, "commit", "-q", "--data", f"data/s{i}"], folder)
    # the files go (their objects stay): else each timed commit's code capture walks them
    shutil.rmtree(folder / "data")
    got = len(list((folder / ".mlvc" / "objects" / "pack").glob("*.idx")))
    assert got == n, f"{got} indexes, not {n}"
    return folder


def describe_put(stats: Path, secs: float, base: float, cpu: float) -> str:
    """One table row's cells from a commit's MLVC_BIG_STATS lines."""
    try:
        lines = [json.loads(x) for x in stats.read_text().splitlines()]
    except (OSError, ValueError):
        lines = []
    puts = [x for x in lines if x.get("step") == "put"]
    two, one = sum(x["two"] for x in puts), sum(x["one"] for x in puts)
    put = sum(x["secs"] for x in puts)
    fsync = sum(x["secs"] for x in lines if x.get("step") == "fsync packs")
    syncfs = sum(x["secs"] for x in lines if x.get("step") == "syncfs")
    return (
        f"{two} / {one} | {put:.2f} | {fsync:.3f} | {syncfs:.3f} | {secs:.2f} | "
        f"{secs / base:.2f}x | {cpu:.2f} |"
    )


# -- 2. 20,000 small files ------------------------------------------------------------------


def make_small_files(folder: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = folder / f"d{i // 1000:03d}" / f"f{i:06d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(4096))
        paths.append(p)
    return paths


def bench_small_files(tmp: Path, n: int, reps: int) -> list[str]:
    res: dict[str, list[float]] = {}
    for rep in range(reps):
        proj = tmp / f"s{rep}"
        mlvc_init(proj)
        paths = make_small_files(proj / "data", n)
        run("sync", tmp)
        time.sleep(0.05)
        for label in ("first commit", "unchanged re-commit"):
            secs, _ = run([MLVC, "commit", "-q", "--data", "data"], proj)
            res.setdefault(f"mlvc {label}", []).append(secs)
        for p in paths[:10]:
            os.utime(p)
        time.sleep(0.05)
        secs, _ = run([MLVC, "commit", "-q", "--data", "data"], proj)
        res.setdefault("mlvc commit after touching 10", []).append(secs)
        secs, _ = run([MLVC, "status"], proj)
        res.setdefault("mlvc status (unchanged)", []).append(secs)
        drop(proj)
        if have_dvc():
            d = tmp / f"ds{rep}"
            d.mkdir()
            run([DVC, "init", "--no-scm", "-q"], d)
            paths = make_small_files(d / "data", n)
            run("sync", tmp)
            for label in ("first commit", "unchanged re-commit"):
                secs, _ = run([DVC, "add", "-q", "data"], d)
                res.setdefault(f"dvc add: {label}", []).append(secs)
            for p in paths[:10]:
                os.utime(p)
            secs, _ = run([DVC, "add", "-q", "data"], d)
            res.setdefault("dvc add: after touching 10", []).append(secs)
            drop(d)
        if have_git() and rep == 0:
            g = tmp / "gs"
            g.mkdir()
            run(["git", "init", "-q"], g)
            make_small_files(g / "data", n)
            secs, _ = run(["git", "add", "data"], g)
            res.setdefault("git add: first", []).append(secs)
            drop(g)
    targets = {
        "mlvc first commit": "< 1.5 s",
        "mlvc unchanged re-commit": "< 0.5 s",
        "mlvc commit after touching 10": "< 0.6 s",
    }
    out = [
        f"### 2. {n:,} files of 4 KiB, whole CLI commands, {reps} repetitions",
        "",
        "| command | median s | runs | target |",
        "|---|---|---|---|",
    ]
    for name, xs in res.items():
        out.append(
            f"| {name} | {med(xs):.2f} | {', '.join(f'{x:.2f}' for x in xs)} | "
            f"{targets.get(name, '')} |"
        )
    if not have_dvc():
        out.append("| dvc | not run (--no-peers) or not installed | | |")
    return out


# -- 3 and 4: checkpoints --------------------------------------------------------------------


def write_safetensors(path: Path, tensors: dict, meta: dict | None = None) -> None:
    """The safetensors layout: u64 header length, JSON header, raw little-endian tensors."""
    header, offset = {}, 0
    for name, arr in tensors.items():
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    if meta:
        header["__metadata__"] = meta
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for arr in tensors.values():
            f.write(arr.tobytes())


def bench_checkpoints(tmp: Path, size: int, count: int) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(1)
    n_tensors = 64
    per = size // n_tensors // 4
    tensors = {
        f"layer.{i}.weight": rng.standard_normal(per).astype(np.float32) for i in range(n_tensors)
    }
    proj = tmp / "ckpt"
    mlvc_init(proj)
    times = []
    path = proj / "model.safetensors"
    for step in range(count):
        if step:
            for i in rng.choice(n_tensors, n_tensors // 10, replace=False):
                tensors[f"layer.{i}.weight"] = rng.standard_normal(per).astype(np.float32)
        write_safetensors(path, tensors)
        secs, _ = run([MLVC, "commit", "-q", "--artifacts", "model.safetensors"], proj)
        times.append(secs)
    one = path.stat().st_size
    stored = store_bytes(proj / ".mlvc" / "objects")
    drop(proj)
    return [
        f"### 3. {count} checkpoints of a {one / GiB:.2f} GiB weights file, each rewriting "
        f"10% of its {n_tensors} tensors",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| store after {count} commits | {stored / GiB:.2f} GiB | |",
        f"| store / one checkpoint | {stored / one:.2f}x | <= 2.2x (whole-file stores: {count}x) |",
        f"| commit time per checkpoint (median) | {med(times):.2f} s | |",
    ]


def bench_finetune(tmp: Path, hidden: int, layers: int) -> list[str]:
    """A transformer-shaped model; fine-tunes train only the top layers and the head."""
    import numpy as np

    rng = np.random.default_rng(2)

    def t(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    model = {"embed.weight": t(8192, hidden)}
    for i in range(layers):
        for name, shape in (
            ("attn.qkv", (hidden, 3 * hidden)),
            ("attn.out", (hidden, hidden)),
            ("mlp.up", (hidden, 4 * hidden)),
            ("mlp.down", (4 * hidden, hidden)),
            ("norm", (hidden,)),
        ):
            model[f"layers.{i}.{name}"] = t(*shape)
    model["head.weight"] = t(hidden, 8192)
    proj = tmp / "ft"
    mlvc_init(proj)
    path = proj / "model.safetensors"

    def commit() -> int:
        before = store_bytes(proj / ".mlvc" / "objects")
        run([MLVC, "commit", "-q", "--artifacts", "model.safetensors"], proj)
        return store_bytes(proj / ".mlvc" / "objects") - before

    write_safetensors(path, model, {"step": "0"})
    size = path.stat().st_size
    rows = [("base model", size, commit())]
    trained = [k for k in model if k.startswith(f"layers.{layers - 2}.") or "head" in k]
    trained += [k for k in model if k.startswith(f"layers.{layers - 1}.")]
    for step in (1, 2, 3):
        for k in trained:
            model[k] = model[k] + t(*model[k].shape) * 0.01
        meta = {"step": str(step * 1000)}  # the header changes length too: data shifts
        write_safetensors(path, model, meta)
        share = sum(model[k].nbytes for k in trained) / size
        rows.append((f"fine-tune step {step} ({share:.0%} of bytes trained)", size, commit()))
    norms = [k for k in model if k.endswith(".norm")]
    for k in norms:
        model[k] = model[k] * 1.001
    write_safetensors(path, model, {"step": "4000"})
    rows.append(("only the norm layers change", size, commit()))
    total = store_bytes(proj / ".mlvc" / "objects")
    drop(proj)
    out = [
        f"### 4. Safetensors fine-tune: {layers} layers, hidden {hidden}, "
        f"{size / MiB:.0f} MiB per checkpoint",
        "",
        "The header's `step` metadata changes length, shifting every tensor's bytes; only",
        "the top two layers and the head are trained.",
        "",
        "| checkpoint | file | new bytes stored | share of a full copy |",
        "|---|---|---|---|",
    ]
    for label, s, new in rows:
        out.append(f"| {label} | {s / MiB:.0f} MiB | {new / MiB:.1f} MiB | {new / s:.1%} |")
    out.append(
        f"| all {len(rows)} checkpoints | {len(rows) * size / MiB:.0f} MiB | "
        f"{total / MiB:.0f} MiB | {total / (len(rows) * size):.1%} |"
    )
    return out


# -- 5. memory ------------------------------------------------------------------------------


def bench_memory(tmp: Path, size: int) -> list[str]:
    proj = tmp / "mem"
    mlvc_init(proj)
    write_random(proj / "huge.bin", size, seed=5)
    c_secs, c_rss = run([MLVC, "commit", "-q", "--data", "huge.bin"], proj)
    k_secs, k_rss = run([MLVC, "checkout", "-q", "HEAD", "--to", str(tmp / "memout")], proj)
    drop(tmp / "memout")
    drop(proj)
    return [
        f"### 5. Peak RSS with a {size / GiB:g} GiB file",
        "",
        "| command | seconds | peak RSS (GNU time %M) | target |",
        "|---|---|---|---|",
        f"| mlvc commit | {c_secs:.1f} | {c_rss / MiB:.0f} MiB | < 300 MiB |",
        f"| mlvc checkout | {k_secs:.1f} | {k_rss / MiB:.0f} MiB | < 300 MiB |",
    ]


# -- 6. CPU per thread of the big-file paths ------------------------------------------------

THREADS = r"""
import json, os, sys, time
from pathlib import Path
from mlvc.store.pack.store import PackedStore
from mlvc.workspace.materialize import copy_object
src, root = sys.argv[1], Path(sys.argv[2])
cpu = lambda a, b: (b.user - a.user) + (b.system - a.system)
s = PackedStore(root / "objects")
c0, m0 = os.times(), time.thread_time()
oid = s.add_file(src)
s.sync()
c1, m1 = os.times(), time.thread_time()
copy_object(s, oid, root / "out.bin")
c2, m2 = os.times(), time.thread_time()
print(json.dumps({"put": [m1 - m0, cpu(c0, c1) - (m1 - m0)],
                  "checkout": [m2 - m1, cpu(c1, c2) - (m2 - m1)]}))
"""


def bench_threads(tmp: Path, size: int, reps: int) -> list[str]:
    src = tmp / "big.bin"
    write_random(src, size, seed=6)
    run("sync", tmp)  # the generated file written back before any timed put
    kinds = {"pipelined (this code)": ("1", ""), "inline (this code)": ("0", "")}
    if OLD_SRC:
        kinds[OLD_LABEL] = ("", OLD_SRC)
    got: dict[str, dict[str, list]] = {k: {"put": [], "checkout": []} for k in kinds}
    loads = [os.getloadavg()]
    for _rep in range(reps):
        for kind, (pipe, path) in kinds.items():
            root = tmp / "threads"
            drop(root)
            root.mkdir()
            env = {**ENV, "MLVC_BIG_PIPELINE": pipe}
            if path:
                env["PYTHONPATH"] = path
            p = subprocess.run(
                [sys.executable, "-c", THREADS, str(src), str(root)],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            for step, pair in json.loads(p.stdout.splitlines()[-1]).items():
                got[kind][step].append(pair)
            drop(root)
    loads.append(os.getloadavg())
    os.unlink(src)
    out = [
        f"### 6. CPU per thread, a new {size / GiB:g} GiB file stored and checked out "
        f"in one process, {reps} repetitions",
        "",
        "Seconds of CPU (median): the calling thread (it reads, cuts and hashes chunks; in a "
        "checkout it writes the chunks) and all other threads (writes, whole-file hash, "
        "writeback; in a checkout the hash of the chunks). On an idle 2-core machine the "
        "busier of the two bounds "
        f"the wall time. Load average before: {', '.join(f'{x:.1f}' for x in loads[0])}; "
        f"after: {', '.join(f'{x:.1f}' for x in loads[1])}.",
        "",
        "| code | put: calling thread | put: other threads | put: total | "
        "checkout: calling thread | checkout: other | checkout: total |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, steps in got.items():
        cells = []
        for step in ("put", "checkout"):
            mine = med([a for a, _b in steps[step]])
            other = med([b for _a, b in steps[step]])
            total = med([a + b for a, b in steps[step]])
            cells += [f"{mine:.2f}", f"{other:.2f}", f"{total:.2f}"]
        out.append(f"| {kind} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Small sizes, one repetition.")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="1,2,3,4", help="Comma-separated benchmark numbers.")
    ap.add_argument("--out", help="Also write the report to this file.")
    ap.add_argument("--dir", help="Work in this folder (default: a temp dir).")
    ap.add_argument("--no-peers", action="store_true", help="Skip dvc and git.")
    ap.add_argument("--big-gib", type=float, default=2.0, help="Size of benchmark 1's file.")
    ap.add_argument(
        "--old-src", default="", help="Benchmark 1 also commits with this checkout's mlvc code."
    )
    ap.add_argument(
        "--daemon",
        action="store_true",
        help="Benchmark 1 also commits and checks out through a command server "
        "(mlvc daemon start, in a runtime folder of its own); wall time only.",
    )
    ap.add_argument(
        "--order",
        choices=("baseline-first", "alternate"),
        default="baseline-first",
        help="Benchmark 1: time the baseline before each commit, or alternate (odd "
        "repetitions time the commit first).",
    )
    ap.add_argument(
        "--indexes",
        type=int,
        default=15,
        help="Benchmark 1 also commits into a repository with this many pack indexes "
        "(15: the next commit makes 16, MAX_INDEXES, and merges none; 0: not timed).",
    )
    args = ap.parse_args()
    global PEERS, OLD_SRC, OLD_LABEL, INDEXES, ORDER
    INDEXES = args.indexes
    ORDER = args.order
    PEERS = not args.no_peers
    OLD_SRC = args.old_src
    OLD_LABEL = f"code of {Path(OLD_SRC).name}" if OLD_SRC else ""
    only = {int(x) for x in args.only.split(",")}
    reps = 1 if args.quick else args.reps
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="mlvc-bench-storage-", dir=args.dir))
    global WORK_DIR, DAEMON
    WORK_DIR = tmp
    if args.daemon:
        DAEMON = start_daemon(ENV)  # without MLVC_DAEMON=0: served commands go to it
    report = [
        f"## Storage (issue 4) — {time.strftime('%Y-%m-%d')}",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}.",
        "",
    ]
    try:
        if 1 in only:
            size = 64 * MiB if args.quick else int(args.big_gib * GiB)
            report += bench_big_file(tmp, size, reps) + [""]
        if 2 in only:
            report += bench_small_files(tmp, 2000 if args.quick else 20_000, reps) + [""]
        if 3 in only:
            report += bench_checkpoints(tmp, 64 * MiB if args.quick else GiB, 10) + [""]
        if 4 in only:
            h, n = (256, 4) if args.quick else (1024, 24)
            report += bench_finetune(tmp, h, n) + [""]
        if 5 in only:
            report += bench_memory(tmp, 256 * MiB if args.quick else 4 * GiB) + [""]
        if 6 in only:
            size = 64 * MiB if args.quick else int(args.big_gib * GiB)
            report += bench_threads(tmp, size, reps) + [""]
        if DAEMON is not None:  # the daemon rows were served, not run in their own process
            status = subprocess.run(
                [MLVC, "daemon", "status"], env=DAEMON, capture_output=True, text=True
            )
            found = re.search(r"(\d+) commands served", status.stdout + status.stderr)
            served = int(found.group(1)) if found else -1
            report.append(f"Commands served by the command server: {served} (expected {2 * reps}).")
    finally:
        if DAEMON is not None:
            stop_daemon(DAEMON)
        drop(tmp)
    text = "\n".join(report)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
