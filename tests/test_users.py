"""Users and tokens: the API is open until the first user exists, then every /api call
needs a valid Bearer token; tokens are shown once, stored hashed, expire and are revoked."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.access.users import hash_token
from engine.errors import Unauthorized
from kartoteka.cli import main

DEFAULT = Path(__file__).resolve().parent.parent / "schemas"


def test_the_api_is_open_without_users_and_closed_with_one(kt: Kartoteka) -> None:
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        assert client.get("/api/client").status_code == 200
        _, token = kt.users.add("anna@example.com", ["director"])
        refused = client.get("/api/client")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "unauthorized"
        ok = client.get("/api/client", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        created = client.post("/api/client", json={"name": "Ромашка"},
                              headers={"Authorization": f"Bearer {token}"})
        assert created.status_code == 201
        # the docs stay readable without a token
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-token",
    "Bearer kt_wrong", "bearer kt_" + "x" * 300, "Token kt_abc",
])
def test_bad_authorization_is_401_and_counted(kt: Kartoteka, header: str | None) -> None:
    kt.users.add("anna@example.com", ["director"])
    before = kt.users.failures
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        headers = {} if header is None else {"Authorization": header}
        for path in ("/api/client", "/api/client/1", "/api/schema", "/api/sale/board",
                     "/api/sale/1/timeline"):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 401, path
            assert set(answer.json()["error"]) == {"code", "message"}
        refused_write = client.post("/api/client", json={"name": "X"}, headers=headers)
        assert refused_write.status_code == 401
    assert kt.users.failures == before + 6
    assert kt.records.list_page("client", []).total == 0


def test_expired_disabled_and_revoked_tokens_are_refused(kt: Kartoteka) -> None:
    _, expiring = kt.users.add("e@example.com", ["manager"], expires_days=1)
    _, disabled = kt.users.add("d@example.com", ["manager"])
    _, revoked = kt.users.add("r@example.com", ["manager"])
    with kt.db.write(system="test") as conn:
        tokens = kt.storage.tokens
        conn.execute(sa.update(tokens).where(tokens.c.token_hash == hash_token(expiring)).values(
            expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    kt.users.disable("D@example.com")
    kt.users.revoke(revoked)
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        for token, reason in ((expiring, "expired"), (disabled, "revoked"), (revoked, "revoked")):
            answer = client.get("/api/client", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 401
            assert reason in answer.json()["error"]["message"]


def test_tokens_are_stored_only_as_hashes_and_never_logged(
        kt: Kartoteka, caplog: pytest.LogCaptureFixture) -> None:
    _, token = kt.users.add("anna@example.com", ["director"])
    with kt.db.read(system="test") as conn:
        stored = conn.execute(sa.select(kt.storage.tokens.c.token_hash)).scalars().all()
    assert stored == [hash_token(token)] and token not in stored
    with caplog.at_level(logging.DEBUG), \
            TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        client.get("/api/client", headers={"Authorization": f"Bearer {token}x"})
        client.get("/api/client", headers={"Authorization": f"Bearer {token}"})
    assert "authentication failed" in caplog.text
    assert token not in caplog.text


def test_users_are_checked_when_added(kt: Kartoteka) -> None:
    kt.users.add("anna@example.com", ["director"])
    for email, roles, problem in (("anna@EXAMPLE.com", ["manager"], "already a user"),
                                  ("not-an-email", ["manager"], "not an e-mail address"),
                                  ("b@example.com", ["Директор"], "not a plain identifier"),
                                  ("c@example.com", [], "at least one role"),
                                  ("d@example.com", ["king"], "no role 'king'")):
        with pytest.raises(Exception) as raised:
            kt.users.add(email, roles)
        assert problem in str([d.problem for d in raised.value.details])  # type: ignore[attr-defined]


def test_the_cli_manages_users(db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["migrate", str(DEFAULT), "--db", db_url]).exit_code == 0
    added = runner.invoke(main, ["user", "add", "Anna@Example.com", "--role", "director",
                                 "--team", "north", "--db", db_url])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("kt_")
    listed = runner.invoke(main, ["user", "list", "--db", db_url])
    assert "anna@example.com\tdirector\tnorth\tactive" in listed.stdout
    second = runner.invoke(main, ["user", "token", "anna@example.com", "--db", db_url])
    assert second.exit_code == 0 and second.stdout.strip() != token
    duplicate = runner.invoke(main, ["user", "add", "anna@example.com", "--role", "x",
                                     "--db", db_url])
    assert duplicate.exit_code == 1 and "already a user" in duplicate.output
    # with --setup the role is checked against the setup's roles (and the built-in admin)
    checked = runner.invoke(main, ["user", "add", "b@example.com", "--role", "king",
                                   "--setup", str(DEFAULT), "--db", db_url])
    assert checked.exit_code == 1 and "no role 'king'" in checked.output
    for role in ("admin", "manager"):
        made = runner.invoke(main, ["user", "add", f"{role}@example.com", "--role", role,
                                    "--setup", str(DEFAULT), "--db", db_url])
        assert made.exit_code == 0, made.output
    disabled = runner.invoke(main, ["user", "disable", "anna@example.com", "--db", db_url])
    assert disabled.exit_code == 0
    assert "disabled" in runner.invoke(main, ["user", "list", "--db", db_url]).stdout
    kt = Kartoteka.open(DEFAULT, db_url)
    try:
        with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
            assert client.get("/api/client",
                              headers={"Authorization": f"Bearer {token}"}).status_code == 401
    finally:
        kt.close()


def test_user_add_needs_a_migrated_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["user", "add", "a@example.com", "--role", "x",
                                       "--db", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert result.exit_code == 1
    assert "run `kartoteka migrate" in result.output


def test_serve_refuses_other_hosts_only_while_there_are_no_users(
        tmp_path: Path, write_setup: Callable[[dict[str, str]], Path]) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["migrate", str(DEFAULT), "--db", url]).exit_code == 0
    refused = runner.invoke(main, ["serve", str(DEFAULT), "--db", url, "--host", "0.0.0.0"])
    assert refused.exit_code == 1
    assert "no users" in refused.output and "kartoteka user add" in refused.output


def test_writes_are_attributed_to_the_authenticated_user(kt: Kartoteka) -> None:
    anna, token = kt.users.add("anna@example.com", ["manager"])
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        client_id = client.post("/api/client", json={"name": "Ромашка"}, headers=auth).json()["id"]
        sale = client.post("/api/sale", json={"number": "S-1", "client": client_id},
                           headers=auth).json()
        assert sale["owner"] == anna.id
        client.patch(f"/api/sale/{sale['id']}", json={"amount": "10"}, headers=auth)
        client.post(f"/api/sale/{sale['id']}/stage", json={"to": "proposal"}, headers=auth)
        client.post(f"/api/sale/{sale['id']}/comments", json={"text": "ок"}, headers=auth)
        items = client.get(f"/api/sale/{sale['id']}/timeline", headers=auth).json()["items"]
    assert {item["type"] for item in items} >= {"comment", "stage", "change"}
    assert all(item["by"] == anna.id for item in items)


def test_a_token_revoked_elsewhere_stops_working_within_the_cache_time(
        kt: Kartoteka, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from engine.access import users as users_module
    monkeypatch.setattr(users_module, "TOKEN_CACHE_SECONDS", 0.3)
    _, token = kt.users.add("anna@example.com", ["director"])
    header = f"Bearer {token}"
    assert kt.users.authenticate(header).email == "anna@example.com"
    # another process (the command line) revokes it: this one trusts its check briefly
    other = Kartoteka.open(DEFAULT, kt.settings.database.url)
    try:
        other.users.revoke(token)
    finally:
        other.close()
    time.sleep(0.35)
    with pytest.raises(Unauthorized):
        kt.users.authenticate(header)
    # a revocation made here takes effect at once
    _, second = kt.users.add("boris@example.com", ["director"])
    assert kt.users.authenticate(f"Bearer {second}").email == "boris@example.com"
    kt.users.revoke(second)
    with pytest.raises(Unauthorized):
        kt.users.authenticate(f"Bearer {second}")
