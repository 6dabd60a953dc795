"""`mlvc token`: tokens are shown once, stored hashed, checked in constant time, revocable."""

import base64
import json

import pytest

from mlvc.core.layout import Layout
from mlvc.server.auth import TokenStore, credentials


def test_create_prints_the_secret_last_and_stores_only_its_hash(cli, project):
    out = cli("token", "create", "--scope", "write", "--name", "ci").output
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("mlvc_") and len(secret) > 40
    stored = (project / ".mlvc" / "tokens.json").read_text()
    assert secret not in stored and secret[5:] not in stored
    assert (project / ".mlvc" / "tokens.json").stat().st_mode & 0o077 == 0  # not world-readable
    token = TokenStore(Layout.of(project)).verify(secret)
    assert token is not None and (token.name, token.scope) == ("ci", "write")


def test_list_shows_no_secret_and_revoke_stops_the_token(cli, project):
    secret = cli("token", "create", "--scope", "read").output.strip().splitlines()[-1]
    rows = json.loads(cli("token", "list", "--json").output)
    assert len(rows) == 1 and "hash" not in rows[0] and "token" not in rows[0]
    assert rows[0]["revoked"] is None
    cli("token", "revoke", rows[0]["id"])
    assert TokenStore(Layout.of(project)).verify(secret) is None
    assert json.loads(cli("token", "list", "--json").output)[0]["revoked"] is not None


def test_bad_scope_unknown_token_and_ambiguous_name_are_one_line_errors(cli):
    r = cli("token", "create", "--scope", "root", ok=False)
    assert r.exit_code == 2 and "root" in r.output
    r = cli("token", "revoke", "nope", ok=False)
    assert r.exit_code == 2 and "no active token 'nope'" in r.output
    cli("token", "create", "--name", "twin")
    cli("token", "create", "--name", "twin")
    r = cli("token", "revoke", "twin", ok=False)
    assert r.exit_code == 2 and "revoke one by its id" in r.output


def test_a_damaged_token_file_is_named(cli, project):
    (project / ".mlvc" / "tokens.json").write_text("{not json")
    r = cli("token", "list", ok=False)
    assert r.exit_code == 2 and "tokens.json is damaged" in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    "header, expected",
    [
        ("Bearer mlvc_abc", "mlvc_abc"),
        ("bearer   mlvc_abc  ", "mlvc_abc"),
        ("Basic " + base64.b64encode(b"alice:mlvc_abc").decode(), "mlvc_abc"),
        ("Basic " + base64.b64encode(b"alice:").decode(), None),
        ("Basic not-base64!!", None),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), None),
        ("Token mlvc_abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_credentials_come_from_bearer_or_basic_password(header, expected):
    assert credentials(header) == expected
