"""`mlvc reproduce --env recorded` reuses environments built before (mlvc.exec.envcache):
reuse, damage found and rebuilt, two reproductions at once, a build killed with -9, gc, and
pip's index settings handed to uv. Real processes, offline (a folder of wheels)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import replace

import pytest
from test_run_reproduce import BIN, environ, make_wheel, mlvc

from mlvc import Repo
from mlvc.capture import capture_env
from mlvc.core.objects import Env
from mlvc.exec.venv import pip_settings
from mlvc.runs.record import capture_inputs
from mlvc.store.typed import write_object


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A run whose recorded environment is one tiny wheel, and the variables to rebuild it
    offline; returns (project, run id, env folder in the cache, variables)."""
    monkeypatch.setenv("PATH", environ()["PATH"])
    proj = tmp_path / "proj"
    proj.mkdir()
    Repo.init(proj)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "mlvctinypkg", "1.0")
    (proj / "check.py").write_text(
        "import mlvctinypkg\nopen('out.txt', 'w').write(mlvctinypkg.VERSION)\n"
    )
    (proj / "out.txt").write_text("1.0")
    rid, env_id = record_run(proj, "1.0")
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    yield proj, rid.hex, proj / ".mlvc" / "cache" / "envs" / env_id.hex, offline
    assert Repo(proj).fsck() == []


def record_run(proj, version: str):
    """A run of ``python check.py`` whose environment records mlvctinypkg ``version``."""
    repo = Repo(proj)
    facts = capture_env(proj)
    facts.update(packages={"mlvctinypkg": version}, package_sources={}, installers={})
    inputs = capture_inputs(repo, artifacts=["out.txt"], cwd=proj, env=False)
    env_id = write_object(repo.store, Env(facts))
    rid = repo.commit(version, command=("python", "check.py"), inputs=replace(inputs, env=env_id))
    return rid, env_id


def reproduce(proj, rid, offline, *more, code=0):
    done = mlvc(proj, "reproduce", rid, "--env", "recorded", *more, code=code, **offline)
    if code == 0:
        assert "\nEXACT" in "\n" + done.stdout, done.stdout + done.stderr
    return done


def test_second_reproduction_reuses_the_build_and_rebuild_env_forces_one(recorded):
    proj, rid, venv, offline = recorded
    first = reproduce(proj, rid, offline)
    assert "installing 1 recorded packages" in first.stderr
    assert json.loads((venv / "mlvc-env.json").read_text())["env"] == venv.name
    second = reproduce(proj, rid, offline)
    assert "using the cached environment" in second.stderr
    assert "installing" not in second.stderr
    third = reproduce(proj, rid, offline, "--rebuild-env")
    assert "installing 1 recorded packages" in third.stderr
    assert not list(venv.parent.glob(".build-*"))


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda v: (v / "mlvc-env.json").unlink(), "no completion record"),
        (lambda v: (v / "mlvc-env.json").write_text("{not json"), "no completion record"),
        (
            lambda v: shutil.rmtree(next(v.glob("lib/python*/site-packages/*.dist-info"))),
            "installed distributions changed",
        ),
        (lambda v: (v / "bin" / "python").unlink(), "interpreter is missing"),
    ],
    ids=["no-marker", "garbage-marker", "package-removed", "no-python"],
)
def test_a_damaged_cache_entry_is_rebuilt(recorded, damage, why):
    proj, rid, venv, offline = recorded
    reproduce(proj, rid, offline)
    damage(venv)
    done = reproduce(proj, rid, offline)
    assert why in done.stderr and "rebuilding it" in done.stderr
    assert "using the cached environment" in reproduce(proj, rid, offline).stderr


def test_a_package_installed_by_a_rerun_makes_the_entry_be_rebuilt(recorded, tmp_path):
    proj, rid, venv, offline = recorded
    reproduce(proj, rid, offline)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "intruder-1.0.dist-info").mkdir()
    done = reproduce(proj, rid, offline)
    assert "installed distributions changed" in done.stderr
    assert not (site / "intruder-1.0.dist-info").exists()


