"""E-mail notifications: the SMTP settings, the message, sending it, and the tiny template
language its subject and body are written in.

E-mail is on when `KARTOTEKA_SMTP_URL` is set (`settings_from_env`), off otherwise. The
worker builds one message per delivery (`build_message`), its `Message-ID` derived from
the event so that a resend after a failure is recognisably the same message, and sends it
(`send`), which says through `DeliveryFailed.retryable` whether to try again: an SMTP 4xx
reply or a lost connection is temporary, a 5xx reply is not.

Templates (`render`) fill `{field}` and `{link.field}` from a dict of values the caller has
already rendered and cleared for the reader; they cannot reach anything else (no
str.format, whose `{0.__class__}` walks into Python objects).
"""

from __future__ import annotations

import hashlib
import os
import re
import smtplib
import ssl as ssl_module
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, getaddresses
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from engine.automations import templates
from engine.automations.channels import DeliveryFailed
from engine.errors import SettingsError

__all__ = ["SMTP_ENV", "DeliveryFailed", "SmtpSettings", "build_message", "message_id", "render",
           "send", "settings_from_env", "settings_from_url"]

SMTP_ENV = "KARTOTEKA_SMTP_URL"

# Bodies go out 7-bit clean (quoted-printable or base64, whichever is shorter), headers in
# RFC 2047 words: any relay takes them, with or without 8BITMIME.
POLICY = SMTP_POLICY.clone(cte_type="7bit")

_URL_HINT = f"write {SMTP_ENV}=smtp://user:password@host:587?from=crm@example.com (or smtps://...:465)"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


