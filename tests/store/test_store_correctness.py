"""Issue 9, the store's share: the stat cache never vouches for unstored bytes, packs are
never deleted while they hold data, reads verify before they release, refs are durable,
gc keeps what live runs will reference, and fsck names every problem."""

import os
import time

import pytest

from mlvc import Repo
from mlvc.core.ids import ObjectId
from mlvc.errors import DirtyWorkingTree


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


@pytest.mark.damages_repo
def test_checkout_never_overwrites_a_file_the_store_lacks(repo, project):
    """A run recorded by an older mlvc may name an object that was never stored: the file
    on disk is then the only copy, and checkout must treat it as an uncommitted change."""
    from mlvc.core.objects import FILE, Tree, TreeEntry
    from mlvc.runs.record import Inputs, RunSpec, record_run
    from mlvc.store.typed import write_object

    first = repo.commit("one")
    content = b"only copy!!!\n"
    (project / "train.py").write_bytes(content)
    tree = Tree.of([TreeEntry("train.py", FILE, ObjectId.of(content), len(content))])
    inputs = Inputs(write_object(repo.store, tree), {}, None, None, (), ())
    record_run(repo.ctx, RunSpec(message="bad", inputs=inputs))
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

    from mlvc.workspace.statcache import encode

    _committed_with_cache(repo, project)
    data = encode({"train.py": entry, 7: entry}, {})
    (repo.dir / "statcache").write_bytes(data + blake3.blake3(data).digest())
    problems = Repo(project).fsck()
    assert any("stat cache" in p and "2 malformed entries" in p for p in problems)
    assert Repo(project).fsck() == []  # fsck removed it: only a cache
    Repo(project).commit("two")
    assert Repo(project).fsck() == []


@pytest.mark.damages_repo
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


# -- item 2: a pack is never deleted for lacking a usable index ---------------------------


def age_store(repo, seconds=7200):
    """Everything under .mlvc/objects looks older than fsck's and gc's grace periods."""
    for folder, _dirs, files in os.walk(repo.dir / "objects"):
        for f in files:
            age(os.path.join(folder, f), seconds)


def _packs(repo):
    return sorted(p.name for p in (repo.dir / "objects" / "pack").glob("*.pack"))


def _all_readable(project, runs):
    fresh = Repo(project)
    for rid in runs:
        for section in ("code", "data"):
            fresh.checkout(rid.hex, to=project.parent / f"co-{rid.short}-{section}", only=section)


def test_fsck_rebuilds_a_damaged_index_and_keeps_the_pack(repo, project):
    runs = [repo.commit("one", data=["data"]), repo.commit("two", data=["data"])]
    packs = _packs(repo)
    idx = next(repo.store.pack_dir.glob("*.idx"))
    os.chmod(idx, 0o644)
    raw = bytearray(idx.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    idx.write_bytes(bytes(raw))
    age_store(repo)
    problems = Repo(project).fsck()
    assert any(idx.name in p and "checksum" in p for p in problems), problems
    assert _packs(repo) == packs
    assert Repo(project).fsck() == []
    _all_readable(project, runs)


def test_fsck_indexes_a_pack_whose_index_is_gone(repo, project, cli):
    runs = [repo.commit("one", data=["data"])]
    packs = _packs(repo)
    for idx in repo.store.pack_dir.glob("*.idx"):
        idx.unlink()
    age_store(repo)
    out = cli("fsck").output
    assert "repaired: pack" in out and "had no index" in out
    assert _packs(repo) == packs
    assert Repo(project).fsck() == []
    _all_readable(project, runs)


def unindexed_pack(repo):
    """Five blobs in a pack whose index is gone, as a writer killed before indexing leaves
    it: (the blobs, their ids, the pack's path)."""
    from mlvc.store.pack.store import PackedStore

    store = PackedStore(repo.dir / "objects", repo.dir / "tmp")
    blobs = [os.urandom(1000 + i) for i in range(5)]
    ids = [store.add_bytes(b) for b in blobs]
    store.flush()
    for idx in store.pack_dir.glob("*.idx"):
        idx.unlink()
    (pack,) = store.pack_dir.glob("*.pack")
    return blobs, ids, pack


def test_a_torn_pack_keeps_its_leading_records(repo, project):
    """A writer killed mid-append: no index, the last record cut. Every record before the
    cut verifies and is kept, whatever the pack's age."""
    blobs, ids, pack = unindexed_pack(repo)
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size - 500)  # the fifth record is cut
    age_store(repo)
    notes: list[str] = []
    assert Repo(project).fsck(notes) == []
    assert pack.exists() and any("had no index" in n for n in notes)
    fresh = Repo(project).store
    assert [fresh.read_bytes(i) for i in ids[:4]] == blobs[:4]
    assert not fresh.has(ids[4])


