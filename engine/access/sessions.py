"""Signing in to the web app: passwords, browser sessions, invitations, and the limit on
failed sign-ins. The HTTP side (cookies, CSRF, pages) is `api/auth.py` and `api/signin/`.

A session is a random token in the browser's `kt_session` cookie, stored only as its
SHA-256 hash with its user, a CSRF token's hash (the `kt_csrf` cookie the page sends back
in `X-CSRF-Token`: bound to this session, useless with another), when it began, was last
used and ends at the latest. It ends after `idle_hours` without a request, after
`absolute_days` in any case, at sign-out, and when its user is disabled or given a new
password by an admin. Passwords are argon2 hashes (`engine.access.passwords`).

An invitation is a one-time link (`/app/invite/<token>`) to choose a password: stored
hashed, valid `invitation_days`, used once; a newer one replaces the user's older ones.

Failed sign-ins are rows of `kt_sign_in_failure`, by a hash of the e-mail and of the
client's address: over `failures_per_email` (or `failures_per_address`) within
`failure_window_minutes`, sign-in answers 429 with Retry-After, before any password is
checked. Kept in the database, so every process serving it counts the same failures. A
success clears its e-mail's count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from engine.access.acting import User
from engine.access.passwords import hash_password, needs_rehash, password_problems, verify_password
from engine.access.users import Users, _user, hash_token
from engine.errors import (
    DatabaseMismatch,
    ErrorDetail,
    Forbidden,
    NotFound,
    SettingsError,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)
from engine.storage.database import Database
from engine.storage.sessions import SessionTables
from engine.storage.users import EMAIL_LENGTH
from engine.types.fields import ValueProblem, check_text

log = logging.getLogger("kartoteka.auth")
SESSION_PREFIX = "kts_"
INVITATION_PREFIX = "kti_"
#: a session's last use is written at most this often (not a write per request)
TOUCH_SECONDS = 60
#: how long a checked session is trusted without asking the database again (a session
#: ended by another process, the command line, stops working within this time)
CACHE_SECONDS = 2.0
SIGN_IN_FAILED = "the e-mail or the password is not right"


@dataclass(frozen=True)
class SessionSettings:
    """How long sessions and invitations last, and the limit on failed sign-ins."""

    idle_hours: float = 12
    absolute_days: float = 14
    invitation_days: float = 7
    failures_per_email: int = 5
    failures_per_address: int = 50
    failure_window_minutes: float = 15

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise SettingsError(f"sessions.{item.name} is {value!r}: it must be a positive number")


@dataclass(frozen=True)
class SignedIn:
    """A new session: the cookies' values, shown once, and how long they live."""

    user: User
    token: str
    csrf: str
    max_age: int