# --- settings ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SmtpSettings:
    """Where and how e-mail is sent. `ssl`: TLS from the first byte (smtps, port 465);
    `starttls`: plain connection upgraded to TLS before logging in (port 587). Both verify
    the server's certificate. `timeout` is per network operation, in seconds."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    starttls: bool
    ssl: bool
    sender: str
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.starttls and self.ssl:
            raise SettingsError("SMTP: starttls and ssl exclude each other; " + _URL_HINT)
        if not 0 < self.port < 65536:
            raise SettingsError(f"SMTP: port {self.port} is out of range 1..65535")
        if not self.timeout > 0:
            raise SettingsError(f"SMTP: timeout must be a positive number of seconds, not {self.timeout}")
        if not ((self.username or "").isascii() and (self.password or "").isascii()):
            raise SettingsError("SMTP: the user name and password must be ASCII (SMTP AUTH as "
                                "Python's smtplib speaks it); percent-encode special ASCII characters")
        if self.password and not (self.starttls or self.ssl):
            raise SettingsError("SMTP: a password would travel unencrypted; use smtps:// or starttls=1")
        try:
            _address(self.sender, "from")
        except ValueError as error:
            raise SettingsError(f"SMTP: {error}; {_URL_HINT}") from None


def settings_from_env(environ: Mapping[str, str] | None = None) -> SmtpSettings | None:
    """The SMTP settings from `KARTOTEKA_SMTP_URL`; None when it is unset or empty (e-mail
    is then off). Raises SettingsError when it is set but cannot be used."""
    url = (os.environ if environ is None else environ).get(SMTP_ENV, "").strip()
    return settings_from_url(url) if url else None


def settings_from_url(url: str) -> SmtpSettings:
    """`smtp://user:password@host:587?from=crm@example.com` → SmtpSettings.

    `smtp://` upgrades with STARTTLS unless `starttls=0` (port 587, or 25 without it);
    `smtps://` is TLS from the start (port 465). User and password are percent-encoded.
    Query keys: `from` (required, the sender: `crm@example.com` or
    `CRM%20<crm@example.com>`), `starttls`, `timeout`. Errors never repeat the password.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise SettingsError(f"{SMTP_ENV}: scheme {scheme or '(none)'!r} is not smtp or smtps; {_URL_HINT}")
    try:
        port = parts.port
    except ValueError:
        raise SettingsError(f"{SMTP_ENV}: the port is not a number in 1..65535; {_URL_HINT}") from None
    if not parts.hostname:
        raise SettingsError(f"{SMTP_ENV}: no host; {_URL_HINT}")
    query = _query(parts.query)
    if "from" not in query:
        raise SettingsError(f"{SMTP_ENV}: no sender; add ?from=crm@example.com")
    implicit_tls = scheme == "smtps"
    starttls = _flag(query.get("starttls"), default=not implicit_tls)
    if implicit_tls and starttls:
        raise SettingsError(f"{SMTP_ENV}: smtps:// is TLS already; drop starttls=1 or use smtp://")
    return SmtpSettings(
        host=parts.hostname, port=port or (465 if implicit_tls else 587 if starttls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        starttls=starttls, ssl=implicit_tls, sender=query["from"],
        timeout=_seconds(query.get("timeout", "10")))


def _query(text: str) -> dict[str, str]:
    query: dict[str, str] = {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise SettingsError(f"{SMTP_ENV}: the query {text!r} is not key=value&...; {_URL_HINT}") from None
    for key, value in pairs:
        if key not in ("from", "starttls", "timeout"):
            raise SettingsError(f"{SMTP_ENV}: unknown option {key!r}; known: from, starttls, timeout")
        if key in query:
            raise SettingsError(f"{SMTP_ENV}: {key!r} given twice")
        query[key] = value
    return query


def _flag(value: str | None, *, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise SettingsError(f"{SMTP_ENV}: starttls={value!r}; write starttls=1 or starttls=0")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 3600:
        raise SettingsError(f"{SMTP_ENV}: timeout={value!r}; write seconds in 0..3600, e.g. timeout=10")
    return seconds


# --- the message ------------------------------------------------------------------------

_MESSAGE_ID_TOKEN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")


def _header_text(name: str, value: str) -> str:
    """`value` if it is safe in a header: no line breaks (header injection), no controls."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {type(value).__name__}")
    bad = next((ch for ch in value if unicodedata.category(ch) in ("Cc", "Zl", "Zp") and ch != "\t"), None)
    if bad is not None:
        raise ValueError(f"{name}: line breaks and control characters are not allowed "
                         f"(found U+{ord(bad):04X}); they could add headers to the message")
    return value


def _address(text: str, name: str) -> Address:
    """One address, `crm@example.com` or `Отдел продаж <crm@example.com>`."""
    _header_text(name, text)
    found = getaddresses([text])
    if len(found) != 1 or not found[0][1]:
        raise ValueError(f"{name}: {text!r} is not one e-mail address")
    display, spec = found[0]
    try:
        address = Address(display_name=display, addr_spec=spec)
    except (ValueError, IndexError, HeaderParseError) as error:
        raise ValueError(f"{name}: {text!r} is not an e-mail address ({error})") from None
    if not address.username or "." not in address.domain.strip("."):
        raise ValueError(f"{name}: {text!r} is not an e-mail address (write name@example.com)")
    if address.username.isascii() and not address.domain.isascii():
        try:  # пример.рф → xn--e1afmkfd.xn--p1ai: deliverable without SMTPUTF8
            domain = address.domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{name}: {text!r} has an invalid domain name") from None
        address = Address(display_name=address.display_name, username=address.username, domain=domain)
    return address


def message_id(event_id: str, sender: str) -> str:
    """The Message-ID of the message for `event_id`: the same for every resend, so mail
    clients and the receiving server can tell a retried delivery from a new message."""
    token = event_id if _MESSAGE_ID_TOKEN.fullmatch(event_id) and len(event_id) <= 128 else (
        "h" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()[:40])
    domain = _address(sender, "from").domain
    return f"<kartoteka.{token}@{domain if domain.isascii() else 'kartoteka.invalid'}>"


def build_message(sender: str, to: Sequence[str], subject: str, text: str, *, event_id: str,
                  language: str | None = None) -> EmailMessage:
    """A plain-text UTF-8 message, ready for `send`.

    `to` is a list of addresses (a display name in any script is fine:
    `Иван Петров <ivan@example.com>`); `language` (`ru`, `fa`, `zh-CN`) becomes
    Content-Language. The message carries `Auto-Submitted: auto-generated` (so auto-replies
    stay away) and `X-Kartoteka-Event`. Raises ValueError for a line break or control
    character in any header value (header injection), or an address that is not one.
    """
    if isinstance(to, str):
        to = [to]
    if not to:
        raise ValueError("to: no recipient")
    _header_text("subject", subject)
    _header_text("event_id", event_id)
    if not isinstance(text, str):
        raise ValueError(f"text: expected text, got {type(text).__name__}")
    message = EmailMessage(policy=POLICY)
    message["From"] = _address(sender, "from")
    message["To"] = tuple(_address(each, "to") for each in to)
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(event_id, sender)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Kartoteka-Event"] = event_id
    if language is not None and not _LANGUAGE_TAG.fullmatch(language):
        raise ValueError(f"language: {language!r} is not a language tag (ru, fa, zh-CN)")
    message.set_content(text)  # clears every Content-* header: Content-Language comes after
    if language is not None:
        message["Content-Language"] = language
    return message


# --- sending ----------------------------------------------------------------------------

def send(settings: SmtpSettings, message: EmailMessage, *,
         context: ssl_module.SSLContext | None = None) -> None:
    """Hand `message` to the SMTP server in `settings`, to every address in its To.

    TLS (smtps or STARTTLS) verifies the server's certificate against the system's trust
    store, or against `context` when given (a private CA on premises; tests).

    Raises DeliveryFailed: retryable for a 4xx reply, a refused, dropped or timed-out
    connection or a TLS failure; permanent for a 5xx reply, a server without STARTTLS, or
    refused credentials (535). `status` is the SMTP reply code. When the server refuses
    some recipients and takes the others, the failure names them; a retry sends to all
    again (same Message-ID), which is why notifications send one message per recipient.
    """
    context = context or ssl_module.create_default_context()
    try:
        with _client(settings, context) as client:
            if settings.starttls:
                client.starttls(context=context)
            if settings.username:
                client.login(settings.username, settings.password or "")
            refused = client.send_message(message, from_addr=_address(settings.sender, "from").addr_spec)
    except smtplib.SMTPRecipientsRefused as error:
        refused = error.recipients
    except smtplib.SMTPResponseException as error:
        raise _reply_failed(settings, error.smtp_code, error.smtp_error) from None
    except smtplib.SMTPServerDisconnected as error:
        raise DeliveryFailed(f"SMTP {_where(settings)} closed the connection: {error}",
                             retryable=True) from None
    except smtplib.SMTPException as error:
        raise DeliveryFailed(f"SMTP {_where(settings)}: {error}", retryable=False) from None
    except OSError as error:  # refused, unreachable, timed out, TLS handshake or certificate
        raise DeliveryFailed(f"SMTP {_where(settings)} could not be reached: "
                             f"{type(error).__name__}: {error}", retryable=True) from None
    if refused:
        codes = [code for code, _ in refused.values()]
        said = "; ".join(f"{rcpt}: {code} {_text(reply)}" for rcpt, (code, reply) in refused.items())
        raise DeliveryFailed(f"SMTP {_where(settings)} refused recipients: {said}",
                             retryable=all(400 <= code < 500 for code in codes), status=max(codes))


def _client(settings: SmtpSettings, context: ssl_module.SSLContext) -> smtplib.SMTP:
    if settings.ssl:
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
    return smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)


def _reply_failed(settings: SmtpSettings, code: int, reply: bytes | str) -> DeliveryFailed:
    return DeliveryFailed(f"SMTP {_where(settings)} answered {code} {_text(reply)}",
                          retryable=400 <= code < 500, status=code)


def _where(settings: SmtpSettings) -> str:
    return f"{settings.host}:{settings.port}"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


# --- templates --------------------------------------------------------------------------

def render(template: str, values: Mapping[str, Any], *, single_line: bool = False) -> str:
    """`template` with each `{field}` or `{link.field}` replaced by its value in `values`
    (engine/automations/templates.py renders it).

    A value is looked up as the whole dotted key first (`values["client.name"]`), then
    through nested dicts (`values["client"]["name"]`); a missing one or None renders as
    empty text, never an error. Nothing but dict lookups happens: `{0.__class__}` is just
    text. `single_line=True` (for subjects) turns line breaks inside values into spaces.
    """
    return templates.render(template, partial(_lookup, values), single_line=single_line)


def _lookup(values: Mapping[str, Any], key: str) -> Any:
    current: Any = values[key] if key in values else values
    for part in () if key in values else key.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return None if isinstance(current, Mapping) else current
