"""The tables of users and their API tokens (`kt_user`, `kt_token`): storage only; the
users service that reads and writes them is `engine.access.users`."""

from __future__ import annotations

import sqlalchemy as sa

from engine.types.columns import UTCDateTime, id_column_type, json_column

#: the longest e-mail a user may have, counted in lower case as it is stored
EMAIL_LENGTH = 254
#: the longest language code a user may have (`pt-BR`, `zh-Hant-TW`)
LANGUAGE_LENGTH = 35


def user_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    users = sa.Table(
        "kt_user", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(EMAIL_LENGTH), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("roles", json_column(), nullable=False),
        sa.Column("team", sa.String(100), nullable=True),
        #: the language of the user's notifications and e-mails (one of the setup's; None:
        #: the setup's first)
        sa.Column("language", sa.String(LANGUAGE_LENGTH), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    tokens = sa.Table(
        "kt_token", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger(),
                  sa.ForeignKey("kt_user.id", ondelete="CASCADE", name="fk_kt_token_user_id"),
                  nullable=False, index=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sqlite_autoincrement=True,
    )
    return users, tokens
