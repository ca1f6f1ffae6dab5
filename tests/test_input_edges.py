"""No input can break a record or the server: each of these once answered 500 or broke
the record for good. Each must be a 4xx in the one error shape — or a correct answer that
round-trips — on SQLite and PostgreSQL, and leave nothing half-written."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from engine import Kartoteka

JSON = {"Content-Type": "application/json"}


def error_of(answer: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def counts(kt: Kartoteka) -> dict[str, int]:
    with kt.db.read(system="test") as conn:
        return {name: conn.execute(sa.select(sa.func.count()).select_from(t.table)).scalar_one()
                for name, t in kt.storage.entities.items()}


# -- datetimes at the edges of the calendar ---------------------------------------------------

@pytest.mark.parametrize("moment", ["0999-12-31T23:00:00Z", "0001-01-01T00:00:00Z",
                                    "0100-02-28T12:30:45.123456Z", "9999-12-31T23:59:59.999999Z",
                                    "1000-01-01T00:00:00+00:00"])
def test_every_accepted_datetime_round_trips_everywhere(client: TestClient, moment: str) -> None:
    expected = moment.replace("+00:00", "Z")
    anna = client.post("/api/client", json={"name": "Анна 安娜 آنا"}).json()
    created = client.post("/api/task", json={"subject": "Срок 期限 مهلت", "due_at": moment,
                                              "about": {"entity": "client", "id": anna["id"]}})
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["due_at"] == expected
    url = f"/api/task/{task['id']}"
    assert client.get(url).json()["due_at"] == expected
    listed = client.get("/api/task", params={"sort": "-due_at"}).json()["items"]
    assert [t["due_at"] for t in listed] == [expected]
    assert client.get("/api/task", params={"due_at[eq]": moment}).json()["total"] == 1
    assert client.get("/api/task", params={"due_at[gt]": moment}).json()["total"] == 0
    patched = client.patch(url, json={"subject": "ещё"})
    assert patched.status_code == 200 and patched.json()["due_at"] == expected
    timeline = client.get(f"/api/client/{anna['id']}/timeline")
    assert timeline.status_code == 200, timeline.text
    assert client.get(f"/api/client/{anna['id']}/tasks").json()["items"][0]["due_at"] == expected
    assert client.delete(url).status_code == 204


@pytest.mark.parametrize("moment", ["0001-01-01T00:30:00+01:00",  # year 0 in UTC
                                    "9999-12-31T23:30:00-01:00",  # year 10000 in UTC
                                    "0000-01-01T00:00:00Z", "2026-02-30T10:00:00Z",
                                    "2026-01-01T10:00:00"])
def test_datetimes_outside_the_range_are_422_and_write_nothing(
        kt: Kartoteka, client: TestClient, moment: str) -> None:
    before = counts(kt)
    error = error_of(client.post("/api/task", json={"subject": "x", "due_at": moment}), 422)
    assert error["details"][0]["field"] == "due_at"
    assert counts(kt) == before
    error_of(client.get("/api/task", params={"due_at[lt]": moment}), 400, "invalid_query")


# -- body keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["a.b", "a[0]", "", "x" * 500, "имя", "名字", "نام", "client.name",
                                 "products[]", "$where", "__proto__"])
def test_any_unknown_body_key_is_the_unknown_field_422(
        kt: Kartoteka, client: TestClient, key: str) -> None:
    record = client.post("/api/client", json={"name": "Ромашка"}).json()
    before = counts(kt)
    error = error_of(client.post("/api/client", json={"name": "x", key: 1}), 422)
    assert any(d["field"] == key and "is not a field" in d["problem"] for d in error["details"])
    error = error_of(client.patch(f"/api/client/{record['id']}", json={key: 1}), 422)
    assert any(d["field"] == key for d in error["details"])
    assert counts(kt) == before
    assert client.get(f"/api/client/{record['id']}").json()["version"] == 1


# -- many filters ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/sale", "/api/sale/board", "/api/sale/funnel",
                                  "/api/client/{id}/sales"])
def test_a_thousand_filters_are_a_400_naming_the_cap(client: TestClient, path: str) -> None:
    record = client.post("/api/client", json={"name": "Ромашка"}).json()
    params = [("amount[ne]", str(n)) for n in range(1000)]
    error = error_of(client.get(path.replace("{id}", str(record["id"])), params=params), 400,
                     "invalid_query")
    assert "at most 50" in str(error["details"])
    fifty = [("amount[ne]", str(n)) for n in range(50)]
    assert client.get("/api/sale", params=fifty).status_code == 200


# -- the users API: text both databases can store ------------------------------------------

@pytest.mark.parametrize(("field", "raw"), [("email", '"a\\ud800@example.com"'),
                                            ("email", '"a\\u0000b@example.com"'),
                                            ("name", '"Анна\\u0000"'), ("name", '"\\udfff"'),
                                            ("team", '"sales\\ud83d"'), ("team", '"\\u0000"')])
def test_nul_and_lone_surrogates_in_users_are_422(
        kt: Kartoteka, client: TestClient, field: str, raw: str) -> None:
    values = {"email": '"anna@example.com"', "roles": '["director"]', field: raw}
    body = "{" + ", ".join(f'"{k}": {v}' for k, v in values.items()) + "}"
    error = error_of(client.post("/api/users", content=body, headers=JSON), 422)
    assert error["details"][0]["field"] == field
    assert kt.users.list() == []


def test_a_users_change_with_a_lone_surrogate_is_422(kt: Kartoteka, client: TestClient) -> None:
    admin, token = kt.users.add("root@example.com", ["admin"])
    headers = {**JSON, "Authorization": f"Bearer {token}"}
    error = error_of(client.patch(f"/api/users/{admin.id}", content='{"team": "\\ud800"}',
                                  headers=headers), 422)
    assert error["details"][0]["field"] == "team"
    assert kt.users.get(admin.id).team is None


# -- unknown query parameters, methods, headers --------------------------------------------

def test_unknown_query_parameters_are_400_wherever_they_are_not_read(
        kt: Kartoteka, client: TestClient) -> None:
    anna = client.post("/api/client", json={"name": "Анна"}).json()
    sale = client.post("/api/sale", json={"number": "S-1", "client": anna["id"]}).json()
    task = client.post("/api/task", json={"subject": "t"}).json()  # `about` empty
    before = counts(kt)
    calls = [
        ("POST", "/api/client?dry_run=1", {"name": "x"}),
        ("PATCH", f"/api/client/{anna['id']}?force=true", {"city": "Kazan"}),
        ("DELETE", f"/api/sale/{sale['id']}?cascade=1", None),
        ("POST", f"/api/sale/{sale['id']}/stage?to=proposal", {"to": "proposal"}),
        ("POST", f"/api/sale/{sale['id']}/comments?notify=1", {"text": "x"}),
        ("GET", "/api/me?verbose=1", None),
        ("GET", "/api/users?active=true", None),
        ("POST", "/api/users?role=admin", {"email": "eve@example.com", "roles": ["admin"]}),
        ("GET", "/api/schema?lang=ru", None),
        ("GET", f"/api/task/{task['id']}/about?naem=x", None),
    ]
    for method, url, body in calls:
        answer = client.request(method, url, json=body)
        error = error_of(answer, 400, "invalid_query")
        assert error["details"][0]["field"] in url, (url, error)
    assert counts(kt) == before and kt.users.list() == []
    assert client.get(f"/api/task/{task['id']}/about", params={"limit": "5"}).json()["total"] == 0


@pytest.mark.parametrize("path", ["/api/sale/board", "/api/sale/funnel"])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_an_unsupported_method_on_a_fixed_path_is_405_with_allow(
        client: TestClient, path: str, method: str) -> None:
    answer = client.request(method, path, json={} if method != "DELETE" else None)
    error_of(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET"


def test_an_empty_if_match_is_400_saying_so(kt: Kartoteka, client: TestClient) -> None:
    record = client.post("/api/client", json={"name": "Ромашка"}).json()
    url = f"/api/client/{record['id']}"
    for header in ("", "   "):
        error = error_of(client.patch(url, json={"city": "Kazan"}, headers={"If-Match": header}),
                         400, "invalid_header")
        assert "If-Match is empty" in error["message"]
        error_of(client.delete(url, headers={"If-Match": header}), 400, "invalid_header")
    assert client.get(url).json()["version"] == 1


def test_the_funnel_takes_the_first_and_last_days_of_the_calendar(client: TestClient) -> None:
    for params in ({"to": "9999-12-31"}, {"from": "0001-01-01"},
                   {"from": "0001-01-01", "to": "9999-12-31"}):
        answer = client.get("/api/sale/funnel", params=params)
        assert answer.status_code == 200, (params, answer.text)


# -- money sums at the edge of the type --------------------------------------------------------

def test_board_and_funnel_sum_money_at_its_largest_exactly(client: TestClient) -> None:
    """SQLite keeps money as an integer of cents; summing a few of the largest amounts
    once overflowed SQLite's 64-bit SUM into a 500. The sums are exact, never floats."""
    largest = "9999999999999999.99"
    client_id = client.post("/api/client", json={"name": "Крупный 大 بزرگ"}).json()["id"]
    for number in range(5):
        created = client.post("/api/sale", json={"number": f"BIG-{number}", "amount": largest,
                                                 "client": client_id})
        assert created.status_code == 201, created.text
    small = client.post("/api/sale", json={"number": "SMALL", "amount": "0.01",
                                           "client": client_id})
    assert small.status_code == 201, small.text
    expected = "49999999999999999.96"  # 5 × largest + 0.01, to the cent
    board = client.get("/api/sale/board")
    assert board.status_code == 200, board.text
    lead = board.json()["columns"][0]
    assert lead["count"] == 6 and lead["sums"]["amount"] == expected
    funnel = client.get("/api/sale/funnel")
    assert funnel.status_code == 200, funnel.text
    assert funnel.json()["stages"][0]["current"]["sums"]["amount"] == expected


