"""Unique sets and no-overlap rules (`unique:`, `no_overlap:`), over real HTTP on SQLite
and PostgreSQL: composite and case-/space-insensitive uniqueness (Unicode-correct on both
databases), NULLs that never collide, overlapping bookings refused and back-to-back ones
accepted, 20 concurrent bookings of which exactly one wins, and migrations that list the
records violating a new rule and change nothing while they exist."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, check_setup
from engine.errors import Conflict, MigrationRefused
from tests.races import together

SETUP = {
    "setup.yaml": """
        name: Clinic
        languages: [en, ru]
    """,
    "client.yaml": """
        fields:
          name: {type: string, required: true}
          email: {type: email, unique: {ignore_case: true}}
          company: {type: string, unique: {ignore_case: true, ignore_spaces: true}}
          city: string
          code: {type: string, unique: true}
        unique: [{fields: [name, city], ignore_case: true}]
    """,
    "supplier.yaml": """
        fields:
          name: {type: string, required: true}
    """,
    "invoice.yaml": """
        fields:
          number: {type: string, required: true}
          amount: integer
        links:
          supplier: {to: supplier}
        unique: [[supplier, number]]
    """,
    "room.yaml": """
        fields:
          name: {type: string, required: true}
    """,
    "booking.yaml": """
        fields:
          dentist: string
          starts_at: datetime
          ends_at: datetime
        links:
          room: {to: room}
        no_overlap:
          - {key: [dentist], range: [starts_at, ends_at]}
          - {key: [room], range: [starts_at, ends_at]}
    """,
    "slot.yaml": """
        fields:
          truck: string
          starts_at: datetime
          ends_at: datetime
          status: {type: choice, options: [booked, cancelled], default: booked}
        no_overlap: [{key: [truck], range: [starts_at, ends_at], where: {status: {ne: cancelled}}}]
    """,
    "tag.yaml": """
        fields:
          label: {type: string, required: true}
        links:
          about: {to: [supplier, room]}
        unique: [{fields: [about, label], ignore_case: true}]
    """,
    "stay.yaml": """
        fields:
          guest: string
          check_in: date
          check_out: date
        links:
          room: {to: room}
        no_overlap: [{key: [room], range: [check_in, check_out]}]
    """,
}


@pytest.fixture
def setup_dir(write_setup: Callable[..., Path]) -> Path:
    return write_setup(SETUP)


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], setup_dir: Path) -> Kartoteka:
    return make_kt(setup_dir)


@pytest.fixture
def api(kt: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client


def _created(api: TestClient, entity: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"/api/{entity}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


# -- unique sets -------------------------------------------------------------------------------

def test_composite_unique_refuses_the_same_pair_and_takes_another(api: TestClient) -> None:
    a = _created(api, "supplier", {"name": "A"})["id"]
    b = _created(api, "supplier", {"name": "B"})["id"]
    _created(api, "invoice", {"supplier": a, "number": "INV-1"})
    error = _error(api.post("/api/invoice", json={"supplier": a, "number": "INV-1"}),
                   409, "unique_violation")
    assert "supplier and number" in error["message"]
    assert {d["field"] for d in error["details"]} == {"supplier", "number"}
    _created(api, "invoice", {"supplier": b, "number": "INV-1"})   # another supplier
    _created(api, "invoice", {"supplier": a, "number": "INV-2"})   # another number
    # an empty member never collides (SQL's NULL): two invoices without a supplier
    _created(api, "invoice", {"number": "INV-1"})
    _created(api, "invoice", {"number": "INV-1"})
    assert api.get("/api/invoice").json()["total"] == 5


def test_patch_into_a_taken_pair_is_refused_and_changes_nothing(api: TestClient) -> None:
    a = _created(api, "supplier", {"name": "A"})["id"]
    _created(api, "invoice", {"supplier": a, "number": "1"})
    second = _created(api, "invoice", {"supplier": a, "number": "2", "amount": 5})
    response = api.patch(f"/api/invoice/{second['id']}", json={"number": "1", "amount": 7})
    _error(response, 409, "unique_violation")
    after = api.get(f"/api/invoice/{second['id']}").json()
    assert (after["number"], after["amount"], after["version"]) == ("2", 5, 1)


@pytest.mark.parametrize(("first", "second"), [
    ("A@x.ru", "a@X.RU"),
    ("ivan@почта.рф", "IVAN@ПОЧТА.РФ"),
])
def test_email_ignoring_case(api: TestClient, first: str, second: str) -> None:
    _created(api, "client", {"name": "One", "email": first})
    error = _error(api.post("/api/client", json={"name": "Two", "email": second}),
                   409, "unique_violation")
    assert error["details"] == [{"field": "email", "problem": "is already taken by another record"}]
    assert "ignoring case" in error["message"]
    # the value is stored as written, never folded
    assert api.get("/api/client").json()["items"][0]["email"] == first
    assert "kt_ci_email" not in api.get("/api/client").json()["items"][0]


@pytest.mark.parametrize(("first", "second"), [
    ("Ромашка", "РОМАШКА"),                       # Cyrillic: SQLite's lower() would miss it
    ("ООО Ромашка", "ооо  ромашка"),              # and spaces do not count
    ("张伟", " 张 伟 "),                            # Chinese, with spaces around and inside
    ("شرکت نوین", "شرکت\u00a0نوین"),              # Persian, a no-break space
    ("Straße", "STRASSE"),                        # full case folding, not lower()
])
def test_company_ignoring_case_and_spaces(api: TestClient, first: str, second: str) -> None:
    _created(api, "client", {"name": "One", "company": first})
    error = _error(api.post("/api/client", json={"name": "Two", "company": second}),
                   409, "unique_violation")
    assert error["details"][0]["field"] == "company"
    assert api.get("/api/client").json()["items"][0]["company"] == first


def test_different_texts_do_not_collide(api: TestClient) -> None:
    for company in ("Ромашка", "Ромашка-2", "Василёк", "张伟", "张三"):
        _created(api, "client", {"name": company, "company": company})
    # a case-sensitive unique stays case-sensitive
    _created(api, "client", {"name": "x", "code": "abc"})
    _created(api, "client", {"name": "y", "code": "ABC"})


def test_insensitive_composite_and_nulls(api: TestClient) -> None:
    _created(api, "client", {"name": "Иван Петров", "city": "Казань"})
    error = _error(api.post("/api/client", json={"name": "ИВАН ПЕТРОВ", "city": "казань"}),
                   409, "unique_violation")
    assert {d["field"] for d in error["details"]} == {"name", "city"}
    _created(api, "client", {"name": "ИВАН ПЕТРОВ", "city": "Москва"})
    # no city: never a collision
    _created(api, "client", {"name": "Anna"})
    _created(api, "client", {"name": "ANNA"})
    _created(api, "client", {"name": "x1", "company": None})
    _created(api, "client", {"name": "x2", "company": None})


def test_patch_keeps_the_folded_value_in_step(api: TestClient) -> None:
    first = _created(api, "client", {"name": "One", "email": "old@x.ru"})
    _created(api, "client", {"name": "Two", "email": "other@x.ru"})
    # the first client's e-mail changes: the old one is free, the new one is taken
    assert api.patch(f"/api/client/{first['id']}", json={"email": "NEW@x.ru"}).status_code == 200
    _created(api, "client", {"name": "Three", "email": "OLD@x.ru"})
    _error(api.post("/api/client", json={"name": "Four", "email": "new@X.ru"}),
           409, "unique_violation")
    _error(api.patch(f"/api/client/{first['id']}", json={"email": "OTHER@x.ru"}),
           409, "unique_violation")
    # a change of another field leaves the rule alone
    assert api.patch(f"/api/client/{first['id']}", json={"city": "Уфа"}).status_code == 200


def test_a_polymorphic_link_counts_as_entity_and_id(api: TestClient) -> None:
    supplier = _created(api, "supplier", {"name": "S"})["id"]
    room = _created(api, "room", {"name": "R"})["id"]
    assert supplier == room  # the same id, in two entities
    _created(api, "tag", {"about": {"entity": "supplier", "id": supplier}, "label": "VIP"})
    error = _error(api.post("/api/tag", json={"about": {"entity": "supplier", "id": supplier},
                                              "label": "vip"}), 409, "unique_violation")
    assert {d["field"] for d in error["details"]} == {"about", "label"}
    _created(api, "tag", {"about": {"entity": "room", "id": room}, "label": "VIP"})


# -- no overlap --------------------------------------------------------------------------------

def _booking(dentist: str | None, start: str, end: str, room: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"dentist": dentist, "starts_at": start, "ends_at": end}
    if room is not None:
        body["room"] = room
    return body


def test_overlap_refused_back_to_back_and_other_key_accepted(api: TestClient) -> None:
    first = _created(api, "booking", _booking("Ivanov", "2025-06-01T10:00:00Z",
                                              "2025-06-01T11:00:00Z"))
    error = _error(api.post("/api/booking", json=_booking(
        "Ivanov", "2025-06-01T10:30:00Z", "2025-06-01T11:30:00Z")), 409, "overlap")
    assert f"booking {first['id']}" in error["message"]
    assert {d["field"] for d in error["details"]} == {"dentist", "starts_at", "ends_at"}
    # the same time in another zone is the same time
    _error(api.post("/api/booking", json=_booking(
        "Ivanov", "2025-06-01T13:15:00+03:00", "2025-06-01T13:45:00+03:00")), 409, "overlap")
    # one inside another, and one around another
    _error(api.post("/api/booking", json=_booking(
        "Ivanov", "2025-06-01T09:00:00Z", "2025-06-01T12:00:00Z")), 409, "overlap")
    # back to back: [10, 11) and [11, 12) share no moment
    _created(api, "booking", _booking("Ivanov", "2025-06-01T11:00:00Z", "2025-06-01T12:00:00Z"))
    _created(api, "booking", _booking("Ivanov", "2025-06-01T09:00:00Z", "2025-06-01T10:00:00Z"))
    # another dentist at the same time
    _created(api, "booking", _booking("Петрова", "2025-06-01T10:00:00Z", "2025-06-01T11:00:00Z"))
    # no dentist, no start or no end: nothing to check
    _created(api, "booking", _booking(None, "2025-06-01T10:00:00Z", "2025-06-01T11:00:00Z"))
    _created(api, "booking", _booking(None, "2025-06-01T10:00:00Z", "2025-06-01T11:00:00Z"))
    _created(api, "booking", {"dentist": "Ivanov", "starts_at": "2025-06-01T10:00:00Z"})


def test_each_rule_has_its_own_key(api: TestClient) -> None:
    room = _created(api, "room", {"name": "Кабинет 1"})["id"]
    _created(api, "booking", _booking("A", "2025-06-01T10:00:00Z", "2025-06-01T11:00:00Z", room))
    # another dentist, the same room at the same time
    error = _error(api.post("/api/booking", json=_booking(
        "B", "2025-06-01T10:30:00Z", "2025-06-01T11:00:00Z", room)), 409, "overlap")
    assert {d["field"] for d in error["details"]} == {"room", "starts_at", "ends_at"}
    _created(api, "booking", _booking("B", "2025-06-01T10:30:00Z", "2025-06-01T11:00:00Z"))


def test_range_backwards_or_empty_is_422(api: TestClient) -> None:
    for end in ("2025-06-01T09:00:00Z", "2025-06-01T10:00:00Z"):
        error = _error(api.post("/api/booking", json=_booking(
            "A", "2025-06-01T10:00:00Z", end)), 422, "validation_failed")
        assert error["details"] == [{"field": "ends_at", "problem": "must be after starts_at "
                                                                     "(a range ends after it starts)"}]
    booked = _created(api, "booking", _booking("A", "2025-06-01T10:00:00Z", "2025-06-01T11:00:00Z"))
    _error(api.patch(f"/api/booking/{booked['id']}", json={"starts_at": "2025-06-01T12:00:00Z"}),
           422, "validation_failed")
    assert api.get("/api/booking").json()["total"] == 1


def test_patch_into_an_overlap_and_moving_itself(api: TestClient) -> None:
    first = _created(api, "booking", _booking("A", "2025-06-01T10:00:00Z", "2025-06-01T11:00:00Z"))
    second = _created(api, "booking", _booking("A", "2025-06-01T12:00:00Z",
                                               "2025-06-01T13:00:00Z"))
    # a booking moved within its own time does not overlap itself
    assert api.patch(f"/api/booking/{first['id']}",
                     json={"ends_at": "2025-06-01T11:30:00Z"}).status_code == 200
    error = _error(api.patch(f"/api/booking/{second['id']}",
                             json={"starts_at": "2025-06-01T11:00:00Z"}), 409, "overlap")
    assert f"booking {first['id']}" in error["message"]
    assert api.get(f"/api/booking/{second['id']}").json()["version"] == 1
    # changing the dentist into a busy one
    other = _created(api, "booking", _booking("B", "2025-06-01T10:00:00Z", "2025-06-01T10:30:00Z"))
    _error(api.patch(f"/api/booking/{other['id']}", json={"dentist": "A"}), 409, "overlap")


def test_date_ranges(api: TestClient) -> None:
    room = _created(api, "room", {"name": "Номер 5"})["id"]
    _created(api, "stay", {"room": room, "check_in": "2025-07-01", "check_out": "2025-07-05"})
    _error(api.post("/api/stay", json={"room": room, "check_in": "2025-07-04",
                                       "check_out": "2025-07-06"}), 409, "overlap")
    # check-out day is the next guest's check-in day
    _created(api, "stay", {"room": room, "check_in": "2025-07-05", "check_out": "2025-07-06"})
    _error(api.post("/api/stay", json={"room": room, "check_in": "2025-07-06",
                                       "check_out": "2025-07-06"}), 422, "validation_failed")


def test_where_leaves_cancelled_bookings_out(api: TestClient) -> None:
    slot = {"truck": "А123ВС", "starts_at": "2025-06-01T10:00:00Z",
            "ends_at": "2025-06-01T11:00:00Z"}
    first = _created(api, "slot", slot)
    _error(api.post("/api/slot", json=slot), 409, "overlap")
    # a cancelled booking neither blocks nor is blocked
    cancelled = _created(api, "slot", {**slot, "status": "cancelled"})
    assert api.patch(f"/api/slot/{first['id']}", json={"status": "cancelled"}).status_code == 200
    second = _created(api, "slot", slot)
    # booking the cancelled one again is a new overlap
    error = _error(api.patch(f"/api/slot/{first['id']}", json={"status": "booked"}),
                   409, "overlap")
    assert f"slot {second['id']}" in error["message"]
    _error(api.patch(f"/api/slot/{cancelled['id']}", json={"status": "booked"}), 409, "overlap")
    assert api.get("/api/slot", params={"status": "booked"}).json()["total"] == 1


# -- races -------------------------------------------------------------------------------------

def test_twenty_concurrent_bookings_exactly_one_wins(
        kt: Kartoteka, make_kt: Callable[..., Kartoteka], setup_dir: Path) -> None:
    """20 bookings of one dentist at overlapping times, at once: 4 over HTTP (each its own
    app) and 16 straight into engines — three of them, as separate API processes would
    be. Exactly one is stored; every other gets 409 `overlap`."""
    engines = [kt, make_kt(setup_dir), make_kt(setup_dir)]
    with ExitStack() as stack:
        clients = [stack.enter_context(TestClient(create_app(kt), base_url="http://127.0.0.1",
                                                  raise_server_exceptions=False))
                   for _ in range(4)]

        def over_http(client: TestClient, minute: int) -> int:
            return client.post("/api/booking", json=_booking(
                "Ivanov", f"2025-06-01T10:{minute:02d}:00Z", "2025-06-01T11:30:00Z")).status_code

        def direct(engine: Kartoteka, minute: int) -> int:
            try:
                engine.records.create("booking", _booking(
                    "Ivanov", f"2025-06-01T10:{minute:02d}:00Z", "2025-06-01T11:30:00Z"))
            except Conflict as error:
                assert error.code == "overlap"
                return 409
            return 201

        calls: list[Callable[[], int]] = [partial(over_http, c, i) for i, c in enumerate(clients)]
        calls += [partial(direct, engines[i % 3], 4 + i) for i in range(16)]
        assert Counter(together(calls)) == {201: 1, 409: 19}
        assert clients[0].get("/api/booking").json()["total"] == 1


def test_concurrent_insensitive_uniques_exactly_one_wins(api: TestClient, kt: Kartoteka) -> None:
    def create(email: str) -> str:
        try:
            kt.records.create("client", {"name": email, "email": email})
        except Conflict as error:
            return error.code
        return "created"

    spellings = ["Anna@X.ru", "anna@x.ru", "ANNA@X.RU", "anna@X.ru"] * 2
    assert Counter(together([partial(create, e) for e in spellings])) == {
        "created": 1, "unique_violation": 7}


# -- migrations --------------------------------------------------------------------------------

def _without_rules(files: dict[str, str]) -> dict[str, str]:
    """The setup as it was before its unique sets and no-overlap rules were declared."""
    plain = {}
    for name, text in files.items():
        lines = [line for line in textwrap.dedent(text).splitlines()
                 if not line.startswith(("unique:", "no_overlap:", "  - {key:"))]
        plain[name] = "\n".join(lines).replace(", unique: {ignore_case: true}", "").replace(
            ", unique: {ignore_case: true, ignore_spaces: true}", "") + "\n"
    return plain


def _columns(kt: Kartoteka, table: str) -> set[str]:
    with kt.db.read() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def test_new_rules_list_their_violators_and_nothing_is_half_applied(
        db_url: str, open_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    before = open_kt(write_setup(_without_rules(SETUP), "before"), db_url)
    before.migrate()
    records = before.records
    first = records.create("client", {"name": "One", "email": "A@x.ru", "company": "Ромашка"})
    second = records.create("client", {"name": "Two", "email": "a@X.RU", "company": "РОМАШКА"})
    supplier = records.create("supplier", {"name": "S"})["id"]
    invoices = [records.create("invoice", {"supplier": supplier, "number": "7"})["id"]
                for _ in range(3)]
    slot = {"starts_at": "2025-06-01T10:00:00Z", "ends_at": "2025-06-01T11:00:00Z"}
    bookings = [records.create("booking", {"dentist": "Ivanov", **slot})["id"] for _ in range(2)]
    # one of two overlapping slots is cancelled: no violation of the slot's rule
    records.create("slot", {"truck": "T1", **slot})
    records.create("slot", {"truck": "T1", "status": "cancelled", **slot})
    backwards = records.create("booking", {"dentist": "Petrov", "starts_at": "2025-06-01T12:00:00Z",
                                           "ends_at": "2025-06-01T11:00:00Z"})["id"]

    after = open_kt(write_setup(SETUP, "after"), db_url)
    try:
        plan = after.plan()
        refused = {str(step) for step in plan.steps if step.refusal}
        text = "\n".join(refused)
        assert f"#{first['id']}, #{second['id']}" in text and "'A@x.ru'" in text
        assert "'Ромашка'" in text
        assert "×3 (" + ", ".join(f"#{i}" for i in invoices) + ")" in text
        assert f"1 pair overlap: #{bookings[0]} and #{bookings[1]}" in text
        assert f"1 record ends before it starts: #{backwards}" in text
        # email, company, the invoice set, and both booking rules (a backwards range breaks
        # the room's rule too: it cannot be a range at all)
        assert len(refused) == 5, refused
        columns = _columns(after, "client")
        with pytest.raises(MigrationRefused) as refusal:
            after.migrate()
        assert "Nothing was changed" in str(refusal.value)
        assert _columns(after, "client") == columns  # no shadow column was left behind
        assert [str(step) for step in after.plan().steps] == [str(step) for step in plan.steps]

        # the data put right, the same plan applies, and the rules hold for the old records
        records.update("client", second["id"], {"email": "b@x.ru", "company": "Василёк"})
        for record_id in invoices[1:]:
            records.update("invoice", record_id, {"number": f"7-{record_id}"})
        records.delete("booking", bookings[1])
        records.update("booking", backwards, {"ends_at": "2025-06-01T13:00:00Z"})
        after.migrate()
        assert after.plan().up_to_date
        with pytest.raises(Conflict) as taken:
            after.records.create("client", {"name": "Three", "email": "a@X.ru"})
        assert taken.value.code == "unique_violation"
        with pytest.raises(Conflict) as company:
            after.records.create("client", {"name": "Four", "company": "ромашка"})
        assert company.value.code == "unique_violation"
        with pytest.raises(Conflict) as overlap:
            after.records.create("booking", {"dentist": "Ivanov", **slot})
        assert overlap.value.code == "overlap"
        with pytest.raises(Conflict) as truck:
            after.records.create("slot", {"truck": "T1", **slot})
        assert truck.value.code == "overlap"
        after.records.create("slot", {"truck": "T1", "status": "cancelled", **slot})
    finally:
        after.close()
        before.close()

    # and the rules go again without --allow-data-loss, leaving the records as they were
    again = open_kt(write_setup(_without_rules(SETUP), "again"), db_url)
    try:
        plan = again.plan()
        assert not plan.refusals and not plan.data_loss, [str(s) for s in plan.steps]
        again.migrate()
        assert not {c for c in _columns(again, "client") if c.startswith("kt_")}
        again.records.create("client", {"name": "Five", "email": "a@x.RU"})
        again.records.create("booking", {"dentist": "Ivanov", **slot})
    finally:
        again.close()


def test_the_conflicting_booking_is_named_only_to_those_who_may_read_it(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    folder = write_setup({
        "setup.yaml": """
            roles:
              doctor:
                visit: {create: all, read: own, update: own}
        """,
        "visit.yaml": """
            owner: true
            fields:
              dentist: string
              starts_at: datetime
              ends_at: datetime
            no_overlap: [{key: [dentist], range: [starts_at, ends_at]}]
        """,
    }, "visits")
    kt = make_kt(folder)
    slot = {"dentist": "Ivanov", "starts_at": "2025-06-01T10:00:00Z",
            "ends_at": "2025-06-01T11:00:00Z"}
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as http:
        tokens = {name: kt.users.add(f"{name}@example.com", ["doctor"])[1]
                  for name in ("anna", "boris")}
        headers = {name: {"Authorization": f"Bearer {t}"} for name, t in tokens.items()}
        mine = http.post("/api/visit", json=slot, headers=headers["anna"])
        assert mine.status_code == 201, mine.text
        # Anna may read her own visit: it is named
        error = _error(http.post("/api/visit", json=slot, headers=headers["anna"]), 409, "overlap")
        assert f"visit {mine.json()['id']}" in error["message"]
        # Boris may not: the time is taken all the same, but whose visit is not said
        error = _error(http.post("/api/visit", json=slot, headers=headers["boris"]), 409, "overlap")
        assert "another visit" in error["message"]
        assert str(mine.json()["id"]) not in str(error)


def test_the_rules_are_described(api: TestClient) -> None:
    entities = api.get("/api/schema").json()["entities"]
    assert entities["invoice"]["unique"] == [
        {"fields": ["supplier", "number"], "ignore_case": False, "ignore_spaces": False}]
    assert {"fields": ["email"], "ignore_case": True, "ignore_spaces": False} in \
        entities["client"]["unique"]
    assert entities["booking"]["no_overlap"] == [
        {"key": ["dentist"], "range": ["starts_at", "ends_at"]},
        {"key": ["room"], "range": ["starts_at", "ends_at"]}]
    assert "unique" not in entities["room"] and "no_overlap" not in entities["room"]


def test_postgresql_holds_the_rule_itself(kt: Kartoteka) -> None:
    """Behind the write path, the exclusion constraint: a row written around the engine
    that overlaps another is refused by PostgreSQL when the transaction commits."""
    if kt.db.dialect != "postgresql":
        pytest.skip("SQLite has no exclusion constraints; its writes go through the engine")
    kt.records.create("booking", _booking("Ivanov", "2025-06-01T10:00:00Z", "2025-06-01T11:00:00Z"))
    table = kt.storage["booking"].table
    now = dt.datetime.now(dt.UTC)
    row = {"created_at": now, "updated_at": now, "version": 1, "dentist": "Ivanov",
           "starts_at": dt.datetime(2025, 6, 1, 10, 30, tzinfo=dt.UTC),
           "ends_at": dt.datetime(2025, 6, 1, 11, 30, tzinfo=dt.UTC)}
    with pytest.raises(sa.exc.IntegrityError, match="ex_booking_dentist_starts_at_ends_at"):
        with kt.db.write(system="a test writing around the engine") as conn:
            conn.execute(sa.insert(table).values(row))
    assert kt.records.list_page("booking", []).total == 1


def test_where_on_the_stage_is_refused(write_setup: Callable[..., Path]) -> None:
    folder = write_setup({"visit.yaml": """
        fields:
          dentist: string
          starts_at: datetime
          ends_at: datetime
        pipeline: {stages: [planned, done, cancelled]}
        no_overlap: [{key: [dentist], range: [starts_at, ends_at], where: {stage: {ne: cancelled}}}]
    """}, "staged")
    [problem] = check_setup(folder).errors
    assert (problem.file, problem.line, problem.key) == ("visit.yaml", 6, "no_overlap[0].where")
    assert "stage moves" in problem.message and problem.hint


def test_renaming_a_field_of_a_set_keeps_the_rule(
        db_url: str, open_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    supplier = """
        fields:
          name: string
    """
    before = open_kt(write_setup({"supplier.yaml": supplier, "invoice.yaml": """
        fields:
          number: {type: string, unique: {ignore_case: true}}
          code: string
        links:
          supplier: {to: supplier}
        unique: [[supplier, code]]
    """}, "v1"), db_url)
    after = open_kt(write_setup({"supplier.yaml": supplier, "invoice.yaml": """
        fields:
          doc_no: {type: string, unique: {ignore_case: true}, renamed_from: number}
          ref: {type: string, renamed_from: code}
        links:
          supplier: {to: supplier}
        unique: [[supplier, ref]]
    """}, "v2"), db_url)
    try:
        before.migrate()
        s = before.records.create("supplier", {"name": "S"})["id"]
        before.records.create("invoice", {"supplier": s, "number": "A-1", "code": "x"})
        plan = after.plan()
        assert not plan.refusals and not plan.data_loss, [str(step) for step in plan.steps]
        after.migrate()
        assert after.plan().up_to_date
        for body in ({"supplier": s, "doc_no": "a-1"}, {"supplier": s, "ref": "x"}):
            with pytest.raises(Conflict):
                after.records.create("invoice", body)
        after.records.create("invoice", {"supplier": s, "doc_no": "A-2", "ref": "y"})
    finally:
        after.close()
        before.close()


def test_the_default_setups_client_email_ignores_case(make_kt: Callable[..., Kartoteka]) -> None:
    """The default setup's clients: `A@x.ru` and `a@x.ru` are one e-mail (issue 10)."""
    with TestClient(create_app(make_kt()), base_url="http://127.0.0.1") as client:
        _default_email(client)


def _default_email(client: TestClient) -> None:
    first = client.post("/api/client", json={"name": "Ромашка", "email": "Info@Romashka.ru"})
    assert first.status_code == 201, first.text
    second = client.post("/api/client", json={"name": "Ромашка 2", "email": "info@romashka.RU"})
    _error(second, 409, "unique_violation")
    assert first.json()["email"] == "Info@Romashka.ru"  # kept as written


def test_an_email_unique_as_written_is_a_warning(write_setup: Callable[..., Path]) -> None:
    folder = write_setup({"person.yaml": "entity: person\nfields:\n"
                                         "  email: {type: email, unique: true}\n"})
    result = check_setup(folder)
    assert result.setup is not None
    [warning] = [d for d in result.diagnostics if d.code == "constraint.email_case"]
    assert warning.severity == "warning" and warning.line == 3
    assert "unique: {ignore_case: true}" in warning.hint