def test_two_reproductions_at_once_build_once(recorded):
    proj, rid, venv, offline = recorded
    cmd = [str(BIN / "mlvc"), "reproduce", rid, "--env", "recorded"]
    procs = [
        subprocess.Popen(cmd, cwd=proj, env=environ(**offline), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    errs = "".join(err for _out, err in outs)
    assert errs.count("installing 1 recorded packages") == 1, errs
    assert errs.count("using the cached environment") == 1, errs


def test_a_build_killed_with_sigkill_leaves_nothing_that_is_reused(recorded):
    proj, rid, venv, offline = recorded
    # a slow installer: a find-links folder that is a fifo-free but huge listing is hard to
    # make; instead kill as soon as the staging folder exists (before the rename)
    p = subprocess.Popen(
        [str(BIN / "mlvc"), "reproduce", rid, "--env", "recorded"],
        cwd=proj,
        env=environ(**offline),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not list(venv.parent.glob(".build-*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not venv.exists() or (venv / "mlvc-env.json").exists()
    done = reproduce(proj, rid, offline)
    assert "installing 1 recorded packages" in done.stderr or "using the cached" in done.stderr
    assert not list(venv.parent.glob(".build-*"))
    assert json.loads((venv / "mlvc-env.json").read_text())["env"] == venv.name


def test_gc_removes_builds_no_run_needs_and_keeps_the_rest(recorded):
    proj, rid, venv, offline = recorded
    reproduce(proj, rid, offline)
    stale = venv.parent / ("ab" * 32)
    shutil.copytree(venv, stale, symlinks=True)
    leftover = venv.parent / f".build-{'cd' * 32}-0000"
    leftover.mkdir()
    done = mlvc(proj, "gc", "--json")
    report = json.loads(done.stdout)
    assert report["cache_envs"] == 1
    assert not stale.exists() and not leftover.exists()
    assert (venv / "mlvc-env.json").exists()
    assert "using the cached environment" in reproduce(proj, rid, offline).stderr


def test_an_uninstallable_version_is_one_line_with_uv_and_pip(recorded, tmp_path):
    proj, _rid, _venv, offline = recorded
    rid, env_id = record_run(proj, "9.9")
    for installer in ("uv", "pip"):
        env = {**offline, "MLVC_ENV_INSTALLER": installer}
        bad = mlvc(proj, "reproduce", rid.hex, "--env", "recorded", code=13, **env)
        last = bad.stderr.strip().splitlines()[-1]
        assert "cannot install mlvctinypkg==9.9" in last, bad.stderr
        assert len(last) < 300
    assert not list((proj / ".mlvc" / "cache" / "envs").glob(".build-*"))
    assert not (proj / ".mlvc" / "cache" / "envs" / env_id.hex).exists()


def test_pip_settings_become_uv_options(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nindex-url = https://mirror.example/simple\n"
        "extra-index-url = file:///a/simple\n  file:///b/simple\ncert = /x/ca.pem\n"
        "[install]\nfind-links = /wheels\n"
    )
    for k in list(os.environ):
        if k.startswith("PIP_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("HOME", str(tmp_path))
    options, cert = pip_settings()
    assert options[options.index("--index-url") + 1] == "https://mirror.example/simple"
    extra = [options[i + 1] for i, o in enumerate(options) if o == "--extra-index-url"]
    assert extra[-2:] == ["file:///a/simple", "file:///b/simple"]
    assert "/wheels" in options and cert == "/x/ca.pem"
    monkeypatch.setenv("PIP_NO_INDEX", "yes")
    monkeypatch.setenv("PIP_FIND_LINKS", "/other")
    options, _ = pip_settings()
    assert options[0] == "--no-index"
    assert "/other" in options and "/wheels" not in options