def test_gc_indexes_a_torn_pack_instead_of_deleting_it(repo, project):
    first = repo.commit("one", data=["data"])
    for idx in repo.store.pack_dir.glob("*.idx"):
        idx.unlink()
    age_store(repo)
    report = Repo(project).gc(grace=0)
    assert any("indexed" in n for n in report.notes)
    assert Repo(project).fsck() == []
    _all_readable(project, [first])


def test_gc_refuses_when_it_cannot_read_an_index(repo, project):
    from mlvc.errors import StoreNeedsRepair

    first = repo.commit("one", data=["data"])
    packs = _packs(repo)
    idx = next(repo.store.pack_dir.glob("*.idx"))
    idx.unlink()
    idx.mkdir()  # open() fails with an OSError, as EACCES would (tests run as root)
    age_store(repo)
    with pytest.raises(StoreNeedsRepair, match="mlvc fsck"):
        Repo(project).gc(grace=0)
    assert _packs(repo) == packs
    problems = Repo(project).fsck()
    assert any(idx.name in p and "cannot be read" in p for p in problems), problems
    idx.rmdir()
    assert Repo(project).fsck() == []
    Repo(project).gc(grace=0)
    _all_readable(project, [first])


@pytest.mark.damages_repo
def test_fsck_and_gc_handle_a_truncated_pack(repo, project):
    repo.commit("one", data=["data"])
    (pack,) = repo.store.pack_dir.glob("*.pack")
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size - 10)
    age_store(repo)
    from mlvc.errors import StoreNeedsRepair

    with pytest.raises(StoreNeedsRepair):
        Repo(project).gc(grace=0)
    problems = Repo(project).fsck()
    assert any("shorter than" in p for p in problems), problems
    assert pack.exists()
    after = Repo(project).fsck()
    assert not any("shorter than" in p or "index" in p for p in after), after


# -- item 6: files that change while they are read ----------------------------------------

_TRUNCATE_WHILE_HASHING = """
import os, sys, threading
from mlvc.errors import FileChanged
from mlvc.store.odb import hash_file
path = sys.argv[1]
block = os.urandom(1 << 20)
stop = threading.Event()
def churn():
    while not stop.is_set():
        with open(path, "wb") as f:
            for _ in range(96):
                f.write(block)
        os.truncate(path, 0)
with open(path, "wb") as f:
    f.write(block * 96)
t = threading.Thread(target=churn)
t.start()
outcomes = set()
try:
    for _ in range(40):
        try:
            hash_file(path)
            outcomes.add("hashed")
        except FileChanged:
            outcomes.add("refused")
finally:
    stop.set()
    t.join()
print(sorted(outcomes))
"""


