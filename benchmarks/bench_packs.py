"""Many small commits: a pack each, merged in the background (MLVC_GC_AUTO) or left as is.

Run as ``.venv/bin/python benchmarks/bench_packs.py [--commits 1000] [--reps 5]``. Two
repositories get the same ``--commits`` commits through the API (each one a new data file
and a changed one: a pack of its own), one with the default automatic merge (``gc_auto``:
50 small packs start a merger with the commit's background work), one with it off
(``MLVC_GC_AUTO=0``). Reported, each the median of ``--reps`` repetitions alternating the
two repositories so that both meet the same load:

1. the commits' wall time, the mergers included (waited for at the end);
2. the pack files left;
3. a fresh process reading every object (``PackedStore.read_bytes``), against the same
   process reading the same bytes with ``cat`` of the files they came from (the baseline);
4. ``mlvc fsck`` and ``mlvc index rebuild``, end to end;
5. one merge of 50 small packs timed in a process of its own, against ``cp`` of those packs
   and a ``sync`` (the bytes it copies).

Data is generated in a temp folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
MLVC = str(BIN / "mlvc")
ENV = {**os.environ, "MLVC_AUTHOR": "bench <bench@example.invalid>", "MLVC_DAEMON": "0"}
ENV.pop("PYTHONDONTWRITEBYTECODE", None)

COMMITS = """
import sys, time
from pathlib import Path
from mlvc import Repo
root, start, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
repo = Repo(root)
t = time.perf_counter()
for i in range(start, start + n):
    (root / "data" / f"part{i}.csv").write_text("".join(f"{i},{j},{i * j}\\n" for j in range(200)))
    (root / "metrics.txt").write_text(f"step {i}\\n")
    repo.commit(message=f"c{i}", params={"i": i, "lr": 0.001 * i}, capture_env=False)
print(time.perf_counter() - t)
"""

READ_ALL = """
import sys, time
from mlvc.store.pack.store import PackedStore
store = PackedStore(sys.argv[1])
t = time.perf_counter()
n = sum(len(store.read_bytes(o)) for o in list(store.ids()))
print(time.perf_counter() - t, n)
"""

MERGE = """
import sys, time
from pathlib import Path
from mlvc.store.pack.merge import merge_small, take_lock
from mlvc.store.pack.store import PackedStore
root = Path(sys.argv[1])
fd = take_lock(root / ".mlvc/objects/pack", wait=True)
t = time.perf_counter()
r = merge_small(PackedStore(root / ".mlvc/objects"), root / ".mlvc")
print(time.perf_counter() - t, r.merged, r.bytes)
"""


def py(code: str, *args: str, env: dict | None = None) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env or ENV, capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-800:])
    return out.stdout.split()


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    took = time.perf_counter() - t
    if p.returncode:
        raise RuntimeError(f"{cmd} failed: {p.stderr[-500:]}")
    return took


def packs(root: Path) -> list[Path]:
    return sorted((root / ".mlvc" / "objects" / "pack").glob("*.pack"))


def wait_merger(root: Path) -> None:
    """Until no merger holds ``merge.lock`` (fsck's lock; taken and let go)."""
    py(
        "import sys, os; from pathlib import Path; from mlvc.store.pack.merge import take_lock;"
        "os.close(take_lock(Path(sys.argv[1]), wait=True))",
        str(root / ".mlvc" / "objects" / "pack"),
    )
    while subprocess.run(["pgrep", "-f", str(root)], capture_output=True).stdout.strip():
        time.sleep(0.05)  # the index worker and the merger's process


def make(root: Path, commits: int, auto: bool) -> float:
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    subprocess.run([MLVC, "init", "-q"], cwd=root, env=ENV, check=True, capture_output=True)
    env = {**ENV, "MLVC_GC_AUTO": "50" if auto else "0", "MLVC_INDEX_SYNC": "inline"}
    t = time.perf_counter()
    py(COMMITS, str(root), "0", str(commits), env=env)
    wait_merger(root)
    return time.perf_counter() - t


def cat_baseline(root: Path) -> float:
    """``cat`` of every file the commits wrote, to /dev/null: the bytes a read returns."""
    files = [str(p) for p in sorted((root / "data").iterdir())]
    t = time.perf_counter()
    for i in range(0, len(files), 500):
        subprocess.run(["cat", *files[i : i + 500]], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{min(xs):.3f}–{max(xs):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commits", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", help="Also write the report to this file.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlvc-bench-packs-"))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        roots = {"merged": tmp / "merged", "unmerged": tmp / "unmerged"}
        make_s = {k: make(r, args.commits, k == "merged") for k, r in roots.items()}
        counts = {k: len(packs(r)) for k, r in roots.items()}
        read: dict[str, list[float]] = {k: [] for k in roots}
        fsck: dict[str, list[float]] = {k: [] for k in roots}
        rebuild: dict[str, list[float]] = {k: [] for k in roots}
        cat: list[float] = []
        for _ in range(args.reps):
            cat.append(cat_baseline(roots["merged"]))
            for k, r in roots.items():
                read[k].append(float(py(READ_ALL, str(r / ".mlvc" / "objects"))[0]))
                fsck[k].append(timed([MLVC, "fsck"], r))
                rebuild[k].append(timed([MLVC, "index", "rebuild"], r))
        # one merge of 50 small packs, against copying them
        m = tmp / "merge"
        make(m, 50, auto=False)
        small = packs(m)
        copy = tmp / "copy"
        copy.mkdir()
        t = time.perf_counter()
        subprocess.run(["cp", *map(str, small), str(copy)], check=True)
        os.sync()
        cp_s = time.perf_counter() - t
        merge_s, merged, merged_bytes = py(MERGE, str(m))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    lines = [
        f"### Many small commits: packs merged in the background or not ({started})",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; load average before {' '.join(load_before)}, after "
        f"{' '.join(load_after)}",
        f"- {args.commits} commits through the API, each a new 200-line CSV and a changed "
        f"file; medians of {args.reps}, the two repositories alternating (spread: min–max)",
        "",
        "| | merged (default) | unmerged (`MLVC_GC_AUTO=0`) | merged / unmerged |",
        "|---|---|---|---|",
        f"| the commits, mergers included | {make_s['merged']:.2f} s | "
        f"{make_s['unmerged']:.2f} s | {make_s['merged'] / make_s['unmerged']:.2f}x |",
        f"| pack files left | {counts['merged']} | {counts['unmerged']} | |",
    ]
    for name, d in (("read every object, fresh process", read), ("`mlvc fsck`", fsck),
                    ("`mlvc index rebuild`", rebuild)):  # fmt: skip
        ratio = med([a / b for a, b in zip(d["merged"], d["unmerged"], strict=True)])
        lines.append(
            f"| {name} | {med(d['merged']):.3f} s ({spread(d['merged'])}) | "
            f"{med(d['unmerged']):.3f} s ({spread(d['unmerged'])}) | {ratio:.2f}x |"
        )
    lines += [
        "",
        f"Baselines: `cat` of the {args.commits} data files {med(cat):.3f} s "
        f"({spread(cat)}): reading every object is {med(read['merged']) / med(cat):.1f}x it "
        f"merged, {med(read['unmerged']) / med(cat):.1f}x unmerged. One merge of "
        f"{merged} small packs ({int(merged_bytes) / 1024:.0f} KiB) took {float(merge_s):.3f} s "
        f"in a process of its own; `cp` of those packs and a `sync` {cp_s:.3f} s "
        f"({float(merge_s) / cp_s:.1f}x).",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