# -- numbers in query parameters are ASCII digits ----------------------------------------------

@pytest.mark.parametrize("path", ["/api/sale/board", "/api/sale"])
@pytest.mark.parametrize("limit", ["²", "٣", "３", "1²", "99999999999999999999999"])
def test_limit_of_non_ascii_digits_is_a_400(client: TestClient, path: str, limit: str) -> None:
    """`"²".isdigit()` is True yet int("²") fails, and int("٣") is 3: neither is a limit."""
    answer = client.get(path, params={"limit": limit})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["code"]


@pytest.mark.parametrize("key", ["from", "to"])
def test_a_repeated_funnel_bound_is_a_400(client: TestClient, key: str) -> None:
    """Two `from`s (or `to`s) are a mistake, not silently the first or the last one."""
    answer = client.get(f"/api/sale/funnel?{key}=2025-01-01&{key}=2025-06-30")
    error = error_of(answer, 400, "invalid_query")
    assert any(d["field"] == key for d in error["details"]), error


@pytest.mark.parametrize("header", ["1", "W/\"1\"", "\"1", "1\""])
def test_an_unquoted_or_weak_if_match_says_what_is_wrong(client: TestClient, header: str) -> None:
    url = f"/api/client/{client.post('/api/client', json={'name': 'Ётаг'}).json()['id']}"
    error = error_of(client.patch(url, json={"city": "Kazan"}, headers={"If-Match": header}),
                     400, "invalid_header")
    assert "weak" in error["message"] or "not quoted" in error["message"]
    assert client.get(url).json()["city"] is None