@dataclass(frozen=True)
class Session:
    id: int
    user: User
    csrf_hash: str

    def csrf_matches(self, token: str | None) -> bool:
        return bool(token) and secrets.compare_digest(
            hash_token(token or ""), self.csrf_hash)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Sessions:
    """Passwords, sessions and invitations of one database's users."""

    def __init__(self, tables: SessionTables, users: Users, database: Database,
                 settings: SessionSettings | None = None):
        self.t = tables
        self.users = users
        self.db = database
        self.settings = settings or SessionSettings()
        #: the current time; a test may move it
        self.clock: Callable[[], dt.datetime] = _now
        #: session token hash → (when checked, the session, when it ends unless used, when
        #: last used)
        self._known: dict[str, tuple[float, Session, dt.datetime, dt.datetime]] = {}
        self._lock = threading.Lock()
        users.on_disable.append(self._user_disabled)

    @property
    def idle(self) -> dt.timedelta:
        return dt.timedelta(hours=self.settings.idle_hours)

    @property
    def lifetime(self) -> dt.timedelta:
        return dt.timedelta(days=self.settings.absolute_days)

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.settings.failure_window_minutes)

    # -- passwords -------------------------------------------------------------------------------
    def set_password(self, user_id: int, body: Any) -> None:
        """An admin sets a user's password (`{"password": ...}`); the user's sessions end."""
        self._require_manager()
        password = _only(body, {"password"})["password"]
        user = self.users.get(user_id)
        _raise_problems(password_problems(password, user.email))
        hashed = hash_password(password)
        with self.db.write() as conn:
            self._store(conn, user_id, hashed)
            self.end_all(conn, user_id)

    def set_password_of(self, email: str, password: str) -> User:
        """The command line's `kartoteka user password EMAIL`."""
        self._require_manager()
        with self.db.read() as conn:
            user = self.users._find(conn, email)
        self.set_password(user.id, {"password": password})
        return user

    def change_own_password(self, body: Any, *, keep: int | None, address: str | None) -> None:
        """The acting user changes their own password with the current one
        (`{"old_password", "password"}`); their other sessions end. A wrong current password
        counts as a failed sign-in."""
        user = self.users.acting.user
        if user is None:
            raise Forbidden("no one is signed in (the database has no users): there is no "
                            "password of yours to change", code="no_user")
        values = _only(body, {"old_password", "password"})
        old = values["old_password"]
        keys = self._keys(user.email, address)
        now = self.clock()
        with self.db.read() as conn:
            self._check_limit(conn, keys, now)
            stored = conn.execute(sa.select(self.t.passwords.c.hash).where(
                self.t.passwords.c.user_id == user.id)).scalar()
        if not verify_password(stored, old):
            self._failed(keys, now, "wrong current password")
            raise Forbidden("the current password is not right",
                            [ErrorDetail("old_password", "is not your current password")],
                            code="wrong_password")
        new = values["password"]
        _raise_problems(password_problems(new, user.email))
        hashed = hash_password(new)
        with self.db.write() as conn:
            self._store(conn, user.id, hashed)
            self.end_all(conn, user.id, keep=keep)

    def has_password(self, user_id: int) -> bool:
        with self.db.read() as conn:
            return conn.execute(sa.select(self.t.passwords.c.user_id).where(
                self.t.passwords.c.user_id == user_id)).first() is not None

    # -- signing in and out ----------------------------------------------------------------------
    def sign_in(self, email: Any, password: Any, address: str | None) -> SignedIn:
        """A new session for the user with this e-mail and password; Unauthorized (the same
        answer whichever was wrong) or TooManyRequests."""
        problems = [ErrorDetail(key, "is required, as text") for key, value
                    in (("email", email), ("password", password)) if not isinstance(value, str)]
        _raise_problems(problems, "give an e-mail and a password")
        assert isinstance(email, str) and isinstance(password, str)
        email = email.strip().lower()
        keys = self._keys(email, address)
        now = self.clock()
        row = None
        # counted as a failure before the (slow) check, under the limit's lock: guesses sent
        # in parallel cannot pass the limit together; a success takes its count back
        attempt = self._attempt(keys, now)
        with self.db.read() as conn:
            if _storable(email) and len(email) <= EMAIL_LENGTH:
                u, p = self.users.users, self.t.passwords
                row = conn.execute(sa.select(u, p.c.hash).select_from(
                    u.outerjoin(p, p.c.user_id == u.c.id)).where(u.c.email == email)).first()
        stored = row.hash if row is not None and row.active else None
        if not verify_password(stored, password[:2000]) or row is None:
            log.warning("sign-in failed: %s", "unknown e-mail" if row is None else
                        "disabled user" if not row.active else "wrong password")
            raise Unauthorized(SIGN_IN_FAILED, code="sign_in_failed")
        with self.db.write() as conn:
            f = self.t.failures
            conn.execute(sa.delete(f).where(sa.or_(f.c.key_hash == keys[0][0], f.c.id.in_(attempt))))
            if stored is not None and needs_rehash(stored):
                self._store(conn, row.id, hash_password(password))
            return self._begin(conn, _user(row), now)

    def authenticate(self, token: str) -> Session:
        """The session a `kt_session` cookie names, or Unauthorized."""
        if not token.startswith(SESSION_PREFIX) or len(token) > 200 or not token.isascii():
            raise Unauthorized("you are not signed in: sign in again", code="no_session")
        digest = hash_token(token)
        now = self.clock()
        cached = self._known.get(digest)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS and cached[2] > now \
                and (now - cached[3]).total_seconds() < TOUCH_SECONDS:
            return cached[1]
        s = self.t.sessions
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(self.users.users, s.c.id.label("session_id"), s.c.csrf_hash,
                          s.c.last_used_at, s.c.expires_at)
                .join(s, s.c.user_id == self.users.users.c.id).where(s.c.token_hash == digest)
            ).first()
        if row is None or not row.active:
            raise Unauthorized("your session has ended: sign in again", code="no_session")
        ends = min(row.expires_at, row.last_used_at + self.idle)
        if ends <= now:
            with self.db.write() as conn:
                conn.execute(sa.delete(s).where(s.c.id == row.session_id))
            raise Unauthorized("your session has expired: sign in again", code="no_session")
        used = row.last_used_at
        if (now - used).total_seconds() >= TOUCH_SECONDS:
            with self.db.write() as conn:
                conn.execute(sa.update(s).where(s.c.id == row.session_id).values(last_used_at=now))
            ends, used = min(row.expires_at, now + self.idle), now
        session = Session(row.session_id, _user(row), row.csrf_hash)
        with self._lock:
            if len(self._known) >= 10_000:
                self._known.clear()
            self._known[digest] = (time.monotonic(), session, ends, used)
        return session

    def sign_out(self, session_id: int) -> None:
        with self.db.write() as conn:
            conn.execute(sa.delete(self.t.sessions).where(self.t.sessions.c.id == session_id))
        self._forget()

    def end_all(self, conn: sa.Connection, user_id: int, keep: int | None = None) -> None:
        """End a user's sessions (but `keep`), inside the caller's transaction."""
        s = self.t.sessions
        where = s.c.user_id == user_id
        if keep is not None:
            where = sa.and_(where, s.c.id != keep)
        conn.execute(sa.delete(s).where(where))
        self._forget()

    # -- invitations -----------------------------------------------------------------------------
    def invite(self, email: str) -> tuple[User, str, dt.datetime]:
        """A new one-time invitation for an active user, by e-mail: (user, token, expiry);
        the user's earlier unused ones no longer work."""
        self._require_manager()
        with self.db.read() as conn:
            user = self.users._find(conn, email)
        return self.invite_id(user.id)

    def invite_id(self, user_id: int) -> tuple[User, str, dt.datetime]:
        self._require_manager()
        user = self.users.get(user_id)
        if not user.active:
            raise ValidationFailed("the user is disabled", [ErrorDetail("active", "is false")])
        now = self.clock()
        token = INVITATION_PREFIX + secrets.token_urlsafe(32)
        expires = now + dt.timedelta(days=self.settings.invitation_days)
        i = self.t.invitations
        with self.db.write() as conn:
            conn.execute(sa.delete(i).where(i.c.user_id == user_id, i.c.used_at.is_(None)))
            conn.execute(sa.insert(i).values(user_id=user_id, token_hash=hash_token(token),
                                             created_at=now, expires_at=expires))
        return user, token, expires

    def invitation(self, token: str) -> User:
        """The user an unused, unexpired invitation is for, or NotFound."""
        if not token.startswith(INVITATION_PREFIX) or len(token) > 200 or not token.isascii():
            raise _no_invitation()
        i, u = self.t.invitations, self.users.users
        with self.db.read() as conn:
            row = conn.execute(sa.select(u).join(i, i.c.user_id == u.c.id).where(
                i.c.token_hash == hash_token(token), i.c.used_at.is_(None),
                i.c.expires_at > self.clock())).first()
        if row is None or not row.active:
            raise _no_invitation()
        return _user(row)

    def accept(self, token: str, body: Any) -> SignedIn:
        """Use an invitation: set the password it is for (`{"password": ...}`) and sign in."""
        user = self.invitation(token)
        password = _only(body, {"password"})["password"]
        _raise_problems(password_problems(password, user.email))
        hashed = hash_password(password)
        now = self.clock()
        i = self.t.invitations
        with self.db.write() as conn:
            used = conn.execute(sa.update(i).where(
                i.c.token_hash == hash_token(token), i.c.used_at.is_(None), i.c.expires_at > now
            ).values(used_at=now)).rowcount
            if not used:  # another request used it first
                raise _no_invitation()
            self._store(conn, user.id, hashed)
            self.end_all(conn, user.id)
            conn.execute(sa.delete(self.t.failures).where(
                self.t.failures.c.key_hash == _key("email", user.email)))
            return self._begin(conn, user, now)

    # -- helpers ---------------------------------------------------------------------------------
    def require_tables(self) -> None:
        """DatabaseMismatch unless the database has the sign-in's tables (a database made
        before them: `kartoteka migrate` creates them)."""
        inspector = sa.inspect(self.db.engine)
        if not all(inspector.has_table(t.name) for t in (self.users.users, self.t.invitations,
                                                         self.t.passwords, self.t.sessions)):
            raise DatabaseMismatch("the database has no sign-in tables yet: run "
                                   "`kartoteka migrate SETUP --db URL` first")

    def _require_manager(self) -> None:
        if not self.users.may_manage():
            raise Forbidden("only an admin may manage users", code="operation_forbidden")

    def _store(self, conn: sa.Connection, user_id: int, hashed: str) -> None:
        p = self.t.passwords
        now = self.clock()
        if conn.execute(sa.update(p).where(p.c.user_id == user_id)
                        .values(hash=hashed, set_at=now)).rowcount == 0:
            conn.execute(sa.insert(p).values(user_id=user_id, hash=hashed, set_at=now))

    def _begin(self, conn: sa.Connection, user: User, now: dt.datetime) -> SignedIn:
        s = self.t.sessions
        conn.execute(sa.delete(s).where(s.c.user_id == user.id, sa.or_(
            s.c.expires_at <= now, s.c.last_used_at <= now - self.idle)))  # the user's stale ones
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        conn.execute(sa.insert(s).values(
            user_id=user.id, token_hash=hash_token(token), csrf_hash=hash_token(csrf),
            created_at=now, last_used_at=now, expires_at=now + self.lifetime))
        return SignedIn(user, token, csrf, int(self.lifetime.total_seconds()))

    def _keys(self, email: str, address: str | None) -> list[tuple[str, int]]:
        """The failure counters a sign-in touches, the e-mail's first, with their limits."""
        keys = [(_key("email", email.strip().lower()), self.settings.failures_per_email)]
        if address:
            keys.append((_key("address", address), self.settings.failures_per_address))
        return keys

    def _check_limit(self, conn: sa.Connection, keys: list[tuple[str, int]],
                     now: dt.datetime) -> None:
        f = self.t.failures
        for key, limit in keys:
            count, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(f.c.at)).where(
                f.c.key_hash == key, f.c.at > now - self.window)).one()
            if count >= limit:
                wait = max(1, math.ceil((oldest + self.window - now).total_seconds()))
                raise TooManyRequests(
                    f"too many failed sign-ins: try again in {math.ceil(wait / 60)} minute(s)",
                    retry_after=wait)

    def _attempt(self, keys: list[tuple[str, int]], now: dt.datetime) -> list[int]:
        """Check the limits and count a sign-in as failed, in one write (on PostgreSQL
        under a lock per counter, so two attempts never both pass a limit of one left);
        the ids of the rows counting it."""
        f = self.t.failures
        with self.db.write() as conn:
            if conn.dialect.name == "postgresql":
                for key, _ in sorted(keys):
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:kt_key)"),
                                 {"kt_key": int(key[:15], 16)})
            conn.execute(sa.delete(f).where(f.c.at <= now - self.window))
            self._check_limit(conn, keys, now)
            return [conn.execute(sa.insert(f).values(key_hash=key, at=now).returning(f.c.id))
                    .scalar_one() for key, _ in keys]

    def _failed(self, keys: list[tuple[str, int]], now: dt.datetime, reason: str) -> None:
        f = self.t.failures
        with self.db.write() as conn:
            conn.execute(sa.delete(f).where(f.c.at <= now - self.window))
            conn.execute(sa.insert(f), [{"key_hash": key, "at": now} for key, _ in keys])
        log.warning("sign-in failed: %s", reason)

    def _user_disabled(self, conn: sa.Connection, user_id: int) -> None:
        """A disabled user's sessions end and their invitations stop working."""
        self.end_all(conn, user_id)
        i = self.t.invitations
        conn.execute(sa.delete(i).where(i.c.user_id == user_id, i.c.used_at.is_(None)))

    def _forget(self) -> None:
        with self._lock:
            self._known.clear()


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode("utf-8", "surrogatepass")).hexdigest()


def _storable(text: str) -> bool:
    try:
        check_text(text)
    except ValueProblem:
        return False
    return True


def _only(body: Any, allowed: set[str]) -> dict[str, Any]:
    """A JSON object's values of `allowed` keys (each present), or ValidationFailed."""
    if not isinstance(body, dict):
        raise ValidationFailed("the body is a JSON object", [ErrorDetail("body", "must be an object")])
    problems = [ErrorDetail(key, "is not known here; send: " + ", ".join(sorted(allowed)))
                for key in body if key not in allowed]
    problems += [ErrorDetail(key, "is required, as text") for key in sorted(allowed)
                 if not isinstance(body.get(key), str)]
    _raise_problems(problems)
    return body


def _raise_problems(problems: list[ErrorDetail], message: str = "the password is not valid") -> None:
    if problems:
        raise ValidationFailed(message, problems)


def _no_invitation() -> NotFound:
    return NotFound("this invitation link does not work: it was used already, has expired, or "
                    "a newer one replaced it; ask your administrator for a new one",
                    code="invitation_invalid")
