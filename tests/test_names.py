"""A consultant's natural names are theirs (docs/api.md "Names that are also controls").

Fields named after every list control and API route (`total`, `limit`, `sort`, `q`,
`history`, `comments`...) and after SQL keywords (`order`, `group`, `select`...) load,
migrate and work over real HTTP on both databases; the bare control names stay controls
beside them (`total[eq]=5` filters the field, `total=false` skips counting). Links named
like a route under a record (`timeline`) and ways back (`comments`) are served at
`/api/{e}/{id}/links/{name}`. Only server-managed columns and the API's own top-level paths
are refused, each with a located error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, check_setup
from engine.setup.names import RECORD_ROUTES, TOP_LEVEL_PATHS

CONTROL_WORDS = ["total", "limit", "offset", "count", "sort", "cursor", "include", "q",
                 "comments", "activities", "schema", "board", "funnel", "pipeline", "from", "to",
                 "links"]
SQL_WORDS = ["order", "group", "select", "key", "value", "user", "check", "case", "where",
             "table"]

ORDER = """
entity: order
title: "{key}"
search: [key, sort]
fields:
  total: {type: money}
  limit: {type: integer}
  offset: {type: integer}
  count: {type: integer}
  sort: {type: string}
  cursor: {type: string}
  include: {type: boolean}
  q: {type: string}
  comments: {type: text}
  activities: {type: integer}
  schema: {type: string}
  board: {type: string}
  funnel: {type: string}
  pipeline: {type: string}
  from: {type: date}
  to: {type: date}
  links: {type: string}
  order: {type: integer}
  group: {type: choice, options: [a, b]}
  select: {type: boolean}
  key: {type: string}
  value: {type: decimal, digits: 10, places: 2}
  user: {type: string}
  check: {type: string}
  case: {type: string}
  where: {type: string}
  table: {type: string}
links:
  patient: {to: patient, reverse: orders}
pipeline:
  stages: [new, printing, done]
  final: [done]
"""

PATIENT = """
entity: patient
title: "{name}"
search: [name]
fields:
  name: {type: string, required: true}
  limit: {type: money}
  total: {type: integer}
links:
  history: {to: visit, many: true, reverse: patients}
  timeline: {to: visit, reverse: comments}
"""

VISIT = """
entity: visit
title: "{note}"
fields:
  note: {type: string}
"""

USER = """
entity: user
fields:
  name: {type: string}
