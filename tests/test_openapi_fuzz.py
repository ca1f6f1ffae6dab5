"""Property-based fuzzing of the generated HTTP API, driven by its own OpenAPI document.

Schemathesis reads `/openapi.json` of the default setup (`schemas/`) straight from the ASGI
app (no network, no server) and, for every operation, sends generated requests — valid
ones and deliberately broken ones — then checks each response:

- no 5xx, ever (the contract: "never a 500 for bad input");
- the status code is one the operation documents (`2xx` it names, `4XX`, `304`);
- the `Content-Type` is the documented one (`application/json` for bodies);
- the body validates against the documented schema (`Sale`, `SaleList`, `Error`, ...);
- documented response headers (`ETag`, `Location`) are present and well-formed.

Each operation is a test of its own (`test_every_operation_answers_as_documented[GET
/api/sale/{id}]`) over its own fresh SQLite database (a copy of one seeded once per run),
seeded with three linked records of every entity (ids 1..3 exist everywhere); even
generated ids are folded onto 1..3 (odd ones are kept), so read, change, delete and link
operations reach real records as well as missing ones, and a DELETE fuzzed on one
operation never empties the tables the next one starts from.

The schema is loaded eagerly with `schemathesis.openapi.from_dict` and the app is passed
per call (`case.call_and_validate(app=...)`) rather than through
`schemathesis.pytest.from_fixture`: schemathesis 4.32's lazy loader reads
`request.node._nodeid`, which pytest 9.2 no longer has (AttributeError at run time).
Generating the OpenAPI document needs no database, so collection stays cheap. The tests are
parametrised by operation label and each builds schemathesis' test of its operation when
it runs (`fuzz`, with schemathesis' own builder), not through `@schema.parametrize()`:
that built every operation's test — the coverage phase's hundreds of cases — while
collecting, in every pytest-xdist worker (~7 s of each one's start, for one run's use).

Why SQLite only: the fuzz run tests the API layer — OpenAPI generation, request parsing,
validation and error mapping — which is the same code on both databases; the dialect
differences (types, constraints, search, cursors) are covered by the engine tests that
run on both databases through the `db_url` fixture. Running every generated request on a
PostgreSQL server as well would double a run that must stay under a few minutes on a
shared two-core machine without testing any more of what this module is about.

A link's `/links/{way}` twin of its short `/{way}` path is the same handler with the same
contract (test_links_twins_are_one_handler) and is not fuzzed again (TWINS). The coverage
phase (schemathesis' edge cases of every parameter and body) runs once per published
contract: an operation whose parameters, body and answers an earlier operation
has at another path (a link list and its `links/` twin, the task lists under every entity)
gets only its generated cases (REPEATED_CONTRACTS).

Deterministic and bounded: generation is derandomised (the same cases on every run),
MAX_EXAMPLES per operation, no Hypothesis example database, no deadline; the whole module
takes well under a minute. A failure prints the offending request as a curl command.
Run it alone with:  .venv/bin/pytest tests/test_openapi_fuzz.py
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema
import pytest
import requests
import schemathesis
from fastapi.routing import APIRoute
from requests.structures import CaseInsensitiveDict
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.pytest._test_builder import build_operation_test
from schemathesis.python._constants.orchestrator import make_constants_value_source
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.setup.loader import load_setup
from tests.openapi_check import openapi_problems

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETUP = ROOT / "schemas"
SEEDED = 3  # ids 1..SEEDED exist in every entity
#: generated cases per operation, on top of schemathesis' explicit examples and the coverage
#: phase's edge cases (~7,700 requests over the run): a generated case costs ~12 ms to draw,
#: ten times an edge case, and ten of them per operation were a quarter of the module's time
MAX_EXAMPLES = 5

CONFIG = SchemathesisConfig.from_dict({
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
})
#: what every response is held to (schemathesis' other checks judge the API's choices —
#: e.g. refusing a schema-valid but semantically wrong body — and are left out on purpose)
def reached_the_api(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every fuzzed call reaches the operation: a call the Host guard refuses (schemathesis'
    default host `testserver`) tests nothing but the guard."""
    if response.status_code == 400 and b"host_not_allowed" in response.content:
        raise AssertionError("the fuzzed call was refused by the Host guard: call with "
                             "base_url='http://127.0.0.1'")
    return None


