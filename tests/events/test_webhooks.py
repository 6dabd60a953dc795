"""Webhooks end to end against a real HTTP receiver on 127.0.0.1: signed payloads checked
with the `standardwebhooks` package, retries until the receiver is up, kill -9 of the
deliverer, disabling after straight failures, address checks, secrets kept out of files."""

import json
import stat
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from webhook_receiver import (
    Receiver,
    _quick_deliverer,
    idle_at_end,
    kill_deliverer,
    wait_for,
    wait_idle,
)

from mlvc import Repo
from mlvc.core.events import Event
from mlvc.errors import UsageError
from mlvc.events import deliver, emit, outbox, payloads, read_events, webhooks
from mlvc.events.addresses import AddressRefused, check_url, is_public

__all__ = ["_quick_deliverer", "idle_at_end"]  # fixtures used by name

# every event type mlvc emits, with data of the shape its emitter gives
GOLDEN = {
    "run.started": {"live_key": "k1", "name": "r", "tags": {}, "experiment_id": "0"},
    "run.finished": {"run_id": "ab" * 32, "name": "r", "status": "finished"},
    "run.failed": {"run_id": "ab" * 32, "name": "r", "status": "failed"},
    "run.killed": {"run_id": "ab" * 32, "name": "r", "status": "killed"},
    "run.stalled": {"live_key": "k1", "name": "r", "stall_after_s": 600},
    "alert.fired": {"rule": "loss-nan", "live_key": "k1", "metric": "loss", "value": "nan"},
    "alert.resolved": {"rule": "loss-nan", "live_key": "k1", "metric": "loss", "value": 0.1},
    "commit.created": {"run_id": "cd" * 32, "name": "", "status": "finished"},
    "reproduce.verdict": {"run_id": "cd" * 32, "of": "ab" * 32, "verdict": "EXACT"},
    "ref.updated": {"ref": "refs/heads/main", "new": "ab" * 32, "remote": "origin"},
    "registered_model.created": {"name": "clf", "by": "me"},
    "model_version.created": {"name": "clf", "version": 2, "source": "run:x/m", "run_id": "x"},
    "model_version_alias.created": {"name": "clf", "alias": "champion", "version": 2},
    "model_version_alias.deleted": {"name": "clf", "alias": "champion", "version": 2},
    "gc.completed": {"objects_removed": 3, "bytes_freed": 1024},
    "webhook.disabled": {"endpoint": "wh_00000000", "reason": "8 deliveries failed"},
}


def verify(secret: str, got) -> dict:
    """The payload, verified by the standardwebhooks package (raises if the signature or
    the timestamp is wrong)."""
    heads = {k.lower(): v for k, v in got.headers.items()}
    return Webhook(secret).verify(got.body, heads)


def add(repo, url: str, **kw) -> webhooks.Added:
    return webhooks.add(repo.layout, url, allow_private=True, **kw)


def test_every_event_type_arrives_signed_with_its_golden_payload(repo, idle_at_end):
    with Receiver() as rx:
        added = add(repo, rx.url)
        sent = [emit(repo.ctx, kind, data) for kind, data in GOLDEN.items()]
        got = rx.wait(len(GOLDEN))
    by_id = {g.headers["webhook-id"]: g for g in got}
    assert len(by_id) == len(GOLDEN)
    for event in sent:
        received = by_id[outbox.message_id(event.id, added.endpoint.id)]
        payload = verify(added.secret, received)
        assert payload == {
            "id": event.id,
            "type": event.type,
            "timestamp": event.timestamp,
            "data": GOLDEN[event.type],
        }
        assert received.body == event.to_json().encode()  # the journal's bytes, unchanged
    log = outbox.attempts(repo.layout)
    assert {e["outcome"] for e in log} == {"delivered"} and len(log) == len(GOLDEN)
    assert not list(outbox.pending(repo.layout))


def test_a_tampered_body_or_another_secret_fails_verification(repo, idle_at_end):
    with Receiver() as rx:
        added = add(repo, rx.url)
        emit(repo.ctx, "gc.completed", {"objects_removed": 1})
        got = rx.wait(1)[0]
    heads = {k.lower(): v for k, v in got.headers.items()}
    from standardwebhooks.webhooks import WebhookVerificationError

    with pytest.raises(WebhookVerificationError):
        Webhook(added.secret).verify(got.body.replace(b"1", b"2"), heads)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(got.body, heads)


