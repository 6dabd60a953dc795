"""Issue 9, the store's share: the stat cache never vouches for unstored bytes, packs are
never deleted while they hold data, reads verify before they release, refs are durable,
gc keeps what live runs will reference, and fsck names every problem."""

import os
import time

import pytest

from mlvc import Repo
from mlvc.errors import DirtyWorkingTree
from mlvc.ids import ObjectId


def age(path, seconds=10):
    """Make a file look older than the stat cache's racy window."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def same_size_edit(path, text: str) -> None:
    old = path.read_bytes()
    new = text.encode()
    assert len(new) == len(old)
    path.write_bytes(new)
    time.sleep(0.02)  # the next operation's clock is past the edit: the file can be cached


# -- item 1: status learns a hash, commit must still store the bytes ----------------------


def test_status_then_commit_stores_the_edited_bytes(repo, project):
    repo.commit("one")
    f = project / "train.py"
    same_size_edit(f, "print('TRAINING')\n")
    assert repo.status()["code"]["modified"] == ["train.py"]
    second = repo.commit("two")
    assert repo.fsck() == []
    assert b"".join(repo.cat(f"{second.hex}:train.py")) == b"print('TRAINING')\n"


def test_checkout_after_status_and_commit_keeps_the_only_copy(cli, project):
    cli("commit", "-m", "one")
    first = Repo(project).head()
    f = project / "train.py"
    same_size_edit(f, "print('precious')\n")
    cli("status")
    cli("commit", "-m", "two")
    second = Repo(project).head()
    cli("checkout", first.hex)  # in place: overwrites train.py with run one's bytes
    assert f.read_text() == "print('training')\n"
    cli("checkout", second.hex)
    assert f.read_text() == "print('precious')\n"
    assert cli("fsck").exit_code == 0


def test_checkout_never_overwrites_a_file_the_store_lacks(repo, project):
    """A run recorded by an older mlvc may name an object that was never stored: the file
    on disk is then the only copy, and checkout must treat it as an uncommitted change."""
    from mlvc.commit import Inputs, RunSpec, record_run
    from mlvc.objects import FILE, Tree, TreeEntry
    from mlvc.trees import write_object

    first = repo.commit("one")
    content = b"only copy!!!\n"
    (project / "train.py").write_bytes(content)
    tree = Tree.of([TreeEntry("train.py", FILE, ObjectId.of(content), len(content))])
    inputs = Inputs(write_object(repo.store, tree), {}, None, None, (), ())
    record_run(repo, RunSpec(message="bad", inputs=inputs))
    with pytest.raises(DirtyWorkingTree):
        repo.checkout(first.hex)
    assert (project / "train.py").read_bytes() == content


# -- item 8b: the stat cache is checksummed and validated ---------------------------------


def _committed_with_cache(repo, project):
    for f in (project / "train.py", project / "src" / "model.py"):
        age(f)
    first = repo.commit("one")
    assert (repo.dir / "statcache").exists()
    return first


def test_stat_cache_entry_damaged_to_another_stored_id_is_not_trusted(repo, project):
    _committed_with_cache(repo, project)
    train = ObjectId.of((project / "train.py").read_bytes())
    other = ObjectId.of((project / "src" / "model.py").read_bytes())
    path = repo.dir / "statcache"
    raw = path.read_bytes()
    assert raw.count(bytes(train)) == 1
    path.write_bytes(raw.replace(bytes(train), bytes(other)))  # damage: one id swapped
    problems = Repo(project).fsck()
    assert any("stat cache" in p and "checksum" in p for p in problems)
    path.write_bytes(raw.replace(bytes(train), bytes(other)))
    second = Repo(project).commit("two")
    got = b"".join(Repo(project).cat(f"{second.hex}:train.py"))
    assert got == (project / "train.py").read_bytes()


def test_stat_cache_entry_naming_nothing_is_not_trusted(repo, project):
    _committed_with_cache(repo, project)
    train = ObjectId.of((project / "train.py").read_bytes())
    path = repo.dir / "statcache"
    path.write_bytes(path.read_bytes().replace(bytes(train), b"\x01" * 32))
    Repo(project).commit("two")
    assert Repo(project).fsck() == []


@pytest.mark.parametrize(
    "entry",
    [[1, 2], "x", [1, 2, 3, 4, b"short", True], [-1, 2, 3, 4, b"\0" * 32, True], None],
)
def test_malformed_stat_cache_entries_are_dropped(repo, project, entry):
    import blake3
    import msgpack

    from mlvc.statcache import VERSION

    _committed_with_cache(repo, project)
    data = msgpack.packb([VERSION, {"train.py": entry, 7: entry}], use_bin_type=True)
    (repo.dir / "statcache").write_bytes(data + blake3.blake3(data).digest())
    problems = Repo(project).fsck()
    assert any("stat cache" in p and "malformed" in p for p in problems)
    assert Repo(project).fsck() == []  # fsck removed it: only a cache
    Repo(project).commit("two")
    assert Repo(project).fsck() == []


def test_a_stored_entry_whose_object_is_gone_is_stored_again(repo, project):
    """The stat cache is not the store: a hit counts only if the store has the object."""
    _committed_with_cache(repo, project)
    new = project / "data" / "new.csv"
    new.write_text("a,b\n")
    age(new)
    before = set((repo.dir / "objects" / "pack").iterdir())
    repo.commit("two", data=["data"])
    assert repo.stat_cache.get(new, new.stat(), stored=True) == ObjectId.of(b"a,b\n")
    for p in set((repo.dir / "objects" / "pack").iterdir()) - before:
        p.unlink()  # a disk fault takes run two's pack; the file on disk is the only copy
    again = Repo(project)
    third = again.commit("three", data=["data"])
    assert again.store.has(ObjectId.of(b"a,b\n"))
    assert b"".join(again.cat(f"{third.hex}:data/new.csv")) == b"a,b\n"