CHECKS = [
    reached_the_api,
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def seed(kt: Kartoteka) -> None:
    """Three records of every entity, linked to each other (ids 1..3 everywhere)."""
    create = kt.records.create
    for n in range(1, SEEDED + 1):
        create("client", {"name": f"Client {n}", "city": "Kazan", "inn": f"16550000{n:02d}",
                          "email": f"c{n}@example.com", "segments": ["vip"]})
        create("supplier", {"name": f"Supplier {n}", "country": "China", "quality_score": 80})
        create("logistics", {"name": f"Carrier {n}", "modes": ["sea", "road"], "rate_per_kg": "1.50"})
        create("product", {"sku": f"SKU-{n}", "name": f"Product {n}", "supplier": n,
                           "sale_price": "10.00", "weight_kg": "1.250"})
    for n in range(1, SEEDED + 1):
        create("sale", {"number": f"S-{n}", "client": n, "supplier": n, "amount": "1234.50",
                        "expected_on": "2024-05-01", "carriers": [n], "products": sorted({1, n})})
    for n in range(1, SEEDED + 1):
        create("document", {"kind": "contract", "number": f"D-{n}",
                            "about": {"entity": "sale", "id": n}})
    for n in range(1, SEEDED + 1):
        create("task", {"subject": f"Call {n}", "due_at": "2024-05-01T10:00:00+03:00",
                        "about": {"entity": "client", "id": n}, **({"parent": 1} if n > 1 else {})})


def _onto_seeded(value: Any) -> Any:
    """Even in-range ids are folded onto the seeded records 1..SEEDED; odd ones are kept,
    so both existing and missing records are asked for."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**63 - 1 and value % 2 == 0:
        return 1 + value % SEEDED
    return value


def _openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the default setup; generating it touches no database."""
    with tempfile.TemporaryDirectory() as folder:
        kt = Kartoteka.open(DEFAULT_SETUP, f"sqlite:///{Path(folder) / 'unused.db'}")
        try:
            return create_app(kt).openapi()
        finally:
            kt.close()


schema = schemathesis.openapi.from_dict(_openapi_document(), config=CONFIG)


@schema.hook
def map_case(context: Any, case: Any) -> Any:
    if case.path_parameters:
        case.path_parameters = {key: _onto_seeded(value) for key, value in case.path_parameters.items()}
    # values only the server's data makes valid, as ids are: a cursor is the `next` of a
    # page the server gave out (any other text is a 400), and an owner must be a user —
    # the fuzzed database has none (open mode), so the only owner it can take is null
    if isinstance(case.query, dict):
        case.query.pop("cursor", None)
    owner = case.body.get("owner") if isinstance(case.body, dict) else None
    if type(owner) is int and 1 <= owner < 2**63:  # a well-formed id: no user has it
        case.body["owner"] = None  # (an ill-formed one stays, for the server to refuse)
    return case


@pytest.fixture(scope="module")
def seeded_database(tmp_path_factory: pytest.TempPathFactory,
                    open_kt: Callable[..., Kartoteka]) -> Path:
    """The default setup, migrated and seeded once; each operation gets a copy of the file."""
    path = tmp_path_factory.mktemp("fuzz") / "seeded.db"
    kt = open_kt(DEFAULT_SETUP, f"sqlite:///{path}")
    kt.migrate()
    seed(kt)
    kt.close()
    assert not path.with_name(path.name + "-wal").exists(), "closing left a WAL to copy too"
    return path


class _Apps:
    """Apps over copies of a seeded database: a fresh one for each operation that writes,
    so a DELETE or a PATCH fuzzed on one operation never changes what the next one starts
    from; one shared by every read (a GET changes nothing), built once."""

    def __init__(self, database: Path, folder: Path, open_kt: Callable[..., Kartoteka]):
        self.database, self.folder, self.open_kt = database, folder, open_kt
        self.shared: Kartoteka | None = None
        self.shared_app: Any = None

    @contextmanager
    def app(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
        if "[GET " in request.node.name:
            if self.shared is None:
                self.shared = self._open(self.folder / "reads.db")
                self.shared_app = create_app(self.shared)
            yield self.shared_app
            return
        kt = self._open(tmp_path / "fuzz.db")
        try:
            yield create_app(kt)
        finally:
            kt.close()

    def _open(self, copy: Path) -> Kartoteka:
        shutil.copyfile(self.database, copy)
        kt: Kartoteka = self.open_kt(DEFAULT_SETUP, f"sqlite:///{copy}")
        return kt

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()


@pytest.fixture(scope="module")
def seeded_apps(seeded_database: Path, tmp_path_factory: pytest.TempPathFactory,
                open_kt: Callable[..., Kartoteka]) -> Iterator[_Apps]:
    apps = _Apps(seeded_database, tmp_path_factory.mktemp("reads"), open_kt)
    yield apps
    apps.close()


@pytest.fixture
def seeded_app(seeded_apps: _Apps, request: pytest.FixtureRequest,
               tmp_path: Path) -> Iterator[Any]:
    with seeded_apps.app(request, tmp_path) as app:
        yield app


#: every operation of the document, as schemathesis labels it (`GET /api/sale/{id}`)
OPERATIONS = [result.ok().label for result in schema.get_all_operations()]
#: a link's `/links/{way}` path beside its short `/{way}`: one handler built twice, from
#: the same closure (api/app.py), with the same contract — its cases would be the short
#: path's, sent again (test_links_twins_are_one_handler says so; tests/test_names.py
#: lists, links and unlinks through both)
TWINS = frozenset(label for label in OPERATIONS
                  if "/links/" in label and label.replace("/links/", "/", 1) in OPERATIONS)
#: what is fuzzed: every operation but the twins
FUZZED = [label for label in OPERATIONS if label not in TWINS]


def _repeated_contracts(document: dict[str, Any], fuzzed: list[str]) -> frozenset[str]:
    """The operations whose published contract — method, query and header parameters, the
    path parameters' schemas, body and answers — an earlier operation of the document
    already has at another path: a link list and its `links/` twin, the reverse lists of
    tasks or documents under every entity, the import jobs of every entity... (91 distinct
    contracts among the default setup's 158 fuzzed operations). Only the `fuzzed`
    operations count, so the first of each contract is one that is fuzzed."""
    seen: set[str] = set()
    repeated = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if f"{method.upper()} {path}" not in fuzzed:
                continue
            parameters = operation.get("parameters") or []
            contract = json.dumps({
                "method": method,
                "parameters": [p for p in parameters if p.get("in") != "path"],
                "path": [p.get("schema") for p in parameters if p.get("in") == "path"],
                "body": operation.get("requestBody"), "answers": operation["responses"],
            }, sort_keys=True)
            if contract in seen:
                repeated.add(f"{method.upper()} {path}")
            seen.add(contract)
    return frozenset(repeated)


#: operations that skip the coverage phase: its edge cases are a function of the published
#: contract alone, so for an operation whose contract an earlier one has they are the same
#: requests again, to the same parsing (~20 s of the run); its generated cases still run
REPEATED_CONTRACTS = _repeated_contracts(schema.raw_schema, FUZZED)
generated_only = schemathesis.openapi.from_dict(schema.raw_schema, config=SchemathesisConfig.from_dict({
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"coverage": {"enabled": False}},
}))
generated_only.hook(map_case)


def fuzz(on: Any, label: str, check: Callable[[Any], None], max_examples: int) -> None:
    """schemathesis' test of one operation — its explicit examples, the coverage phase's
    edge cases when `on`'s config enables it, then generated cases — each case handed to
    `check`; built here, as the test runs, exactly as `@schema.parametrize()` builds it."""
    operation = on.find_operation_by_label(label)
    assert operation is not None, label
    settings = hypothesis.settings(max_examples=max_examples, derandomize=True, database=None,
                                   deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
    test = build_operation_test(
        config=on.config, operation=operation, test_func=check, given_kwargs={},
        feedback=FeedbackSources(constants_value_source=make_constants_value_source(on)),
        explicit_settings=settings)
    test()


BASE_URL = "http://127.0.0.1"
#: what schemathesis' requests-style call of a case may hold (anything else: say so here)
_SENT = frozenset({"method", "url", "params", "headers", "cookies", "json", "data", "files"})


def call_and_validate(case: Any, http: TestClient, checks: list[Any],
                      headers: dict[str, str] | None = None) -> None:
    """`case.call_and_validate(app=...)`, sent through the tests' TestClient
    (tests/asgi_client.py: the app answers in one call into its thread) instead of
    schemathesis' ASGI adapter, a `requests` session built for every call that streams the
    answer back across threads — two thirds of the fuzz's time in calls, for the same
    request. The case is serialised by schemathesis itself; the checks that send requests
    of their own still go through its transport, to the same app."""
    sent = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    assert set(sent) <= _SENT, f"a call this test cannot send yet: {set(sent) - _SENT}"
    # header values as requests sends them: Latin-1 bytes (httpx refuses non-ASCII text)
    sent_headers = {key: value.encode("latin-1") if isinstance(value, str) else value
                    for key, value in (sent.get("headers") or {}).items()}
    body: dict[str, Any] = {}
    data = sent.get("data")
    if sent.get("files"):  # a multipart body encoded as schemathesis has requests encode it
        form = requests.Request(sent["method"], sent["url"], files=sent["files"], data=data).prepare()
        body["content"] = form.body
        sent_headers["Content-Type"] = form.headers["Content-Type"].encode("latin-1")
    elif isinstance(data, (bytes, str)):
        body["content"] = data  # httpx's name for a raw body; `data` is a form there
    elif data is not None:
        body["data"] = data
    if "json" in sent:
        body["json"] = sent["json"]
    params = sent.get("params")
    if isinstance(params, dict):  # requests leaves out a None, httpx would send it empty
        params = {key: value for key, value in params.items() if value is not None}
    http.cookies.clear()
    response = http.request(sent["method"], sent["url"], params=params, headers=sent_headers,
                            cookies=sent.get("cookies") or None, **body)
    case.validate_response(_as_schemathesis(response), checks=checks, headers=headers,
                           transport_kwargs={"app": http.app, "base_url": BASE_URL,
                                             **({"headers": headers} if headers else {})})


def _as_schemathesis(response: Any) -> Response:
    """An httpx answer as schemathesis' `Response.from_any` makes it, without its costs per
    call (~0.7 ms: a failed `import httpx` — we have httpx2 — and `requests` preparing the
    request again, URL and all, only to name it in a failure's curl command)."""
    sent = requests.PreparedRequest()
    sent.method = response.request.method
    sent.url = str(response.request.url)
    sent.headers = CaseInsensitiveDict(response.request.headers)
    sent.body = response.request.content
    return Response(status_code=response.status_code,
                    headers={key: [value] for key, value in response.headers.items()},
                    content=response.content, request=sent,
                    elapsed=response.elapsed.total_seconds(), message=response.reason_phrase,
                    encoding=response.encoding, http_version=response.http_version, verify=True)


@pytest.mark.parametrize("label", FUZZED)
def test_every_operation_answers_as_documented(label: str, seeded_app: Any) -> None:
    with TestClient(seeded_app, base_url=BASE_URL, raise_server_exceptions=False) as http:
        fuzz(generated_only if label in REPEATED_CONTRACTS else schema, label,
             lambda case: call_and_validate(case, http, CHECKS), MAX_EXAMPLES)


#: the roles of the default setup every operation is also fuzzed as, with a real token each
ROLES = ("manager", "director")
#: the entities whose manager access is `own`: records 1 and 2 of each are the manager's, 3 is
#: nobody's (a director reaches all three, a manager two: the third is "no such record")
OWNED = ("client", "sale", "task", "document")
ROLE_EXAMPLES = 3
#: refusals of schema-valid input that only the data decides (the published schema cannot
#: know which ids exist, which values are taken, what a stage needs or what a rule says):
#: the one thing `positive_data_acceptance` must not count against the contract
DATA_REFUSALS = frozenset({
    "link_not_found", "owner_not_found", "user_not_found", "unique_violation", "overlap",
    "stage_requirements", "transition_refused", "already_in_stage", "field_locked",
    "rule_failed", "delete_restricted", "last_admin", "conflict", "rollup_out_of_range",
    "fields_forbidden", "stage_forbidden", "owner_not_writable", "stale_version",
    # an uploaded file's columns and cells: the schema says "a file", only its text says more
    "invalid_import",
})


#: a bulk row's refusals for what the role may not do (the single call answers 403 or 404)
ROLE_REFUSALS = frozenset({"operation_forbidden", "not_found"})
#: the fields some fuzzed role may not see: one published document serves every role, and
#: a role's hidden field is unknown to it in a filter, sort or `q` (400 `invalid_query`
#: "has no field", as docs/api.md says) — the role's refusal, not the contract's
HIDDEN = frozenset(name for role in load_setup(DEFAULT_SETUP).roles.values()
                   if role.name in ROLES
                   for grant in role.grants.values() for name in grant.hidden)
_NO_FIELD = re.compile(r"has no field(?: or link)? '([^']+)'")


def _refused_as_hidden(body: dict[str, Any]) -> bool:
    """Is every problem of a 400 `invalid_query` a field hidden from some fuzzed role?"""
    details = body.get("error", {}).get("details") or []
    named = [_NO_FIELD.search(detail.get("problem", "")) for detail in details]
    return bool(named) and all(match is not None and match.group(1) in HIDDEN for match in named)


def accepted_or_refused_by_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' `positive_data_acceptance`, except that a 4xx naming a refusal only the
    data decides (DATA_REFUSALS) passes: any other refusal of input the schema allows — a
    shape, a type, a pattern — means the published contract is wrong, and fails."""
    if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 404, 409):
        try:
            code = response.json().get("error", {}).get("code")
        except ValueError:
            code = None
        if code in DATA_REFUSALS:
            return None
        if code == "invalid_query" and _refused_as_hidden(response.json()):
            return None
        if code == "bulk_failed":  # all-or-none: the rows' own refusals decide
            body = response.json()
            rows = [row.get("error", {}).get("code") for row in body.get("rows", [])]
            upsert = isinstance(case.body, dict) and case.body.get("upsert_by") is not None
            # an upsert row missing a field a new record needs: whether it is new (no record
            # has its key) only the data decides
            problems: dict[int, set[str]] = {}
            for detail in body["error"].get("details", []):
                if detail.get("code") == "validation_failed":
                    problems.setdefault(detail["row"], set()).add(detail.get("problem"))
            created = {n for n, said in problems.items() if upsert and said == {"is required"}}
            if all(row is None or row in DATA_REFUSALS or row in ROLE_REFUSALS
                   or (row == "validation_failed" and n in created) for n, row in enumerate(rows)):
                return None
    return positive_data_acceptance(ctx, response, case)


def auth_enforced(app: Any) -> Callable[[Any, Any, Any], bool | None]:
    """schemathesis' `ignored_auth`, through the app: its own probe goes out over the network
    (`requests`), which an ASGI app is not on. Every call the token made succeed is made again
    without it and must be refused with 401, before anything is read or written."""
    def check(ctx: Any, response: Any, case: Any) -> bool | None:
        if 200 <= response.status_code < 300:
            probe = case.call(app=app, base_url=BASE_URL)
            assert probe.status_code == 401, (
                f"{case.operation.label} answered {probe.status_code} without a token")
        return None
    return check


def refused_or_failed_rows(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' `negative_data_rejection`, except for a per_row bulk call: it answers
    200 and refuses each bad row in its own result (as documented), so a broken row shows
    as a failed row there, not as the call's status."""
    if response.status_code == 200 and isinstance(case.body, dict) and \
            case.body.get("mode") == "per_row" and case.operation.path.endswith("/bulk"):
        if response.json()["failed"] >= 1:
            return None
    return negative_data_rejection(ctx, response, case)


#: every check schemathesis has (`--checks all`), three of them in a form that fits this run:
#: positive data refused only for what the data decides, broken rows of a per_row bulk
#: call refused row by row, the token probe through the app (all above);
#: `object_level_authorization` compares two users' answers, which tests/test_bola.py does
#: for every route
ALL_CHECKS = [*CHECKS, refused_or_failed_rows, accepted_or_refused_by_data, missing_required_header,
              unsupported_method, use_after_free, ensure_resource_availability]


@pytest.fixture(scope="module")
def role_database(seeded_database: Path, tmp_path_factory: pytest.TempPathFactory,
                  open_kt: Callable[..., Kartoteka]) -> tuple[Path, dict[str, str]]:
    """The seeded database with a user and a real token per role; the manager owns records
    1 and 2 of every entity a manager reads as `own`."""
    path = tmp_path_factory.mktemp("roles") / "roles.db"
    shutil.copyfile(seeded_database, path)
    kt = open_kt(DEFAULT_SETUP, f"sqlite:///{path}")
    users = {role: kt.users.add(f"{role}@example.com", [role], team="north") for role in ROLES}
    manager = users["manager"][0].id
    for entity in OWNED:
        for record_id in (1, 2):
            kt.records.update(entity, record_id, {"owner": manager})
    kt.close()
    return path, {role: token for role, (_user, token) in users.items()}


@pytest.fixture(scope="module")
def role_app_copies(role_database: tuple[Path, dict[str, str]],
                    tmp_path_factory: pytest.TempPathFactory,
                    open_kt: Callable[..., Kartoteka]) -> Iterator[_Apps]:
    apps = _Apps(role_database[0], tmp_path_factory.mktemp("role-reads"), open_kt)
    yield apps
    apps.close()


@pytest.fixture
def role_apps(role_database: tuple[Path, dict[str, str]], role_app_copies: _Apps,
              request: pytest.FixtureRequest,
              tmp_path: Path) -> Iterator[dict[str, tuple[Any, str]]]:
    """The app over a copy of the role database (fresh for an operation that writes)."""
    with role_app_copies.app(request, tmp_path) as app:
        yield {role: (app, token) for role, token in role_database[1].items()}


def test_links_twins_are_one_handler(seeded_apps: _Apps) -> None:
    """What lets the fuzz leave the `/links/` twins out: each is its short path's handler
    (the same code, over the same link) and publishes the same contract."""
    assert len(TWINS) >= 10
    kt = seeded_apps._open(seeded_apps.folder / "twins.db")
    try:
        routes = {(method, route.path): route for route in create_app(kt).routes
                  if isinstance(route, APIRoute) for method in route.methods}
    finally:
        kt.close()
    document = schema.raw_schema["paths"]
    for label in TWINS:
        method, path = label.split(" ", 1)
        short = path.replace("/links/", "/", 1)
        twin, one = routes[(method, path)].endpoint, routes[(method, short)].endpoint
        assert twin.__code__ is one.__code__, label
        assert [c.cell_contents for c in twin.__closure__ or ()] == \
            [c.cell_contents for c in one.__closure__ or ()], label
        published = [{k: v for k, v in document[p][method.lower()].items() if k != "operationId"}
                     for p in (path, short)]
        assert published[0] == published[1], label


def test_role_tokens_reach_what_the_role_may(role_apps: dict[str, tuple[Any, str]]) -> None:
    """The fuzz below is only as good as its tokens: both are real, and they differ."""
    app, _ = role_apps["manager"]
    with TestClient(app, base_url="http://127.0.0.1") as http:
        def sales(role: str) -> int:
            answer = http.get("/api/sale", headers={"Authorization": f"Bearer {role_apps[role][1]}"})
            assert answer.status_code == 200
            return len(answer.json()["items"])
        assert http.get("/api/sale").status_code == 401
        assert (sales("manager"), sales("director")) == (2, SEEDED)


#: the role runs generate cases (valid and broken ones) but leave out the coverage phase's
#: hundreds of boundary values per operation: those test parsing, which the run above
#: without users already holds to the contract, and would triple the run's time
ROLE_CONFIG = SchemathesisConfig.from_dict({
    "generation": {"max-examples": ROLE_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"coverage": {"enabled": False}},
})
role_schema = schemathesis.openapi.from_dict(schema.raw_schema, config=ROLE_CONFIG)
role_schema.hook(map_case)


@pytest.mark.parametrize("label", FUZZED)
def test_every_operation_answers_as_documented_for_each_role(
        label: str, role_apps: dict[str, tuple[Any, str]]) -> None:
    """Each generated case sent as every role in turn (the manager, then the director), to
    the same app: one generation of cases serves both, as a run per role generated the
    same cases twice."""
    app = role_apps[ROLES[0]][0]

    def check(case: Any) -> None:
        header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
        broken = header is not None and header.mode.is_negative  # its own Authorization
        for role in ROLES:
            token = role_apps[role][1]
            try:
                call_and_validate(case, http, [*ALL_CHECKS, auth_enforced(app)],
                                  headers={} if broken else {"Authorization": f"Bearer {token}"})
            except Exception as error:
                error.add_note(f"sent as the {role}")
                raise
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as http:
        fuzz(role_schema, label, check, ROLE_EXAMPLES)


# -- the OpenAPI document itself ---------------------------------------------------------


@pytest.fixture
def plain_client(tmp_path: Path, open_kt: Callable[..., Kartoteka]) -> Iterator[TestClient]:
    kt = open_kt(DEFAULT_SETUP, f"sqlite:///{tmp_path / 'doc.db'}")
    kt.migrate()
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client
    kt.close()


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"external $ref {ref!r}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"$ref {ref!r} does not resolve"
        node = node[part]
    return node


def test_openapi_document_is_valid_openapi_3_1(plain_client: TestClient) -> None:
    response = plain_client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]

    # the official OpenAPI 3.1 meta-schema (a copy ships with schemathesis)
    errors = openapi_problems(document)
    assert not errors, "\n".join(errors[:20])
    broken = json.loads(json.dumps(document))  # and the check can fail
    broken["paths"]["/api/client"]["get"]["responses"] = {"abc": {}}
    assert openapi_problems(broken)
    # every component is a valid JSON Schema 2020-12 document (the OpenAPI 3.1 dialect)
    for name, component in document["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(component)
        except jsonschema.SchemaError as error:
            pytest.fail(f"component {name}: {error.message}")

    operation_ids: list[str] = []
    for path, item in document["paths"].items():
        in_template = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            operation_ids.append(operation["operationId"])
            params = [_resolve(document, p["$ref"]) if "$ref" in p else p
                      for p in operation.get("parameters", [])]
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == in_template, f"{method.upper()} {path}: path parameters {declared}"
            assert all(p["required"] for p in params if p["in"] == "path")
            seen = [(p["in"], p["name"]) for p in params]
            assert len(seen) == len(set(seen)), f"{method.upper()} {path}: a parameter twice"
            assert operation["responses"], f"{method.upper()} {path}: no responses"
            for status in operation["responses"]:
                assert re.fullmatch(r"[1-5](XX|[0-9]{2})|default", str(status)), status
    assert len(operation_ids) == len(set(operation_ids)), "operationIds are not unique"

    for ref in set(_refs(document)):
        _resolve(document, ref)

    components = document["components"]["schemas"]
    kt = plain_client.app.state.kartoteka  # type: ignore[attr-defined]
    for entity in kt.setup.entities:
        base = "".join(part.capitalize() for part in entity.split("_"))
        for name in (base, base + "Create", base + "Patch", base + "List"):
            assert name in components, f"component {name} is missing"
        assert components[base + "List"]["properties"]["items"]["items"] == {
            "$ref": f"#/components/schemas/{base}"}
        assert f"/api/{entity}" in document["paths"]
        assert f"/api/{entity}/{{id}}" in document["paths"]
    assert "kartoteka.Error" in components


def test_docs_page_needs_no_token(plain_client: TestClient) -> None:
    response = plain_client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


def test_docs_page_loads_only_local_pinned_assets(plain_client: TestClient) -> None:
    """/docs runs the Swagger UI release of the installed swagger-ui-bundle, never a CDN's."""
    page = plain_client.get("/docs").text
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page)
    assert urls, "the page references no assets"
    outside = [u for u in urls if re.match(r"(?i)(https?:)?//", u)]
    assert not outside, f"/docs references assets outside the server: {outside}"
    assert not re.search(r"(?i)https?://", page)
    expected = {".js": "javascript", ".css": "text/css", ".png": "image/png",
                ".json": "application/json"}
    for url in urls:
        answer = plain_client.get(url)
        assert answer.status_code == 200, url
        kind = next(v for k, v in expected.items() if url.endswith(k))
        assert kind in answer.headers["content-type"], (url, answer.headers["content-type"])
    assert plain_client.get("/docs/assets/no-such-file.js").status_code == 404


def test_bearer_scheme_is_published_for_every_api_operation(plain_client: TestClient) -> None:
    document = plain_client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"]}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/api/"):
                assert operation.get("security") == [{"bearer": []}], f"{method} {path}"
            else:
                assert "security" not in operation, f"{method} {path}"


