"""`kartoteka export SETUP ENTITY`: what `GET /api/{e}/export` writes, from the command line.

    kartoteka export schemas client --where city=Kazan --sort name --out clients.csv
    kartoteka export schemas sale --format xlsx --values locale --language ru --out sales.xlsx
    kartoteka export schemas client --as-user anna@example.com --bom --delimiter ";" > mine.csv

The same engine call as the API (engine/records/export.py), so the same filters, search,
sort, options and cells. It acts as the system — every record, every field, as a script
does — unless `--as-user EMAIL` names a user, whose roles then decide the records and the
columns exactly as their token would over HTTP. With `--out`, the file is written beside
its place and renamed into it when complete, so a failed export leaves no half file.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from engine.access.acting import User
from engine.core import Kartoteka
from engine.errors import NotFound
from engine.records.export import BOOLEANS, DELIMITERS, FORMATS, HEADERS, VALUES, Exporter
from kartoteka.cli import DB_OPTION, SETUP_ARG, _guarded, _open, main


@main.command("export")
@SETUP_ARG
@click.argument("entity")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The file to write (default: standard output).")
@click.option("--where", "filters", multiple=True, metavar="FILTER",
              help="A list filter as the API writes it: city=Kazan, amount[gte]=1000, "
                   "client.city=Kazan (repeatable).")
@click.option("--q", "search", default=None, help="Search the entity's search fields.")
@click.option("--sort", default=None, help="Comma-separated fields, '-' for descending.")
@click.option("--headers", type=click.Choice(HEADERS), default="labels", show_default=True)
@click.option("--language", default=None,
              help="The labels' and values' language (default: the setup's first).")
@click.option("--values", type=click.Choice(VALUES), default="iso", show_default=True,
              help="iso: as the API writes them; locale: as the language does.")
@click.option("--bom", is_flag=True, help="CSV: start with a UTF-8 byte order mark (for Excel).")
@click.option("--delimiter", type=click.Choice(tuple(DELIMITERS)), default=None,
              help="CSV: the delimiter (default ,).")
@click.option("--keep-formulas", is_flag=True,
              help="CSV: write text starting with = + - @ as it is (no ' in front).")
@click.option("--titles", is_flag=True,
              help="After each link's id, a column with the linked record's title.")
@click.option("--as-user", "as_user", default=None, metavar="EMAIL",
              help="Export what this user may see (default: everything, as the system).")
@DB_OPTION
@click.pass_context
def export(ctx: click.Context, setup: Path, entity: str, fmt: str, out: Path | None,
           filters: tuple[str, ...], search: str | None, sort: str | None, headers: str,
           language: str | None, values: str, bom: bool, delimiter: str | None,
           keep_formulas: bool, titles: bool, as_user: str | None, db_url: str) -> None:
    """Export an entity's records as CSV or XLSX: every record matching the filters."""
    params = _params(filters, fmt=fmt, q=search, sort=sort, headers=headers,
                     language=language, values=values,
                     bom=BOOLEANS[0] if bom else None, delimiter=delimiter,
                     escape_formulas=BOOLEANS[1] if keep_formulas else None,
                     titles=BOOLEANS[0] if titles else None)

    def run() -> None:
        kt = _open(setup, db_url)
        try:
            if entity not in kt.setup.entities:
                raise NotFound(f"no entity {entity!r} in the setup; entities: "
                               + ", ".join(kt.setup.entities))
            user = _user(kt, as_user) if as_user else None
            with kt.acting.as_user(user):
                prepared = Exporter(kt.records, kt.clock).prepare(entity, params)
                if out is None:
                    count = prepared.write(sys.stdout.buffer)
                else:
                    count = _write_file(prepared, out)
            where = f" to {out}" if out else ""
            click.echo(f"Exported {count} {entity} record(s){where}.", err=True)
        finally:
            kt.close()
    _guarded(ctx, run)


def _params(filters: tuple[str, ...], **controls: str | None) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for text in filters:
        key, equals, value = text.partition("=")
        if not equals or not key:
            raise click.BadParameter(f"{text!r} is not FIELD=VALUE (e.g. city=Kazan, "
                                     "amount[gte]=1000)", param_hint="--where")
        params.append((key, value))
    renamed = {"fmt": "format"}
    params += [(renamed.get(key, key), value) for key, value in controls.items()
               if value is not None]
    return params


def _user(kt: Kartoteka, email: str) -> User:
    wanted = email.strip().lower()
    for user in kt.users.list():
        if user.email.lower() == wanted:
            if not user.active:
                raise NotFound(f"the user {email} is disabled")
            return user
    raise NotFound(f"no user {email} in this database (kartoteka user list)")


def _write_file(prepared: Any, out: Path) -> int:
    """Into a temporary file beside `out`, renamed over it once complete."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("wb") as file:
            count: int = prepared.write(file)
        os.replace(partial, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return count
