"""Start-up of read commands and small-file commits, each as a ratio to its baseline (issue 16,
items 1 and 2).

1. Start-up: ``mlvc --help``, ``log -n 1``, ``show HEAD``, ``status`` on the quickstart
   project, and ``query`` over 10k runs, against ``python -c pass`` with the same interpreter,
   each repetition timed beside its baseline (interleaved, so load hits both alike).
2. Small files: 20k files of 4 KiB: first commit, unchanged re-commit, and a commit after
   rewriting 10 files, against ``git add -A`` on an identical tree (same steps, same files;
   an untimed second commit between the first and the re-commit, for every tool: a command
   server's file-system monitor trusts a folder from its second walk on).
   After each mlvc commit the benchmark waits for the detached index worker it started
   (the commit itself does not), so no timed command shares the CPUs with a DuckDB ingest.
3. The first ``log -n 1`` of a fresh clone of 10k runs (and the clone, and the second log),
   against ``python -c pass``; ``--compare`` times another mlvc's beside it.

Each figure: the median of ``--reps`` repetitions (at least 5), its spread (min-max of the
per-repetition ratios), and the load average before and after. Data is generated at run
time under ``--dir`` (default: $TMPDIR).

With ``--compare PATH`` (another mlvc executable, e.g. main's venv), that mlvc commits a
third copy of the small-file tree in the same repetitions: a before/after under one load.
With ``--pure``, this mlvc with ``MLVC_PURE=1`` (no C speedups) commits a fourth copy.
With ``--daemon``, every mlvc figure is also taken through a command server (``mlvc daemon
start``, in a runtime folder of its own): the same commands, handed to a fork of a process
that has mlvc loaded. The other mlvc rows run with ``MLVC_DAEMON=0``. A command's CPU is then
the server's child's, which wait4 does not see: the daemon rows give wall time only.
With ``--wheel``, "this mlvc" is a wheel of this checkout installed in a venv of its own (its
dependencies from this venv), as users install it: an editable install (``pip install -e``,
this venv's) loads an import hook and pathlib at every start, ~10-18 ms that users never pay.

Usage: python benchmarks/bench_startup.py [--reps 7] [--files 20000] [--runs 10000]
       [--only 1,2,3] [--quick] [--out report.md] [--compare /path/to/other/mlvc] [--pure]
       [--wheel] [--daemon]
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

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MLVC = str(BIN / "mlvc")
PY = sys.executable
QUERY = (
    'SELECT id, "params.lr", "metrics.val_acc" FROM runs_wide '
    'WHERE "params.optimizer" = \'adam\' ORDER BY "metrics.val_acc" DESC LIMIT 10'
)


def wheel_install(work: Path) -> tuple[str, str]:
    """A wheel of this checkout installed in a new venv (no editable import hook), its
    dependencies found in this venv's site-packages through a .pth line; returns its mlvc
    and python."""
    import sysconfig

    wheels, venv = work / "wheel", work / "wheel-venv"
    run = {"check": True, "capture_output": True, "cwd": work}
    subprocess.run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, HERE.parent], **run)
    subprocess.run([PY, "-m", "venv", "--without-pip", venv], **run)
    py = venv / "bin" / "python"
    pip = [PY, "-m", "pip", "--python", py, "install", "-q", "--no-deps"]
    subprocess.run([*pip, *wheels.glob("mlvc-*.whl")], **run)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          text=True, **run).stdout.strip()  # fmt: skip
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "mlvc_bench_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    found = subprocess.run([py, "-c", "import mlvc, mlvc._walk; print(mlvc.__file__)"],
                           text=True, **run).stdout  # fmt: skip
    assert found.startswith(str(venv)), found  # the wheel's mlvc, not this checkout's
    return str(venv / "bin" / "mlvc"), str(py)


OWN = {**os.environ, "MLVC_DAEMON": "0"}  # the rows without a command server


def start_daemon(base: dict | None = None) -> dict:
    """An environment (``base``'s, else this process's) whose command server (this mlvc's)
    runs in a folder of its own."""
    run = tempfile.mkdtemp(prefix="mlvcb-", dir="/tmp")
    env = {**(os.environ if base is None else base), "XDG_RUNTIME_DIR": run}
    env.pop("MLVC_DAEMON", None)
    subprocess.run([MLVC, "daemon", "start", "--idle", "0"], env=env, check=True)
    return env


def stop_daemon(env: dict) -> None:
    subprocess.run([MLVC, "daemon", "stop"], env=env, check=True, capture_output=True)
    shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def precompile() -> str:
    """Byte-compile mlvc's modules first, as ``pip install`` does: with
    PYTHONDONTWRITEBYTECODE set (as on the shared machine) every run would otherwise compile
    its imports again, which is not what an installed mlvc pays."""
    import compileall

    import mlvc

    compileall.compile_dir(Path(mlvc.__file__).parent, quiet=1)
    return "mlvc byte-compiled before timing (as an installed package is)"


def timed(argv: list[str], cwd: Path, env: dict | None = None, cpu: list | None = None) -> float:
    """Wall seconds of one command; ``cpu`` receives its user+system seconds (the command
    and its children that it waited for, from wait4), a figure the machine's load hardly
    moves."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()  # type: ignore[union-attr]
    _pid, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stderr.close()  # type: ignore[union-attr]
    if p.returncode != 0:
        raise SystemExit(f"{argv} failed in {cwd}: {err.decode()[-500:]}")
    if cpu is not None:
        cpu.append(usage.ru_utime + usage.ru_stime)
    return dt


def settle(root: Path) -> None:
    """Wait for the index worker a commit left behind (it holds ``.mlvc/index.worker.lock``
    for its whole life, and ``.mlvc/index.lock`` only once its imports are done), so its
    start-up and DuckDB ingest do not run during the next timed command of either tool."""
    import fcntl

    for name in ("index.worker.lock", "index.lock"):
        lock = root / ".mlvc" / name
        if lock.exists():
            with open(lock, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_SH)
                fcntl.flock(f, fcntl.LOCK_UN)


def summary(values: list[float], bases: list[float]) -> dict:
    ratios = [v / b for v, b in zip(values, bases, strict=True)]
    return {
        "med": statistics.median(values),
        "base": statistics.median(bases),
        "ratio": statistics.median(values) / statistics.median(bases),
        "lo": min(ratios),
        "hi": max(ratios),
    }


def row(name: str, s: dict, goal: float, base_name: str) -> str:
    ok = "yes" if s["ratio"] <= goal else "**no**"
    return (
        f"| {name} | {s['med'] * 1000:.0f} ms | {base_name} {s['base'] * 1000:.0f} ms | "
        f"**{s['ratio']:.2f}x** | {s['lo']:.2f}-{s['hi']:.2f}x | ≤ {goal:g}x | {ok} |"
    )


HEAD = (
    "| figure | mlvc (median) | baseline (median) | ratio of medians | spread of ratios "
    "| goal | met |\n|---|---|---|---|---|---|---|"
)


# -- 1. start-up -------------------------------------------------------------------------------


def quickstart(work: Path) -> Path:
    """The quickstart example, initialized, with two recorded runs and a changed file."""
    root = work / "quickstart"
    root.mkdir()
    for f in (HERE.parent / "examples" / "quickstart").iterdir():
        if f.is_file():
            shutil.copy(f, root / f.name)
    subprocess.run([PY, "make_data.py"], cwd=root, check=True, capture_output=True)
    subprocess.run([MLVC, "init"], cwd=root, check=True, capture_output=True)
    for lr in ("0.1", "0.05"):
        (root / "params.json").write_text(f'{{"lr": {lr}, "epochs": 5, "l2": 0.0, "seed": 42}}\n')
        for argv in ([PY, "train.py"], [MLVC, "commit", "-q", "-m", f"lr {lr}"]):
            subprocess.run(argv, cwd=root, check=True, capture_output=True)
    with open(root / "train.py", "a") as f:
        f.write("# changed\n")
    return root


def many_runs(work: Path, n: int) -> Path:
    root = work / "runs"
    root.mkdir()
    subprocess.run(
        [PY, str(HERE / "bench_foundation.py"), "--child", "make-runs", str(root), str(n)],
        check=True,
        capture_output=True,
    )
    return root


def bench_startup(work: Path, reps: int, n_runs: int, daemon: dict | None = None) -> str:
    qs = quickstart(work)
    print(f"[1] writing {n_runs} runs", file=sys.stderr)
    big = many_runs(work, n_runs)
    cases = [
        ("`mlvc --help`", [MLVC, "--help"], qs, 5),
        ("`mlvc log -n 1`", [MLVC, "log", "-n", "1"], qs, 8),
        ("`mlvc show HEAD`", [MLVC, "show", "HEAD"], qs, 8),
        ("`mlvc status` (quickstart)", [MLVC, "status"], qs, 10),
        (f"`mlvc log -n 1` ({n_runs} runs)", [MLVC, "log", "-n", "1"], big, 8),
        (f"`mlvc query` ({n_runs} runs)", [MLVC, "query", QUERY], big, 15),
    ]
    envs = {"": OWN, **({" (mlvc daemon)": daemon} if daemon else {})}
    for _name, argv, cwd, _goal in cases:  # warm the page cache and the run list once
        for env in envs.values():
            timed(argv, cwd, env)
    samples = {name + how: [] for name, *_ in cases for how in envs}
    bases = {name + how: [] for name, *_ in cases for how in envs}
    for rep in range(reps):
        print(f"[1] rep {rep + 1}/{reps}", file=sys.stderr)
        for name, argv, cwd, _goal in cases:
            for how, env in envs.items():
                bases[name + how].append(timed([PY, "-c", "pass"], cwd))
                samples[name + how].append(timed(argv, cwd, env))
    lines = [HEAD]
    for how in envs:
        for name, _argv, _cwd, goal in cases:
            s = summary(samples[name + how], bases[name + how])
            lines.append(row(name + how, s, goal, "`python -c pass`"))
    return "\n".join(lines)


# -- 3. the first log of a fresh clone ---------------------------------------------------------


def bench_clone_log(work: Path, reps: int, n_runs: int, compare: str | None = None) -> str:
    """``mlvc clone`` of a folder remote holding ``n_runs`` runs, then its first and second
    ``log -n 1``, each beside ``python -c pass``; with ``compare``, that mlvc's clone and logs
    interleaved (a before/after under one load). The first log reads what the run list
    lacks: every run, unless the clone wrote them there."""
    src = many_runs(work, n_runs)
    remote = work / "remote"
    for argv in ([MLVC, "remote", "add", "origin", str(remote)], [MLVC, "push", "origin"]):
        subprocess.run(argv, cwd=src, env=OWN, check=True, capture_output=True)
    tools = {"this mlvc": MLVC, **({"compared mlvc": compare} if compare else {})}
    steps = ("clone", "first `log -n 1`", "second `log -n 1`")
    times = {(t, s): [] for t in tools for s in steps}
    bases = {(t, s): [] for t in tools for s in steps}
    for rep in range(reps):
        print(f"[3] rep {rep + 1}/{reps}", file=sys.stderr)
        for tool, exe in tools.items():
            dest = work / f"clone-{rep}-{len(times[tool, 'clone'])}-{tool[:4]}"
            argvs = ([exe, "clone", str(remote), str(dest)], [exe, "log", "-n", "1"],
                     [exe, "log", "-n", "1"])  # fmt: skip
            for step, argv in zip(steps, argvs, strict=True):
                bases[tool, step].append(timed([PY, "-c", "pass"], work))
                times[tool, step].append(timed(argv, dest if step != "clone" else work, OWN))
                if step == "clone":
                    settle(dest)
            shutil.rmtree(dest, ignore_errors=True)
    lines = ["| figure | median | `python -c pass` | ratio | spread |", "|---|---|---|---|---|"]
    for (tool, step), values in times.items():
        m = summary(values, bases[tool, step])
        lines.append(f"| {tool}: {step} ({n_runs} runs) | {m['med'] * 1000:.0f} ms | "
                     f"{m['base'] * 1000:.0f} ms | {m['ratio']:.1f}x | "
                     f"{m['lo']:.1f}-{m['hi']:.1f}x |")  # fmt: skip
    return "\n".join(lines)


# -- 2. small files ----------------------------------------------------------------------------


def make_tree(root: Path, n: int, size: int) -> list[str]:
    per_dir = 200
    paths = []
    for i in range(n):
        rel = f"data/d{i // per_dir:03d}/f{i % per_dir:04d}.bin"
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
        paths.append(rel)
    return paths


def bench_small_files(
    work: Path,
    reps: int,
    n: int,
    size: int = 4096,
    compare: str | None = None,
    pure=False,
    daemon: dict | None = None,
) -> str:
    print(f"[2] writing {n} files of {size} bytes", file=sys.stderr)
    src = work / "small-src"
    paths = make_tree(src, n, size)
    touched = paths[:: max(1, n // 10)][:10]
    tools = ("git", "mlvc", *(["base"] if compare else []), *(["pure"] if pure else []))
    tools += ("daemon",) if daemon else ()
    trees = {}
    for tool in tools:
        trees[tool] = work / f"small-{tool}"
        shutil.copytree(src, trees[tool])
    shutil.rmtree(src)
    genv = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(work)}
    bins = {"mlvc": MLVC, "base": compare, "pure": MLVC, "daemon": MLVC}
    own = {**genv, "MLVC_DAEMON": "0"}
    envs = {"git": genv, "mlvc": own, "base": own, "pure": {**own, "MLVC_PURE": "1"}}
    if daemon:
        envs["daemon"] = {**genv, "XDG_RUNTIME_DIR": daemon["XDG_RUNTIME_DIR"]}
        envs["daemon"].pop("MLVC_DAEMON", None)
    add = ["git", "add", "-A"]
    keys = ("first", "same", "touched")
    times = {f"{t}.{k}": [] for t in tools for k in keys}
    cpu = {f"{t}.{k}": [] for t in tools for k in keys}
    for rep in range(reps):
        print(f"[2] rep {rep + 1}/{reps}", file=sys.stderr)
        for tool in tools:
            root = trees[tool]
            shutil.rmtree(root / (".git" if tool == "git" else ".mlvc"), ignore_errors=True)
            if tool == "git":
                subprocess.run(["git", "init", "-q"], cwd=root, env=genv, check=True)
            else:
                subprocess.run([bins[tool], "init"], cwd=root, check=True, capture_output=True)
            argv = add if tool == "git" else [bins[tool], *COMMIT]
            os.sync()
            env = envs[tool]
            times[f"{tool}.first"].append(timed(argv, root, env, cpu[f"{tool}.first"]))
            settle(root)
            # untimed, every tool alike: a command server's monitor trusts a data folder
            # from its second walk on (the first makes its watches), as a user committing
            # again and again meets it; git's and mlvc's own caches were warm already
            timed(argv, root, env, [])
            settle(root)
            times[f"{tool}.same"].append(timed(argv, root, env, cpu[f"{tool}.same"]))
            settle(root)
            for rel in touched:
                (root / rel).write_bytes(os.urandom(size))
            times[f"{tool}.touched"].append(timed(argv, root, env, cpu[f"{tool}.touched"]))
            settle(root)
    goals = {"first": 0.8, "same": 3, "touched": 3}
    names = {
        "first": f"first commit of {n} files",
        "same": "unchanged re-commit",
        "touched": "commit after rewriting 10 files",
    }
    lines = [HEAD]
    for k in keys:
        s = summary(times[f"mlvc.{k}"], times[f"git.{k}"])
        lines.append(row(names[k], s, goals[k], "`git add -A`"))
    lines += ["", "CPU time (user + system, from wait4), same runs:", "", HEAD]
    for k in keys:
        s = summary(cpu[f"mlvc.{k}"], cpu[f"git.{k}"])
        lines.append(row(names[k] + " (CPU)", s, goals[k], "`git add -A`"))
    if daemon:
        lines += ["", "Through a command server (`mlvc daemon`; wall time), same runs:", "", HEAD]
        for k in keys:
            s = summary(times[f"daemon.{k}"], times[f"git.{k}"])
            lines.append(row(names[k] + " (mlvc daemon)", s, goals[k], "`git add -A`"))
    if compare:
        lines += ["", f"This mlvc against `{compare}` (--compare), same runs:", "", VS]
        for k in keys:
            lines.append(vs_row(names[k], times, cpu, k))
    if pure:
        lines += ["", "This mlvc against itself with `MLVC_PURE=1` (--pure), same runs:", ""]
        lines.append(VS.replace("--compare", "MLVC_PURE=1"))
        for k in keys:
            lines.append(vs_row(names[k], times, cpu, k, "pure"))
    return "\n".join(lines)


COMMIT = ["commit", "-q", "-m", "data", "--data", "data"]
VS = (
    "| figure | this: wall | --compare: wall | ratio | this: CPU | --compare: CPU | ratio |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
)


def vs_row(name: str, times: dict, cpu: dict, k: str, other: str = "base") -> str:
    med = statistics.median
    w, bw = med(times[f"mlvc.{k}"]), med(times[f"{other}.{k}"])
    c, bc = med(cpu[f"mlvc.{k}"]), med(cpu[f"{other}.{k}"])
    return (
        f"| {name} | {w * 1000:.0f} ms | {bw * 1000:.0f} ms | {w / bw:.2f}x "
        f"| {c * 1000:.0f} ms | {bc * 1000:.0f} ms | {c / bc:.2f}x |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--only", default="1,2")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--compare",
        default=None,
        help="another mlvc executable (main's) timed on a third copy of the small-file tree, "
        "interleaved: a before/after under the same load",
    )
    ap.add_argument(
        "--pure", action="store_true", help="also this mlvc with MLVC_PURE=1 (no C speedups)"
    )
    ap.add_argument(
        "--daemon",
        action="store_true",
        help="also every mlvc figure through a command server (mlvc daemon start)",
    )
    ap.add_argument(
        "--wheel",
        action="store_true",
        help="time a wheel of this checkout installed in a venv of its own (as users install "
        "mlvc) instead of this venv's editable install",
    )
    args = ap.parse_args()
    if args.quick:
        args.reps, args.files, args.runs = 5, 2000, 500
    only = set(args.only.split(","))
    compiled = precompile()
    before = loadavg()
    parts = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"median of {args.reps}; load average before: {before}; {compiled}"
    ]
    os.makedirs(args.dir or tempfile.gettempdir(), exist_ok=True)  # --dir made if new
    tmp = tempfile.TemporaryDirectory(
        dir=args.dir, prefix="bench-startup-", ignore_cleanup_errors=True
    )
    work = Path(tmp.name)
    if args.wheel:
        global MLVC, PY
        MLVC, PY = wheel_install(work)
        parts[0] += f"; this mlvc: a wheel of this checkout installed in {Path(PY).parent.parent}"
    daemon = start_daemon() if args.daemon else None
    if "1" in only:
        parts.append(
            "#### Start-up of read commands\n\n" + bench_startup(work, args.reps, args.runs, daemon)
        )
        print(parts[-1], flush=True)
    if "2" in only:
        parts.append(
            f"#### {args.files} files of 4 KiB\n\n"
            + bench_small_files(
                work, args.reps, args.files, compare=args.compare, pure=args.pure, daemon=daemon
            )
        )
        print(parts[-1], flush=True)
    if "3" in only:
        parts.append(
            f"#### The first log of a fresh clone of {args.runs} runs\n\n"
            + bench_clone_log(work, args.reps, args.runs, compare=args.compare)
        )
        print(parts[-1], flush=True)
    if daemon:
        stop_daemon(daemon)
    parts.append(f"Load average after: {loadavg()}")
    report = "\n\n".join(parts) + "\n"
    if args.out:
        Path(args.out).write_text(report)
    print(report, flush=True)
    tmp.cleanup()  # after the report: removing 40k files is slow on some disks


if __name__ == "__main__":
    main()