def test_a_file_truncated_while_hashed_never_kills_mlvc(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", _TRUNCATE_WHILE_HASHING, str(tmp_path / "churn.bin")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])  # SIGBUS was -7


def test_a_file_growing_while_committed_is_refused_not_misrecorded(repo, project):
    import threading

    from mlvc.errors import FileChanged

    big = project / "data" / "growing.bin"
    big.write_bytes(os.urandom(24 << 20))
    stop = threading.Event()

    def grow():
        with open(big, "ab") as f:
            for _ in range(400):
                if stop.is_set():
                    return
                f.write(os.urandom(64 << 10))
                f.flush()
                time.sleep(0.001)

    t = threading.Thread(target=grow)
    t.start()
    try:
        with pytest.raises(FileChanged, match="growing.bin"):
            repo.commit("racing", data=["data"])
    finally:
        stop.set()
        t.join()
    rid = repo.commit("settled", data=["data"])
    entry = next(e for e in repo.show(rid)["data"]["entries"] if e["path"].endswith("growing.bin"))
    assert entry["size"] == big.stat().st_size
    assert repo.fsck() == []


def test_add_file_refuses_a_file_that_changed_since_it_was_listed(repo, project):
    """The size in a tree entry is the size of the bytes whose hash is the id."""
    from mlvc.errors import FileChanged

    f = project / "data" / "train.csv"
    hasher = repo.file_hasher()
    st = os.lstat(f)
    f.write_text("x,y\n1,2\n2,4\n3,6\n")  # grows after it was listed
    with pytest.raises(FileChanged):
        hasher(f, st)


# -- items 12a, 12b: reads release only verified bytes, decompress within a bound --------


def _flip(path, offset):
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def _collect(blocks):
    out = bytearray()
    with pytest.raises(Exception) as err:
        for b in blocks:
            out += b
    return bytes(out), err.value


@pytest.mark.damages_repo
def test_show_of_a_chunked_file_never_releases_a_damaged_chunk(repo, project):
    from mlvc.errors import CorruptObject

    content = os.urandom(6 << 20)
    (project / "data" / "weights.bin").write_bytes(content)
    rid = repo.commit("big", data=["data"])
    fid = ObjectId.of(content)
    chunks = repo.store.children(fid)
    assert len(chunks) > 10
    path, off, n = repo.store.location(chunks[len(chunks) // 2])
    _flip(path, off + n // 2)
    got, err = _collect(Repo(project).cat(f"{rid.hex}:data/weights.bin"))
    assert isinstance(err, CorruptObject) and chunks[len(chunks) // 2].hex in str(err)
    assert content.startswith(got) and len(got) < len(content)


@pytest.mark.damages_repo
def test_show_of_a_big_raw_record_releases_nothing_unverified(repo, project):
    from mlvc.errors import CorruptObject

    content = os.urandom(3 << 20)  # one raw record of three 1 MiB blocks
    (project / "data" / "blob.bin").write_bytes(content)
    rid = repo.commit("raw", data=["data"])
    path, off, n = repo.store.location(ObjectId.of(content))
    _flip(path, off + n - 100)  # in the last block
    got, err = _collect(Repo(project).cat(f"{rid.hex}:data/blob.bin"))
    assert isinstance(err, CorruptObject)
    assert got == b""


_ZSTD_BOMB = """
import resource, sys
from mlvc.store.compress import SIZE, _codec
from mlvc.core.ids import ObjectId
from mlvc.store.odb import ZSTD
from mlvc.store.pack.store import PackedStore
store = PackedStore(sys.argv[1])
n = 512 << 20
frame = _codec().compress(bytes(n), asbytes=True)  # a few KB that decode to 512 MiB
oid = ObjectId.of(b"whatever")
store._put_record(oid, ZSTD, SIZE.pack(n) + frame)
store.flush()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
problems = PackedStore(sys.argv[1]).check(oid)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(frame), (peak - base) // 1024, problems)
"""


def test_a_crafted_compressed_record_cannot_make_reads_allocate(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", _ZSTD_BOMB, str(tmp_path / "objects")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    frame, grew_mb, problems = r.stdout.split(" ", 2)
    assert int(frame) < 64 << 10
    assert int(grew_mb) < 64, r.stdout  # was 512 MB
    assert "over the" in problems and "limit" in problems


def test_big_compressible_blobs_are_stored_raw_and_read_back(repo):
    text = b"a fairly compressible line of text\n" * (200_000)  # 7 MB
    oid = repo.store.add_bytes(text)
    repo.store.flush()
    assert Repo(repo.root).store.read_bytes(oid) == text


# -- items 13a, 22: fsck sees an empty HEAD, sizes, and every bad ref ---------------------


@pytest.mark.damages_repo
def test_fsck_reports_an_empty_head(repo, project):
    repo.commit("one")
    (repo.dir / "HEAD").write_text("\n")
    problems = Repo(project).fsck()
    assert any("HEAD is empty" in p for p in problems), problems


@pytest.mark.damages_repo
def test_fsck_compares_a_tree_entrys_size_with_its_blob(repo, project):
    from mlvc.core.objects import FILE, Tree, TreeEntry
    from mlvc.runs.record import Inputs, RunSpec, record_run
    from mlvc.store.typed import write_object

    content = b"twelve bytes"
    oid = repo.store.add_bytes(content)
    tree = Tree.of([TreeEntry("liar.txt", FILE, oid, 9999)])
    inputs = Inputs(write_object(repo.store, tree), {}, None, None, (), ())
    record_run(repo.ctx, RunSpec(message="lies", inputs=inputs))
    problems = Repo(project).fsck()
    assert any("liar.txt" in p and "9999" in p and "12" in p for p in problems), problems


@pytest.mark.damages_repo
def test_fsck_lists_every_bad_ref_and_exits_9(cli, project):
    cli("commit", "-m", "one", "-n", "first")
    cli("tag", "HEAD", "good")
    d = project / ".mlvc"
    (d / "refs" / "tags" / "junk").write_text("not an id\n")
    (d / "refs" / "tags" / "binary").write_bytes(b"\xff\xfe\x00garbage")
    (d / "refs" / "names" / "first").write_text("0" * 64 + "\n")  # names no run
    (d / "logs" / "HEAD").write_bytes((d / "logs" / "HEAD").read_bytes() + b"broken line\n")
    r = cli("fsck", ok=False)
    assert r.exit_code == 9, r.output
    assert "Traceback" not in r.output
    for needle in ("refs/tags/junk", "refs/tags/binary", "refs/names/first", "logs/HEAD"):
        assert needle in r.output, (needle, r.output)


@pytest.mark.damages_repo
def test_a_ref_of_non_utf8_bytes_is_a_clean_error(repo, project):
    from mlvc.errors import MlvcError

    repo.commit("one")
    (repo.dir / "refs" / "tags" / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(MlvcError, match="refs/tags/bin"):
        repo.refs.read("refs/tags/bin")


# -- item 8: a reported commit is durable --------------------------------------------------


def test_commit_makes_its_refs_durable_before_returning(repo, project, monkeypatch):
    """A power cut cannot be simulated here; what can be checked is that the filesystem is
    synced after every ref of the commit is written and before commit returns."""
    import mlvc.refs.store as refs_mod

    seen = []
    real = refs_mod.sync_filesystem

    def watching(path):
        head = (repo.dir / "HEAD").read_text().strip() if (repo.dir / "HEAD").exists() else ""
        seen.append((head, sorted(os.listdir(repo.dir / "refs" / "runs"))))
        real(path)

    monkeypatch.setattr(refs_mod, "sync_filesystem", watching)
    rid = repo.commit("durable", name="n1", tags={"best": ""})
    assert seen and seen[-1] == (rid.hex, [rid.hex])
    assert (repo.dir / "refs" / "tags" / "best").read_text().strip() == rid.hex


def test_a_single_ref_write_is_fsynced_with_its_folder(repo, project, monkeypatch):
    rid = repo.commit("one")
    calls = []
    real = os.fsync

    def counting(fd):
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    repo.tag(rid.hex, "keep")
    tags = str(repo.dir / "refs" / "tags")
    assert tags in calls  # the folder holding the renamed ref
    assert any(c.startswith(tags + "/keep") for c in calls)  # the ref itself (its lock file)
    assert any(c.endswith("logs/refs/tags/keep") for c in calls)  # its reflog line


# -- item 8a: gc never removes what a live run will reference, whatever the grace -----------

_LIVE_LOGGER = """
import os, sys, time
import mlvc
n = int(sys.argv[1])
with mlvc.start_run(name="live-under-gc") as run:
    print("started", flush=True)
    for i in range(n):
        run.log_text(f"artifact {i} " + os.urandom(8).hex(), f"texts/t{i:04d}.txt")
        run.log_metric("i", i)
        if i % 10 == 0:
            time.sleep(0.01)
print(run.id, flush=True)
"""


def test_gc_with_no_grace_during_a_live_run_loses_nothing(repo, project):
    import subprocess
    import sys

    repo.commit("base")
    n = 300
    proc = subprocess.Popen(
        [sys.executable, "-c", _LIVE_LOGGER, str(n)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MLVC_DEBUG_GC_LOCK": "1"},
    )
    assert proc.stdout.readline().strip() == "started"
    runs = 0
    while proc.poll() is None:
        Repo(project).gc(grace=0)
        runs += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert runs >= 2
    rid = out.split()[-1]
    fresh = Repo(project)
    assert fresh.fsck() == []
    entries = fresh.show(rid)["artifacts"]["entries"]
    assert len(entries) == n
    for e in entries:
        assert b"".join(fresh.cat(f"{rid}:{e['path']}")).startswith(b"artifact ")


def test_the_shared_gc_lock_is_held_while_any_thread_of_the_process_holds_it(repo):
    import subprocess
    import sys
    import threading

    from mlvc.store.locks import gc_lock

    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
        "except BlockingIOError:\n    print('held')\n"
    )

    def state():
        out = subprocess.run(
            [sys.executable, "-c", probe, str(repo.dir / "gc.lock")], capture_output=True
        )
        return out.stdout.decode().strip()

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with gc_lock(repo.dir):
            a_in.set()
            b_in.wait()
        a_out.set()

    t = threading.Thread(target=a)
    t.start()
    a_in.wait()
    with gc_lock(repo.dir):
        b_in.set()
        a_out.wait()
        t.join()
        assert state() == "held"  # thread a left first; b still holds it
    assert state() == "free"


def test_fsck_gives_back_what_a_killed_writer_reserved(repo, project):
    """A writer killed while it stored a big file leaves blocks reserved past its pack's end
    (fallocate keeping the size: as much as the whole file); indexing that pack gives them
    back, and every byte of the pack stays."""
    from mlvc.store.pack import store as packstore

    blobs, ids, pack = unindexed_pack(repo)
    size, mode = pack.stat().st_size, pack.stat().st_mode & 0o777
    fd = os.open(pack, os.O_RDWR)
    try:
        if packstore._fallocate is None or packstore._fallocate(fd, 1, size, 64 << 20) != 0:
            pytest.skip("this file system does not reserve blocks with fallocate")
    finally:
        os.close(fd)
    assert pack.stat().st_blocks * 512 >= size + (60 << 20)  # reserved, not counted in size
    age_store(repo)
    notes: list[str] = []
    assert Repo(project).fsck(notes) == []
    assert any("gave back 64 MiB reserved past its end" in n for n in notes), notes
    assert pack.stat().st_blocks * 512 < size + (1 << 20)
    assert pack.stat().st_size == size and pack.stat().st_mode & 0o777 == mode
    fresh = Repo(project).store
    assert [fresh.read_bytes(i) for i in ids] == blobs
