"""`mlvc webhook ...` through the CLI: one library call each, one-line errors."""

import json

from webhook_receiver import Receiver, _quick_deliverer, idle_at_end, wait_idle

__all__ = ["_quick_deliverer", "idle_at_end"]


def test_add_list_test_deliveries_redeliver_remove(cli, project, idle_at_end):
    with Receiver() as rx:
        r = cli("webhook", "add", rx.url, "--allow-private", "--events", "gc.*", "--json")
        added = json.loads(r.output)
        wid, secret = added["id"], added["new_secret"]
        assert secret.startswith("whsec_") and added["secret"] == "file"
        listed = cli("webhook", "list").output
        assert wid in listed and "gc.*" in listed and "ok" in listed and secret not in listed
        [row] = json.loads(cli("webhook", "list", "--json").output)
        assert row["id"] == wid and "new_secret" not in row
        out = cli("webhook", "test", wid).output
        assert out.startswith("delivered: msg_") and "status 200" in out
        assert rx.got[-1].json()["type"] == "webhook.test"
        cli("gc")
        rx.wait(2)
        wait_idle(project)
        rows = json.loads(cli("webhook", "deliveries", "--json").output)
        assert [r["type"] for r in rows] == ["webhook.test", "gc.completed"]
        table = cli("webhook", "deliveries", "--id", wid).output
        assert "gc.completed" in table and "delivered" in table and "200" in table
        msg = rows[1]["message"]
        assert cli("webhook", "redeliver", msg).output.startswith(f"queued {msg} (gc.completed)")
        rx.wait(3)
        wait_idle(project)
        assert rx.got[2].headers["webhook-id"] == msg
        assert cli("webhook", "enable", wid).output.startswith(f"webhook {wid} enabled")
        assert cli("webhook", "remove", wid).output.startswith(f"removed webhook {wid}")
    assert "no webhooks" in cli("webhook", "list").output


def test_bad_input_is_one_line_and_changes_nothing(cli, project):
    cases = [
        (("webhook", "add", "http://hooks.example.com/x"), "only https:// is allowed"),
        (("webhook", "add", "https://127.0.0.1/x"), "private address 127.0.0.1"),
        (("webhook", "add", "https://127.0.0.1/x", "--allow-private", "--events", "RUN"),
         "invalid event pattern 'RUN'"),
        (("webhook", "add", "https://127.0.0.1/x", "--allow-private", "--secret-env", "UNSET_X"),
         "UNSET_X is not set"),
        (("webhook", "remove", "wh_00000000"), "no webhook 'wh_00000000'"),
        (("webhook", "test", "nope"), "no webhook 'nope'"),
        (("webhook", "redeliver", "msg_x"), "no delivery 'msg_x'"),
        (("webhook", "enable", "wh_00000000"), "no webhook"),
        # a typo'd id was "no deliveries yet" (exit 0); -n 0 listed all, -n -3 the last 3
        (("webhook", "deliveries", "--id", "wh_zzz"), "no webhook 'wh_zzz'"),
        (("webhook", "deliveries", "-n", "0"), "--limit 0: show at least 1 delivery"),
        (("webhook", "deliveries", "-n", "-3"), "--limit -3: show at least 1"),
    ]  # fmt: skip
    for args, message in cases:
        r = cli(*args, ok=False)
        assert r.exit_code == 2, (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mlvc: error: "), r.output
        assert message in lines[0], (args, r.output)
    assert not (project / ".mlvc" / "webhooks" / "endpoints.json").exists()


def test_a_failed_test_exits_non_zero(cli, project):
    with Receiver(status=503) as rx:
        wid = json.loads(cli("webhook", "add", rx.url, "--allow-private", "--json").output)["id"]
        r = cli("webhook", "test", wid, ok=False)
    assert r.exit_code == 1
    assert "failed: msg_" in r.output and "status 503" in r.output
    assert "the test was not delivered: HTTP 503" in r.output


def test_a_slack_url_is_kept_like_a_secret_and_shown_redacted(cli, project, idle_at_end):
    import stat

    from mlvc.core.layout import Layout
    from mlvc.events import webhooks

    token = "B0SECRET/XyZ123tokenpart"
    with Receiver() as rx:
        url = f"http://127.0.0.1:{rx.port}/services/T0/{token}"
        r = cli("webhook", "add", url, "--allow-private", "--format", "slack", "--events", "gc.*")
        wid = r.output.split()[1].rstrip(":")
        assert token not in r.output and f"127.0.0.1:{rx.port}/services/…" in r.output
        listed = cli("webhook", "list").output + cli("webhook", "list", "--json").output
        assert token not in listed and "/services/…" in listed
        assert cli("webhook", "test", wid).output.startswith("delivered: msg_")
        cli("gc")
        got = rx.wait(2)
        wait_idle(project)
    assert [g.path for g in got] == [f"/services/T0/{token}"] * 2  # posted to the real URL
    layout = Layout.of(project)
    url_file = webhooks.url_path(layout, wid)
    assert url_file.read_text() == url and stat.S_IMODE(url_file.stat().st_mode) == 0o600
    for path in layout.dir.rglob("*"):  # endpoints.json, events, the delivery log...
        if path.is_file() and path != url_file:
            assert token.encode() not in path.read_bytes(), path
    cli("webhook", "remove", wid)
    assert not url_file.exists()
