"""The table of import jobs (`kt_import_job`): storage only; the jobs service that runs and
reads them is `engine.exchange.jobs`. A job's row outlives the process that ran it:
its status, counts, result and error report (CSV) stay readable after a restart."""

from __future__ import annotations

import sqlalchemy as sa

from engine.types.columns import UTCDateTime, id_column_type, json_column


def import_job_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "kt_import_job", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(64), nullable=False),
        # queued | running | done | failed | interrupted
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("options", json_column(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True, index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("rows_done", sa.BigInteger(), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), nullable=True),
        #: rows of batches committed (mode good): where an interrupted job may resume
        sa.Column("rows_committed", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        #: the import's result (columns, warnings, first errors), or the error that stopped it
        sa.Column("result", json_column(), nullable=True),
        #: every row error as CSV (row, column, value, problem, code)
        sa.Column("report", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