def test_a_commit_reaches_the_receiver_without_waiting_for_it(project, repo, idle_at_end):
    with Receiver() as rx:
        rx.gate.clear()  # the receiver hangs until we let it answer
        added = add(repo, rx.url, events=["commit.*"])
        oid = repo.commit("first")
        assert rx.got == []  # the commit returned while its webhook was still unanswered
        rx.gate.set()
        got = rx.wait(1)
    payload = verify(added.secret, got[0])
    assert payload["type"] == "commit.created" and payload["data"]["run_id"] == oid


def test_patterns_pick_the_events_an_endpoint_gets(repo, idle_at_end):
    with Receiver() as rx:
        add(repo, rx.url, events=["model_version*", "gc.completed"])
        for kind in ("run.started", "model_version.created", "model_version_alias.created",
                     "gc.completed", "commit.created"):  # fmt: skip
            emit(repo.ctx, kind, {})
        got = rx.wait(3)
        time.sleep(0.5)
    assert sorted(g.json()["type"] for g in got) == [
        "gc.completed", "model_version.created", "model_version_alias.created"
    ]  # fmt: skip


def test_receiver_down_then_up_gets_the_event_with_the_same_webhook_id(repo, idle_at_end):
    rx = Receiver()  # not started: nothing listens on its port
    added = add(repo, rx.url)
    event = emit(repo.ctx, "run.failed", {"run_id": "ab" * 32})
    deadline = time.monotonic() + 10
    while len(outbox.attempts(repo.layout)) < 2:
        assert time.monotonic() < deadline, outbox.attempts(repo.layout)
        time.sleep(0.02)
    failed = outbox.attempts(repo.layout)
    assert all(a["outcome"] == "retrying" and a["status"] is None for a in failed)
    assert "ConnectionRefused" in failed[0]["error"]
    assert [a["attempt"] for a in failed[:2]] == [1, 2]
    with rx:
        got = rx.wait(1, timeout=30)
    assert got[0].headers["webhook-id"] == failed[0]["message"]
    assert verify(added.secret, got[0])["id"] == event.id
    wait_idle(repo.root)
    last = outbox.attempts(repo.layout)[-1]
    assert last["outcome"] == "delivered" and last["status"] == 200
    assert webhooks.get(repo.layout, added.endpoint.id).streak == 0


def test_a_deliverer_killed_mid_request_loses_nothing(repo, idle_at_end):
    with Receiver() as rx:
        rx.gate.clear()  # the receiver holds the request while we kill the sender
        add(repo, rx.url)
        event = emit(repo.ctx, "model_version.created", {"name": "clf", "version": 1})
        wait_for(lambda: rx.started > 0)
        kill_deliverer(repo.root)
        assert [m.event.id for m in outbox.pending(repo.layout)] == [event.id]
        rx.gate.set()
        emit(repo.ctx, "gc.completed", {})  # the next event starts a new deliverer
        got = rx.wait(3, timeout=30)
        wait_idle(repo.root)
    ids = [g.json()["id"] for g in got]
    assert ids.count(event.id) == 2  # at least once: sent again after the kill
    same = {g.headers["webhook-id"] for g in got if g.json()["id"] == event.id}
    assert len(same) == 1  # under the same webhook-id
    assert not list(outbox.pending(repo.layout))


def test_straight_failures_disable_the_endpoint_with_an_event(repo, idle_at_end):
    with Receiver(status=500) as bad, Receiver() as watcher:
        failing = add(repo, bad.url, max_failures=3, events=["run.*"])
        add(repo, watcher.url, events=["webhook.*"])
        event = emit(repo.ctx, "run.failed", {"run_id": "ef" * 32})
        got = watcher.wait(1, timeout=30)
        wait_idle(repo.root)
        assert len(bad.got) == 3
        disabled = got[0].json()
        assert disabled["type"] == "webhook.disabled"
        assert disabled["data"]["endpoint"] == failing.endpoint.id
        assert "3 deliveries failed in a row" in disabled["data"]["reason"]
        assert "HTTP 500" in disabled["data"]["reason"]
        ep = webhooks.get(repo.layout, failing.endpoint.id)
        assert ep.disabled and not ep.wants("run.failed")
        assert [m.event.id for m in outbox.pending(repo.layout)] == [event.id]  # held
        # fixed and enabled again: the held message goes out
        bad.status = 200
        deliver.enable(repo.layout, failing.endpoint.id)
        bad.wait(4, timeout=30)
        wait_idle(repo.root)
    assert not list(outbox.pending(repo.layout))
    assert [e.type for e in read_events(repo.ctx, types=["webhook.*"])] == ["webhook.disabled"]