#: entities named like the API's own components (`kartoteka.Error`, `kartoteka.Board`…)
BUILTIN_NAMED = ("error", "comment", "activity", "board", "funnel", "timeline", "stage_move",
                 "timeline_item", "page", "problem")


def test_entities_named_like_built_in_components_keep_their_own_schemas(
        write_setup: Callable[..., Path], make_kt: Callable[..., Kartoteka]) -> None:
    pipeline = ("pipeline:\n  stages:\n    - {name: open}\n    - {name: won, category: won}\n"
                "  final: [won]\n")
    files = {f"{name}.yaml": f"entity: {name}\nfields:\n  {name}_own: {{type: string}}\n"
             + (pipeline if name in ("board", "funnel") else "") for name in BUILTIN_NAMED}
    kt = make_kt(write_setup(files))
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        document = http.get("/openapi.json").json()
        assert not openapi_problems(document)
        for ref in set(_refs(document)):
            _resolve(document, ref)
        components = document["components"]["schemas"]
        for name in BUILTIN_NAMED:
            base = "".join(part.capitalize() for part in name.split("_"))
            assert f"{name}_own" in components[base]["properties"], base
            assert f"{name}_own" in components[base + "Create"]["properties"], base
        assert components["kartoteka.Error"]["required"] == ["error"]
        assert "kind" in components["kartoteka.Activity"]["properties"]
        assert components["kartoteka.Comment"]["required"] == ["text"]
        assert "columns" in components["kartoteka.Board"]["properties"]
        assert "stages" in components["kartoteka.Funnel"]["properties"]
        assert components["kartoteka.StageMove"]["required"] == ["to"]
        # and schemathesis loads it (every $ref resolves, every operation is readable)
        operations = list(schemathesis.openapi.from_dict(document).get_all_operations())
        assert operations and all(op.ok() for op in operations)
        made = http.post("/api/error", json={"error_own": "Ошибка 错误"})
        assert made.status_code == 201 and made.json()["error_own"] == "Ошибка 错误"


