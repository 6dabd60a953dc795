import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import settings

from mlvc import Repo
from mlvc.cli import main

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _isolated_author(monkeypatch):
    monkeypatch.setenv("MLVC_AUTHOR", "Test Author <test@example.com>")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    # ingest in the committing process, so a test sees the index right after a commit;
    # tests of the default detached worker set "background" themselves
    monkeypatch.setenv("MLVC_INDEX_SYNC", "inline")
    # no detached pack merger under tests that count packs; tests of it set MLVC_GC_AUTO
    monkeypatch.setenv("MLVC_GC_AUTO", "0")


@pytest.fixture
def project(tmp_path, monkeypatch, request) -> Path:
    """A small ML project (not a git repo), initialized, with cwd inside it.

    Every test that uses it ends with ``fsck() == []`` on the repository it wrote (as
    restic's tests end with its checker), unless it is marked ``damages_repo``: it damages
    the store on purpose.
    """
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "train.py").write_text("print('training')\n")
    (root / "src" / "model.py").write_text("def predict(x):\n    return x * 2\n")
    (root / "data" / "train.csv").write_text("x,y\n1,2\n2,4\n")
    (root / "data" / "test.csv").write_text("x,y\n3,6\n")
    monkeypatch.chdir(root)
    Repo.init(root)
    yield root
    if request.node.get_closest_marker("damages_repo") is None and (root / ".mlvc").is_dir():
        os.chdir(tmp_path)  # the test may have left cwd anywhere
        for path in root.rglob("*"):  # a test may have made files read-only
            if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
                path.chmod(0o755)
        assert Repo(root).fsck() == [], "the test left a repository fsck finds problems in"


@pytest.fixture
def repo(project) -> Repo:
    return Repo(project)


@pytest.fixture
def cli(project):
    runner = CliRunner()

    def invoke(*args, ok=True):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if ok and result.exit_code != 0:
            raise AssertionError(
                f"mlvc {' '.join(args)} exited {result.exit_code}:\n{result.output}"
            )
        return result

    return invoke


@pytest.fixture
def merge_while_listed():
    """``merge_while_listed(objects, times=2)``: the next ``times`` listings of the pack folder
    of the store at ``objects`` (by this process) are each followed at once by another process
    merging its pack indexes (the merged one renamed in, then its sources removed), before
    this process opens what it listed: the window a reader descheduled under load falls into
    (twice: a read that misses looks again). Returns the list of merges done. Requested
    after ``project``, it is undone before that fixture's fsck."""
    import mlvc.store.pack.index as pack_index

    real = pack_index.listdir  # the store's and fsck's listing of index files (open_listed)

    def arm(objects: Path, times: int = 2) -> list[int]:
        done: list[int] = []
        merge = f"from mlvc.store.pack.store import PackedStore; PackedStore({str(objects)!r}).consolidate()"

        def listing(folder):
            names = real(folder)
            if Path(folder) == Path(objects) / "pack" and len(done) < times:
                done.append(1)
                subprocess.run([sys.executable, "-c", merge], check=True, timeout=120)
            return names

        pack_index.listdir = listing
        return done

    yield arm
    pack_index.listdir = real  # before the project fixture's fsck


@pytest.fixture
def settle_window(monkeypatch):
    """``settle_window(ns)``: how long a changed refs or events folder counts as recent
    (``mlvc.index.journal.settle_ns``), whatever file system the test runs on."""
    import mlvc.index.journal as journal

    def set_window(ns: int) -> None:
        monkeypatch.setattr(journal, "REFS_SETTLE_NS", ns)
        monkeypatch.setattr(journal, "LOCAL_SETTLE_NS", ns)

    return set_window
