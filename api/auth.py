"""Authentication for every `/api` call, as ASGI middleware so no route can skip it.

While the database has no users the API is open (served on loopback only, and guarded by
`api.guard` against web pages: Host names, JSON-only bodies, CORS). From the first
user on, a call without a valid `Authorization: Bearer <token>` gets 401 in the API's
error shape; `/openapi.json` and `/docs` need no token. The authenticated user is put
in `request.state.user` and made the engine's acting user (`Users.acting`, the engine
instance's `Acting`) for the whole request, so every engine call the route makes is scoped
to their roles.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from api.responses import json_response
from engine.access.users import Users
from engine.errors import Unauthorized


class Authentication:
    def __init__(self, app: ASGIApp, users: Users):
        self.app = app
        self.users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] + "/").startswith("/api/"):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["user"] = None
        if self.users.any_users():
            header = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    header = value.decode("latin-1")
                    break
            try:
                state["user"] = self.users.authenticate(header)
            except Unauthorized as error:
                response = json_response(error.as_json(), 401, {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        with self.users.acting.as_user(state["user"]):
            await self.app(scope, receive, send)
