"""`kartoteka import ENTITY FILE`: a CSV or XLSX file into an entity, with a progress bar.

A thin shell over `Kartoteka.imports` (engine/exchange/imports.py): the file is read as a
stream and written in batches through the same path as the bulk API. The progress bar
(rich) shows rows, rows per second and the time left; every bad row is written to
`--errors FILE.csv` as it is found (row, column, value, problem, code), or its first ones
printed. Exit code 0 when every row was imported (or, with --dry-run, would be), 1 when a
row failed or the file or its columns were refused.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from engine.errors import MalformedRequest
from engine.exchange.imports import MODES, ImportOptions, ImportProgress, RowError
from engine.exchange.jobs import report_writer
from engine.storage.database import DEFAULT_URL

#: the row errors printed when they go to no --errors file
SHOWN_ERRORS = 20
#: as kartoteka.cli's --db (not imported from there: that module registers this one)
DB_OPTION = click.option(
    "--db", "db_url", envvar="KARTOTEKA_DATABASE_URL", default=DEFAULT_URL, show_default=True,
    help="Database URL: sqlite:///file.db or postgresql+psycopg://user@host/name "
         "(or set KARTOTEKA_DATABASE_URL).")


def _mapping(path: Path | None) -> tuple[dict[str, str | None] | None, bool]:
    if path is None:
        return None, False
    from engine.errors import SetupError
    from engine.exchange.columns import read_mapping
    from engine.setup.source import read_yaml

    source, problems = read_yaml(path, path.name)
    if source is None or problems:
        raise SetupError(problems)

    def where(key: tuple[str | int, ...]) -> str:
        line, _ = source.line_of(key, key=True)
        return f"{path.name}:{line} " + (".".join(str(k) for k in key) or "(top)")

    return read_mapping(source.data, where)


@click.command("import")
@click.argument("entity")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--setup", "setup", type=click.Path(file_okay=False, path_type=Path),
              envvar="KARTOTEKA_SETUP", default=Path("schemas"), show_default=True,
              help="The setup folder (or set KARTOTEKA_SETUP).")
@DB_OPTION
@click.option("--dry-run", is_flag=True, help="Read and check every row; write nothing.")
@click.option("--upsert-by", default=None, metavar="FIELD[,FIELD]",
              help="Update the record with the row's value of this unique field (or set); "
                   "create it when there is none.")
@click.option("--mode", type=click.Choice(MODES), default="all", show_default=True,
              help="all: nothing is written if any row fails (one transaction); good: the "
                   "good rows are written, batch by batch.")
@click.option("--mapping", "mapping_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="A YAML file: columns: {\"Header\": field, ...}.")
@click.option("--skip-unknown", is_flag=True,
              help="Skip columns that match no field (listed as warnings) instead of refusing.")
@click.option("--errors", "errors_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every bad row here as CSV: row, column, value, problem, code.")
@click.option("--delimiter", default=None, help="CSV delimiter (default: sniffed).")
@click.option("--encoding", default=None, help="CSV encoding (default: UTF-8, else cp1251).")
@click.option("--sheet", default=None, help="XLSX sheet (default: the first).")
@click.option("--as-user", "as_user", default=None, metavar="EMAIL",
              help="Import as this user: their role's scope, fields and ownership.")
@click.option("--confirm-duplicates", is_flag=True,
              help="Write rows that may duplicate records (duplicates: rules in warn mode).")
@click.pass_context
def import_command(ctx: click.Context, entity: str, file: Path, setup: Path, db_url: str,
                   dry_run: bool, upsert_by: str | None, mode: str, mapping_file: Path | None,
                   skip_unknown: bool, errors_file: Path | None, delimiter: str | None,
                   encoding: str | None, sheet: str | None, as_user: str | None,
                   confirm_duplicates: bool) -> None:
    """Import a CSV or XLSX FILE into ENTITY (columns by field name or label)."""
    from engine.exchange.files import open_table
    from kartoteka.cli import _guarded, _open

    console = Console(stderr=True)

    def run() -> int:
        mapping, skip = _mapping(mapping_file)
        options = ImportOptions(
            mode=mode, dry_run=dry_run, mapping=mapping, skip_unknown=skip_unknown or skip,
            confirm_duplicates=confirm_duplicates,
            upsert_by=tuple(n.strip() for n in upsert_by.split(",") if n.strip())
            if upsert_by else None)
        kt = _open(setup, db_url)
        report: IO[str] | None = None
        try:
            kt.verify_database()
            user = _user(kt, as_user)
            with file.open("rb") as data, kt.acting.as_user(user):
                table = open_table(data, file.name, delimiter=delimiter, encoding=encoding,
                                   sheet=sheet)
                kt.imports.plan(entity, table.headers, options)  # before the bar: columns
                shown: list[RowError] = []
                on_error: Callable[[RowError], None] = shown.append
                if errors_file is not None:
                    report = errors_file.open("w", encoding="utf-8-sig", newline="")
                    on_error = report_writer(report)
                last = ImportProgress()
                with _bar(console) as (progress, task), _stop_between_batches() as stop:
                    def on_progress(p: ImportProgress) -> None:
                        nonlocal last
                        last = p
                        of = f" of {p.rows_total:,}" if p.rows_total else ""
                        progress.update(task, completed=p.fraction or 0.0,
                                        rows=f"{p.rows_done:,}{of} rows",
                                        rate=f"{p.rate:,.0f} rows/s")
                        stop()  # a Ctrl-C meanwhile stops the import here, between batches

                    # the objects alive before the import (the loaded engine) are kept out of
                    # the garbage collector's full passes while it runs (~7% of its CPU)
                    gc.freeze()
                    try:
                        result = kt.imports.run(entity, table, options,
                                                actor=None if user is None else user.id,
                                                on_progress=on_progress, on_error=on_error)
                    except KeyboardInterrupt:
                        click.echo(_interrupted(options, last), err=True)
                        return 130
                    finally:
                        gc.unfreeze()
        finally:
            if report is not None:
                report.close()
            kt.close()
        for warning in result.warnings:
            click.echo(f"warning: column {warning.field!r} {warning.problem}", err=True)
        for error in shown[:SHOWN_ERRORS]:
            click.echo(f"row {error.row}, {error.column or '(row)'} {error.value!r}: "
                       f"{error.problem}", err=True)
        p = result.progress
        if result.slow_path is not None and p.rows_done:
            click.echo("note: the import took its slower way (each row as a JSON body), as "
                       f"{result.slow_path}", err=True)
        if len(shown) > SHOWN_ERRORS:
            click.echo(f"... and {len(shown) - SHOWN_ERRORS} more: write them all with "
                       "--errors FILE.csv", err=True)
        click.echo(_summary(result.dry_run, result.mode, result.written, p,
                            errors_file if p.failed else None))
        return 1 if p.failed else 0

    code = _guarded(ctx, run)
    ctx.exit(code or 0)


@contextmanager
def _stop_between_batches() -> Iterator[Callable[[], None]]:
    """Ctrl-C stops the import between two batches, not inside one: a KeyboardInterrupt
    raised just after a batch's commit, before the import had counted it, made the
    message name one batch fewer than the database holds. The first Ctrl-C is noted and
    raised by the function given (called after each batch); a second one stops at once."""
    asked: list[bool] = []

    def note(signum: int, frame: Any) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(True)

    def stop() -> None:
        if asked:
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield stop  # only the main thread may take signals: Ctrl-C stops at once there
        return
    previous = signal.signal(signal.SIGINT, note)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _user(kt: Any, email: str | None) -> Any:
    if email is None:
        return None
    found = [u for u in kt.users.list() if u.email == email.strip().lower() and u.active]
    if not found:
        raise MalformedRequest(f"no active user {email!r}: see kartoteka user list",
                               code="invalid_import")
    return found[0]


def _interrupted(options: ImportOptions, last: ImportProgress) -> str:
    if options.dry_run or options.mode == "all":
        return "Interrupted: nothing was imported (the import is one transaction)."
    return (f"Interrupted: {last.rows_committed} rows are imported ({last.created} created, "
            f"{last.updated} updated, {last.failed} failed), up to row "
            f"{last.resume_at_row - 1} of the file; to resume, import its rows from row "
            f"{last.resume_at_row} on (the header is row 1), or the whole file again with "
            "--upsert-by.")


def _summary(dry_run: bool, mode: str, written: bool, p: ImportProgress,
             errors_file: Path | None) -> str:
    counts = f"{p.created} created, {p.updated} updated, {p.failed} failed of {p.rows_done} rows"
    where = f"; the bad rows are in {errors_file}" if errors_file is not None else ""
    if dry_run:
        return f"Dry run: {counts} (nothing was written){where}."
    if not written:
        return (f"Nothing was imported: {p.failed} of {p.rows_done} rows failed (mode all)"
                f"{where}; fix them, or import the good rows with --mode good.")
    return f"Imported: {counts}{where}."


class _bar:
    """A rich progress bar on stderr (only drawn on a terminal): the share of the file
    done (by bytes for a CSV, read once; by rows for XLSX), rows and rows/s, ETA."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]import"), BarColumn(), TextColumn("{task.fields[rows]}"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console, disable=not console.is_terminal,
            transient=False)

    def __enter__(self) -> tuple[Progress, TaskID]:
        self.progress.start()
        task = self.progress.add_task("import", total=1.0, rows="", rate="")
        return self.progress, task

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(import_command())
