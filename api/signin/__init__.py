"""The sign-in and invitation pages of the web app, and signing out:

    GET  /app/sign-in?next=/app/…    the form; sets a pre-session `kt_csrf` cookie
    POST /app/sign-in                {email, password, next?} → 200 {next, user} and the
                                     session's cookies; 401 (never saying which part was
                                     wrong), 429 with Retry-After, 403 csrf_failed
    POST /app/sign-out               ends the session (CSRF-checked like every other post)
    GET  /app/invite/<token>         choose a password (404 page when the link does not work)
    POST /app/invite/<token>         {password} → sets it, uses the link, signs in

Small self-contained pages (api/signin/page.html; no CDN, no third-party script), in the
setup's languages where words.py has them (`?lang=`, else Accept-Language), Persian right
to left. The pages post JSON from their own inline script, so the guard's JSON-only rule
(api/guard.py) stays without exception; each post must echo the `kt_csrf` cookie in
`X-CSRF-Token`, and an `Origin` header, when sent, must be this server's. Content
Security Policy: only this page's own script and style (by nonce), no framing.
"""

from __future__ import annotations

import html
import secrets
from pathlib import Path
from string import Template
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api.language import pick_language
from api.responses import json_response, read_json
from api.signin.cookies import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SIGN_IN_PATH,
    clear_cookies,
    csrf_cookie,
    is_https,
    new_csrf,
    read_cookie,
    safe_next,
    session_cookies,
)
from api.signin.words import NAMES, RTL, WORDS
from api.threads import in_thread
from engine.access.sessions import SignedIn
from engine.core import Kartoteka
from engine.errors import ErrorDetail, Forbidden, NotFound, ValidationFailed

PAGE = Template((Path(__file__).parent / "page.html").read_text(encoding="utf-8"))


