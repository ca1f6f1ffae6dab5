"""`POST /api/{e}/import` and `GET /api/{e}/import/{job}`: the HTTP side of import jobs.

The POST is a multipart form: `file` (CSV or XLSX) and the options as text fields —
`mode` (all | good), `dry_run` (true/false), `upsert_by` (a field, or several separated
by commas), `mapping` (YAML or JSON: `{"columns": {"Header": "field"}}`), `skip_unknown`,
`delimiter`, `encoding`, `sheet`. The file is read and its columns checked while the
request waits (a column that fits no field is a 400 and nothing is queued); the rows are
imported by a job in a thread, answered at once with 202, the job, and its URL in
`Location`. `GET .../import/{job}` answers its progress and, once it has ended, its result;
`GET .../import/{job}/report` its error report as CSV (row, column, value, problem, code).
A job is seen only by the user who started it (404 for anyone else, as a record out of
scope).

Multipart is the one body besides JSON the API takes, and only here: a web page may send
a form cross-site without a CORS preflight, so an upload carrying an `Origin` header is
taken only from the server's own origin or a configured CORS origin (api/guard.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import yaml
from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.duplicates import confirmation
from api.errors import refuse_method
from api.responses import engine_of, json_response, no_query, path_id
from api.threads import in_thread
from api.uploads import MULTIPART, is_multipart
from engine.errors import ErrorDetail, MalformedRequest, PayloadTooLarge
from engine.exchange.columns import read_mapping
from engine.exchange.files import open_table
from engine.exchange.imports import MODES, ImportOptions
from engine.exchange.jobs import spool
from engine.setup.spec import EntitySpec

FORM_FIELDS = ("file", "mode", "dry_run", "upsert_by", "mapping", "skip_unknown", "delimiter",
               "encoding", "sheet")
#: how many times the JSON body cap an uploaded file may be (1 GiB with the default 1 MiB)
UPLOAD_FACTOR = 1024


def _flag(form: dict[str, str], key: str) -> bool:
    value = form.get(key, "false").strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise MalformedRequest("the import form is not valid", [ErrorDetail(key, "must be true or false")],
                           code="invalid_import")


def _mapping(text: str | None) -> tuple[dict[str, str | None] | None, bool]:
    if text is None or not text.strip():
        return None, False
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise MalformedRequest("the mapping is not valid YAML or JSON",
                               [ErrorDetail("mapping", str(error).splitlines()[0])],
                               code="invalid_import") from None
    columns, skip = read_mapping(data, lambda path: ".".join(["mapping", *map(str, path)]))
    return columns, skip


def options_from(form: dict[str, str]) -> tuple[ImportOptions, dict[str, str | None]]:
    """The import's options and the file's reading options from the form's text fields."""
    mode = form.get("mode", "all")
    if mode not in MODES:
        raise MalformedRequest("the import form is not valid", [ErrorDetail(
            "mode", "must be all (all-or-none) or good (import the good rows)")],
            code="invalid_import")
    upsert = [name.strip() for name in form.get("upsert_by", "").split(",") if name.strip()]
    mapping, skip = _mapping(form.get("mapping"))
    options = ImportOptions(mode=mode, dry_run=_flag(form, "dry_run"),
                            upsert_by=tuple(upsert) or None, mapping=mapping,
                            skip_unknown=skip or _flag(form, "skip_unknown"))
    reading = {key: (form.get(key) or None) for key in ("delimiter", "encoding", "sheet")}
    return options, reading


async def _form(request: Request, cap: int) -> tuple[FormData, UploadFile, dict[str, str]]:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise PayloadTooLarge(f"the upload is over {cap} bytes; split the file")
    if not is_multipart(request.headers.get("content-type")):
        raise MalformedRequest("an import is a multipart/form-data upload with the file in "
                               "`file`", [ErrorDetail("file", "is missing")], code="invalid_import")
    try:
        form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
    except HTTPException as error:
        raise MalformedRequest(f"the upload cannot be read: {error.detail}",
                               code="invalid_import") from None
    problems = [ErrorDetail(key, "is not a field of an import; it takes " + ", ".join(FORM_FIELDS))
                for key in form if key not in FORM_FIELDS]
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        problems.append(ErrorDetail("file", "must be the uploaded CSV or XLSX file"))
    texts: dict[str, str] = {}
    for key, value in form.multi_items():
        if key == "file":
            continue
        if not isinstance(value, str) or key in texts:
            problems.append(ErrorDetail(key, "must be given once, as text"))
            continue
        texts[key] = value
    if problems:
        await form.close()
        raise MalformedRequest("the import form is not valid", problems, code="invalid_import")
    assert isinstance(upload, UploadFile)
    return form, upload, texts


