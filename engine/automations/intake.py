"""Intakes: records that arrive without a user's token (engine/setup/intakes.py).

A caller (a web form's backend, a partner's inbound webhook) posts the fields the intake
allows with the intake's key; the record is created as the system, with the intake's
fixed values, through the same write as any create (validation, rules, formulas, the
journal) — so the automations on `created` route it (assign:, notify:). Every call is
counted against the intake's rate per calling address first, keys right or wrong, so a
key cannot be guessed quickly; the key is compared in constant time.

The rate is kept in this process's memory (a sliding window per intake and address): a
restart forgets it, and several server processes each allow the rate.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from engine.errors import ErrorDetail, Forbidden, NotFound, TooManyRequests, Unauthorized, ValidationFailed
from engine.records.service import Records
from engine.setup.intakes import IntakeSpec

#: addresses remembered per intake at most (the oldest forgotten first)
MAX_ADDRESSES = 10_000


class Intakes:
    def __init__(self, records: Records, intakes: tuple[IntakeSpec, ...], *,
                 monotonic: Callable[[], float] = time.monotonic):
        self.records = records
        self.by_name = {intake.name: intake for intake in intakes}
        self.monotonic = monotonic
        self._calls: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def submit(self, name: str, key: str | None, address: str, body: Any) -> dict[str, Any]:
        intake = self.by_name.get(name)
        if intake is None:
            raise NotFound(f"no intake {name!r}")
        self._count(intake, address)
        secret = os.environ.get(intake.key_env)
        if not secret:
            raise Forbidden(f"the intake {name} has no key yet: set {intake.key_env} in the "
                            "server's environment", code="intake_closed")
        if key is None or not hmac.compare_digest(key.encode(), secret.encode()):
            raise Unauthorized("a wrong or missing intake key: send it as X-Intake-Key",
                               code="intake_key")
        if not isinstance(body, dict):
            raise ValidationFailed("the body must be a JSON object of fields",
                                   [ErrorDetail("", "is not an object")])
        unknown = sorted(set(body) - set(intake.fields))
        if unknown:
            raise ValidationFailed(
                f"the intake {name} takes only: {', '.join(intake.fields)}",
                [ErrorDetail(key, "is not a field this intake takes") for key in unknown])
        values = {**body, **intake.set}
        with self.records.access.acting.as_user(None):
            record = self.records.create(intake.entity, values)
        return {"id": record["id"], "entity": intake.entity}

    def _count(self, intake: IntakeSpec, address: str) -> None:
        now = self.monotonic()
        with self._lock:
            calls = self._calls.setdefault((intake.name, address), deque())
            while calls and calls[0] <= now - intake.per_seconds:
                calls.popleft()
            if len(calls) >= intake.rate:
                wait = max(1, int(calls[0] + intake.per_seconds - now) + 1)
                raise TooManyRequests(f"more than {intake.rate} calls in {intake.per_seconds} s "
                                      f"from this address; try again in {wait} s",
                                      retry_after=wait)
            calls.append(now)
            if len(self._calls) > MAX_ADDRESSES:
                oldest = min(self._calls, key=lambda k: self._calls[k][-1] if self._calls[k] else 0)
                del self._calls[oldest]