# -- caps that hold after normalisation, and for every kind of link ---------------------------

def test_a_polymorphic_in_filter_over_the_cap_is_a_400(client: TestClient) -> None:
    """`about[in]` lists entity:id pairs; more than MAX_IN_VALUES is refused like any `in`."""
    from engine.setup.filters import MAX_IN_VALUES
    pairs = ",".join(f"client:{n}" for n in range(1, MAX_IN_VALUES + 2))
    error = error_of(client.get("/api/task", params={"about[in]": pairs}), 400, "invalid_query")
    assert str(MAX_IN_VALUES) in str(error)
    at_cap = ",".join(f"client:{n}" for n in range(1, MAX_IN_VALUES + 1))
    answer = client.get("/api/task", params={"about[in]": at_cap})
    assert answer.status_code == 200 and answer.json()["total"] == 0, answer.text


#: 'İ' (U+0130) lowercases to two characters, 'i' and a combining dot above (U+0307)
DOTTED = "İ"


@pytest.mark.parametrize("email", [f"{DOTTED * 125}@ex.com",  # 132 characters, 257 lowercased
                                   f"{'a' * 250}@ex.com", f"a@{'İstanbul' * 30}.com"])
def test_a_users_email_too_long_after_lowercasing_is_a_422(client: TestClient, email: str) -> None:
    assert len(email.lower()) > 254
    answer = client.post("/api/users", json={"email": email, "roles": ["manager"]})
    error = error_of(answer, 422, "validation_failed")
    assert [d["field"] for d in error["details"]] == ["email"], error
    assert client.get("/api/client").status_code == 200  # still no user: the API stays open


