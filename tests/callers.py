"""One user's view of the API in a test: every request carries their real token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient


class Caller:
    def __init__(self, http: TestClient, token: str, user_id: int = 0):
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}
        self.id = user_id

    def __getattr__(self, method: str) -> Callable[..., Any]:
        call = getattr(self.http, method)
        return lambda path, **kw: call(path, headers={**self.headers, **kw.pop("headers", {})},
                                       **kw)


def made(answer: Any, status: int = 201) -> dict[str, Any]:
    """The body of an answer that must have this status (a create's 201 unless said),
    failing with the answer's text otherwise."""
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    return body