def test_the_backoff_grows_and_spans_more_than_a_day():
    waits = [deliver.BACKOFF[min(k, len(deliver.BACKOFF)) - 1] for k in range(1, 8)]
    assert waits == sorted(waits) and sum(waits) >= 24 * 3600
    jittered = {round(deliver.backoff(3), 3) for _ in range(20)}
    assert len(jittered) > 1 and all(1440 <= w <= 2160 for w in jittered)
    assert len(deliver.BACKOFF) + 1 == webhooks.DEFAULT_MAX_FAILURES


def test_redeliver_sends_a_logged_message_again(repo, idle_at_end):
    with Receiver() as rx:
        add(repo, rx.url)
        emit(repo.ctx, "gc.completed", {"objects_removed": 2})
        first = rx.wait(1)[0]
        wait_idle(repo.root)
        msg = first.headers["webhook-id"]
        deliver.redeliver(repo.layout, msg)
        again = rx.wait(2)[1]
    assert again.headers["webhook-id"] == msg and again.body == first.body
    with pytest.raises(outbox.UnknownMessage, match="no delivery"):
        deliver.redeliver(repo.layout, "msg_nope")


def test_removing_an_endpoint_drops_its_messages_and_secret(repo):
    added = webhooks.add(repo.layout, "https://hooks.example.com/x", resolve=lambda h, p: ["93.184.216.34"])  # fmt: skip
    ev = Event.new("gc.completed", {})
    outbox.enqueue(repo.layout, added.endpoint, ev, time.time())
    webhooks.remove(repo.layout, added.endpoint.id)
    assert not list(outbox.pending(repo.layout))
    assert not webhooks.secret_path(repo.layout, added.endpoint.id).exists()
    with pytest.raises(webhooks.UnknownWebhook, match="no webhook 'wh_"):
        webhooks.remove(repo.layout, added.endpoint.id)


# -- where a webhook may go ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://hooks.example.com/x", "only https"),
        ("https://127.0.0.1/x", "private address 127.0.0.1"),
        ("https://localhost:8443/x", "private address"),
        ("https://10.1.2.3/x", "private address 10.1.2.3"),
        ("https://192.168.0.9/x", "private address"),
        ("https://169.254.169.254/latest/meta-data", "private address 169.254.169.254"),
        ("https://[::1]/x", "private address ::1"),
        ("https://[::ffff:127.0.0.1]/x", "private address"),
        ("https://100.64.0.1/x", "private address"),
        ("https://0.0.0.0/x", "private address"),
        ("https://user:pw@hooks.example.com/x", "carries credentials"),
        ("ftp://hooks.example.com/x", "use an https:// URL"),
        ("https://no-such-host.invalid/x", "cannot be resolved"),
    ],
)
def test_private_and_plain_http_addresses_are_refused(repo, url, why):
    with pytest.raises(AddressRefused, match=why):
        webhooks.add(repo.layout, url)
    assert webhooks.load(repo.layout) == []


def test_allow_private_permits_loopback_and_http(repo):
    assert check_url("http://127.0.0.1:9/x", allow_private=True) == ["127.0.0.1"]
    assert is_public("93.184.216.34") and not is_public("fe80::1") and not is_public("224.0.0.1")


