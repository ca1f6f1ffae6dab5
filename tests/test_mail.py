"""E-mail against a real SMTP server on loopback (aiosmtpd), engine/automations/mail.py."""

from __future__ import annotations

import email
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from engine.automations.mail import (
    SMTP_ENV,
    DeliveryFailed,
    SmtpSettings,
    build_message,
    message_id,
    render,
    send,
    settings_from_env,
    settings_from_url,
)
from engine.errors import SettingsError

SENDER = "Kartoteka CRM <crm@example.com>"


@dataclass
class Handler:
    """Accepts mail and keeps it; `data_reply` / `rcpt_replies` script failures."""

    received: list[Any] = field(default_factory=list)
    data_reply: str = "250 OK"
    rcpt_replies: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        reply = self.rcpt_replies.get(address, "250 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply.startswith("250"):
            self.received.append(envelope)
        return self.data_reply


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    handler: Handler
    settings: SmtpSettings


@pytest.fixture
def smtp() -> Iterator[Server]:
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield Server(handler, SmtpSettings("127.0.0.1", controller.port, None, None, starttls=False,
                                           ssl=False, sender=SENDER, timeout=5))
    finally:
        controller.stop()


def _message(to: list[str] | None = None, **overrides: Any) -> EmailMessage:
    values: dict[str, Any] = {
        "sender": SENDER,
        "to": to or ["Иван Петров <ivan@example.com>"],
        "subject": "Сделка S-1 перешла в «Договор» · قرارداد · 合同",
        "text": "Здравствуйте!\nСделка S-1: ООО «Ромашка».\nسلام، قرارداد امضا شد.\n合同已签署。\n",
        "event_id": "evt-42",
        "language": "ru",
    }
    values.update(overrides)
    return build_message(values.pop("sender"), values.pop("to"), values.pop("subject"),
                         values.pop("text"), **values)


def _parsed(envelope: Any) -> EmailMessage:
    parsed = email.message_from_bytes(envelope.original_content, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- delivery -----------------------------------------------------------------------------

def test_a_russian_persian_chinese_message_arrives_intact(smtp: Server) -> None:
    to = ["Иван Петров <ivan@example.com>", "مریم احمدی <maryam@example.ir>", "张伟 <zhang@example.cn>"]
    message = _message(to)
    send(smtp.settings, message)
    [envelope] = smtp.handler.received
    assert envelope.mail_from == "crm@example.com"
    assert envelope.rcpt_tos == ["ivan@example.com", "maryam@example.ir", "zhang@example.cn"]
    assert envelope.original_content.isascii()  # 7-bit clean: any relay takes it
    got = _parsed(envelope)
    assert got["Subject"] == "Сделка S-1 перешла в «Договор» · قرارداد · 合同"
    assert [a.display_name for a in got["To"].addresses] == ["Иван Петров", "مریم احمدی", "张伟"]
    assert got["From"].addresses[0].display_name == "Kartoteka CRM"
    assert got.get_content().replace("\r\n", "\n") == message.get_content().replace("\r\n", "\n")
    assert "合同已签署" in got.get_content() and "قرارداد امضا شد" in got.get_content()
    assert got["Message-ID"] == "<kartoteka.evt-42@example.com>"
    assert got["X-Kartoteka-Event"] == "evt-42"
    assert got["Auto-Submitted"] == "auto-generated"
    assert got["Content-Language"] == "ru"
    assert got["Date"]


def test_a_resend_carries_the_same_message_id(smtp: Server) -> None:
    send(smtp.settings, _message())
    send(smtp.settings, _message())
    send(smtp.settings, _message(event_id="evt-43"))
    ids = [_parsed(e)["Message-ID"] for e in smtp.handler.received]
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize("event_id", ["событие 7", "a b", "x" * 500, "<evil>@x", "e\ttab"])
def test_any_event_id_gives_a_valid_stable_message_id(event_id: str) -> None:
    first, second = message_id(event_id, SENDER), message_id(event_id, SENDER)
    assert first == second and first.isascii() and " " not in first and first.count("@") == 1
    assert first != message_id(event_id + "1", SENDER)


def test_an_international_domain_is_sent_in_punycode(smtp: Server) -> None:
    """The test server does not offer SMTPUTF8: an IDN domain must not need it."""
    send(smtp.settings, _message(["Иван <ivan@пример.рф>"], sender="Отдел <crm@пример.рф>"))
    [envelope] = smtp.handler.received
    assert envelope.rcpt_tos == ["ivan@xn--e1afmkfd.xn--p1ai"]
    assert envelope.mail_from == "crm@example.com"  # the envelope sender is the configured one
    got = _parsed(envelope)
    assert got["To"].addresses[0].display_name == "Иван"
    assert got["From"].addresses[0].domain == "xn--e1afmkfd.xn--p1ai"


def test_an_international_sender_domain_gives_an_ascii_message_id() -> None:
    assert message_id("e1", "Отдел <crm@пример.рф>") == "<kartoteka.e1@xn--e1afmkfd.xn--p1ai>"


@pytest.mark.parametrize(("reply", "retryable"), [
    ("451 4.3.0 Try again later", True),
    ("452 4.3.1 Insufficient storage", True),
    ("550 5.7.1 Message rejected as spam", False),
    ("554 5.0.0 Transaction failed", False),
])
def test_a_data_reply_decides_whether_to_retry(smtp: Server, reply: str, retryable: bool) -> None:
    smtp.handler.data_reply = reply
    with pytest.raises(DeliveryFailed) as caught:
        send(smtp.settings, _message())
    assert caught.value.retryable is retryable
    assert caught.value.status == int(reply[:3])
    assert reply[4:] in str(caught.value)


@pytest.mark.parametrize(("reply", "retryable"), [
    ("450 4.2.1 Mailbox busy", True), ("550 5.1.1 No such user", False)])
def test_a_refused_recipient_decides_whether_to_retry(smtp: Server, reply: str, retryable: bool) -> None:
    smtp.handler.rcpt_replies["ivan@example.com"] = reply
    with pytest.raises(DeliveryFailed) as caught:
        send(smtp.settings, _message())
    assert caught.value.retryable is retryable and caught.value.status == int(reply[:3])
    assert smtp.handler.received == []


def test_a_partly_refused_message_names_who_did_not_get_it(smtp: Server) -> None:
    smtp.handler.rcpt_replies["ghost@example.com"] = "550 5.1.1 No such user"
    with pytest.raises(DeliveryFailed) as caught:
        send(smtp.settings, _message(["ivan@example.com", "ghost@example.com"]))
    assert "ghost@example.com" in str(caught.value) and "ivan@example.com" not in str(caught.value)
    assert not caught.value.retryable
    assert [e.rcpt_tos for e in smtp.handler.received] == [["ivan@example.com"]]


def test_no_server_is_retryable() -> None:
    settings = SmtpSettings("127.0.0.1", _free_port(), None, None, starttls=False, ssl=False,
                            sender=SENDER, timeout=2)
    with pytest.raises(DeliveryFailed) as caught:
        send(settings, _message())
    assert caught.value.retryable and caught.value.status is None


def test_starttls_demanded_of_a_server_without_it_is_permanent(smtp: Server) -> None:
    with pytest.raises(DeliveryFailed) as caught:
        send(replace(smtp.settings, starttls=True), _message())
    assert not caught.value.retryable
    assert smtp.handler.received == []


# --- TLS and login ------------------------------------------------------------------------

@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, ssl.SSLContext]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"crm@example.com", b"p@ss:w/rd%")
        return AuthResult(success=ok, handled=False)

    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(), tls_context=server_context,
                            require_starttls=True, auth_required=True, authenticator=authenticator)
    controller.start()
    url = f"smtp://crm%40example.com:p%40ss%3Aw%2Frd%25@127.0.0.1:{controller.port}?from=crm@example.com&timeout=5"
    try:
        yield Server(handler, settings_from_url(url)), ssl.create_default_context(cafile=str(cert))
    finally:
        controller.stop()