def test_a_users_email_at_the_cap_after_lowercasing_is_stored(client: TestClient) -> None:
    email = f"{DOTTED * 61}@{'x' * 127}.com"  # 61 characters, 122 lowercased: 254 in all
    assert len(email.lower()) == 254
    answer = client.post("/api/users", json={"email": email, "roles": ["admin"]})
    assert answer.status_code == 201, answer.text
    assert answer.json()["user"]["email"] == email.lower()


@pytest.mark.parametrize("email", [f"{DOTTED * 248}@ex.com", f"{'a' * 250}@ex.com",
                                   f"a@{DOTTED * 250}.com"])
def test_a_records_email_over_its_cap_is_a_422_and_writes_nothing(
        kt: Kartoteka, client: TestClient, email: str) -> None:
    """A record's e-mail is kept as written (254 characters at most); a unique e-mail is
    compared ignoring case, so a value that grows when lowercased must still be stored."""
    at_cap = f"{DOTTED * 247}@ex.com"
    created = client.post("/api/client", json={"name": "Почта", "email": at_cap})
    assert created.status_code == 201 and created.json()["email"] == at_cap, created.text
    assert client.get("/api/client", params={"email": at_cap}).json()["total"] == 1
    before = counts(kt)
    error = error_of(client.post("/api/client", json={"name": "Почта", "email": email}), 422)
    assert [d["field"] for d in error["details"]] == ["email"], error
    assert counts(kt) == before
    filtered = client.get("/api/client", params={"email": email})
    assert filtered.status_code in (200, 400), filtered.text


@pytest.mark.parametrize("phone", ["²²²", "+7 ٣٣٣ 12", "١٢٣٤٥٦٧", "１２３", "12²", "+1 ⁵⁵⁵ 0100"])
def test_a_phone_of_non_ascii_digits_is_a_422(kt: Kartoteka, client: TestClient, phone: str) -> None:
    before = counts(kt)
    error = error_of(client.post("/api/client", json={"name": "Телефон", "phone": phone}), 422)
    assert [d["field"] for d in error["details"]] == ["phone"], error
    assert counts(kt) == before
    assert 200 <= client.get("/api/client", params={"phone": phone}).status_code < 500


# -- every route, walked with junk ---------------------------------------------------------------

JUNK_QUERIES = ["zz=1", "limit=²", "sort=%00"]
JUNK_BODIES = [b"{not json", b"[1, 2]", b'"' + b"x" * 200_000 + b'"', b'{"a.b": 1}']
BAD_IDS = ["0", "-1", "99999999999999999999", "abc"]
PATH_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")


