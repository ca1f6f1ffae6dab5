"""Passwords and invitations over HTTP (the web app's sign-in: engine/access/sessions.py):

    POST /api/users/{id}/password     {password} → 204; an admin sets a user's password,
                                      and the user's browser sessions end
    POST /api/users/{id}/invitation   → 201 {token, path, expires_at}: a one-time link
                                      (`/app/invite/<token>`) to choose a password (admin)
    POST /api/me/password             {old_password, password} → 204; the caller changes
                                      their own; their other sessions end

A password is never answered by any call. Rules (422 when broken): at least 10
characters, not the user's e-mail.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.responses import engine_of, json_response, no_query, path_id, read_json
from api.threads import in_thread
from engine.access.passwords import MAX_LENGTH, MIN_LENGTH
from engine.core import Kartoteka

PASSWORD = {"type": "string", "minLength": MIN_LENGTH, "maxLength": MAX_LENGTH,
            "description": f"at least {MIN_LENGTH} characters, not the user's e-mail",
            "format": "password"}
INVITATION = {"type": "object", "required": ["token", "path", "expires_at"], "properties": {
    "token": {"type": "string"}, "path": {"type": "string", "description": "/app/invite/<token>"},
    "expires_at": {"type": "string", "format": "date-time"}}}


def add_password_routes(app: APIRouter, kt: Kartoteka, cap: int,
                        refused: dict[int | str, dict[str, Any]]) -> None:
    """Engine-free handlers (`engine_of(request)`), as api.users'."""
    def user_id(request: Request) -> int:
        return path_id(request, "id", "user")

    async def set_password(request: Request) -> Response:
        no_query(request)
        body = await read_json(request, cap)
        await in_thread(engine_of(request).sessions.set_password, user_id(request), body)
        return Response(status_code=204)

    async def invite(request: Request) -> Response:
        no_query(request)
        _, token, expires = await in_thread(engine_of(request).sessions.invite_id,
                                                    user_id(request))
        return json_response({"token": token, "path": f"/app/invite/{token}",
                              "expires_at": expires.isoformat().replace("+00:00", "Z")}, 201)

    async def change_own(request: Request) -> Response:
        no_query(request)
        body = await read_json(request, cap)
        session = getattr(request.state, "session", None)
        await in_thread(engine_of(request).sessions.change_own_password, body,
                                keep=None if session is None else session.id,
                                address=request.client.host if request.client else None)
        return Response(status_code=204)

    id_param = [{"name": "id", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10**18}}]
    done = {204: {"description": "Done"}, **refused}
    for path, handler, summary, body, responses in (
        ("/api/users/{id}/password", set_password,
         "Set a user's password; their browser sessions end (admin)",
         {"type": "object", "required": ["password"], "additionalProperties": False,
          "properties": {"password": PASSWORD}}, done),
        ("/api/users/{id}/invitation", invite,
         "A one-time link for the user to choose a password, shown once (admin)", None,
         {201: {"description": "Created", "content": {"application/json": {"schema": INVITATION}}},
          **refused}),
        ("/api/me/password", change_own,
         "Change my password, giving the current one; my other sessions end",
         {"type": "object", "required": ["old_password", "password"],
          "additionalProperties": False, "properties": {
              "old_password": {"type": "string", "format": "password"}, "password": PASSWORD}},
         done),
    ):
        extra: dict[str, Any] = {"parameters": id_param if "{id}" in path else []}
        if body is not None:
            extra["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": body}}}
        app.add_api_route(path, handler, methods=["POST"], tags=["users"], summary=summary,
                          operation_id="post_" + path.strip("/").replace("/", "_")
                          .replace("{", "").replace("}", ""),
                          response_class=Response, responses=responses, openapi_extra=extra)
