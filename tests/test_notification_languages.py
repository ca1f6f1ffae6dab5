"""Notifications and e-mails per language (issue 11), on both databases: a user has a
language (one of the setup's, over the API and `kartoteka user add --language`); each
recipient of a `notify:` gets its texts in their language, else in the setup's first; an
e-mail to an address on the record takes the language a field of the record names
(`language: client.language`); a text without the first language, or in a language the
setup does not declare, is a located setup error."""

from __future__ import annotations

import email
import socket
from collections.abc import Callable, Iterator
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, check_setup
from kartoteka.cli import main
from tests.callers import Caller

SETUP = {
    "setup.yaml": """
        name: Languages
        languages: [en, ru, fa, zh]
        roles:
          manager:
            order: {create: all, read: all, update: all}
            client: {create: all, read: all, update: all}
        automations:
          order_shipped:
            entity: order
            on: stage_entered
            stage: shipped
            do:
              - notify:
                  to: [{role: manager}]
                  subject: {en: "Order {number} shipped", ru: "Заказ {number} отправлен",
                            fa: "سفارش {number} ارسال شد"}
                  text: {en: "Client {client.name}", ru: "Клиент {client.name}",
                         fa: "مشتری {client.name}", zh: "客户 {client.name}"}
              - notify:
                  to: [{email_field: client.email}]
                  language: client.language
                  subject: {en: "Your order {number} is on its way",
                            ru: "Ваш заказ {number} в пути", zh: "您的订单 {number} 已发货"}
    """,
    "client.yaml": """
        entity: client
        fields:
          name: {type: string, required: true}
          email: {type: email}
          language: {type: choice, options: [en, ru, fa, zh]}
    """,
    "order.yaml": """
        entity: order
        fields:
          number: {type: string, required: true}
        links:
          client: {to: client}
        pipeline:
          stages: [new, shipped]
          transitions: free
    """,
}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


