"""Users over HTTP, for those allowed to manage them (the built-in `admin` role), and
`GET /api/me`, which any authenticated caller may read: who they are and what their
roles let them do per entity — what a front end needs to show or grey out its buttons.

    GET  /api/me
    GET  /api/users                      POST /api/users  → 201, the user and its token (once)
    GET  /api/users/{id}                 PATCH /api/users/{id}  (name, roles, team, language, active)
    GET  /api/users/{id}/tokens          POST /api/users/{id}/tokens → 201, a new token (once)
    DELETE /api/users/{id}/tokens/{token_id}   revoke
    POST /api/users/{id}/password, /api/users/{id}/invitation, /api/me/password  (api/passwords.py)

While a database has no users, these routes are open like the rest of the API (that is how
the first user can be made over HTTP on a fresh install, from the machine itself).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.passwords import add_password_routes
from api.responses import engine_of, json_response, no_query, path_id, read_json
from api.threads import in_thread
from engine.core import Kartoteka
from engine.setup.roles import OPERATIONS
from engine.storage.users import EMAIL_LENGTH

REF = "#/components/schemas/"
USER_SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "email": {"type": "string"},
                   "name": {"type": ["string", "null"]},
                   "roles": {"type": "array", "items": {"type": "string"}},
                   "team": {"type": ["string", "null"]}, "active": {"type": "boolean"},
                   "language": {"type": ["string", "null"],
                                "description": "of the user's notifications; null: the "
                                               "setup's first"}},
    "required": ["id", "email", "name", "roles", "team", "active"],
}


def _body_schemas(roles: list[str], languages: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """What `POST /api/users` and `PATCH /api/users/{id}` take, as the users service checks
    it (engine/access/users.py): the published contract, not just "an object"."""
    role_list = {"type": "array", "minItems": 1, "uniqueItems": True,
                 "items": {"enum": roles}, "description": "the setup's roles, or admin"}
    name = {"type": ["string", "null"], "minLength": 1, "maxLength": 200}
    team = {"type": ["string", "null"], "minLength": 1, "maxLength": 100}
    language = {"type": ["string", "null"], "enum": [*languages, None],
                "description": "the language of the user's notifications: one of the setup's"}
    return {
        "create": {"type": "object", "required": ["email", "roles"],
                   "additionalProperties": False, "properties": {
                       "email": {"type": "string", "format": "email", "minLength": 3,
                                 "maxLength": EMAIL_LENGTH,
                                 "description": "stored in lower case; unique"},
                       "roles": role_list, "name": name, "team": team, "language": language,
                       "expires_days": {"type": ["integer", "null"], "minimum": 1,
                                        "maximum": 3650}}},
        "change": {"type": "object", "additionalProperties": False, "properties": {
            "roles": role_list, "name": name, "team": team, "language": language,
            "active": {"type": "boolean"}}},
    }


def add_user_routes(app: APIRouter, kt: Kartoteka, cap: int,
                    refused: dict[int | str, dict[str, Any]]) -> None:
    """The users' calls, for every app over `kt`'s setup (api.app `_services`): their
    handlers find the engine with `engine_of(request)`; `kt` only shapes the schemas."""
    known_roles, languages = kt.users.known_roles, kt.users.languages

    def user_id(request: Request, key: str = "id") -> int:
        return path_id(request, key, "user")

    async def me(request: Request) -> Response:
        no_query(request)
        engine = engine_of(request)
        user = engine.acting.user
        rights = {}
        for entity in engine.setup.entities:
            granted = engine.records.access.rights(entity)
            rights[entity] = {
                **{op: granted is None or granted.allows(op) for op in OPERATIONS},
                "hidden": sorted(granted.hidden) if granted else [],
                "readonly": sorted(granted.readonly) if granted else [],
            }
        return json_response({"user": None if user is None else user.as_json(),
                              "manages_users": engine.users.may_manage(),
                              "rights": rights})

    async def list_users(request: Request) -> Response:
        no_query(request)
        found = await in_thread(engine_of(request).users.list)
        return json_response({"items": [u.as_json() for u in found]})

    async def create_user(request: Request) -> Response:
        no_query(request)
        body = await read_json(request, cap)
        user, token = await in_thread(engine_of(request).users.create, body)
        return json_response({"user": user.as_json(), "token": token}, 201,
                             {"Location": f"/api/users/{user.id}"})

    async def get_user(request: Request) -> Response:
        no_query(request)
        return json_response((await in_thread(engine_of(request).users.get,
                                                       user_id(request))).as_json())

    async def change_user(request: Request) -> Response:
        no_query(request)
        body = await read_json(request, cap)
        user = await in_thread(engine_of(request).users.change, user_id(request), body)
        return json_response(user.as_json())

    async def tokens(request: Request) -> Response:
        no_query(request)
        return json_response({"items": await in_thread(engine_of(request).users.tokens_of,
                                                               user_id(request))})

    async def new_token(request: Request) -> Response:
        no_query(request)
        # the body is optional here; when there is one, it is read under the cap
        has_body = request.headers.get("content-length", "0") != "0" or \
            "transfer-encoding" in request.headers
        body = await read_json(request, cap) if has_body else {}
        expires = body.get("expires_days") if isinstance(body, dict) else None
        token = await in_thread(engine_of(request).users.issue, user_id(request),
                                        expires_days=expires)
        return json_response({"token": token}, 201)

    async def revoke(request: Request) -> Response:
        no_query(request)
        await in_thread(engine_of(request).users.revoke_id, user_id(request),
                                user_id(request, "token_id"))
        return Response(status_code=204)

    def ok(schema: dict[str, Any], status: int = 200) -> dict[int | str, dict[str, Any]]:
        return {status: {"description": "OK", "content": {"application/json": {"schema": schema}}},
                **refused}

    listing = {"type": "object", "properties": {"items": {"type": "array", "items": USER_SCHEMA}}}
    bodies = _body_schemas(sorted(known_roles or ()), languages or ())
    with_token = {"type": "object", "properties": {"user": USER_SCHEMA, "token": {"type": "string"}}}
    for path, method, handler, summary, responses in (
        ("/api/me", "GET", me, "Who I am and what my roles let me do", ok({"type": "object"})),
        ("/api/users", "GET", list_users, "List users (admin)", ok(listing)),
        ("/api/users", "POST", create_user, "Add a user; answers its first token, once (admin)",
         ok(with_token, 201)),
        ("/api/users/{id}", "GET", get_user, "One user (admin)", ok(USER_SCHEMA)),
        ("/api/users/{id}", "PATCH", change_user,
         "Change a user's name, roles, team or active flag; disabling revokes its tokens (admin)",
         ok(USER_SCHEMA)),
        ("/api/users/{id}/tokens", "GET", tokens, "A user's tokens, never their values (admin)",
         ok({"type": "object"})),
        ("/api/users/{id}/tokens", "POST", new_token, "A new token for a user, shown once (admin)",
         ok({"type": "object", "properties": {"token": {"type": "string"}}}, 201)),
        ("/api/users/{id}/tokens/{token_id}", "DELETE", revoke, "Revoke a token (admin)",
         {204: {"description": "Revoked"}, **refused}),
    ):
        parameters = [{"name": key, "in": "path", "required": True,
                       "schema": {"type": "integer", "minimum": 1, "maximum": 10**18}}
                      for key in ("id", "token_id") if "{" + key + "}" in path]
        extra: dict[str, Any] = {"parameters": parameters}
        if method in ("POST", "PATCH") and handler is not new_token:
            extra["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": bodies["create" if method == "POST" else "change"]}}}
        app.add_api_route(path, handler, methods=[method], tags=["users"], summary=summary,
                          operation_id=f"{method.lower()}_{path.strip('/').replace('/', '_')}"
                          .replace("{", "").replace("}", ""),
                          response_class=Response, responses=responses, openapi_extra=extra)
    add_password_routes(app, kt, cap, refused)  # passwords and invitations: api/passwords.py