def test_published_sort_and_include_constraints_are_what_the_server_accepts(
        plain_client: TestClient) -> None:
    """Every value the published patterns allow that names real fields and links is
    answered 200; a name outside them is refused (and not allowed by the pattern either)."""
    document = plain_client.get("/openapi.json").json()
    kt = plain_client.app.state.kartoteka  # type: ignore[attr-defined]
    for name, entity in kt.setup.entities.items():
        params = {p["name"]: p["schema"] for p in document["paths"][f"/api/{name}"]["get"]["parameters"]}
        sortable = [n for n, a in kt.storage.entities[name].attributes.items() if a.field.type.sortable]
        for value in (",".join("-" + n for n in sortable[:5]), sortable[-1], ""):
            assert re.fullmatch(params["sort"]["pattern"], value), (name, value)
            assert plain_client.get(f"/api/{name}", params={"sort": value}).status_code == 200
        links = ",".join(entity.links)
        assert re.fullmatch(params["include"]["pattern"], links)
        assert plain_client.get(f"/api/{name}", params={"include": links}).status_code == 200
        for bad in ("nosuch", "-名前", ",".join(["id"] * 6)):
            assert not re.fullmatch(params["sort"]["pattern"], bad)
            assert plain_client.get(f"/api/{name}", params={"sort": bad}).status_code == 400
        assert not re.fullmatch(params["include"]["pattern"], "ссылка")
        assert params["offset"]["maximum"] == 10**9 and params["limit"]["maximum"] == 500