def test_starttls_and_login_with_a_percent_encoded_password(
        tls_server: tuple[Server, ssl.SSLContext]) -> None:
    server, trusting = tls_server
    assert server.settings.username == "crm@example.com" and server.settings.password == "p@ss:w/rd%"
    send(server.settings, _message(sender="crm@example.com"), context=trusting)
    assert len(server.handler.received) == 1


def test_a_wrong_password_is_permanent(tls_server: tuple[Server, ssl.SSLContext]) -> None:
    server, trusting = tls_server
    with pytest.raises(DeliveryFailed) as caught:
        send(replace(server.settings, password="wrong"), _message(sender="crm@example.com"), context=trusting)
    assert not caught.value.retryable and caught.value.status == 535
    assert "wrong" not in str(caught.value)


def test_an_untrusted_certificate_is_not_accepted(tls_server: tuple[Server, ssl.SSLContext]) -> None:
    server, _ = tls_server
    with pytest.raises(DeliveryFailed, match="CERTIFICATE_VERIFY_FAILED"):
        send(server.settings, _message(sender="crm@example.com"))
    assert server.handler.received == []


# --- settings -----------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://mail.example.com?from=crm@example.com",
     ("mail.example.com", 587, None, None, True, False, "crm@example.com", 10.0)),
    ("smtp://relay.local?starttls=0&from=crm@example.com",
     ("relay.local", 25, None, None, False, False, "crm@example.com", 10.0)),
    ("smtp://u:p@mail.example.com:2525?starttls=1&from=crm@example.com&timeout=2.5",
     ("mail.example.com", 2525, "u", "p", True, False, "crm@example.com", 2.5)),
    ("SMTPS://crm%40example.com:p%26ss%20w@MAIL.example.com?from=CRM%20%3Ccrm@example.com%3E",
     ("mail.example.com", 465, "crm@example.com", "p&ss w", False, True, "CRM <crm@example.com>", 10.0)),
    ("smtp://[2001:db8::25]:587?from=%D0%9E%D1%82%D0%B4%D0%B5%D0%BB%20%3Ccrm@example.com%3E",
     ("2001:db8::25", 587, None, None, True, False, "Отдел <crm@example.com>", 10.0)),
])
def test_settings_from_a_url(url: str, expected: tuple[Any, ...]) -> None:
    s = settings_from_url(url)
    assert (s.host, s.port, s.username, s.password, s.starttls, s.ssl, s.sender, s.timeout) == expected
    assert "p&ss" not in repr(s)


