"""The tables behind signing in to the web app: storage only; the service that reads and
writes them is `engine.access.sessions`.

    kt_password         a user's password, as an argon2 hash (one row per user who has one)
    kt_session          a signed-in browser: its cookie's and CSRF token's SHA-256 hashes,
                        when it began, was last used, and when it ends at the latest
    kt_invitation       a one-time link to choose a password: its token's hash, expiry, use
    kt_sign_in_failure  one row per failed sign-in, by a hash of the e-mail or the client
                        address: the rate limit counts them, so every process agrees
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from engine.types.columns import UTCDateTime, id_column_type


@dataclass(frozen=True)
class SessionTables:
    passwords: sa.Table
    sessions: sa.Table
    invitations: sa.Table
    failures: sa.Table


def _user_id(table: str) -> sa.Column[int]:
    return sa.Column("user_id", sa.BigInteger(), sa.ForeignKey(
        "kt_user.id", ondelete="CASCADE", name=f"fk_{table}_user_id"), nullable=False, index=True)


def session_tables(metadata: sa.MetaData) -> SessionTables:
    """The tables, in `metadata` (which must hold `kt_user`: engine.storage.users)."""
    passwords = sa.Table(
        "kt_password", metadata,
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey(
            "kt_user.id", ondelete="CASCADE", name="fk_kt_password_user_id"), primary_key=True,
            autoincrement=False),
        sa.Column("hash", sa.String(255), nullable=False),
        sa.Column("set_at", UTCDateTime(), nullable=False),
    )
    sessions = sa.Table(
        "kt_session", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        _user_id("kt_session"),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("csrf_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    invitations = sa.Table(
        "kt_invitation", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        _user_id("kt_invitation"),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sqlite_autoincrement=True,
    )
    failures = sa.Table(
        "kt_sign_in_failure", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Index("ix_kt_sign_in_failure_key_at", "key_hash", "at"),
        sqlite_autoincrement=True,
    )
    return SessionTables(passwords, sessions, invitations, failures)
