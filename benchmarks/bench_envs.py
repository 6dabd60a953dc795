"""Rebuilding a recorded environment (issue 16 item 6): uv against pip, cold and cached.

Run as ``.venv/bin/python benchmarks/bench_envs.py [--reps 5] [--pip-reps 3]``. Prints a
Markdown report.

The environment is 47 common ML distributions (numpy, pandas, scipy, scikit-learn,
matplotlib, pyarrow, duckdb, sympy, sqlalchemy, pydantic ... and their dependencies) at the
versions installed in this venv, so every installer finds them with the machine's own index
settings. Timed, each in a fresh cache folder (``MLVC_ENV_CACHE``):

- **cold**: ``envcache.recorded_env`` builds the environment (venv + install of all 47), with
  the installer's own download cache warm (one untimed build first), as for any user after
  their first install; the very first uv build with an empty uv cache is reported too;
- **cached**: the same call again: the entry is checked and reused;
- **end to end**: ``mlvc reproduce RUN --env recorded`` of a run whose command imports the
  packages and writes an output, cold (uv), cached, and with pip: the verdict must be EXACT.

The baseline is pip (``MLVC_ENV_INSTALLER=pip``) timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

BIN = Path(sys.executable).parent
PACKAGES = [
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "joblib",
    "threadpoolctl",
    "matplotlib",
    "contourpy",
    "cycler",
    "fonttools",
    "kiwisolver",
    "pillow",
    "pyparsing",
    "python-dateutil",
    "six",
    "packaging",
    "pyarrow",
    "duckdb",
    "click",
    "blake3",
    "msgpack",
    "pyyaml",
    "requests",
    "urllib3",
    "idna",
    "certifi",
    "charset-normalizer",
    "jinja2",
    "markupsafe",
    "rich",
    "pygments",
    "markdown-it-py",
    "mdurl",
    "sympy",
    "mpmath",
    "networkx",
    "protobuf",
    "typing-extensions",
    "attrs",
    "cloudpickle",
    "sqlalchemy",
    "narwhals",
    "alembic",
    "mako",
    "pydantic",
    "pydantic-core",
    "annotated-types",
]
SCRIPT = """import json, numpy, pandas, scipy, sklearn, matplotlib, pyarrow, duckdb, sympy
from pathlib import Path
x = numpy.arange(10.0)
Path("out.json").write_text(json.dumps({"sum": float(x.sum()), "pandas": pandas.__version__}))
"""


def facts_47() -> dict:
    from mlvc.capture import capture_env

    facts = capture_env(Path.cwd())
    facts["packages"] = {p: version(p) for p in PACKAGES}
    facts["package_sources"] = {}
    facts["installers"] = {}
    assert len(facts["packages"]) == 47
    return facts


def build(folder: Path, facts: dict, env_id, installer: str, uv_cache: str = "") -> float:
    from mlvc.exec.envcache import recorded_env

    os.environ["MLVC_ENV_INSTALLER"] = installer
    saved = os.environ.get("UV_CACHE_DIR")
    if uv_cache:
        os.environ["UV_CACHE_DIR"] = uv_cache
    try:
        start = time.perf_counter()
        recorded_env(folder, env_id, facts, "bench", log=lambda _m: None)
        return time.perf_counter() - start
    finally:
        if uv_cache:
            os.environ.pop("UV_CACHE_DIR")
            if saved is not None:
                os.environ["UV_CACHE_DIR"] = saved


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}–{max(xs):.2f}, n={len(xs)})"


def mlvc(proj: Path, *args: str, **env: str) -> tuple[float, subprocess.CompletedProcess]:
    environ = {**os.environ, "MLVC_AUTHOR": "bench <b@example.invalid>", **env}
    environ["PATH"] = f"{BIN}{os.pathsep}{environ['PATH']}"
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "mlvc"), *args], cwd=proj, env=environ,
                          capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"mlvc {args} failed: {done.stderr[-800:]}")
    return took, done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pip-reps", type=int, default=3)
    a = ap.parse_args()
    from mlvc import Repo
    from mlvc.core.objects import Env
    from mlvc.runs.record import capture_inputs
    from mlvc.store.typed import write_object

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    tmp = Path(tempfile.mkdtemp(prefix="mlvc-bench-envs-"))
    out = []
    try:
        proj = tmp / "proj"
        proj.mkdir()
        (proj / "check.py").write_text(SCRIPT)
        repo = Repo.init(proj)
        os.chdir(proj)
        subprocess.run([sys.executable, "check.py"], check=True)
        facts = facts_47()
        inputs = capture_inputs(repo, artifacts=["out.json"], cwd=proj, env=False)
        env_id = write_object(repo.store, Env(facts))
        rid = repo.commit("47", command=("python", "check.py"), inputs=inputs.__class__(
            **{**inputs.__dict__, "env": env_id}))  # fmt: skip

        empty = str(tmp / "uv-cache-empty")  # wheels fetched from the indexes again
        first_uv = build(tmp / "c-first", facts, env_id, "uv", uv_cache=empty) if a.reps else 0.0
        times: dict[str, list[float]] = {}
        for installer, reps in (("uv", a.reps), ("pip", a.pip_reps)):
            build(tmp / f"warm-{installer}", facts, env_id, installer)  # download caches
            for i in range(reps):
                folder = tmp / f"c-{installer}-{i}"
                times.setdefault(f"{installer} cold", []).append(
                    build(folder, facts, env_id, installer)
                )
                times.setdefault(f"{installer} cached", []).append(
                    build(folder, facts, env_id, installer)
                )
                shutil.rmtree(folder)
        e2e = {}
        for label, installer, cache in (
            ("uv, cold", "uv", "e-uv"),
            ("uv, cached", "uv", "e-uv"),
            ("pip, cold", "pip", "e-pip"),
        ):
            took, done = mlvc(proj, "reproduce", rid.hex, "--env", "recorded", "--json",
                              MLVC_ENV_INSTALLER=installer,
                              MLVC_ENV_CACHE=str(tmp / cache))  # fmt: skip
            e2e[label] = (took, json.loads(done.stdout)["verdict"])
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        uv_cold = statistics.median(times["uv cold"])
        pip_cold = statistics.median(times["pip cold"])
        out += [
            "### Rebuilding a 47-package recorded environment (`bench_envs.py`)",
            "",
            f"uv {version('uv')}, pip {version('pip')}; load average before "
            f"{' '.join(load_before)}, after {' '.join(load_after)}.",
            "",
            "| step | median (range, runs) | ratio to pip cold | target |",
            "|---|---|---|---|",
            f"| pip, cold (baseline) | {spread(times['pip cold'])} | 1.00x | |",
            f"| uv, cold | {spread(times['uv cold'])} | {uv_cold / pip_cold:.3f}x | <= 10 s |",
            f"| uv, cold, empty uv cache (once) | {first_uv:.2f} s | "
            f"{first_uv / pip_cold:.3f}x | |",
            f"| uv, cached | {spread(times['uv cached'])} | "
            f"{statistics.median(times['uv cached']) / pip_cold:.4f}x | <= 1 s |",
            f"| pip, cached | {spread(times['pip cached'])} | | |",
            "",
            "| `mlvc reproduce --env recorded` end to end | s | verdict |",
            "|---|---|---|",
        ]
        out += [f"| {k} | {t:.2f} | {v} |" for k, (t, v) in e2e.items()]
    finally:
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(out))


if __name__ == "__main__":
    main()
