"""The table of the web app's saved views (`kt_view`): storage only; the service that
checks, reads and changes them, always for the acting user alone, is
`engine.records.saved_views`.

A view is one user's named query of one entity's list (`stage[eq]=won&sort=-amount`),
kept as the query string the list takes. `user_id` is NULL for the views made while a
database has no users (the open mode on loopback); deleting a user deletes their views.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.types.columns import UTCDateTime, id_column_type

#: the longest name a view may have, in characters
NAME_LENGTH = 100
#: the longest query a view keeps, in characters of its query string
QUERY_LENGTH = 4000


def view_table(metadata: sa.MetaData) -> sa.Table:
    """The table, in `metadata` (which must hold `kt_user`: engine.storage.users)."""
    return sa.Table(
        "kt_view", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey(
            "kt_user.id", ondelete="CASCADE", name="fk_kt_view_user_id"), nullable=True),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("name", sa.String(NAME_LENGTH), nullable=False),
        sa.Column("query", sa.String(QUERY_LENGTH), nullable=False),
        #: applied when the user opens the entity's list with no query of its own
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        #: a user's views of an entity, as the list page and GET /api/views read them
        #: and a name once per user and entity (the service also compares them case-folded)
        sa.UniqueConstraint("user_id", "entity", "name", name="uq_kt_view_user_entity_name"),
        sqlite_autoincrement=True,
    )
