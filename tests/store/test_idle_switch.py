"""The switch between the one- and two-thread big-file paths (core.cores.IdleWatch): it
measures the machine now, not the one-minute load average, and a path changed in the middle
of a file must give the same chunks, ids and pack order as either path alone."""

import os
import subprocess
import sys
import time

import pytest

from mlvc.core import cores


def test_the_watch_follows_the_cpu_the_others_use(monkeypatch):
    """Busy ticks of the whole machine, minus this process's own CPU, per wall second."""
    samples = iter([(0, 0, 1), (200, 200, 1), (200, 400, 1), (290, 600, 1)])
    monkeypatch.setattr(cores, "_stat", lambda: next(samples))
    monkeypatch.setattr(cores, "_cpus", lambda: 2)
    monkeypatch.setattr(cores, "EVERY", 0.0)
    watch = cores.IdleWatch()
    watch.machine = 2
    assert watch.answer is True  # only the caller running at the start
    answers = []
    for _ in range(3):
        time.sleep(0.02)
        answers.append(watch.spare())
    # all busy (2 cores of others) -> no; all idle -> yes; 45% busy (0.9 core) -> no
    assert answers == [False, True, False]


def test_the_watch_waits_between_looks(monkeypatch):
    calls = []

    def stat():
        calls.append(1)
        return (0, 100 * len(calls), 1)

    monkeypatch.setattr(cores, "_stat", stat)
    monkeypatch.setattr(cores, "_cpus", lambda: 2)
    watch = cores.IdleWatch()
    for _ in range(100):
        watch.spare()
    assert len(calls) == 1  # EVERY (0.2 s) has not passed: no more reads of /proc/stat


def test_one_cpu_never_takes_a_helper(monkeypatch):
    monkeypatch.setattr(cores, "_cpus", lambda: 1)
    monkeypatch.setattr(cores, "EVERY", 0.0)
    watch = cores.IdleWatch()
    assert watch.spare() is False


def test_no_proc_stat_means_a_helper_when_there_are_two_cpus(monkeypatch):
    monkeypatch.setattr(cores, "_stat", lambda: None)
    monkeypatch.setattr(cores, "_cpus", lambda: 2)
    assert cores.IdleWatch().spare() is True


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_real_busy_processes_turn_the_helper_off(monkeypatch):
    """Three processes spinning on this machine's cores: every look says no core is free,
    whatever the load average said before they started."""
    monkeypatch.setattr(cores, "EVERY", 0.1)
    n = max(3, (os.cpu_count() or 2) + 1)
    spin = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)
    ]  # fmt: skip
    try:
        time.sleep(0.3)
        watch = cores.IdleWatch()
        looks = []
        for _ in range(3):
            time.sleep(0.15)
            looks.append(watch.spare())
        assert looks == [False, False, False]
    finally:
        for p in spin:
            p.kill()
            p.wait()


def test_a_busy_first_instant_is_looked_at_again_soon(monkeypatch):
    """Another process running at the very start (procs_running 3 with the caller) says no,
    but only until the first look after FIRST, which measures the CPU used meanwhile; later
    looks wait EVERY again."""
    samples = iter([(0, 0, 3), (20, 200, 1)])
    calls = []

    def stat():
        calls.append(1)
        return next(samples)

    monkeypatch.setattr(cores, "_stat", stat)
    monkeypatch.setattr(cores, "_cpus", lambda: 2)
    monkeypatch.setattr(cores, "_mine_running", lambda: 1)
    monkeypatch.setattr(cores, "EVERY", 60.0)
    monkeypatch.setattr(cores, "FIRST", 0.01)
    watch = cores.IdleWatch()
    watch.machine = 2
    assert watch.spare() is False  # two others running at the start
    time.sleep(0.02)
    watch.mine = time.process_time()
    assert watch.spare() is True  # 10% of 2 CPUs busy since: a core is free
    for _ in range(50):
        watch.spare()
    assert len(calls) == 2  # the next look waits EVERY
