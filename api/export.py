"""`GET /api/{e}/export?format=csv|xlsx`: the HTTP side of engine/records/export.py.

The export is checked first (a bad parameter is a 400 in the API's error shape before any
byte is sent), then written by one thread of its own — one database connection, one read
transaction, the caller's access context copied in — into a bounded pipe that the response
streams from: at most `MAX_PENDING` chunks of about 64 KB wait, so a slow client slows the
export down instead of filling memory, and a client that goes away stops it.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from api.errors import refuse_method
from api.language import pick_language
from api.responses import engine_of
from api.threads import in_thread
from engine.records.export import (
    BOOLEANS,
    DELIMITERS,
    FORMATS,
    HEADERS,
    MEDIA_TYPES,
    VALUES,
    Export,
    Exporter,
)
from engine.setup.spec import EntitySpec, SetupSpec, label_text

MAX_PENDING = 8
CHUNK_BYTES = 64 * 1024
#: how often a waiting side looks whether the other has gone (seconds)
POLL = 0.25


def add_export_route(app: APIRouter, setup: SetupSpec, entity: EntitySpec,
                     list_params: list[dict[str, Any]],
                     refused: dict[int | str, dict[str, Any]]) -> None:
    """GET /api/e/export, before `/api/e/{id}` (so `export` is never taken for an id)."""
    name = entity.name
    path = f"/api/{name}/export"

    async def export(request: Request) -> Response:
        kt = engine_of(request)
        exporter = Exporter(kt.records, kt.clock)
        language = pick_language(request.headers.get("accept-language"), kt.setup.languages)
        prepared = await in_thread(exporter.prepare, name,
                                           request.query_params.multi_items(), language)
        return StreamingResponse(_stream(prepared, contextvars.copy_context()),
                                 media_type=prepared.media_type,
                                 headers={"Content-Disposition": content_disposition(prepared)})

    label = label_text(entity.plural, setup.languages[0] if setup.languages else None)
    app.add_api_route(path, export, methods=["GET"], tags=[name], response_class=Response,
                      operation_id=f"export_{name}",
                      summary=f"Export every matching {label} record as CSV or XLSX",
                      description="The list's filters, q and sort; no paging: every matching "
                                  "record the caller may read, streamed. See docs/api.md#export.",
                      openapi_extra={"parameters": _parameters(setup, list_params)},
                      responses={200: {
                          "description": "The records, as a file",
                          "headers": {"Content-Disposition": {
                              "description": "attachment; filename=\"<entity>-<date>.<format>\"",
                              "schema": {"type": "string"}}},
                          "content": {MEDIA_TYPES["csv"].split(";")[0]: {"schema": {"type": "string"}},
                                      MEDIA_TYPES["xlsx"]: {"schema": {"type": "string",
                                                                       "format": "binary"}}}},
                                 **refused})
    app.add_api_route(path, refuse_method, include_in_schema=False,
                      methods=["POST", "PUT", "PATCH", "DELETE"])


def _parameters(setup: SetupSpec, list_params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def enum(name: str, values: tuple[str, ...] | list[str], default: str,
             description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "description": description,
                "schema": {"type": "string", "enum": list(values), "default": default}}

    languages = list(setup.languages)
    return [
        *(p for p in list_params if p["name"] in ("q", "sort")),
        enum("format", FORMATS, "csv", "csv (UTF-8) or xlsx"),
        enum("headers", HEADERS, "labels", "the header row: field labels or field names"),
        {"name": "language", "in": "query", "schema": {"type": "string", "enum": languages},
         "description": "the labels' and the values' language (default: Accept-Language, "
                        "else the setup's first)"},
        enum("values", VALUES, "iso", "iso: as the API writes them; locale: as the language "
                                      "does (31.12.2026, 1234,50, labels, да/нет)"),
        enum("bom", BOOLEANS, "false", "csv: start with a UTF-8 byte order mark (Excel needs "
                                       "it to read Cyrillic)"),
        enum("delimiter", tuple(DELIMITERS), ",", "csv: the delimiter (tab for a tab)"),
        enum("escape_formulas", BOOLEANS, "true", "csv: a ' before text starting with "
                                                  "= + - @ so spreadsheets do not run it"),
        enum("titles", BOOLEANS, "false", "true: after each link's id, a column with the "
                                          "linked record's title"),
    ]


def content_disposition(export: Export) -> str:
    """`attachment` with an ASCII filename for every client and, when it differs, the
    entity's label in the export's language for those that read RFC 5987 (`filename*`)."""
    header = f'attachment; filename="{export.filename}"'
    if export.title_filename != export.filename:
        header += "; filename*=UTF-8''" + urllib.parse.quote(export.title_filename, safe="")
    return header


class _Gone(Exception):
    """The response stopped reading (the client went away): the export stops."""


class _Pipe:
    """Bytes written by the export's thread, read in order by the response, in chunks."""

    def __init__(self) -> None:
        self.items: queue.Queue[bytes | BaseException | None] = queue.Queue(MAX_PENDING)
        self.pending = bytearray()
        self.gone = threading.Event()

    def write(self, data: bytes) -> int:
        self.pending += data
        if len(self.pending) >= CHUNK_BYTES:
            self._put(bytes(self.pending))
            self.pending.clear()
        return len(data)

    def flush(self) -> None:
        """The export's own flushes (zipfile's) wait for the next full chunk."""

    def finish(self, error: BaseException | None = None) -> None:
        if self.pending and error is None:
            self._put(bytes(self.pending))
        self._put(error)

    def _put(self, item: bytes | BaseException | None) -> None:
        while True:
            if self.gone.is_set():
                raise _Gone
            try:
                self.items.put(item, timeout=POLL)
                return
            except queue.Full:
                continue

    def get(self) -> bytes | BaseException | None:
        while not self.gone.is_set():
            try:
                return self.items.get(timeout=POLL)
            except queue.Empty:
                continue
        return None


def _produce(export: Export, pipe: _Pipe) -> None:
    try:
        export.write(pipe)
    except _Gone:
        return
    except BaseException as error:  # handed to the response, which ends the body with it
        try:
            pipe.finish(error)
        except _Gone:
            pass
        return
    try:
        pipe.finish()
    except _Gone:
        pass


async def _stream(export: Export, context: contextvars.Context) -> AsyncIterator[bytes]:
    pipe = _Pipe()
    run: Callable[[], None] = lambda: context.run(_produce, export, pipe)  # noqa: E731
    thread = threading.Thread(target=run, name=f"export-{export.entity}", daemon=True)
    thread.start()
    try:
        while True:
            item = await run_in_threadpool(pipe.get)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        pipe.gone.set()
