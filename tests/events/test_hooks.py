"""Hooks as git has them: .mlvc/hooks/<event type> after an event (detached, the event on
stdin), and pre-commit, pre-alias, pre-push that veto the change with a non-zero exit."""

import json
import os
import subprocess
import sys
import time

import pytest
from webhook_receiver import executable

import mlvc
import mlvc.models as mm
from mlvc import Repo
from mlvc.errors import EXIT_CODES, HookRejected

REFUSE = """#!/bin/sh
cat > "$MLVC_REPO/hook-input.json"
echo "no commits on Fridays" >&2
echo "ask the release manager"
exit 3
"""


class Plus:
    def predict(self, data):
        return data


def test_a_pre_commit_hook_vetoes_with_its_message(cli, project):
    executable(project / ".mlvc" / "hooks" / "pre-commit", REFUSE)
    r = cli("commit", "-m", "blocked", "-p", "lr=0.1", ok=False)
    assert r.exit_code == 23 and "Traceback" not in r.output
    first, *rest = r.output.strip().splitlines()
    assert first == (
        "mlvc: error: the pre-commit hook refused the change (exit 3): no commits on Fridays"
    )
    assert rest == ["  pre-commit: ask the release manager"]
    assert Repo(project).log() == []  # nothing recorded
    told = json.loads((project / "hook-input.json").read_text())
    assert told["hook"] == "pre-commit"
    assert told["data"]["message"] == "blocked" and told["data"]["params"] == {"lr": 0.1}
    assert EXIT_CODES[23].startswith("a pre-commit, pre-alias or pre-push hook")
    (project / "hook-input.json").unlink()
    os.chmod(project / ".mlvc" / "hooks" / "pre-commit", 0o644)  # not executable: ignored
    r = cli("commit", "-m", "allowed")
    assert "pre-commit was ignored because it is not executable" in r.output
    assert len(Repo(project).log()) == 1


def test_a_passing_pre_commit_hook_lets_the_commit_through(repo, project):
    executable(project / ".mlvc" / "hooks" / "pre-commit", "#!/bin/sh\nexit 0\n")
    assert repo.commit("ok")


def test_a_hook_that_hangs_is_killed_and_vetoes(repo, project, monkeypatch):
    monkeypatch.setenv("MLVC_HOOK_TIMEOUT", "0.5")
    executable(project / ".mlvc" / "hooks" / "pre-commit", "#!/bin/sh\nsleep 30\n")
    start = time.monotonic()
    with pytest.raises(HookRejected, match=r"timed out after 0.5 s"):
        Repo(project).commit("slow")
    assert time.monotonic() - start < 10
    assert repo.log() == []


PRE_ALIAS = """#!/usr/bin/env python3
import json, sys
told = json.load(sys.stdin)["data"]
if told["alias"] == "champion" and told["to"] != 1:
    print(f"{told['model']}@champion may only point at version 1, not {told['to']}",
          file=sys.stderr)
    sys.exit(1)
"""


def test_a_pre_alias_hook_blocks_an_alias_move(cli, repo, project):
    with mlvc.start_run(repo=repo):
        a = mm.log_model(Plus(), "a")
    mm.register("clf", a.uri, repo=repo)
    mm.register("clf", a.uri, repo=repo)
    executable(project / ".mlvc" / "hooks" / "pre-alias", PRE_ALIAS)
    cli("models", "alias", "clf", "champion", "1")
    r = cli("models", "alias", "clf", "champion", "2", ok=False)
    assert r.exit_code == 23
    assert r.output.strip() == (
        "mlvc: error: the pre-alias hook refused the change (exit 1): "
        "clf@champion may only point at version 1, not 2"
    )
    assert mm.get("clf@champion", repo=repo).version == 1  # not moved
    cli("models", "alias", "clf", "challenger", "2")  # another alias passes


def test_the_pre_alias_hook_is_told_from_and_to(repo, project):
    with mlvc.start_run(repo=repo):
        a = mm.log_model(Plus(), "a")
    mm.register("clf", a.uri, repo=repo)
    mm.register("clf", a.uri, repo=repo)
    mm.set_alias("clf", "prod", 1, repo=repo)
    executable(project / ".mlvc" / "hooks" / "pre-alias",
               '#!/bin/sh\ncat >> "$MLVC_REPO/told.jsonl"\necho >> "$MLVC_REPO/told.jsonl"\n')  # fmt: skip
    mm.set_alias("clf", "prod", 2, repo=repo)
    mm.delete_alias("clf", "prod", repo=repo)
    told = [json.loads(x)["data"] for x in (project / "told.jsonl").read_text().split("\n") if x]
    assert [(t["model"], t["alias"], t["from"], t["to"]) for t in told] == [
        ("clf", "prod", 1, 2),
        ("clf", "prod", 2, None),
    ]
    assert told[0]["run_id"] == a.run_id and told[0]["uri"] == "models:/clf/2"


def test_a_pre_push_hook_vetoes_and_nothing_reaches_the_remote(cli, repo, project, tmp_path):
    repo.commit("one")
    remote = tmp_path / "remote"
    cli("remote", "add", "origin", str(remote))
    executable(project / ".mlvc" / "hooks" / "pre-push", REFUSE)
    r = cli("push", "-q", ok=False)
    assert r.exit_code == 23 and "pre-push hook refused the change (exit 3)" in r.output
    told = json.loads((project / "hook-input.json").read_text())["data"]
    assert told["remote"] == "origin" and told["runs"] == [repo.head().hex]
    assert not remote.exists() or not any(p.is_file() for p in remote.rglob("*"))
    (project / ".mlvc" / "hooks" / "pre-push").unlink()
    cli("push", "-q")
    assert any(p.is_file() for p in remote.rglob("*"))


def test_an_event_hook_gets_the_event_on_stdin_without_blocking(repo, project):
    # the hook waits (up to 20 s) for a file the test writes once the commit has returned
    executable(project / ".mlvc" / "hooks" / "commit.created",
               '#!/bin/sh\nfor i in $(seq 200); do [ -e "$MLVC_REPO/go" ] && break; sleep 0.1; done\n'
               'cat > "$MLVC_REPO/got-$MLVC_EVENT_ID.json"\n')  # fmt: skip
    oid = repo.commit("watched")
    assert not list(project.glob("got-*.json"))  # the commit returned before the hook ended
    (project / "go").write_text("")
    deadline = time.monotonic() + 20
    while not list(project.glob("got-*.json")):
        assert time.monotonic() < deadline, "the hook did not run"
        time.sleep(0.05)
    time.sleep(0.2)
    [got] = project.glob("got-*.json")
    event = json.loads(got.read_text())
    assert event["type"] == "commit.created" and event["data"]["run_id"] == oid
    assert got.name == f"got-{event['id']}.json"
    got.unlink()


def test_a_failing_event_hook_is_logged_and_harmless(repo, project):
    executable(project / ".mlvc" / "hooks" / "commit.created", "#!/bin/sh\necho oops >&2\nexit 1\n")
    repo.commit("fine")
    log = project / ".mlvc" / "logs" / "hooks.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and "oops" in log.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(repo.log()) == 1


def test_a_training_script_with_a_vetoing_pre_commit_still_records_its_run(repo, project):
    # pre-commit guards `mlvc commit` snapshots; a live run ending is never lost to a hook
    executable(project / ".mlvc" / "hooks" / "pre-commit", REFUSE)
    script = "import mlvc\nwith mlvc.start_run(name='t'):\n    mlvc.log_metric('loss', 0.5)\n"
    r = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [row["name"] for row in repo.log()] == ["t"]