def test_a_name_rebound_to_loopback_after_adding_is_refused_at_delivery(repo, idle_at_end):
    with Receiver() as rx:
        # added while the name looked public; at delivery it resolves to 127.0.0.1
        url = f"https://localhost:{rx.port}/hook"
        added = webhooks.add(repo.layout, url, resolve=lambda h, p: ["93.184.216.34"])
        emit(repo.ctx, "gc.completed", {})
        deadline = time.monotonic() + 10
        while not outbox.attempts(repo.layout):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        webhooks.remove(repo.layout, added.endpoint.id)
        wait_idle(repo.root)
    first = outbox.attempts(repo.layout)[0]
    assert "private address 127.0.0.1" in first["error"] and first["status"] is None
    assert rx.got == []


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_are_never_written_to_the_config_or_the_logs(repo, monkeypatch, idle_at_end):
    env_secret = webhooks.new_secret()
    monkeypatch.setenv("HOOK_SECRET", env_secret)
    with Receiver() as rx, Receiver(status=500) as bad:
        generated = add(repo, rx.url)
        from_env = add(repo, rx.url, secret_env="HOOK_SECRET")
        add(repo, bad.url, max_failures=2)
        emit(repo.ctx, "run.finished", {"run_id": "ab" * 32})
        got = rx.wait(2)
        wait_idle(repo.root)
    by_ep = {g.headers["webhook-id"][-8:]: g for g in got}
    verify(generated.secret, by_ep[generated.endpoint.id[3:]])
    verify(env_secret, by_ep[from_env.endpoint.id[3:]])
    secret_file = webhooks.secret_path(repo.layout, generated.endpoint.id)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert from_env.secret is None and from_env.endpoint.to_dict()["secret"] == "env:HOOK_SECRET"
    for path in repo.layout.dir.rglob("*"):
        if path.is_file() and path != secret_file:
            text = path.read_bytes()
            for secret in (generated.secret, env_secret):
                assert secret.encode() not in text, path
                assert secret.removeprefix("whsec_").encode() not in text, path