@pytest.fixture
def http(kt: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """A real SMTP server on loopback (aiosmtpd); the messages it took."""
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("KARTOTEKA_SMTP_URL", f"smtp://127.0.0.1:{port}?starttls=0&from=crm@example.com")
    yield received
    controller.stop()


def told(kt: Kartoteka) -> dict[str, tuple[str, str | None]]:
    """Each user's notifications: e-mail → (subject, text)."""
    n, u = kt.storage.notifications, kt.storage.users
    with kt.db.read() as conn:
        rows = conn.execute(sa.select(u.c.email, n.c.subject, n.c.text)
                            .join(u, u.c.id == n.c.user_id)).all()
    return {row.email: (row.subject, row.text) for row in rows}


def test_a_users_language_is_one_of_the_setups(kt: Kartoteka, http: TestClient) -> None:
    _, token = kt.users.add("root@example.com", ["admin"])
    root = Caller(http, token)
    made = root.post("/api/users", json={"email": "mina@example.com", "roles": ["manager"],
                                         "language": "fa"})
    assert made.status_code == 201, made.text
    user = made.json()["user"]
    assert user["language"] == "fa"
    for wrong in ("de", "FA", "", 7, ["fa"]):
        answer = root.post("/api/users", json={"email": "x@example.com", "roles": ["manager"],
                                               "language": wrong})
        assert answer.status_code == 422, (wrong, answer.text)
        assert [d["field"] for d in answer.json()["error"]["details"]] == ["language"]
    changed = root.patch(f"/api/users/{user['id']}", json={"language": "zh"})
    assert changed.status_code == 200 and changed.json()["language"] == "zh"
    assert root.patch(f"/api/users/{user['id']}", json={"language": "de"}).status_code == 422
    cleared = root.patch(f"/api/users/{user['id']}", json={"language": None})
    assert cleared.json()["language"] is None
    assert root.get("/api/users").json()["items"][0]["language"] is None


def test_kartoteka_user_add_takes_a_language(tmp_path: Path, write_setup: Callable[..., Path]) -> None:
    folder = write_setup(SETUP)
    db = f"sqlite:///{tmp_path / 'users.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["migrate", str(folder), "--db", db]).exit_code == 0
    added = runner.invoke(main, ["user", "add", "mina@example.com", "--role", "manager",
                                 "--language", "fa", "--setup", str(folder), "--db", db])
    assert added.exit_code == 0, added.output
    refused = runner.invoke(main, ["user", "add", "olga@example.com", "--role", "manager",
                                   "--language", "de", "--setup", str(folder), "--db", db])
    assert refused.exit_code != 0 and "language" in refused.output and "fa" in refused.output
    kt = Kartoteka.open(folder, db)
    try:
        (user,) = kt.users.list()
        assert (user.email, user.language) == ("mina@example.com", "fa")
    finally:
        kt.close()


def test_each_recipient_gets_the_texts_in_their_language(kt: Kartoteka) -> None:
    for address, language in (("olga@example.com", "ru"), ("mina@example.com", "fa"),
                              ("li@example.com", "zh"), ("john@example.com", None)):
        kt.users.add(address, ["manager"], language=language)
    client = kt.records.create("client", {"name": "Ромашка 玫瑰"})
    order = kt.records.create("order", {"number": "З-7", "client": client["id"]})
    kt.stages.move("order", order["id"], {"to": "shipped"})
    kt.automations.run_pending()
    assert told(kt) == {
        "olga@example.com": ("Заказ З-7 отправлен", "Клиент Ромашка 玫瑰"),
        "mina@example.com": ("سفارش З-7 ارسال شد", "مشتری Ромашка 玫瑰"),
        # no subject in Chinese: the setup's first language; the text is there in Chinese
        "li@example.com": ("Order З-7 shipped", "客户 Ромашка 玫瑰"),
        "john@example.com": ("Order З-7 shipped", "Client Ромашка 玫瑰"),
    }


@pytest.mark.parametrize(("language", "subject"), [
    ("ru", "Ваш заказ З-8 в пути"), ("zh", "您的订单 З-8 已发货"),
    ("fa", "Your order З-8 is on its way"),  # no Persian text: the first language
    (None, "Your order З-8 is on its way"),
])
def test_an_e_mail_to_the_record_takes_the_language_its_field_names(
        kt: Kartoteka, smtp: list[Any], language: str | None, subject: str) -> None:
    client = kt.records.create("client", {"name": "Ivan", "email": "ivan@example.com",
                                          "language": language})
    order = kt.records.create("order", {"number": "З-8", "client": client["id"]})
    kt.stages.move("order", order["id"], {"to": "shipped"})
    kt.automations.run_pending()
    (envelope,) = smtp
    message = email.message_from_bytes(envelope.original_content, policy=default_policy)
    assert message["Subject"] == subject
    assert message["Content-Language"] == (language if language in ("ru", "zh") else "en")


BROKEN = {
    "no first language": (
        "subject: {ru: Заказ, fa: سفارش}", "automation.text", "the setup's first language"),
    "a language not declared": (
        "subject: {en: Order, de: Bestellung}", "automation.text", "languages: en, ru, fa, zh"),
    "language: without an address": (
        "subject: Order\n                  language: client.language", "automation.language",
        "email_field"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_text_without_its_first_language_is_a_located_setup_error(
        name: str, write_setup: Callable[..., Path]) -> None:
    replacement, code, hint = BROKEN[name]
    broken = """          broken:
            entity: order
            on: created
            do:
              - notify:
                  to: [{role: manager}]
                  REPLACEMENT
""".replace("REPLACEMENT", replacement)
    files = {**SETUP, "setup.yaml": SETUP["setup.yaml"].replace(
        "        automations:\n", "        automations:\n" + broken, 1)}
    result = check_setup(write_setup(files))
    assert result.setup is None
    (problem,) = [d for d in result.diagnostics if d.severity == "error"]
    assert problem.code == code and problem.file == "setup.yaml"
    assert problem.line >= 10, problem  # at the automation's text, not the file's top
    assert hint in f"{problem.message} {problem.hint}", problem


def test_language_must_name_a_field_of_the_record(write_setup: Callable[..., Path]) -> None:
    files = {**SETUP, "setup.yaml": SETUP["setup.yaml"].replace(
        "language: client.language", "language: client.lang")}
    result = check_setup(write_setup(files))
    (problem,) = [d for d in result.diagnostics if d.severity == "error"]
    assert problem.code == "automation.template" and "lang" in problem.message
    assert "language" in problem.hint  # did you mean
