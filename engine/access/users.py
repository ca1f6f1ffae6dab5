"""Users and their API tokens.

A token is shown once, when it is made, and stored only as its SHA-256 hash; it may
expire, and it is revoked when its user is disabled. While a database has no users the
API is open (and `serve` binds to loopback only); from the first user on, every `/api`
call needs `Authorization: Bearer <token>`. Failed authentications are counted (see
`failures`) and logged without the token.

Each user has roles (those of the setup's `roles:`, or the built-in `admin`) and may
have a team; `engine/access/scopes.py` turns them into what the user may reach. Users are
managed here by e-mail (the command line) or by id (the API, `/api/users`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from engine.access.acting import Acting, User
from engine.errors import (
    DatabaseMismatch,
    ErrorDetail,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from engine.setup.names import identifier_problem
from engine.setup.roles import ADMIN
from engine.storage.database import Database
from engine.storage.users import EMAIL_LENGTH, LANGUAGE_LENGTH
from engine.types.columns import utc_text
from engine.types.fields import ValueProblem, check_text

log = logging.getLogger("kartoteka.auth")
TOKEN_PREFIX = "kt_"
#: how long a checked token is trusted without asking the database again: a token revoked
#: or a user disabled by another process (the command line) stops working within this time
TOKEN_CACHE_SECONDS = 2.0
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
#: a language code, as the setup's `languages:` takes them
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Users:
    """Users and tokens of one database. Managing them (everything but authenticating)
    checks the acting user itself: the system (the command line, an open database) or a
    user whose roles manage users (`manages_users`) — not left to the HTTP layer."""

    def __init__(self, users: sa.Table, tokens: sa.Table, database: Database,
                 known_roles: frozenset[str] | None = None, *, acting: Acting | None = None,
                 manages_users: Callable[[User], bool] | None = None,
                 languages: tuple[str, ...] | None = None):
        self.users = users
        self.tokens = tokens
        self.db = database
        self.known_roles = known_roles
        #: the setup's languages, one of which a user's language must be (None: any code)
        self.languages = languages
        self.acting = acting or Acting()
        self._manages_users = manages_users or (lambda user: ADMIN in user.roles)
        self._seen_users = False  # once a database has users it never goes back to open
        #: token hash → (when checked, user, expiry): a token is looked up at most once
        #: per TOKEN_CACHE_SECONDS; changes made here clear it at once
        self._known: dict[str, tuple[float, User, dt.datetime | None]] = {}
        self._checked_at = -1.0
        self._lock = threading.Lock()
        self.failures = 0
        #: called inside the transaction that disables a user, with its id (the sessions
        #: service ends the user's browser sessions: engine/access/sessions.py)
        self.on_disable: list[Callable[[sa.Connection, int], None]] = []

    # -- managing ----------------------------------------------------------------------------
    def may_manage(self) -> bool:
        """Whether the acting user may manage users (the system always may)."""
        user = self.acting.user
        return user is None or self._manages_users(user)

    def _require_manager(self) -> None:
        if not self.may_manage():
            raise Forbidden("only an admin may manage users", code="operation_forbidden")

    def add(self, email: str, roles: list[str], *, team: str | None = None,
            name: str | None = None, expires_days: int | None = None,
            language: str | None = None) -> tuple[User, str]:
        """Create a user and its first token; the token is returned once and never stored."""
        self._require_manager()
        problems = _text_problems(email=email, name=name, team=team)
        problems += self._language_problems(language)
        if problems:  # what neither database can store never reaches the other checks
            raise ValidationFailed("the user is not valid", problems)
        email = email.strip().lower()
        if not _EMAIL.match(email):
            problems.append(ErrorDetail("email", "is not an e-mail address"))
        elif len(email) > EMAIL_LENGTH:  # counted as stored: lowercasing can lengthen it
            problems.append(ErrorDetail("email", f"must be at most {EMAIL_LENGTH} characters "
                                                 "(in lower case, as it is stored)"))
        problems += self._role_problems(roles)
        if team is not None and not (isinstance(team, str) and 0 < len(team) <= 100):
            problems.append(ErrorDetail("team", "must be a name of at most 100 characters"))
        if problems:
            raise ValidationFailed("the user is not valid", problems)
        self._require_tables()
        now = dt.datetime.now(dt.UTC)
        with self.db.write() as conn:
            if conn.execute(sa.select(self.users.c.id).where(self.users.c.email == email)).first():
                raise ValidationFailed("the user exists",
                                       [ErrorDetail("email", f"{email} is already a user")])
            user_id = conn.execute(sa.insert(self.users).values(
                email=email, name=name, roles=list(roles), team=team, active=True, created_at=now,
                language=language,
            ).returning(self.users.c.id)).scalar_one()
            token = self._issue(conn, user_id, now, expires_days)
        return User(user_id, email, name, tuple(roles), team, True, language), token

    def create(self, body: Any) -> tuple[User, str]:
        """`add` from a JSON body: {email, roles, team?, name?, expires_days?, language?}."""
        self._require_manager()
        allowed = {"email", "roles", "team", "name", "expires_days", "language"}
        if not isinstance(body, dict):
            raise ValidationFailed("a user is a JSON object",
                                   [ErrorDetail("body", "must be an object")])
        problems = [ErrorDetail(key, "is not a user property; use: " + ", ".join(sorted(allowed)))
                    for key in body if key not in allowed]
        if not isinstance(body.get("email"), str):
            problems.append(ErrorDetail("email", "is required, as text"))
        problems += self._role_problems(body.get("roles"))
        expires = body.get("expires_days")
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int)
                                    or not 1 <= expires <= 3650):
            problems.append(ErrorDetail("expires_days", "must be between 1 and 3650"))
        name = body.get("name")
        for key, limit in (("name", 200), ("team", 100)):  # as `change` checks them
            value = body.get(key)
            if value is not None and not (isinstance(value, str) and 0 < len(value) <= limit):
                problems.append(ErrorDetail(key, f"must be text of at most {limit} characters"))
        problems += self._language_problems(body.get("language"))
        if problems:
            raise ValidationFailed("the user is not valid", problems)
        return self.add(body["email"], body["roles"], team=body.get("team"), name=name,
                        expires_days=expires, language=body.get("language"))

    def _role_problems(self, roles: Any) -> list[ErrorDetail]:
        if not isinstance(roles, list) or not roles:
            return [ErrorDetail("roles", "give at least one role")]
        problems = []
        for role in roles:
            problem = identifier_problem(role)
            if problem:
                problems.append(ErrorDetail("roles", problem))
            elif self.known_roles is not None and role not in self.known_roles:
                problems.append(ErrorDetail(
                    "roles", f"no role {role!r} in the setup; roles: "
                             + ", ".join(sorted(self.known_roles))))
        return problems

    def _language_problems(self, language: Any) -> list[ErrorDetail]:
        """None (the setup's first language), or one of the setup's languages."""
        if language is None:
            return []
        if self.languages is not None:
            if language in self.languages:
                return []
            return [ErrorDetail("language", f"{language!r} is not a language of the setup; "
                                "languages: " + ", ".join(self.languages))]
        if isinstance(language, str) and _LANGUAGE.match(language) \
                and len(language) <= LANGUAGE_LENGTH:
            return []
        return [ErrorDetail("language", f"{language!r} is not a language code such as en, ru, "
                                        "fa, zh, pt-BR")]

    def get(self, user_id: int) -> User:
        self._require_manager()
        with self.db.read() as conn:
            row = conn.execute(sa.select(self.users).where(self.users.c.id == user_id)).first()
        if row is None:
            raise NotFound(f"no user with id {user_id}")
        return _user(row)

    def change(self, user_id: int, body: Any) -> User:
        """Change a user's name, roles, team, language or active flag (disabling revokes its
        tokens)."""
        self._require_manager()
        allowed = {"name", "roles", "team", "active", "language"}
        if not isinstance(body, dict):
            raise ValidationFailed("a user change is a JSON object",
                                   [ErrorDetail("body", "must be an object")])
        problems = [ErrorDetail(key, "is not a user property you can change; use: "
                                + ", ".join(sorted(allowed))) for key in body if key not in allowed]
        if "roles" in body:
            problems += self._role_problems(body["roles"])
        if "active" in body and not isinstance(body["active"], bool):
            problems.append(ErrorDetail("active", "must be true or false"))
        problems += _text_problems(name=body.get("name"), team=body.get("team"))
        problems += self._language_problems(body.get("language"))
        for key, limit in (("name", 200), ("team", 100)):
            value = body.get(key)
            if value is not None and not (isinstance(value, str) and 0 < len(value) <= limit):
                problems.append(ErrorDetail(key, f"must be text of at most {limit} characters"))
        if problems:
            raise ValidationFailed("the user change is not valid", problems)
        now = dt.datetime.now(dt.UTC)
        with self.db.write() as conn:
            row = conn.execute(sa.select(self.users).where(self.users.c.id == user_id)).first()
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            stays_admin = body.get("active", row.active) and ADMIN in body.get("roles", row.roles)
            if row.active and ADMIN in row.roles and not stays_admin:
                others = [r for r in conn.execute(sa.select(self.users.c.roles).where(
                    self.users.c.id != user_id, self.users.c.active.is_(True))).scalars()
                          if ADMIN in (r or ())]
                if not others:
                    raise ValidationFailed(
                        "this is the last active admin: no one could manage users after this",
                        [ErrorDetail("roles" if "roles" in body else "active",
                                     "make another user admin first")], code="last_admin")
            if body:
                conn.execute(sa.update(self.users).where(self.users.c.id == user_id).values(**body))
            if body.get("active") is False:
                conn.execute(sa.update(self.tokens).where(
                    self.tokens.c.user_id == user_id, self.tokens.c.revoked_at.is_(None)
                ).values(revoked_at=now))
                for hook in self.on_disable:
                    hook(conn, user_id)
            row = conn.execute(sa.select(self.users).where(self.users.c.id == user_id)).one()
        self._forget_tokens()
        return _user(row)

    def issue(self, user_id: int, *, expires_days: int | None = None) -> str:
        """A new token for an active user, by id."""
        self._require_manager()
        if expires_days is not None and (isinstance(expires_days, bool) or not isinstance(
                expires_days, int) or not 1 <= expires_days <= 3650):
            raise ValidationFailed("the token is not valid",
                                   [ErrorDetail("expires_days", "must be between 1 and 3650")])
        with self.db.write() as conn:
            row = conn.execute(sa.select(self.users).where(self.users.c.id == user_id)).first()
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            if not row.active:
                raise ValidationFailed("the user is disabled", [ErrorDetail("active", "is false")])
            return self._issue(conn, user_id, dt.datetime.now(dt.UTC), expires_days)

    def tokens_of(self, user_id: int) -> list[dict[str, Any]]:
        """A user's tokens: when made, until when, revoked — never the token itself."""
        self._require_manager()
        self.get(user_id)
        t = self.tokens.c
        with self.db.read() as conn:
            rows = conn.execute(sa.select(t.id, t.created_at, t.expires_at, t.revoked_at)
                                .where(t.user_id == user_id).order_by(t.id)).all()
        return [{"id": r.id, "created_at": _iso(r.created_at), "expires_at": _iso(r.expires_at),
                 "revoked_at": _iso(r.revoked_at)} for r in rows]

    def revoke_id(self, user_id: int, token_id: int) -> None:
        """Revoke one of a user's tokens, by id."""
        self._require_manager()
        with self.db.write() as conn:
            done = conn.execute(sa.update(self.tokens).where(
                self.tokens.c.id == token_id, self.tokens.c.user_id == user_id,
                self.tokens.c.revoked_at.is_(None)
            ).values(revoked_at=dt.datetime.now(dt.UTC))).rowcount
        self._forget_tokens()
        if not done:
            raise NotFound(f"no active token {token_id} of user {user_id}")

    def token(self, email: str, *, expires_days: int | None = None) -> str:
        """A new token for an active user (the old ones stay valid until revoked)."""
        self._require_manager()
        now = dt.datetime.now(dt.UTC)
        with self.db.write() as conn:
            user = self._find(conn, email)
            if not user.active:
                raise ValidationFailed("the user is disabled", [ErrorDetail("email", "is disabled")])
            return self._issue(conn, user.id, now, expires_days)

    def disable(self, email: str) -> User:
        """Disable a user and revoke all of its tokens."""
        self._require_manager()
        now = dt.datetime.now(dt.UTC)
        with self.db.write() as conn:
            user = self._find(conn, email)
            conn.execute(sa.update(self.users).where(self.users.c.id == user.id).values(active=False))
            conn.execute(sa.update(self.tokens).where(
                self.tokens.c.user_id == user.id, self.tokens.c.revoked_at.is_(None)
            ).values(revoked_at=now))
            for hook in self.on_disable:
                hook(conn, user.id)
        self._forget_tokens()
        return User(user.id, user.email, user.name, user.roles, user.team, False, user.language)

    def revoke(self, token: str) -> None:
        with self.db.write() as conn:
            done = conn.execute(sa.update(self.tokens).where(
                self.tokens.c.token_hash == hash_token(token), self.tokens.c.revoked_at.is_(None)
            ).values(revoked_at=dt.datetime.now(dt.UTC))).rowcount
        self._forget_tokens()
        if not done:
            raise NotFound("no such active token")

    def list(self) -> list[User]:
        self._require_manager()
        self._require_tables()
        with self.db.read() as conn:
            rows = conn.execute(sa.select(self.users).order_by(self.users.c.id)).all()
        return [_user(row) for row in rows]

    # -- for the engine's own services (automations), inside their transaction ---------------
    def all_active(self, conn: sa.Connection) -> tuple[User, ...]:
        """Every active user, by id: for choosing whom an automation assigns or tells (a
        service acting as the system; no caller to check)."""
        rows = conn.execute(sa.select(self.users).where(self.users.c.active.is_(True))
                            .order_by(self.users.c.id)).all()
        return tuple(_user(row) for row in rows)

    def by_ids(self, conn: sa.Connection, ids: Iterable[int]) -> tuple[User, ...]:
        """The users with these ids (any that exist), in the order given."""
        wanted = tuple(dict.fromkeys(ids))
        if not wanted:
            return ()
        rows = {row.id: _user(row) for row in conn.execute(
            sa.select(self.users).where(self.users.c.id.in_(wanted)))}
        return tuple(rows[i] for i in wanted if i in rows)

    # -- authenticating ------------------------------------------------------------------------
    def any_users(self) -> bool:
        if self._seen_users:
            return True
        # a user added by another process (the CLI) closes the API within a second
        if time.monotonic() - self._checked_at < 1.0:
            return False
        self._checked_at = time.monotonic()
        try:
            with self.db.read() as conn:
                found = conn.execute(sa.select(self.users.c.id).limit(1)).first() is not None
        except sa.exc.OperationalError:  # no kt_user table yet: nobody can have a token
            return False
        except sa.exc.ProgrammingError:
            return False
        if found:
            self._seen_users = True
        return found

    def authenticate(self, authorization: str | None) -> User:
        """The user a `Bearer` header names, or Unauthorized (counted, token not logged)."""
        if not authorization:
            raise self._failed("missing", "send Authorization: Bearer <token>")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise self._failed("malformed", "send Authorization: Bearer <token>")
        now = dt.datetime.now(dt.UTC)
        digest = hash_token(token)
        cached = self._known.get(digest)
        if cached is not None and time.monotonic() - cached[0] < TOKEN_CACHE_SECONDS and (
                cached[2] is None or cached[2] > now):
            return cached[1]
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(self.users, self.tokens.c.expires_at, self.tokens.c.revoked_at)
                .join(self.tokens, self.tokens.c.user_id == self.users.c.id)
                .where(self.tokens.c.token_hash == digest)
            ).first()
        if row is None:
            raise self._failed("unknown", "the token is not valid")
        if row.revoked_at is not None or not row.active:
            raise self._failed("revoked", "the token was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise self._failed("expired", "the token has expired")
        user = _user(row)
        with self._lock:
            if len(self._known) >= 10_000:
                self._known.clear()
            self._known[digest] = (time.monotonic(), user, row.expires_at)
        return user

    def _forget_tokens(self) -> None:
        """After a revocation or a change of a user here: no cached answer outlives it."""
        with self._lock:
            self._known.clear()

    def _failed(self, reason: str, message: str) -> Unauthorized:
        with self._lock:
            self.failures += 1
        log.warning("authentication failed: %s token", reason)
        return Unauthorized(message)

    # -- helpers -------------------------------------------------------------------------------
    def _issue(self, conn: sa.Connection, user_id: int, now: dt.datetime,
               expires_days: int | None) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = None if expires_days is None else now + dt.timedelta(days=expires_days)
        conn.execute(sa.insert(self.tokens).values(
            user_id=user_id, token_hash=hash_token(token), created_at=now, expires_at=expires))
        self._seen_users = True
        return token

    def _find(self, conn: sa.Connection, email: str) -> User:
        row = conn.execute(sa.select(self.users).where(
            self.users.c.email == email.strip().lower())).first()
        if row is None:
            raise NotFound(f"no user {email}")
        return _user(row)

    def _require_tables(self) -> None:
        if not sa.inspect(self.db.engine).has_table("kt_user"):
            raise DatabaseMismatch("the database has no user tables yet: "
                                   "run `kartoteka migrate SETUP --db URL` first")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else utc_text(value)


def _user(row: Any) -> User:
    return User(row.id, row.email, row.name, tuple(row.roles or ()), row.team, bool(row.active),
                row.language)


def _text_problems(**values: Any) -> list[ErrorDetail]:
    """The records' rule for text, for users' e-mails, names and teams: no NUL, no lone
    UTF-16 surrogate (PostgreSQL refuses both; SQLite would store what cannot be read)."""
    problems = []
    for key, value in values.items():
        if isinstance(value, str):
            try:
                check_text(value)
            except ValueProblem as problem:
                problems.append(ErrorDetail(key, str(problem)))
    return problems
