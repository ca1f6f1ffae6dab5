"""Import jobs: an import run in a thread of this process, its state kept in `kt_import_job`.

`start` records the job (status `queued`) and runs it in a daemon thread as the user who
started it; `get` answers its state: the live counts while this process runs it, else
the row. The row is written when the job starts and ends and, in mode `good`, after each
committed batch (in mode `all` and on a dry run the import is one transaction, so the row
is written only at the end; the live counts still move). Every row error goes to a CSV
report, kept in a temporary file while the job runs and stored with the job when it ends
(the first `REPORT_ROWS` errors; the counts say how many there were).

A job running when its process stops (a restart, a crash) cannot finish: `interrupt_orphans`,
called when a server starts, marks every job still `queued` or `running` as `interrupted`.
Mode `all` left nothing written; mode `good` left the batches it committed, and the job's
`rows_committed` says how many rows of the file they hold: import the rest of the file to
resume. One server process runs its own jobs: several processes over one database must
not call `interrupt_orphans` while another runs jobs.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from engine.access.acting import Acting, User
from engine.errors import NotFound, RequestError
from engine.exchange.files import Table
from engine.exchange.imports import ImportOptions, ImportProgress, ImportResult, Imports, RowError

log = logging.getLogger("kartoteka.import")

#: the most row errors a job's stored report keeps
REPORT_ROWS = 100_000
REPORT_HEADER = ("row", "column", "value", "problem", "code")
LIVE = ("queued", "running")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def report_writer(stream: IO[str]) -> Callable[[RowError], None]:
    """An `on_error` that writes each row error as a CSV line (after a header line)."""
    writer = csv.writer(stream)
    writer.writerow(REPORT_HEADER)

    def write(error: RowError) -> None:
        writer.writerow((error.row, error.column, error.value, error.problem, error.code))

    return write


@dataclass
class _Live:
    """A job this process runs: its progress as the import thread moves it."""

    progress: ImportProgress
    status: str = "queued"
    thread: threading.Thread | None = None


class ImportJobs:
    """The import jobs of one engine."""

    def __init__(self, imports: Imports, acting: Acting):
        self.imports = imports
        self.acting = acting
        self.db = imports.records.db
        self.table = imports.records.storage.import_jobs
        self._live: dict[int, _Live] = {}
        self._lock = threading.Lock()

    # -- starting --------------------------------------------------------------------------
    def start(self, entity: str, table: Table, file: IO[bytes], file_name: str,
              options: ImportOptions, *, user: User | None) -> dict[str, Any]:
        """Queue an import of `table` (read from `file`, closed when the job ends) and run
        it in a thread; the columns were checked by the caller (`Imports.plan`)."""
        now = _now()
        stored_options = {"mode": options.mode, "dry_run": options.dry_run,
                          "upsert_by": list(options.upsert_by) if options.upsert_by else None,
                          "skip_unknown": options.skip_unknown,
                          "mapping": dict(options.mapping) if options.mapping else None}
        with self.db.write(system="import jobs") as conn:
            job_id = int(conn.execute(sa.insert(self.table).values(
                entity=entity, status="queued", file_name=file_name[:255], options=stored_options,
                created_by=None if user is None else user.id, created_at=now, rows_done=0,
                rows_total=table.total, rows_committed=0, created=0, updated=0, failed=0,
            ).returning(self.table.c.id)).scalar_one())
        live = _Live(ImportProgress(rows_total=table.total, bytes_total=table.size))
        with self._lock:
            self._live[job_id] = live
        thread = threading.Thread(target=self._run, name=f"kartoteka-import-{job_id}",
                                  args=(job_id, entity, table, file, options, user, live),
                                  daemon=True)
        live.thread = thread
        thread.start()
        return self.get(job_id, user=user)

    def _run(self, job_id: int, entity: str, table: Table, file: IO[bytes],
             options: ImportOptions, user: User | None, live: _Live) -> None:
        report = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")
        errors = 0

        def on_error(error: RowError) -> None:
            nonlocal errors
            errors += 1
            if errors <= REPORT_ROWS:
                write(error)

        def on_progress(progress: ImportProgress) -> None:
            live.progress = progress
            if options.mode == "good" and not options.dry_run:
                self._save(job_id, progress, "running")

        write = report_writer(report)
        result: ImportResult | None = None
        failure: dict[str, Any] | None = None
        try:
            live.status = "running"
            self._save(job_id, live.progress, "running")
            with self.acting.as_user(user):
                result = self.imports.run(entity, table, options, actor=None if user is None
                                          else user.id, on_progress=on_progress,
                                          on_error=on_error)
            live.progress = result.progress
        except RequestError as error:
            failure = error.as_json()
        except Exception as error:  # the job ends either way; its row says why
            log.exception("import job %s failed", job_id)
            failure = {"error": {"code": "import_failed", "message": f"the import stopped: "
                                 f"{type(error).__name__}: {error}", "details": []}}
        finally:
            file.close()
        report.seek(0)
        text = report.read() if errors else None
        report.close()
        status = "failed" if failure is not None else "done"
        outcome = failure if failure is not None else result.as_json() if result else None
        self._save(job_id, live.progress, status, result=outcome, report=text, finished=True)
        with self._lock:
            self._live.pop(job_id, None)

    def _save(self, job_id: int, progress: ImportProgress, status: str, *,
              result: Any = None, report: str | None = None, finished: bool = False) -> None:
        values: dict[str, Any] = {
            "status": status, "rows_done": progress.rows_done, "rows_total": progress.rows_total,
            "rows_committed": progress.rows_committed, "created": progress.created,
            "updated": progress.updated, "failed": progress.failed}
        if finished:
            values.update(result=result, report=report, finished_at=_now())
        with self.db.write(system="import jobs") as conn:
            conn.execute(sa.update(self.table).where(self.table.c.id == job_id).values(**values))

    # -- reading ---------------------------------------------------------------------------
    def _row(self, job_id: int, user: User | None) -> dict[str, Any]:
        """The job's row, if `user` started it (or is the system): else NotFound, as for a
        record out of scope."""
        with self.db.read(system="import jobs") as conn:
            row = conn.execute(sa.select(self.table).where(self.table.c.id == job_id)).first()
        if row is None or (user is not None and row.created_by != user.id):
            raise NotFound(f"no import job {job_id}")
        return dict(row._mapping)

    def get(self, job_id: int, *, user: User | None, entity: str | None = None) -> dict[str, Any]:
        """The job's state: status, counts, and when it has ended its result."""
        row = self._row(job_id, user)
        if entity is not None and row["entity"] != entity:
            raise NotFound(f"no import job {job_id} for {entity}")
        with self._lock:
            live = self._live.get(job_id)
        answer = {"id": row["id"], "entity": row["entity"], "status": row["status"],
                  "file_name": row["file_name"], "options": row["options"],
                  "created_at": row["created_at"].isoformat().replace("+00:00", "Z"),
                  "finished_at": None if row["finished_at"] is None else
                  row["finished_at"].isoformat().replace("+00:00", "Z")}
        counts = ("rows_done", "rows_total", "rows_committed", "created", "updated", "failed")
        if live is not None and row["status"] in LIVE:
            answer["status"] = live.status
            answer.update({name: getattr(live.progress, name) for name in counts})
            eta = live.progress.eta
            answer.update(fraction=live.progress.fraction,
                          eta_seconds=None if eta is None else round(eta, 1))
        else:
            answer.update({name: row[name] for name in counts})
            answer.update(fraction=1.0 if row["status"] == "done" else None, eta_seconds=None)
        result = row["result"] or {}
        if "error" in result:
            answer["error"] = result["error"]
        answer["errors"] = result.get("errors", [])
        answer["warnings"] = result.get("warnings", [])
        answer["columns"] = result.get("columns")
        answer["written"] = result.get("written")
        answer["has_report"] = row["report"] is not None
        return answer

    def report(self, job_id: int, *, user: User | None, entity: str | None = None) -> str:
        """The job's error report as CSV (only a header when no row failed)."""
        row = self._row(job_id, user)
        if entity is not None and row["entity"] != entity:
            raise NotFound(f"no import job {job_id} for {entity}")
        if row["report"]:
            return str(row["report"])
        stream = io.StringIO()
        report_writer(stream)
        return stream.getvalue()

    def wait(self, job_id: int, timeout: float | None = None) -> None:
        """Until the job's thread ends (tests and scripts)."""
        with self._lock:
            live = self._live.get(job_id)
        if live is not None and live.thread is not None:
            live.thread.join(timeout)

    def interrupt_orphans(self) -> int:
        """Mark the jobs a stopped process left queued or running as `interrupted`."""
        with self._lock:
            mine = list(self._live)
        with self.db.write(system="import jobs") as conn:
            return int(conn.execute(sa.update(self.table).where(
                self.table.c.status.in_(LIVE), self.table.c.id.not_in(mine)).values(
                status="interrupted", finished_at=_now())).rowcount)


def spool(data: IO[bytes], directory: Path | None = None) -> IO[bytes]:
    """A seekable temporary copy of an uploaded file, deleted when closed."""
    copy = tempfile.TemporaryFile(dir=directory)
    while chunk := data.read(1024 * 1024):
        copy.write(chunk)
    copy.seek(0)
    return copy
