"""What "nothing was written" is checked against: the rows of every table."""

from __future__ import annotations

import sqlalchemy as sa

from engine import Kartoteka


def rows_per_table(kt: Kartoteka, *skipped: str) -> tuple[int, ...]:
    """Rows of every table (records, history, links), by table name, but those whose name
    starts with `kt_migration` or one of `skipped`."""
    with kt.db.read(system="test: counting") as conn:
        names = sa.inspect(conn).get_table_names()
        return tuple(conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                     for name in sorted(names)
                     if not name.startswith(("kt_migration", *skipped)))
