"""Webhook subscriptions an admin makes over the API (`/api/webhooks`, issue 11), on both
databases: admin only, the secret never answered (but once when generated), bodies
checked field by field, SSRF-unsafe URLs refused when the subscription is made (the
allow-list respected), and a subscribed event delivered signed to a real receiver on
loopback like a setup webhook; a disabled or deleted subscription delivers nothing."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.automations.webhook import verify
from tests.callers import Caller, made

SETUP = {
    "setup.yaml": """
        name: Subscriptions
        languages: [ru, en]
        roles:
          manager:
            deal: {create: all, read: all, update: all, delete: all, hidden: [margin]}
            note: {create: all, read: all}
    """,
    "deal.yaml": """
        entity: deal
        owner: true
        fields:
          title: {type: string, required: true}
          margin: {type: money}
        pipeline:
          stages: [new, contract, won]
          transitions: free
    """,
    "note.yaml": """
        entity: note
        fields:
          text: {type: string}
    """,
}


class Receiver(threading.Thread):
    """A webhook receiver on loopback that keeps what it got and answers 200 (500 while
    `failures` is above 0)."""

    def __init__(self) -> None:
        receiver = self
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.failures = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.seen.append((dict(self.headers), body))
                receiver.failures -= 1
                self.send_response(500 if receiver.failures >= 0 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass
        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        super().__init__(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str = "/hooks/crm") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.seen]


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("KARTOTEKA_WEBHOOK_ALLOW", "127.0.0.1")
    started = Receiver()
    started.start()
    yield started
    started.server.shutdown()
    started.server.server_close()


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


@pytest.fixture
def people(kt: Kartoteka) -> Iterator[dict[str, Any]]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as http_client:
        _, root = kt.users.add("root@example.com", ["admin"])
        _, anna = kt.users.add("anna@example.com", ["manager"])
        yield {"http": http_client, "root": Caller(http_client, root),
               "anna": Caller(http_client, anna)}


def deliveries(kt: Kartoteka) -> list[dict[str, Any]]:
    table = kt.storage.events
    with kt.db.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).where(
            table.c.kind == "webhook").order_by(table.c.id)).mappings()]


def test_only_an_admin_sees_and_changes_subscriptions(people: dict[str, Any],
                                                      receiver: Receiver) -> None:
    anna, root = people["anna"], people["root"]
    body = {"entity": "deal", "events": ["created"], "url": receiver.url()}
    assert anna.post("/api/webhooks", json=body).status_code == 403
    hook = made(root.post("/api/webhooks", json=body))
    for method, path in (("get", "/api/webhooks"), ("get", f"/api/webhooks/{hook['id']}"),
                         ("delete", f"/api/webhooks/{hook['id']}")):
        answer = getattr(anna, method)(path)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "operation_forbidden"
    assert anna.patch(f"/api/webhooks/{hook['id']}", json={"active": False}).status_code == 403
    assert people["http"].get("/api/webhooks").status_code == 401  # no token at all
    assert made(root.get(f"/api/webhooks/{hook['id']}"), 200)["active"] is True


def test_the_secret_is_never_answered_but_once_when_generated(
        kt: Kartoteka, people: dict[str, Any], receiver: Receiver) -> None:
    root = people["root"]
    given = made(root.post("/api/webhooks", json={
        "entity": "deal", "events": ["created"], "url": receiver.url(),
        "secret": "секрет-ключ-достаточно-длинный"}))
    assert "secret" not in given
    generated = made(root.post("/api/webhooks", json={
        "entity": "deal", "events": ["updated"], "url": receiver.url()}))
    assert len(generated["secret"]) >= 32
    answers = [root.get("/api/webhooks").text, root.get(f"/api/webhooks/{given['id']}").text,
               root.patch(f"/api/webhooks/{given['id']}", json={
                   "secret": "другой-секрет-тоже-длинный"}).text]
    for text in answers:
        assert "secret" not in text and generated["secret"] not in text
        assert "секрет" not in text


BAD_BODIES = {
    "not an object": ([1, 2], ""),
    "unknown key": ({"entity": "deal", "events": ["created"], "url": "URL", "hook": 1}, "hook"),
    "missing url": ({"entity": "deal", "events": ["created"]}, "url"),
    "unknown entity": ({"entity": "сделка", "events": ["created"], "url": "URL"}, "entity"),
    "unknown event": ({"entity": "deal", "events": ["moved"], "url": "URL"}, "events"),
    "no events": ({"entity": "deal", "events": [], "url": "URL"}, "events"),
    "stage of no pipeline": ({"entity": "note", "events": ["stage_entered"], "url": "URL"},
                             "events"),
    "short secret": ({"entity": "deal", "events": ["created"], "url": "URL", "secret": "abc"},
                     "secret"),
    "unknown role": ({"entity": "deal", "events": ["created"], "url": "URL", "role": "boss"},
                     "role"),
    "active as text": ({"entity": "deal", "events": ["created"], "url": "URL",
                        "active": "yes"}, "active"),
    "not a URL": ({"entity": "deal", "events": ["created"], "url": "ftp://example.com/x"}, "url"),
    "a password in the URL": ({"entity": "deal", "events": ["created"],
                               "url": "http://a:b@example.com/x"}, "url"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_a_bad_body_is_422_naming_the_field_and_stores_nothing(
        name: str, people: dict[str, Any], receiver: Receiver) -> None:
    root = people["root"]
    body, field = BAD_BODIES[name]
    if isinstance(body, dict) and body.get("url") == "URL":
        body = {**body, "url": receiver.url()}
    answer = root.post("/api/webhooks", json=body)
    assert answer.status_code == 422, answer.text
    assert field in [d["field"] for d in answer.json()["error"]["details"]], answer.json()
    assert root.get("/api/webhooks").json()["items"] == []


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.0.0.7/hook",
    "http://169.254.169.254/latest/meta-data", "http://[::ffff:127.0.0.1]/hook",
    "http://2130706433/hook", "http://[::1]/hook", "http://192.168.1.1/hook",
])
def test_an_ssrf_unsafe_url_is_refused_when_the_subscription_is_made(
        url: str, people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KARTOTEKA_WEBHOOK_ALLOW", raising=False)
    root = people["root"]
    answer = root.post("/api/webhooks", json={"entity": "deal", "events": ["created"],
                                              "url": url})
    assert answer.status_code == 422, answer.text
    (detail,) = answer.json()["error"]["details"]
    assert detail["field"] == "url" and "refused" in detail["problem"]
    assert root.get("/api/webhooks").json()["items"] == []
    # the allow-list lets an on-premises receiver in, as it does for deliveries
    monkeypatch.setenv("KARTOTEKA_WEBHOOK_ALLOW", "127.0.0.0/8")
    assert root.post("/api/webhooks", json={"entity": "deal", "events": ["created"],
                                            "url": "http://127.0.0.1:9/hook"}).status_code == 201


def test_a_changed_url_is_checked_too(people: dict[str, Any], receiver: Receiver,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = people["root"]
    hook = made(root.post("/api/webhooks", json={"entity": "deal", "events": ["created"],
                                                 "url": receiver.url()}))
    monkeypatch.delenv("KARTOTEKA_WEBHOOK_ALLOW")
    answer = root.patch(f"/api/webhooks/{hook['id']}", json={"url": "http://10.1.2.3/x"})
    assert answer.status_code == 422 and answer.json()["error"]["details"][0]["field"] == "url"
    answer = root.patch(f"/api/webhooks/{hook['id']}", json={"entity": "note"})
    assert answer.status_code == 200  # created is an event a note has too
    answer = root.patch(f"/api/webhooks/{hook['id']}", json={"events": ["stage_left"]})
    assert answer.status_code == 422 and "no pipeline" in answer.json()["error"]["details"][0]["problem"]
    assert made(root.get(f"/api/webhooks/{hook['id']}"), 200)["url"] == receiver.url()
    assert root.get("/api/webhooks/999").status_code == 404
    assert root.delete("/api/webhooks/999").status_code == 404


def test_a_subscribed_event_is_delivered_signed_as_the_role_sees_the_record(
        kt: Kartoteka, people: dict[str, Any], receiver: Receiver) -> None:
    root = people["root"]
    secret = "секрет-для-подписи-1234"
    hook = made(root.post("/api/webhooks", json={
        "entity": "deal", "events": ["created", "stage_entered", "deleted"],
        "url": receiver.url(), "secret": secret, "role": "manager"}))
    other = made(root.post("/api/webhooks", json={
        "entity": "deal", "events": ["updated"], "url": receiver.url("/other"),
        "active": False}))
    deal = made(root.post("/api/deal", json={"title": "Договор «Ромашка» 合同", "margin": "10.00"}))
    kt.automations.run_pending()
    made(root.post(f"/api/deal/{deal['id']}/stage", json={"to": "contract"}), 200)
    made(root.patch(f"/api/deal/{deal['id']}", json={"title": "قرارداد"}), 200)  # not subscribed
    kt.automations.run_pending()
    assert {d["status"] for d in deliveries(kt)} == {"done"}
    bodies = receiver.bodies()
    # created (with its first stage: a stage entered too), then the move to contract
    assert [(b["trigger"], b["record"].get("stage")) for b in bodies] == [
        ("created", "new"), ("stage_entered", "new"), ("stage_entered", "contract")]
    for (headers, raw), body in zip(receiver.seen, bodies, strict=True):
        assert verify(secret.encode(), headers["X-Kartoteka-Signature"], raw,
                      now=dt.datetime.now(dt.UTC).timestamp())
        assert (body["webhook"], body["entity"], body["id"]) == (hook["id"], "deal", deal["id"])
        assert "margin" not in body["record"]  # hidden from the manager role
    assert bodies[0]["record"]["title"] == "Договор «Ромашка» 合同"
    assert len({h["X-Kartoteka-Event"] for h, _ in receiver.seen}) == 3
    # the disabled subscription sent nothing; enabled, it does
    made(root.patch(f"/api/webhooks/{other['id']}", json={"active": True}), 200)
    made(root.patch(f"/api/deal/{deal['id']}", json={"title": "Сделка"}), 200)
    kt.automations.run_pending()
    assert receiver.bodies()[-1]["trigger"] == "updated"
    assert receiver.seen[-1][0]["X-Kartoteka-Event"] != receiver.seen[0][0]["X-Kartoteka-Event"]
    # the timeline says which subscription delivered
    runs = [i for i in kt.timeline.page("deal", deal["id"], [])["items"] if i["type"] == "automation"]
    assert runs and all(r["automation"].startswith("webhook ") for r in runs)
    # deleted: the delivery carries the id only
    assert root.delete(f"/api/deal/{deal['id']}").status_code == 204
    kt.automations.run_pending()
    assert receiver.bodies()[-1] == {**receiver.bodies()[-1], "trigger": "deleted",
                                     "record": {"id": deal["id"]}}


def test_a_disabled_or_deleted_subscription_delivers_nothing(
        kt: Kartoteka, people: dict[str, Any], receiver: Receiver) -> None:
    root = people["root"]
    hook = made(root.post("/api/webhooks", json={"entity": "note", "events": ["created"],
                                                 "url": receiver.url(), "active": False}))
    made(root.post("/api/note", json={"text": "не отправлять"}))
    kt.automations.run_pending()
    assert receiver.seen == [] and deliveries(kt) == []
    made(root.patch(f"/api/webhooks/{hook['id']}", json={"active": True}), 200)
    made(root.post("/api/note", json={"text": "отправить"}))
    receiver.failures = 1
    kt.automations.run_pending()
    (delivery,) = deliveries(kt)
    assert delivery["status"] == "pending" and len(receiver.seen) == 1
    # deleted while its delivery waits for a retry: the retry fails, and is not retried
    assert root.delete(f"/api/webhooks/{hook['id']}").status_code == 204
    kt.automations.retry(delivery["id"])
    kt.automations.run_pending()
    (delivery,) = deliveries(kt)
    assert delivery["status"] == "dead" and "deleted" in delivery["last_error"]
    assert len(receiver.seen) == 1
    made(root.post("/api/note", json={"text": "никому"}))
    kt.automations.run_pending()
    assert len(deliveries(kt)) == 1


def test_open_mode_manages_subscriptions_like_the_rest(kt: Kartoteka, receiver: Receiver) -> None:
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as client:
        hook = made(client.post("/api/webhooks", json={"entity": "note", "events": ["created"],
                                                       "url": receiver.url()}))
        assert made(client.get("/api/webhooks"), 200)["items"][0]["id"] == hook["id"]
        made(client.post("/api/note", json={"text": "hi"}))
    kt.automations.run_pending()
    assert receiver.bodies()[0]["record"]["text"] == "hi"