def test_a_secret_env_that_is_unset_or_malformed_is_refused(repo, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(UsageError, match="NOPE is not set"):
        webhooks.add(repo.layout, "http://127.0.0.1:9/x", secret_env="NOPE", allow_private=True)
    monkeypatch.setenv("NOPE", "hunter2")
    with pytest.raises(UsageError, match="whsec_"):
        webhooks.add(repo.layout, "http://127.0.0.1:9/x", secret_env="NOPE", allow_private=True)
    with pytest.raises(UsageError, match="invalid environment variable"):
        webhooks.add(repo.layout, "http://127.0.0.1:9/x", secret_env="A-B", allow_private=True)
    assert webhooks.load(repo.layout) == []


# -- formats ---------------------------------------------------------------------------------


def test_the_mlflow_format_is_what_mlflows_receivers_check(repo, idle_at_end):
    from mlflow.webhooks.delivery import _generate_hmac_signature

    with Receiver() as rx:
        added = add(repo, rx.url, format="mlflow", events=["model_version*"])
        emit(repo.ctx, "model_version.created",
             {"name": "clf", "version": 3, "source": "run:ab/model", "run_id": "ab",
              "model_id": "x", "by": "me"})  # fmt: skip
        emit(repo.ctx, "model_version_alias.created",
             {"name": "clf", "alias": "champion", "version": 3, "previous": None})  # fmt: skip
        got = rx.wait(2)
    created, alias = sorted(got, key=lambda g: g.json()["entity"])
    h = created.headers
    expected = _generate_hmac_signature(
        added.secret, h["X-MLflow-Delivery-Id"], h["X-MLflow-Timestamp"], created.body.decode()
    )
    assert h["X-MLflow-Signature"] == expected
    body = created.json()
    assert (body["entity"], body["action"]) == ("model_version", "created")
    assert body["data"] == {"name": "clf", "version": "3", "source": "run:ab/model",
                            "run_id": "ab", "tags": {}, "description": None}  # fmt: skip
    assert alias.json()["data"] == {"name": "clf", "alias": "champion", "version": "3"}
    verify(added.secret, created)  # the Standard Webhooks headers are there too


def test_the_slack_format_is_one_text_line(repo, idle_at_end):
    with Receiver() as rx:
        add(repo, rx.url, format="slack")
        emit(repo.ctx, "run.failed", {"run_id": "ab" * 32, "name": "resnet", "tags": {"a": 1}})
        emit(repo.ctx, "alert.fired", {"rule": "loss-nan", "metric": "loss", "value": "nan",
                                       "step": 3, "live_key": "20261201-ab", "name": ""})  # fmt: skip
        emit(repo.ctx, "gc.completed", {"objects_removed": 2, "note": "", "big": {"a": 1}})
        got = rx.wait(3)
    assert [g.json() for g in sorted(got, key=lambda g: g.headers["webhook-id"])] == [
        {"text": f"mlvc run resnet ({'ab' * 6}) failed"},
        {"text": "mlvc alert loss-nan fired: loss = nan at step 3 in run 20261201-ab"},
        {"text": "mlvc gc.completed: objects_removed=2"},
    ]


def test_a_webhook_test_reports_the_answer(repo):
    with Receiver() as rx:
        added = add(repo, rx.url)
        entry = deliver.send_test(repo.layout, added.endpoint.id)
    assert entry["outcome"] == "delivered" and entry["status"] == 200
    payload = verify(added.secret, rx.got[0])
    assert payload["type"] == "webhook.test"
    with pytest.raises(outbox.UnknownMessage, match="test message"):
        deliver.redeliver(repo.layout, entry["message"])
    refused = deliver.send_test(repo.layout, added.endpoint.id)  # the receiver is gone
    assert refused["outcome"] == "failed" and "ConnectionRefused" in refused["error"]


def test_a_damaged_outbox_file_is_skipped_and_a_damaged_config_named(repo):
    repo.layout.outbox.mkdir(parents=True)
    (repo.layout.outbox / "msg_x.json").write_text("{not json")
    assert list(outbox.pending(repo.layout)) == []
    repo.layout.webhook_endpoints.write_text("[]")
    with pytest.raises(UsageError, match="endpoints.json is damaged"):
        webhooks.load(repo.layout)
    repo.layout.webhook_endpoints.unlink()
    (repo.layout.outbox / "msg_x.json").unlink()


def test_payload_signature_matches_the_spec_vector():
    # the example of the Standard Webhooks spec (and of its reference libraries)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    sig = payloads.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_endpoints_survive_concurrent_adders(repo):
    import threading

    def adder():
        for _ in range(5):
            webhooks.add(repo.layout, "http://127.0.0.1:9/x", allow_private=True)

    threads = [threading.Thread(target=adder) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({e.id for e in webhooks.load(repo.layout)}) == 20
    assert json.loads(repo.layout.webhook_endpoints.read_text())["endpoints"]


def test_a_repository_without_webhooks_starts_no_deliverer(repo):
    emit(repo.ctx, "gc.completed", {})
    assert not repo.layout.webhooks.exists()
    assert Repo(repo.root).fsck() == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    kind=st.sampled_from(sorted(GOLDEN)),
    fmt=st.sampled_from(webhooks.FORMATS),
    key=st.binary(min_size=24, max_size=64),
)
def test_any_event_in_any_format_verifies_with_the_reference_library(data, kind, fmt, key):
    import base64

    secret = "whsec_" + base64.b64encode(key).decode()
    event = Event.new(kind, data)
    body = payloads.body(event, fmt)
    msg = outbox.message_id(event.id, "wh_0123abcd")
    heads = payloads.headers(secret, msg, int(time.time()), body, fmt)
    verified = Webhook(secret).verify(body, {k.lower(): v for k, v in heads.items()})
    assert verified == json.loads(body)
    if fmt == "standard":
        assert Event.from_dict(verified) == event


def test_a_damaged_endpoints_file_never_fails_the_change(repo, caplog):
    repo.layout.webhooks.mkdir(parents=True)
    repo.layout.webhook_endpoints.write_text("{garbage")
    oid = repo.commit("still recorded")
    assert repo.log()[0]["id"] == oid
    assert "endpoints.json is damaged" in caplog.text
    repo.layout.webhook_endpoints.unlink()


def test_slack_lines_for_commits_verdicts_and_models_name_short_ids(repo, idle_at_end):
    """A Slack line is for people: no 64-digit ids or microsecond stamps (a commit's line
    was once every field of its event, raw)."""
    with Receiver() as rx:
        add(repo, rx.url, format="slack", events=["commit.*"])
        oid = repo.commit("first try")
        text = rx.wait(1)[0].json()["text"]
    assert text == f"mlvc commit {oid[:12]} by {repo.settings.author} (finished): first try"
    original, again = "ab" * 32, "cd" * 32
    verdict = Event.new(
        "reproduce.verdict", {"original": original, "reproduction": again, "verdict": "EXACT"}
    )
    assert payloads.slack_text(verdict) == f"mlvc reproduce of {'ab' * 6}: EXACT as {'cd' * 6}"
    version = Event.new(
        "model_version.created",
        {"name": "clf", "version": 2, "run_id": original, "model_id": again, "by": "me"},
    )
    assert payloads.slack_text(version) == f"mlvc model clf version 2 created from run {'ab' * 6}"
    alias = Event.new(
        "model_version_alias.created", {"name": "clf", "alias": "champion", "version": 2}
    )
    assert payloads.slack_text(alias) == "mlvc model alias clf@champion now points at version 2"
    other = Event.new("ref.updated", {"ref": "refs/heads/main", "new": original})
    assert payloads.slack_text(other) == f"mlvc ref.updated: ref=refs/heads/main, new={'ab' * 6}"
