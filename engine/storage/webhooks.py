"""The table of webhook subscriptions an admin makes over the API (`kt_webhook`): storage
only; the service that checks and changes them is `engine.automations.subscriptions`,
and the worker (engine/automations/worker.py) delivers their events like a setup's
`webhook:` action.

The signing secret is stored as given (the worker needs it to sign each delivery); it is
never answered by the API, only shown once when the server generated it.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.types.columns import UTCDateTime, id_column_type, json_column

#: the longest URL a subscription takes
URL_LENGTH = 2000
#: the longest signing secret a subscription takes
SECRET_LENGTH = 200


def webhook_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "kt_webhook", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(64), nullable=False),
        #: the triggers it listens to: created, updated, deleted, stage_entered, stage_left
        sa.Column("events", json_column(), nullable=False),
        sa.Column("url", sa.String(URL_LENGTH), nullable=False),
        sa.Column("secret", sa.String(SECRET_LENGTH), nullable=False),
        #: whose view of the record is sent (None: every field)
        sa.Column("role", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