def add_signin_routes(app: FastAPI, kt: Kartoteka) -> None:
    sessions = kt.sessions
    cap = kt.settings.max_body_bytes
    offered = [lang for lang in kt.setup.languages if lang in WORDS] or ["en"]
    known = [*offered, *(lang for lang in WORDS if lang not in offered)]

    def language(request: Request) -> str:
        asked = request.query_params.get("lang")
        if asked in known:
            return str(asked)
        return pick_language(request.headers.get("accept-language"), known) or "en"

    def page(request: Request, heading: str, body: str, status: int = 200) -> Response:
        """The page around `body` (HTML, its words already in `lang`)."""
        lang = language(request)
        nonce = secrets.token_urlsafe(16)
        here = html.escape(quote(request.url.path, safe="/"))  # the path is the client's text
        target = request.query_params.get("next")
        switch = " ".join(
            f'<a href="{here}?lang={code}' + (f"&amp;next={quote(target, safe='/')}" if target
                                                else "") + f'" hreflang="{code}">'
            f"{html.escape(NAMES.get(code, code))}</a>"
            for code in offered if code != lang)
        text = PAGE.substitute(
            lang=lang, dir="rtl" if lang in RTL else "ltr", nonce=nonce,
            title=html.escape(heading), app=html.escape(kt.setup.name),
            heading=html.escape(heading), body=body, languages=switch)
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        response = HTMLResponse(text, status, headers={
            "Content-Security-Policy": csp, "Cache-Control": "no-store",
            "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"})
        if read_cookie(request.headers, CSRF_COOKIE) is None:
            csrf_cookie(response, new_csrf(), is_https(request.scope))
        return response

    def form(request: Request, w: dict[str, str], action: str, fields: str, submit: str) -> str:
        """The page's form: its script posts the fields as JSON with the CSRF token."""
        csrf = read_cookie(request.headers, CSRF_COOKIE) or ""
        return (f'<form id="f" method="post" action="{html.escape(action)}" novalidate '
                f'data-wrong="{w["wrong"]}" data-too-many="{w["too_many"]}" '
                f'data-mismatch="{w["mismatch"]}" data-error="{w["error"]}">'
                f'<input type="hidden" name="csrf_token" value="{html.escape(csrf)}">{fields}'
                f'<p id="error" role="alert" hidden></p><button>{submit}</button></form>'
                f'<noscript><p>{w["needs_js"]}</p></noscript>')

    def escaped_words(request: Request) -> dict[str, str]:
        return {key: html.escape(value) for key, value in WORDS[language(request)].items()}

    async def sign_in_page(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if not kt.users.any_users():  # an open database has no one to sign in: the app is open
            return RedirectResponse(target, 303)
        w = escaped_words(request)
        fields = (f'<input type="hidden" name="next" value="{html.escape(target)}">'
                  f'<label>{w["email"]}<input name="email" type="email" autocomplete="username" '
                  'dir="ltr" required autofocus></label>'
                  f'<label>{w["password"]}<input name="password" type="password" '
                  'autocomplete="current-password" required></label>')
        return page(request, WORDS[language(request)]["sign_in"],
                    form(request, w, SIGN_IN_PATH, fields, w["sign_in"]))

    async def sign_in(request: Request) -> Response:
        _check_pre_session(request)
        body = await read_json(request, cap)
        if not isinstance(body, dict):
            raise ValidationFailed("the body is a JSON object",
                                   [ErrorDetail("body", "must be an object")])
        unknown = [ErrorDetail(k, "is not known here; send: email, password, next")
                   for k in body if k not in ("email", "password", "next")]
        if unknown:
            raise ValidationFailed("the sign-in is not valid", unknown)
        signed = await in_thread(sessions.sign_in, body.get("email"),
                                         body.get("password"), _address(request))
        return _signed_in(request, signed, safe_next(body.get("next")))

    async def sign_out(request: Request) -> Response:
        session = getattr(request.state, "session", None)
        if session is not None:
            await in_thread(sessions.sign_out, session.id)
        response = json_response({"next": SIGN_IN_PATH})
        clear_cookies(response, is_https(request.scope))
        return response

    async def invite_page(request: Request) -> Response:
        token = request.path_params["token"]
        w = escaped_words(request)
        try:
            user = await in_thread(sessions.invitation, token)
        except NotFound:
            return page(request, WORDS[language(request)]["sign_in"],
                        f'<p role="alert">{w["invalid_link"]}</p>'
                        f'<p><a href="{SIGN_IN_PATH}">{w["go_sign_in"]}</a></p>', 404)
        email = html.escape(user.email)
        fields = (f'<p class="note" dir="ltr">{email}</p>'
                  f'<input type="email" name="username" autocomplete="username" hidden '
                  f'value="{email}" disabled>'
                  f'<label>{w["password"]}<input name="password" type="password" minlength="10" '
                  'autocomplete="new-password" required autofocus></label>'
                  f'<p class="note">{w["rule"]}</p>'
                  f'<label>{w["again"]}<input name="again" type="password" '
                  'autocomplete="new-password" required></label>')
        action = f"/app/invite/{quote(token, safe='')}"
        return page(request, WORDS[language(request)]["choose"],
                    form(request, w, action, fields, w["save"]))

    async def accept(request: Request) -> Response:
        _check_pre_session(request)
        body = await read_json(request, cap)
        signed = await in_thread(sessions.accept, request.path_params["token"], body)
        return _signed_in(request, signed, "/app")

    for path, handler, method in ((SIGN_IN_PATH, sign_in_page, "GET"),
                                  (SIGN_IN_PATH, sign_in, "POST"),
                                  ("/app/sign-out", sign_out, "POST"),
                                  ("/app/invite/{token}", invite_page, "GET"),
                                  ("/app/invite/{token}", accept, "POST")):
        # plain Starlette routes (unpublished, the request their only argument): FastAPI's
        # analysis of each handler's signature would find nothing to inject
        app.add_route(path, handler, methods=[method], include_in_schema=False)


def _signed_in(request: Request, signed: SignedIn, target: str) -> Response:
    response = json_response({"next": target, "user": signed.user.as_json()})
    session_cookies(response, signed.token, signed.csrf, signed.max_age, is_https(request.scope))
    return response


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _check_pre_session(request: Request) -> None:
    """A sign-in or invitation post: from a page of this server (its Origin, when sent),
    echoing the `kt_csrf` cookie GET set — so no other site can sign a browser in."""
    origin = request.headers.get("origin")
    # host and port only: behind a proxy that ends TLS the scheme seen here may be http
    if origin is not None and urlsplit(origin).netloc.lower() != \
            request.headers.get("host", "").lower():
        raise Forbidden("this sign-in comes from another site's page", code="csrf_failed")
    cookie = read_cookie(request.headers, CSRF_COOKIE)
    sent = request.headers.get(CSRF_HEADER)
    if not cookie or not sent or not secrets.compare_digest(cookie.encode(), sent.encode()):
        raise Forbidden("send the kt_csrf cookie's value in the X-CSRF-Token header (open "
                        f"{SIGN_IN_PATH} first: it sets the cookie)", code="csrf_failed")