def add_import_routes(app: APIRouter, entity: EntitySpec, cap: int,
                      refused: dict[int | str, dict[str, Any]]) -> None:
    """The import routes of one entity (call before the `/{id}` routes)."""
    name = entity.name
    base = f"/api/{name}/import"

    async def start(request: Request) -> Response:
        no_query(request)
        form, upload, texts = await _form(request, cap * UPLOAD_FACTOR)
        try:
            return await queue(request, upload, texts)
        finally:
            await form.close()

    async def queue(request: Request, upload: UploadFile, texts: dict[str, str]) -> Response:
        options, reading = options_from(texts)
        if confirmation(request):  # X-Confirm-Duplicate: true (api/duplicates.py)
            options = replace(options, confirm_duplicates=True)
        user = getattr(request.state, "user", None)
        file_name = upload.filename or "upload"
        kt = engine_of(request)

        def spooled() -> dict[str, Any]:
            file = spool(upload.file)
            try:
                if file.seek(0, 2) > cap * UPLOAD_FACTOR:
                    raise PayloadTooLarge(f"the upload is over {cap * UPLOAD_FACTOR} bytes; "
                                          "split the file")
                file.seek(0)
                table = open_table(file, file_name, delimiter=reading["delimiter"],
                                   encoding=reading["encoding"], sheet=reading["sheet"])
                kt.imports.plan(name, table.headers, options)  # the columns, before any row
            except BaseException:
                file.close()
                raise
            return kt.import_jobs.start(name, table, file, file_name, options, user=user)

        job = await in_thread(spooled)  # reading and copying the file: off the loop
        return json_response(job, 202, {"Location": f"{base}/{job['id']}"})

    def job_id(request: Request) -> int:
        return path_id(request, "job", "import job")

    async def status(request: Request) -> Response:
        no_query(request)
        user = getattr(request.state, "user", None)
        return json_response(engine_of(request).import_jobs.get(job_id(request), user=user,
                                                                entity=name))

    async def report(request: Request) -> Response:
        no_query(request)
        user = getattr(request.state, "user", None)
        text = engine_of(request).import_jobs.report(job_id(request), user=user, entity=name)
        return Response(text.encode("utf-8-sig"), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition":
                                 f'attachment; filename="import-{job_id(request)}-errors.csv"'})

    job_schema = {"type": "object", "required": ["id", "status", "rows_done", "errors"],
                  "properties": {
                      "id": {"type": "integer"}, "entity": {"type": "string"},
                      "status": {"type": "string",
                                 "enum": ["queued", "running", "done", "failed", "interrupted"]},
                      "rows_done": {"type": "integer"},
                      "rows_total": {"type": ["integer", "null"]},
                      "fraction": {"type": ["number", "null"], "description":
                                   "how much of the file is done, 0 to 1 (a CSV: by bytes)"},
                      "eta_seconds": {"type": ["number", "null"]},
                      "rows_committed": {"type": "integer"},
                      "created": {"type": "integer"}, "updated": {"type": "integer"},
                      "failed": {"type": "integer"}, "written": {"type": ["boolean", "null"]},
                      "errors": {"type": "array", "items": {"type": "object"}},
                      "warnings": {"type": "array", "items": {"type": "object"}}}}
    form_schema = {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "a CSV or XLSX file"},
        "mode": {"type": "string", "enum": list(MODES), "default": "all"},
        "dry_run": {"type": "boolean", "default": False},
        "upsert_by": {"type": "string", "description": "a unique field (or fields, comma-separated)"},
        "mapping": {"type": "string", "description": "YAML or JSON: {columns: {Header: field}}"},
        "skip_unknown": {"type": "boolean", "default": False},
        "delimiter": {"type": "string"}, "encoding": {"type": "string"},
        "sheet": {"type": "string"}}}
    ok = {"content": {"application/json": {"schema": job_schema}}}
    app.add_api_route(base, start, methods=["POST"], tags=[name], response_class=Response,
                      status_code=202, operation_id=f"import_{name}",
                      summary=f"Import {name} records from a CSV or XLSX file (a job)",
                      openapi_extra={"requestBody": {"required": True, "content": {
                          MULTIPART: {"schema": form_schema}}}},
                      responses={202: {"description": "The job, queued", **ok}, **refused})
    app.add_api_route(base, refuse_method, include_in_schema=False,
                      methods=["GET", "PUT", "PATCH", "DELETE"])
    job_param = {"name": "job", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1}}
    app.add_api_route(base + "/{job}", status, methods=["GET"], tags=[name],
                      response_class=Response, operation_id=f"import_{name}_job",
                      summary="An import job's progress and result",
                      openapi_extra={"parameters": [job_param]},
                      responses={200: {"description": "OK", **ok}, **refused})
    app.add_api_route(base + "/{job}/report", report, methods=["GET"], tags=[name],
                      response_class=Response, operation_id=f"import_{name}_report",
                      summary="An import job's error report (CSV)",
                      openapi_extra={"parameters": [job_param]},
                      responses={200: {"description": "row, column, value, problem, code",
                                       "content": {"text/csv": {"schema": {"type": "string"}}}},
                                 **refused})