@pytest.mark.parametrize(("url", "problem"), [
    ("http://mail.example.com?from=crm@example.com", "scheme"),
    ("mail.example.com", "scheme"),
    ("smtp://?from=crm@example.com", "no host"),
    ("smtp://mail.example.com:99999?from=crm@example.com", "port"),
    ("smtp://mail.example.com:smtp?from=crm@example.com", "port"),
    ("smtp://mail.example.com", "no sender"),
    ("smtp://mail.example.com?from=", "not one e-mail address"),
    ("smtp://mail.example.com?from=not-an-address", "e-mail address"),
    ("smtp://mail.example.com?from=a@example.com,b@example.com", "not one e-mail address"),
    ("smtp://mail.example.com?from=crm@example.com%0D%0ABcc:x@evil.com", "line breaks"),
    ("smtp://mail.example.com?from=crm@example.com&tls=1", "unknown option 'tls'"),
    ("smtp://mail.example.com?from=crm@example.com&from=x@example.com", "given twice"),
    ("smtp://mail.example.com?from=crm@example.com&starttls=maybe", "starttls=1 or starttls=0"),
    ("smtps://mail.example.com?from=crm@example.com&starttls=1", "TLS already"),
    ("smtp://u:secret@mail.example.com?from=crm@example.com&starttls=0", "unencrypted"),
    ("smtp://mail.example.com?from=crm@example.com&timeout=0", "timeout"),
    ("smtp://mail.example.com?from=crm@example.com&timeout=abc", "timeout"),
    ("smtp://mail.example.com?from=crm@example.com&timeout=nan", "timeout"),
    ("smtp://mail.example.com?from=crm@example.com&&", "query"),
    ("smtps://%D0%BF%D0%BE%D1%87%D1%82%D0%B0:secret@mail.example.com?from=crm@example.com", "ASCII"),
])
def test_bad_settings_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_url(url)
    assert problem in str(caught.value)
    assert "secret" not in str(caught.value)