def _one_of_each(kt: Kartoteka) -> None:
    """A record of every entity of the default setup (id 1 everywhere), linked together."""
    create = kt.records.create
    create("client", {"name": "Ромашка 菊花 بابونه", "email": "c@example.com"})
    create("supplier", {"name": "Поставщик"})
    create("logistics", {"name": "Перевозчик"})
    create("product", {"sku": "SKU-1", "name": "Товар", "supplier": 1})
    create("sale", {"number": "S-1", "client": 1, "carriers": [1], "products": [1]})
    create("document", {"kind": "contract", "number": "D-1", "about": {"entity": "sale", "id": 1}})
    create("task", {"subject": "Позвонить", "about": {"entity": "client", "id": 1}})


def _rows_of_every_table(kt: Kartoteka) -> dict[str, int]:
    """Rows of every table, Kartoteka's own (changes, activities, users, tokens) included."""
    with kt.db.read(system="test: counting every table") as conn:
        tables = sa.MetaData()
        tables.reflect(conn)
        return {name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for name, table in tables.tables.items()}


def _is_json_error_or_success(answer: Any) -> str | None:
    """None when the answer is a 2xx/3xx, or a 4xx in the one error shape; else what is wrong."""
    if answer.status_code < 400:
        return None
    if answer.status_code >= 500:
        return f"{answer.status_code}: {answer.text[:300]}"
    try:
        error = answer.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{answer.status_code} is not the JSON error shape: {answer.text[:300]}"
    if not (isinstance(error, dict) and error.get("code") and error.get("message")):
        return f"{answer.status_code} error without code or message: {answer.text[:300]}"
    return None


def test_every_route_answers_junk_with_a_json_4xx_and_writes_nothing(
        kt: Kartoteka, client: TestClient) -> None:
    """Each route of the default setup's app (records, ways back, links, stages, board,
    funnel, timeline, comments, users, tokens, schema, docs) is called with junk query
    parameters, junk bodies and bad ids: never a 500, never an answer outside the one error
    shape, and no record is written. A DELETE with a good id is not sent (it may rightly
    succeed); a PUT with good ids attaches a link that is already there."""
    from api import create_app

    _one_of_each(kt)
    before = _rows_of_every_table(kt)
    app = create_app(kt)
    failures: list[str] = []
    seen: dict[int, int] = {}

    def call(method: str, path: str, body: bytes | None = None) -> None:
        answer = client.request(method, path, content=body,
                                headers=JSON if body is not None else None)
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        problem = _is_json_error_or_success(answer)
        if problem:
            failures.append(f"{method} {path} {(body or b'')[:40]!r}: {problem}")
        elif method != "GET" and answer.status_code < 300 and body is not None:
            failures.append(f"{method} {path} {(body or b'')[:40]!r}: accepted junk")

    walked = 0
    for route in app.routes:
        path = getattr(route, "path", "")
        methods = sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"})
        if not methods or "{path" in path or path.startswith("/app"):
            continue  # the web app's pages answer HTML: tests/test_web.py, test_sessions.py
        good = PATH_PARAMETER.sub("1", path)
        for method in methods:
            walked += 1
            writes = method in ("POST", "PATCH", "PUT", "DELETE")
            if method != "DELETE":  # a DELETE with a good id and a junk query may well delete
                for query in JUNK_QUERIES:
                    call(method, f"{good}?{query}")
            if method in ("POST", "PATCH"):  # DELETE and PUT (attach a link) read no body
                for body in JUNK_BODIES:
                    call(method, good, body)
            if PATH_PARAMETER.search(path):
                for bad in BAD_IDS:
                    call(method, PATH_PARAMETER.sub(bad, path), b"{}" if writes else None)
    assert walked > 100, walked
    assert seen.get(422) and seen.get(404) and seen.get(400), seen  # each kind of junk got in
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:40])
    assert _rows_of_every_table(kt) == before
