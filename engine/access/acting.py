"""Who is acting: a user (as the engine sees one) and the context variable of one engine
instance that says who its calls run for. No module-level state: each `Kartoteka` has its
own `Acting`, so two engines in one process never see each other's users."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class User:
    id: int
    email: str
    name: str | None
    roles: tuple[str, ...]
    team: str | None
    active: bool
    #: the language of their notifications (None: the setup's first)
    language: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "name": self.name, "roles": list(self.roles),
                "team": self.team, "active": self.active, "language": self.language}



class Acting:
    """Who one engine instance acts for in the current context (a request, a command)."""

    def __init__(self) -> None:
        self._user: ContextVar[User | None] = ContextVar(
            f"kartoteka_acting_{id(self):x}", default=None)

    @contextmanager
    def as_user(self, user: User | None) -> Iterator[None]:
        """Run the engine calls inside as `user` (None: as the system, unrestricted)."""
        token = self._user.set(user)
        try:
            yield
        finally:
            self._user.reset(token)

    @property
    def user(self) -> User | None:
        return self._user.get()