"""

SETUP_FILES = {"order.yaml": ORDER, "patient.yaml": PATIENT, "visit.yaml": VISIT,
               "user.yaml": USER}


@pytest.fixture
def client(make_kt: Callable[..., Kartoteka],
           write_setup: Callable[[dict[str, str]], Path]) -> Iterator[TestClient]:
    kt = make_kt(write_setup(SETUP_FILES))
    with TestClient(create_app(kt), raise_server_exceptions=False,
                    base_url="http://127.0.0.1") as test_client:
        yield test_client


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def _order(client: TestClient, **values: Any) -> dict[str, Any]:
    body = {"key": "K", "total": "5", "limit": 10, "order": 1, "sort": "s", "q": "q",
            "from": "2025-01-02", **values}
    return dict(_ok(client.post("/api/order", json=body), 201))


def _ids(page: dict[str, Any]) -> list[int]:
    return [item["id"] for item in page["items"]]


def _problems(response: Any) -> dict[str, str]:
    assert response.status_code == 400, response.text
    return {d["field"]: d["problem"] for d in response.json()["error"]["details"]}


def test_every_former_reserved_word_and_sql_keyword_is_a_field_name(
        write_setup: Callable[[dict[str, str]], Path]) -> None:
    result = check_setup(write_setup(SETUP_FILES))
    assert result.setup is not None, [str(d) for d in result.errors]
    fields = result.setup.entities["order"].fields
    assert set(CONTROL_WORDS + SQL_WORDS) <= set(fields)
    assert "user" in result.setup.entities and "order" in result.setup.entities


def test_links_named_like_record_routes_get_a_note_with_their_path(
        write_setup: Callable[[dict[str, str]], Path]) -> None:
    result = check_setup(write_setup(SETUP_FILES))
    notes = {d.key: d for d in result.warnings if d.code == "link.route"}
    assert set(notes) == {"links.timeline", "links.timeline.reverse"}
    link, reverse = notes["links.timeline"], notes["links.timeline.reverse"]
    assert (link.file, link.line, link.severity) == ("patient.yaml", 10, "note")
    assert "/api/patient/{id}/links/timeline" in link.message
    assert reverse.line == 10 and "/api/visit/{id}/links/comments" in reverse.message
    assert link.hint and reverse.hint
    assert str(link).startswith("note: patient.yaml:10 links.timeline: ")


def test_records_are_created_patched_read_filtered_sorted_and_searched(client: TestClient) -> None:
    everything = {"total": "5", "limit": 100, "offset": 3, "count": 4, "sort": "by hand",
                  "cursor": "c", "include": True, "q": "query", "comments": "long text",
                  "activities": 2, "schema": "s", "board": "b", "funnel": "f", "pipeline": "p",
                  "from": "2025-01-01", "to": "2025-02-01", "links": "l", "order": 2,
                  "group": "a", "select": True, "key": "first", "value": "1.5", "user": "u",
                  "check": "c", "case": "c", "where": "w", "table": "t"}
    first = _order(client, **everything)
    assert first["total"] == "5.00" and first["value"] == "1.50" and first["order"] == 2
    assert {k: v for k, v in first.items() if k in everything and k not in ("total", "value")} \
        == {k: v for k, v in everything.items() if k not in ("total", "value")}
    second = _order(client, key="second", total="7", limit=1, order=1, sort="zebra")
    third = _order(client, key="third", total="1", limit=50, order=3, sort="apple")

    patched = _ok(client.patch(f"/api/order/{second['id']}",
                               json={"total": "8", "limit": 2, "order": 5, "group": "b"}))
    assert (patched["total"], patched["limit"], patched["order"], patched["group"]) \
        == ("8.00", 2, 5, "b")
    assert _ok(client.get(f"/api/order/{second['id']}"))["total"] == "8.00"

    def ids(query: str) -> list[int]:
        return _ids(_ok(client.get("/api/order?" + query)))

    assert ids("total[eq]=5") == [first["id"]]
    assert ids("order[gt]=1") == [first["id"], second["id"], third["id"]]
    assert ids("order[gt]=2") == [second["id"], third["id"]]
    assert ids("limit[gte]=50") == [first["id"], third["id"]]
    assert ids("offset[eq]=3") == [first["id"]]
    assert ids("count[isnull]=false") == [first["id"]]
    assert ids("sort[startswith]=z") == [second["id"]]
    assert ids("cursor[eq]=c&include[eq]=true&q[eq]=query") == [first["id"]]
    assert ids("pipeline[eq]=p&from[lt]=2025-01-02&to[eq]=2025-02-01") == [first["id"]]
    assert ids("select[eq]=true&where[eq]=w&table[eq]=t&key[eq]=first") == [first["id"]]
    assert ids("sort=-total") == [second["id"], first["id"], third["id"]]
    assert ids("sort=limit") == [second["id"], third["id"], first["id"]]
    assert ids("sort=-order,key") == [second["id"], third["id"], first["id"]]
    assert ids("q=zebr") == [second["id"]]        # searches `sort`, a search field
    assert ids("q=THIRD") == [third["id"]]

    # the controls beside the fields of the same names
    page = _ok(client.get("/api/order?total[gte]=1&total=false&limit=1&sort=-limit"))
    assert _ids(page) == [first["id"]] and page["total"] is None and page["next"]
    rest = _ok(client.get("/api/order", params={"total[gte]": "1", "limit": "1",
                                                "sort": "-limit", "cursor": page["next"]}))
    assert _ids(rest) == [third["id"]] and rest["total"] == 3
    assert _ids(_ok(client.get("/api/order?sort=-total&offset=1&offset[isnull]=true&limit=1"))) \
        == [third["id"]]


def test_a_bare_control_is_never_a_filter_and_says_how_to_filter(client: TestClient) -> None:
    _order(client)
    problems = _problems(client.get("/api/order?total=5&limit=x&from=2025-01-01"))
    assert "true or false" in problems["total"] and "total[eq]=" in problems["total"]
    assert "limit[eq]=" in problems["limit"]
    assert "board and the funnel" in problems["from"] and "from[eq]=" in problems["from"]
    # on an entity without such a field, no hint about one
    assert "[eq]" not in _problems(client.get("/api/visit?total=5"))["total"]


def test_board_and_funnel_filter_fields_named_like_their_controls(client: TestClient) -> None:
    first = _order(client, total="5", limit=200)
    _order(client, total="1", limit=1)
    board = _ok(client.get("/api/order/board?total[gte]=2&limit[gte]=100&limit=1&sort=-total"))
    assert [item["id"] for column in board["columns"] for item in column["items"]] \
        == [first["id"]]
    assert board["columns"][0]["sums"] == {"total": "5.00"}
    funnel = _ok(client.get("/api/order/funnel?from=2000-01-01&from[eq]=2025-01-02"
                            "&total[gt]=2&pipeline=default&pipeline[isnull]=true"))
    assert funnel["records"] == 1
    problems = _problems(client.get("/api/order/funnel?limit=5"))
    assert "does not apply" in problems["limit"] and "limit[eq]=" in problems["limit"]


def test_filters_through_links_reach_fields_named_like_controls(client: TestClient) -> None:
    ann = _ok(client.post("/api/patient", json={"name": "Ann", "limit": "300", "total": 2}), 201)
    bob = _ok(client.post("/api/patient", json={"name": "Bob", "limit": "10", "total": 0}), 201)
    first = _order(client, patient=ann["id"])
    _order(client, patient=bob["id"])
    assert _ids(_ok(client.get("/api/order?patient.total[gt]=1"))) == [first["id"]]
    assert _ids(_ok(client.get("/api/order?patient.limit[gte]=100&limit=5"))) == [first["id"]]
    assert _ids(_ok(client.get("/api/patient?orders.total[eq]=5&orders.limit[eq]=10"))) \
        == [ann["id"], bob["id"]]
    assert _ids(_ok(client.get("/api/patient?limit[lt]=100&sort=-limit"))) == [bob["id"]]


def test_links_named_like_routes_are_reachable_as_documented(client: TestClient) -> None:
    visits = [_ok(client.post("/api/visit", json={"note": f"v{n}"}), 201) for n in range(3)]
    ann = _ok(client.post("/api/patient", json={
        "name": "Ann", "history": [visits[0]["id"]], "timeline": visits[2]["id"]}), 201)
    base = f"/api/patient/{ann['id']}"

    # `history` is no route of the API: both paths serve the link, add and remove included
    assert _ids(_ok(client.get(f"{base}/history"))) == [visits[0]["id"]]
    _ok(client.put(f"{base}/history/{visits[1]['id']}"), 204)
    _ok(client.put(f"{base}/links/history/{visits[2]['id']}"), 204)
    _ok(client.delete(f"{base}/links/history/{visits[0]['id']}"), 204)
    assert _ids(_ok(client.get(f"{base}/links/history?sort=-id&limit=1"))) == [visits[2]["id"]]
    assert _ids(_ok(client.get(f"{base}/history"))) == [visits[1]["id"], visits[2]["id"]]
    assert _ids(_ok(client.get(f"/api/visit/{visits[1]['id']}/patients"))) == [ann["id"]]

    # `timeline` is: the short path is the record's timeline, the link is under /links/
    timeline = _ok(client.get(f"{base}/timeline"))
    assert "items" in timeline and "total" not in timeline
    assert _ids(_ok(client.get(f"{base}/links/timeline"))) == [visits[2]["id"]]
    # include and filters still name the link by its name
    got = _ok(client.get(base, params={"include": "history,timeline"}))
    assert got["timeline"]["id"] == visits[2]["id"]
    assert [v["id"] for v in got["history"]] == [visits[1]["id"], visits[2]["id"]]
    listed = _ok(client.get("/api/patient?include=history&timeline=" + str(visits[2]["id"])))
    assert _ids(listed) == [ann["id"]] and len(listed["items"][0]["history"]) == 2
    assert _ids(_ok(client.get(f"/api/patient?timeline.note[eq]=v2&history[eq]={visits[1]['id']}"))) \
        == [ann["id"]]

    # the way back `comments`: /links/comments lists, POST .../comments still comments
    visit = f"/api/visit/{visits[2]['id']}"
    assert _ids(_ok(client.get(f"{visit}/links/comments"))) == [ann["id"]]
    assert _ids(_ok(client.get(f"/api/visit?comments[eq]={ann['id']}"))) == [visits[2]["id"]]
    comment = _ok(client.post(f"{visit}/comments", json={"text": "hello"}), 201)
    assert comment["text"] == "hello" or "hello" in str(comment)
    assert client.get(f"{visit}/comments").status_code == 405


def test_an_entity_named_user_is_an_entity(client: TestClient) -> None:
    made = _ok(client.post("/api/user", json={"name": "Ann"}), 201)
    assert _ok(client.get(f"/api/user/{made['id']}"))["name"] == "Ann"
    assert _ids(_ok(client.get("/api/user?name=Ann"))) == [made["id"]]


@pytest.mark.parametrize("name", ["id", "version", "created_at", "updated_at"])
def test_a_server_managed_column_is_still_refused_with_its_place(
        name: str, write_setup: Callable[[dict[str, str]], Path]) -> None:
    folder = write_setup({"visit.yaml": f"""
        entity: visit
        fields:
          note: {{type: string}}
          {name}: {{type: integer}}
        links:
          {name}_of: {{to: visit, reverse: {name}}}
        """})
    errors = check_setup(folder).errors
    field = next(d for d in errors if d.key == f"fields.{name}")
    assert (field.file, field.line, field.code) == ("visit.yaml", 4, "field.reserved")
    assert "managed by Kartoteka" in field.message and field.hint
    reverse = next(d for d in errors if d.key == f"links.{name}_of.reverse")
    assert reverse.line == 6 and "a column Kartoteka manages" in reverse.message and reverse.hint


@pytest.mark.parametrize("name", TOP_LEVEL_PATHS)
def test_an_entity_named_like_a_top_level_path_is_refused(
        name: str, write_setup: Callable[[dict[str, str]], Path]) -> None:
    errors = check_setup(write_setup({f"{name}.yaml": f"""
        entity: {name}
        fields:
          note: {{type: string}}
        """})).errors
    assert [(d.file, d.line, d.key, d.code) for d in errors] \
        == [(f"{name}.yaml", 1, "entity", "entity.reserved")]
    assert f"/api/{name}" in errors[0].message and errors[0].hint


def test_role_conditions_name_fields_called_like_controls(
        write_setup: Callable[[dict[str, str]], Path]) -> None:
    folder = write_setup({**SETUP_FILES, "setup.yaml": """
        roles:
          clerk:
            order: {read: {total: {gte: 1}, limit: 5, q: x}}
        """})
    result = check_setup(folder)
    assert result.setup is not None, [str(d) for d in result.errors]


def test_the_names_the_api_keeps_are_the_paths_it_serves(
        make_kt: Callable[..., Kartoteka]) -> None:
    kt = make_kt()  # the default setup: a pipeline, and no way named like a route
    app = create_app(kt)
    top, under_record = set(), set()
    for route in app.routes:
        parts = getattr(route, "path", "").split("/")
        if len(parts) < 3 or parts[1] != "api":
            continue
        if parts[2] not in kt.setup.entities:
            top.add(parts[2])
        elif len(parts) > 4 and parts[3] == "{id}":
            under_record.add(parts[4])
    ways = {way for e in kt.setup.entities.values()
            for way in (*e.links, *kt.setup.reverse_links[e.name])}
    assert top <= set(TOP_LEVEL_PATHS)
    assert under_record - ways == set(RECORD_ROUTES)