def test_settings_from_the_environment() -> None:
    assert settings_from_env({}) is None
    assert settings_from_env({SMTP_ENV: "  "}) is None
    settings = settings_from_env({SMTP_ENV: "smtps://mail.example.com?from=crm@example.com"})
    assert settings is not None and settings.ssl and settings.port == 465
    with pytest.raises(SettingsError, match=SMTP_ENV):
        settings_from_env({SMTP_ENV: "smtp://mail.example.com"})


# --- header injection and bad input ---------------------------------------------------------

@pytest.mark.parametrize("evil", ["\r\nBcc: spy@evil.com", "\nBcc: spy@evil.com", "\rBcc: x@evil.com",
                                  "\u2028Bcc: x@evil.com", "\x85Bcc: x@evil.com", "\x00", "\x0bx",
                                  "\x1b[31m"])
def test_header_injection_is_refused(evil: str) -> None:
    for overrides in ({"subject": "Сделка" + evil}, {"to": ["ivan@example.com" + evil]},
                      {"to": ["Иван" + evil + " <ivan@example.com>"]}, {"sender": "crm@example.com" + evil},
                      {"event_id": "evt" + evil}):
        with pytest.raises(ValueError, match="line breaks and control characters"):
            _message(**overrides)


@pytest.mark.parametrize("to", [[], ["not an address"], ["a@example.com, b@example.com"], ["@example.com"],
                                ["ivan@"], ["ivan@localhost"], ["<>"]])
def test_bad_recipients_are_refused(to: list[str]) -> None:
    with pytest.raises(ValueError, match="to"):
        _message(to=to) if to else build_message(SENDER, to, "s", "t", event_id="e")


def test_a_bad_language_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="language"):
        _message(language="ru\r\nX: y")
    with pytest.raises(ValueError, match="language"):
        _message(language="русский")


def test_a_single_address_string_is_one_recipient() -> None:
    message = build_message(SENDER, "ivan@example.com", "s", "t", event_id="e")
    assert message["To"] == "ivan@example.com"


def test_long_lines_and_empty_text_are_fine(smtp: Server) -> None:
    send(smtp.settings, _message(text="Щ" * 5000))
    send(smtp.settings, _message(text="", subject=""))
    bodies = [_parsed(e).get_content() for e in smtp.handler.received]
    assert bodies[0].rstrip() == "Щ" * 5000 and bodies[1].strip() == ""


# --- templates ------------------------------------------------------------------------------

VALUES = {"number": "S-1", "amount": "1 500 000,00 ₽", "client.name": "ООО «Ромашка»",
          "supplier": {"name": "شرکت پارس", "city": {"name": "تهران"}}, "note": None, "empty": ""}


@pytest.mark.parametrize(("template", "expected"), [
    ("Сделка {number}: {amount}", "Сделка S-1: 1 500 000,00 ₽"),
    ("{client.name}", "ООО «Ромашка»"),
    ("{supplier.name} ({supplier.city.name})", "شرکت پارس (تهران)"),
    ("{ number }", "S-1"),
    ("[{missing}] [{client.missing}] [{note}] [{empty}] [{supplier}]", "[] [] [] [] []"),
    ("{{number}} is {number}; }} {{", "{number} is S-1; } {"),
    ("{0.__class__} {number.__class__} {__class__} {__globals__}", "{0.__class__}   "),
    ("{number:>10} {number!r} {number[0]} {} {", "{number:>10} {number!r} {number[0]} {} {"),
    ("合同 {number} 已签署", "合同 S-1 已签署"),
    ("", ""),
])
def test_render(template: str, expected: str) -> None:
    assert render(template, VALUES) == expected


def test_render_never_reaches_past_the_values() -> None:
    class Spy:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"attribute {name} was read")

    assert render("{spy.secret}", {"spy": Spy()}) == ""
    assert render("{spy}", {"spy": 42}) == "42"


def test_render_single_line_for_subjects() -> None:
    values = {"note": "line one\r\nline two\u2028three"}
    assert render("Re: {note}", values, single_line=True) == "Re: line one line two three"
    assert render("Re: {note}", values) == "Re: line one\r\nline two\u2028three"
    _message(subject=render("Re: {note}", values, single_line=True))  # a valid subject
