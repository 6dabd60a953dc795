"""The deliverer reads the event journal itself (mlvc.events.intake): a commit writes nothing
for its webhooks, each event is matched once across restarts and late writers, and an
endpoint gets only the events made after it was added."""

import fcntl
import json
import subprocess
import sys
import time
from contextlib import contextmanager

import webhook_receiver as rx_tools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from webhook_receiver import Receiver, _quick_deliverer, idle_at_end

from mlvc.core.events import LATE_WINDOW_US, Event, new_id
from mlvc.core.layout import Layout
from mlvc.events import deliver, emit, intake, outbox, webhooks, write_event

__all__ = ["_quick_deliverer", "idle_at_end"]  # fixtures used by name


def add(repo, url: str, **kw) -> webhooks.Added:
    return webhooks.add(repo.layout, url, allow_private=True, **kw)


def files_under(path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@contextmanager
def held(layout: Layout):
    """Hold deliver.lock as a running deliverer would (so an event starts none)."""
    with open(layout.deliver_lock, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def test_a_commit_with_a_webhook_writes_nothing_for_it(project, repo, idle_at_end):
    with Receiver() as rx:
        added = add(repo, rx.url, events=["commit.*"])
        with held(repo.layout):
            before = files_under(repo.layout.webhooks)
            oid = repo.commit("first")
            after = files_under(repo.layout.webhooks)
            assert set(after.pop("wake")) == {ord(".")}  # the running deliverer poked
            assert after == before  # no outbox file, no cursor
        assert deliver.ensure_running(repo.layout)  # reads the commit's event from the journal
        got = rx.wait(1)
        rx_tools.wait_idle(repo.root)
    payload = Webhook(added.secret).verify(got[0].body, {k.lower(): v for k, v in got[0].headers.items()})  # fmt: skip
    assert payload["type"] == "commit.created" and payload["data"]["run_id"] == oid
    assert not list(outbox.pending(repo.layout))


def test_the_webhook_path_of_a_commit_imports_no_http_or_deliverer(project, repo):
    add(repo, "http://127.0.0.1:9/hook")
    code = (
        "import sys; from mlvc import Repo; Repo('.').commit('x'); "
        "print(sorted(m for m in ('mlvc.events.deliver', 'mlvc.events.webhooks', "
        "'mlvc.events.outbox', 'http.client', 'ssl') if m in sys.modules))"
    )
    with held(repo.layout):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=True
        )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_an_endpoint_gets_only_the_events_made_after_it_was_added(repo, idle_at_end):
    emit(repo.ctx, "gc.completed", {"n": 0})  # no webhook yet: no deliverer, nothing kept
    with Receiver() as first, Receiver() as later:
        add(repo, first.url)
        first.gate.clear()  # the deliverer is busy with the first event
        emit(repo.ctx, "gc.completed", {"n": 1})
        rx_tools.wait_for(lambda: first.started > 0)
        emit(repo.ctx, "gc.completed", {"n": 2})  # read by the deliverer after `later` exists
        add(repo, later.url)
        new = emit(repo.ctx, "gc.completed", {"n": 3})
        first.gate.set()
        got = first.wait(3)
        later.wait(1)
        rx_tools.wait_idle(repo.root)
    assert [g.json()["data"]["n"] for g in got] == [1, 2, 3]
    assert [g.json()["id"] for g in later.got] == [new.id]


def test_a_deliverer_killed_after_delivering_does_not_deliver_again(repo, idle_at_end, monkeypatch):
    with Receiver() as rx:
        add(repo, rx.url)
        monkeypatch.setenv("MLVC_WEBHOOK_LINGER", "60")  # it stays, idle, until killed
        a = emit(repo.ctx, "gc.completed", {"n": 1})
        rx.wait(1)
        rx_tools.wait_for(lambda: outbox.attempts(repo.layout))  # delivered and logged
        rx_tools.kill_deliverer(repo.root)
        monkeypatch.setenv("MLVC_WEBHOOK_LINGER", "0.3")
        b = emit(repo.ctx, "gc.completed", {"n": 2})  # a new deliverer, from the saved cursor
        rx.wait(2)
        rx_tools.wait_idle(repo.root)
    assert [g.json()["id"] for g in rx.got] == [a.id, b.id]


def test_a_damaged_cursor_starts_from_the_oldest_webhook(repo, idle_at_end, caplog):
    emit(repo.ctx, "gc.completed", {"n": 0})
    time.sleep(0.01)
    with Receiver() as rx:
        add(repo, rx.url)
        repo.layout.webhooks.mkdir(parents=True, exist_ok=True)
        intake.cursor_path(repo.layout).write_text("{garbage")
        reader = intake.Intake.open(repo.layout)
        assert "the webhook cursor" in caplog.text and "damaged" in caplog.text
        assert reader.cursor is None  # nothing delivered yet: from the webhook's creation
        new = emit(repo.ctx, "gc.completed", {"n": 1})  # the deliverer rewrites the cursor
        rx.wait(1)
        rx_tools.wait_idle(repo.root)
    assert [g.json()["id"] for g in rx.got] == [new.id]
    assert reader.unread()  # a fresh reader would match again: only one deliverer runs
    assert intake.Intake.open(repo.layout).take() == 0  # the deliverer's cursor covers all
    saved = json.loads(intake.cursor_path(repo.layout).read_text())
    assert saved["cursor"] < new.id and new.id in saved["seen"]
    for m in outbox.pending(repo.layout):
        outbox.done(repo.layout, m.id)


def test_a_repository_without_a_cursor_does_not_get_its_delivered_events_again(repo, idle_at_end):
    """Upgraded from emitters that filled the outbox themselves (no cursor file), or the
    cursor lost: the first deliverer starts after the last event delivered."""
    with Receiver() as rx:
        add(repo, rx.url)
        old = [emit(repo.ctx, "gc.completed", {"n": n}) for n in range(3)]
        rx.wait(3)
        rx_tools.wait_idle(repo.root)
        intake.cursor_path(repo.layout).unlink()
        new = emit(repo.ctx, "gc.completed", {"n": 3})
        rx.wait(4)
        rx_tools.wait_idle(repo.root)
    assert sorted(g.json()["id"] for g in rx.got) == sorted(e.id for e in [*old, new])


def test_a_disabled_endpoint_is_not_given_new_events(repo):
    added = add(repo, "http://127.0.0.1:9/hook")
    webhooks.set_state(repo.layout, added.endpoint.id, disabled="test")
    with held(repo.layout):  # no deliverer: the intake is driven here
        emit(repo.ctx, "gc.completed", {})
        assert intake.Intake.open(repo.layout).take() == 0
    assert not list(outbox.pending(repo.layout))


# -- property: every event matched exactly once ---------------------------------------------

STEP_US = 100_000


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    late=st.lists(st.integers(0, LATE_WINDOW_US - STEP_US), min_size=1, max_size=25),
    actions=st.lists(st.sampled_from(["take", "reopen", "none"]), min_size=25, max_size=25),
)
def test_events_landing_late_or_across_restarts_are_matched_once(tmp_path_factory, late, actions):
    """Event i lands i-th, with an id up to nearly the late window older than its place in
    the order (a slow writer); the deliverer reads at any moment and restarts at any moment
    from its saved cursor: each event gets exactly one message."""
    root = tmp_path_factory.mktemp("intake")
    layout = Layout.of(root)
    layout.dir.mkdir()
    webhooks.add(layout, "http://127.0.0.1:9/hook", allow_private=True)
    t0 = int((time.time() + 10) * 1e6)  # after the endpoint's creation
    reader = intake.Intake.open(layout)
    written: list[str] = []
    got: list[str] = []

    def take() -> None:
        reader.take()
        for m in outbox.pending(layout):
            got.append(m.event.id)
            outbox.done(layout, m.id)

    for i, lateness in enumerate(late):
        event = Event(new_id(t0 + i * STEP_US - lateness), "gc.completed", "t", {"i": i})
        write_event(layout, event, sync=False)
        written.append(event.id)
        action = actions[i]
        if action == "take":
            take()
        elif action == "reopen":
            reader = intake.Intake.open(layout)  # a new deliverer from the saved cursor
    take()
    assert sorted(got) == sorted(written)  # each once
    saved = json.loads(intake.cursor_path(layout).read_text())
    assert all(s > saved["cursor"] for s in saved["seen"])


def test_unread_and_pending_change_nothing(repo):
    add(repo, "http://127.0.0.1:9/hook", events=["run.*"])
    with held(repo.layout):
        emit(repo.ctx, "gc.completed", {})
        reader = intake.Intake.open(repo.layout)
        assert len(reader.unread()) == 1 and not reader.pending()  # not a wanted type
        run = emit(repo.ctx, "run.failed", {"run_id": "ab" * 32})
        before = files_under(repo.layout.webhooks)
        assert reader.pending()
        assert files_under(repo.layout.webhooks) == before
        assert reader.take() == 1
        assert [m.event.id for m in outbox.pending(repo.layout)] == [run.id]
        assert not reader.pending() and reader.unread() == []
    for m in outbox.pending(repo.layout):
        outbox.done(repo.layout, m.id)
