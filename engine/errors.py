"""The one exception tree of Kartoteka, and the diagnostics a setup check yields.

    KartotekaError
    ├── SetupError              a setup has problems; carries every Diagnostic at once
    ├── UnscopedStatement       a bug, never a caller's fault: a statement over an entity
    │                           table skipped the access scope (engine/access/scopes.py)
    ├── ExtensionError          a developer's field type cannot be registered
    ├── SettingsError           a bad setting: malformed or unsupported database URL, no driver
    ├── DeliveryFailed          (engine.automations.channels) a webhook or e-mail not delivered;
    │   │                       .retryable says whether a later try may succeed
    │   └── TargetRefused       (engine.automations.webhook) a webhook URL that may not be called
    ├── DatabaseError           the database cannot be used: its folder cannot be made, ...
    │   ├── DatabaseMismatch    the database does not match the setup: run `kartoteka migrate`
    │   └── MigrationRefused    migrate would alter or drop existing tables or columns
    │       └── PlanRefused     (engine.storage.migrations) refused steps, or data loss unflagged
    └── RequestError            a caller's request cannot be carried out; nothing was written
        ├── MalformedRequest    bad JSON, bad query parameter, bad header          (HTTP 400)
        ├── Unauthorized        no token, or a bad, expired or revoked one         (HTTP 401)
        ├── Forbidden           an operation or field the caller's role lacks      (HTTP 403)
        ├── NotFound            no such record, or out of the caller's scope       (HTTP 404)
        ├── Conflict            unique value taken, delete restricted by links     (HTTP 409)
        ├── StaleVersion        If-Match names an older version                    (HTTP 412)
        ├── PayloadTooLarge     body over the configured cap                       (HTTP 413)
        ├── UnsupportedMedia    body that is not JSON                              (HTTP 415)
        └── ValidationFailed    a value, field or link is not acceptable           (HTTP 422)
            └── RuleFailed      the record breaks a rule of its entity; messages per language

The engine knows nothing of HTTP; `api/errors.py` maps each class to its status.
Every RequestError has a stable `code`, a human `message` and `details`: a list of
`{"field": "client.name", "problem": "..."}` where the field path is written the same way
as key paths in setup diagnostics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a setup: where it is, what is wrong, how to fix it."""

    code: str
    message: str
    file: str = ""
    line: int = 0
    column: int = 0
    path: tuple[str | int, ...] = ()
    hint: str = ""
    severity: str = "error"  # or "warning": reported, does not stop the setup loading

    @property
    def key(self) -> str:
        return format_path(self.path)

    def __str__(self) -> str:
        where = self.file or "<setup>"
        if self.line:
            where += f":{self.line}"
        text = f"{where} {self.key}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.hint:
            text += f"; {self.hint}"
        if self.severity != "error":
            text = f"{self.severity}: {text}"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "key": self.key,
            "message": self.message,
            "hint": self.hint,
        }


def format_path(path: Sequence[str | int]) -> str:
    """`("links", "client", "to")` → `links.client.to`; list positions as `[2]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class KartotekaError(Exception):
    """Base of every error Kartoteka raises on purpose."""


class SetupError(KartotekaError):
    """A setup cannot be loaded. `diagnostics` lists every problem, not just the first."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        super().__init__(
            f"{len(errors)} problem(s) in the setup:\n" + "\n".join(str(d) for d in errors)
        )


class UnscopedStatement(KartotekaError):
    """A statement reached an entity table without `Access.scoped` or `Access.unscoped`:
    refused before it runs, so a new read path cannot leak records by accident."""


class ExtensionError(KartotekaError):
    """A field type (a developer's, or a built-in) cannot be registered: raised by
    `FieldTypeRegistry.register`, before any setup is loaded."""


class SettingsError(KartotekaError):
    """A setting cannot be used: a database URL that is malformed, names an unsupported
    database or a driver that is not installed, or an option out of its range. Raised when
    the settings are built or the database opened, before anything is read or written."""


class DatabaseError(KartotekaError):
    """The database cannot be used with this setup as it is."""


class DatabaseMismatch(DatabaseError):
    """The database's tables do not match the setup; `kartoteka migrate` fixes it."""


class MigrationRefused(DatabaseError):
    """Applying the setup would alter or drop existing tables or columns."""

    def __init__(self, reasons: Sequence[str]):
        self.reasons = tuple(reasons)
        super().__init__(
            "migrate refuses to change existing tables (evolving a live table comes with "
            "the migrations feature):\n" + "\n".join(f"- {r}" for r in self.reasons)
        )


@dataclass
class ErrorDetail:
    field: str
    problem: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}


class RequestError(KartotekaError):
    """A request cannot be carried out. Raised before anything is written, or rolled back."""

    code = "bad_request"

    def __init__(
        self,
        message: str,
        details: Iterable[ErrorDetail] = (),
        *,
        code: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.details = list(details)
        if code:
            self.code = code

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = [d.as_json() for d in self.details]
        return {"error": body}


class MalformedRequest(RequestError):
    code = "malformed_request"


class Unauthorized(RequestError):
    code = "unauthorized"


class Forbidden(RequestError):
    """An operation the caller's role lacks, on a record the caller may see."""

    code = "forbidden"


class NotFound(RequestError):
    code = "not_found"


class Conflict(RequestError):
    code = "conflict"


class StaleVersion(RequestError):
    code = "stale_version"


class PayloadTooLarge(RequestError):
    code = "payload_too_large"


class UnsupportedMedia(RequestError):
    code = "unsupported_media_type"


class TooManyRequests(RequestError):
    """Over a rate limit; `retry_after` says in how many seconds to try again."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ValidationFailed(RequestError):
    code = "validation_failed"


@dataclass(frozen=True)
class BrokenRule:
    """One rule a record breaks: its name, the fields it names, its message by language."""

    rule: str
    fields: tuple[str, ...]
    messages: Mapping[str, str]

    def message(self, language: str | None) -> str:
        if language is not None and language in self.messages:
            return self.messages[language]
        return next(iter(self.messages.values()), self.rule)


class RuleFailed(ValidationFailed):
    """A write would leave a record breaking rules of its entity (`rules:` in the setup);
    nothing was written. `as_json(language)` gives the rules' messages in that language
    (the API picks it from Accept-Language), else in the setup's first."""

    code = "rule_failed"

    def __init__(self, entity: str, broken: Sequence[BrokenRule], languages: Sequence[str]):
        self.entity = entity
        self.broken = tuple(broken)
        #: the setup's languages, the first the default
        self.languages = tuple(languages)
        self.language = self.languages[0] if self.languages else None
        super().__init__(self._message(self.language))

    def _message(self, language: str | None) -> str:
        texts = [b.message(language) for b in self.broken]
        if len(texts) == 1:
            return texts[0]
        return f"the {self.entity} breaks {len(texts)} rules: " + "; ".join(texts)

    def as_json(self, language: str | None = None) -> dict[str, Any]:
        language = language or self.language
        details = [{"field": name, "problem": b.message(language), "rule": b.rule}
                   for b in self.broken for name in b.fields or ("",)]
        return {"error": {"code": self.code, "message": self._message(language),
                          "details": details}}
