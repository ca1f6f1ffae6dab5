"""Relative dates and dynamic defaults, over real HTTP on SQLite and PostgreSQL.

`today`, `today-30d`, `start_of_month`, `now-2h`... in list filters and in role conditions,
resolved when the query runs, in the setup's time zone; `default: today + 7d | now | $user`
computed on each create; a `user` field naming one user, usable as `{assignee: $user}` and
through a link as `{dentist.user: $user}`. "Today" is frozen by giving the engine a clock.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import DatabaseSettings, Kartoteka, Settings, SetupError, load_setup
from engine.types.moments import NotRelative, Relative, parse_relative

TEHRAN = ZoneInfo("Asia/Tehran")  # +03:30, no daylight saving: midnight is 20:30 UTC


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


# -- the grammar, with no database ----------------------------------------------------------

@pytest.mark.parametrize(("text", "kind", "now", "expected"), [
    # 22:00 UTC on 31 January is 01:30 on 1 February in Tehran: the month has turned there
    ("today", "date", "2026-01-31T22:00:00Z", "2026-02-01"),
    ("start_of_month", "date", "2026-01-31T22:00:00Z", "2026-02-01"),
    ("start_of_month-1m", "date", "2026-01-31T22:00:00Z", "2026-01-01"),
    ("end_of_month", "date", "2026-01-31T22:00:00Z", "2026-02-28"),
    ("end_of_month-1m", "date", "2026-01-31T22:00:00Z", "2026-01-31"),
    ("end_of_month+1m", "date", "2026-02-10T10:00:00Z", "2026-03-31"),
    # a month from 31 January is the last day of February (a leap year too)
    ("today+1m", "date", "2028-01-31T10:00:00Z", "2028-02-29"),
    ("today-30d", "date", "2026-03-01T10:00:00Z", "2026-01-30"),
    ("today 7d", "date", "2026-03-01T10:00:00Z", "2026-03-08"),  # a URL's unencoded +
    ("today + 1w - 1d", "date", "2026-03-01T10:00:00Z", "2026-03-07"),
    ("start_of_week", "date", "2026-03-01T10:00:00Z", "2026-02-23"),  # a Sunday: Monday before
    ("end_of_week", "date", "2026-03-01T10:00:00Z", "2026-03-01"),
    ("start_of_quarter", "date", "2026-05-15T10:00:00Z", "2026-04-01"),
    ("end_of_quarter", "date", "2026-05-15T10:00:00Z", "2026-06-30"),
    ("start_of_year-1y", "date", "2026-05-15T10:00:00Z", "2025-01-01"),
    ("end_of_year", "date", "2026-05-15T10:00:00Z", "2026-12-31"),
    # datetimes: local midnight as UTC, the clock for h and min
    ("today", "datetime", "2026-01-31T22:00:00Z", "2026-01-31T20:30:00+00:00"),
    ("start_of_month", "datetime", "2026-01-31T22:00:00Z", "2026-01-31T20:30:00+00:00"),
    ("end_of_month", "datetime", "2026-01-15T10:00:00Z", "2026-01-31T20:29:59.999999+00:00"),
    ("now-2h", "datetime", "2026-01-31T22:00:00Z", "2026-01-31T20:00:00+00:00"),
    ("now+90min", "datetime", "2026-01-31T22:00:00Z", "2026-01-31T23:30:00+00:00"),
])
def test_relative_moments_resolve_in_the_setup_zone(text: str, kind: str, now: str,
                                                    expected: str) -> None:
    relative = parse_relative(text, kind)
    assert isinstance(relative, Relative)
    value = relative.resolve(utc(now), TEHRAN, kind)
    assert value.isoformat() == expected


@pytest.mark.parametrize(("text", "kind", "problem"), [
    ("yesterday", "date", "is not a date nor a relative date"),
    ("now", "date", "a date has no time of day"),
    ("today+2h", "date", "a date moves by y, m, w or d"),
    ("today+7days", "date", "cannot be read from '+7days'"),
    ("today+", "date", "cannot be read from '+'"),
    ("today*2", "datetime", "cannot be read"),
    ("today+999999d", "date", "offset too large"),
    ("today+9000y", "date", "outside the years 1 to 9999"),
])
def test_a_wrong_relative_moment_says_why(text: str, kind: str, problem: str) -> None:
    with pytest.raises(NotRelative, match=re.escape(problem)):
        parse_relative(text, kind)


def test_plain_dates_are_not_relative() -> None:
    assert parse_relative("2026-01-01", "date") is None
    assert parse_relative("2026-01-01T10:00:00Z", "datetime") is None


# -- a clinic: over HTTP, on both databases -------------------------------------------------

SETUP = {
    "setup.yaml": """
        name: Clinic
        languages: [en, ru, fa, zh]
        timezone: Asia/Tehran
        roles:
          dentist:
            dentist: {read: {user: $user}}
            visit:
              create: all
              read: [{assignee: $user}, {dentist.user: $user}]
              update: {assignee: $user}
          planner:
            visit: {read: {due_on: {gte: start_of_month, lte: end_of_month}}}
          watcher:
            visit: {read: {starts_at: {gte: now-2h}}}
    """,
    "dentist.yaml": """
        fields:
          name: {type: string, required: true, label: {en: Name, ru: Имя, fa: نام, zh: 姓名}}
          user: {type: user, unique: true}
    """,
    "visit.yaml": """
        fields:
          title:     {type: string, required: true}
          due_on:    {type: date, default: today + 7d}
          starts_at: {type: datetime, default: now+2h}
          assignee:  {type: user, default: $user}
        links:
          dentist: {to: dentist}
    """,
}


@pytest.fixture
def clock() -> Clock:
    return Clock(utc("2026-01-31T22:00:00Z"))  # already 1 February in Tehran


@pytest.fixture
def clinic(write_setup: Callable[..., Path], make_kt: Callable[..., Kartoteka],
           clock: Clock) -> Kartoteka:
    return make_kt(write_setup(SETUP), clock=clock)


@pytest.fixture
def http(clinic: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(clinic), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def titles(response: Any) -> list[str]:
    return sorted(item["title"] for item in ok(response)["items"])


def test_dynamic_defaults_are_computed_on_each_create(http: TestClient, clock: Clock) -> None:
    visit = ok(http.post("/api/visit", json={"title": "Чек-ап"}), 201)
    # today in Tehran is 1 February; + 7 days
    assert visit["due_on"] == "2026-02-08"
    assert visit["starts_at"] == "2026-02-01T00:00:00Z"
    assert visit["assignee"] is None  # no user acting: the API is open
    clock.now = utc("2026-03-10T08:00:00Z")
    later = ok(http.post("/api/visit", json={"title": "بازبینی"}), 201)
    assert later["due_on"] == "2026-03-17" and later["starts_at"] == "2026-03-10T10:00:00Z"
    # a value given wins, null included
    given = ok(http.post("/api/visit", json={"title": "复查", "due_on": None,
                                             "starts_at": "2026-05-01T09:00:00+03:30"}), 201)
    assert given["due_on"] is None and given["starts_at"] == "2026-05-01T05:30:00Z"
    described = ok(http.get("/api/schema"))["entities"]["visit"]["fields"]
    assert described["due_on"]["default"] == "today+7d"
    assert described["due_on"]["dynamic_default"] is True
    assert described["assignee"] == {"type": "user", "label": {"en": "Assignee"},
                                      "required": False, "default": "$user",
                                      "dynamic_default": True}


def test_relative_dates_filter_lists_when_the_query_runs(http: TestClient,
                                                         clock: Clock) -> None:
    for title, due in (("январь", "2026-01-31"), ("февраль-1", "2026-02-01"),
                       ("февраль-28", "2026-02-28"), ("март", "2026-03-01")):
        ok(http.post("/api/visit", json={"title": title, "due_on": due}), 201)
    # in Tehran it is 1 February already
    assert titles(http.get("/api/visit", params={"due_on[lt]": "today"})) == ["январь"]
    assert titles(http.get("/api/visit?due_on[lt]=today+1d")) == ["февраль-1", "январь"]
    assert titles(http.get("/api/visit?due_on[lt]=today%2B1d")) == ["февраль-1", "январь"]
    assert titles(http.get("/api/visit", params={
        "due_on[gte]": "start_of_month", "due_on[lte]": "end_of_month"})) == \
        ["февраль-1", "февраль-28"]
    assert titles(http.get("/api/visit", params={"due_on[in]": "today,start_of_month-1d"})) == \
        ["февраль-1", "январь"]
    clock.now = utc("2026-02-28T21:00:00Z")  # 1 March, 00:30 in Tehran
    assert titles(http.get("/api/visit", params={"due_on[gte]": "start_of_month"})) == ["март"]
    assert titles(http.get("/api/visit", params={"due_on[eq]": "end_of_month-1m"})) == \
        ["февраль-28"]


@pytest.mark.parametrize(("params", "problem"), [
    ({"due_on[lt]": "tomorrow"}, "is not a date nor a relative date"),
    ({"due_on[lt]": "now"}, "a date has no time of day"),
    ({"due_on[lt]": "today+2h"}, "a date moves by y, m, w or d"),
    ({"starts_at[gt]": "now-2x"}, "cannot be read"),
    ({"due_on[lt]": "today+9000y"}, "outside the years 1 to 9999"),
])
def test_a_wrong_relative_date_in_a_filter_is_a_400(http: TestClient, params: dict[str, str],
                                                    problem: str) -> None:
    response = http.get("/api/visit", params=params)
    assert response.status_code == 400, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == next(iter(params)) and problem in detail["problem"]


def test_role_conditions_resolve_relative_dates_per_request(clinic: Kartoteka, http: TestClient,
                                                            clock: Clock) -> None:
    for title, due, starts in (("старый", "2026-01-31", "2026-01-31T10:00:00Z"),
                               ("новый", "2026-02-15", "2026-01-31T21:00:00Z")):
        ok(http.post("/api/visit", json={"title": title, "due_on": due, "starts_at": starts}),
           201)
    _, planner = clinic.users.add("planner@example.com", ["planner"])
    _, watcher = clinic.users.add("watcher@example.com", ["watcher"])
    as_planner = {"Authorization": f"Bearer {planner}"}
    as_watcher = {"Authorization": f"Bearer {watcher}"}
    assert titles(http.get("/api/visit", headers=as_planner)) == ["новый"]
    assert titles(http.get("/api/visit", headers=as_watcher)) == ["новый"]
    # the same users, their conditions already compiled: a month on, February is gone
    clock.now = utc("2026-03-02T10:00:00Z")
    assert titles(http.get("/api/visit", headers=as_planner)) == []
    assert titles(http.get("/api/visit", headers=as_watcher)) == []
    clock.now = utc("2026-02-10T10:00:00Z")
    assert titles(http.get("/api/visit", headers=as_planner)) == ["новый"]


def test_a_user_field_links_records_to_users(clinic: Kartoteka, http: TestClient) -> None:
    admin, admin_token = clinic.users.add("admin@example.com", ["admin"])
    mina, mina_token = clinic.users.add("mina@example.com", ["dentist"])
    li, li_token = clinic.users.add("li@example.com", ["dentist"])
    as_admin = {"Authorization": f"Bearer {admin_token}"}
    as_mina = {"Authorization": f"Bearer {mina_token}"}
    as_li = {"Authorization": f"Bearer {li_token}"}
    card = ok(http.post("/api/dentist", json={"name": "Мина", "user": mina.id},
                        headers=as_admin), 201)
    ok(http.post("/api/dentist", json={"name": "李", "user": li.id}, headers=as_admin), 201)
    # through the dentist card's user: Mina sees the visits booked with her
    booked = ok(http.post("/api/visit", json={"title": "для Мины", "dentist": card["id"]},
                          headers=as_admin), 201)
    assert booked["assignee"] == admin.id  # default: $user, the acting user
    own = ok(http.post("/api/visit", json={"title": "李的"}, headers=as_li), 201)
    assert own["assignee"] == li.id
    assert titles(http.get("/api/visit", headers=as_mina)) == ["для Мины"]
    assert titles(http.get("/api/visit", headers=as_li)) == ["李的"]
    assert [d["name"] for d in ok(http.get("/api/dentist", headers=as_mina))["items"]] == ["Мина"]
    assert ok(http.get(f"/api/visit?assignee={li.id}", headers=as_admin))["total"] == 1
    assert ok(http.get("/api/visit?assignee[isnull]=true", headers=as_admin))["total"] == 0
    # Mina may read the visit through her card, but not update it: not assigned to her
    refused = http.patch(f"/api/visit/{booked['id']}", json={"title": "x"}, headers=as_mina)
    assert refused.status_code == 403, refused.text
    # a user field holds an active user's id, else 422 naming the field
    for bad, code in ((999999, "user_not_found"), ("7", "validation_failed"),
                      (True, "validation_failed"), (0, "validation_failed"),
                      ([li.id], "validation_failed")):
        response = http.post("/api/visit", json={"title": "x", "assignee": bad}, headers=as_admin)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["details"][0]["field"] == "assignee"
    clinic.users.change(li.id, {"active": False})
    response = http.patch(f"/api/visit/{booked['id']}", json={"assignee": li.id},
                          headers=as_admin)
    assert response.status_code == 422 and response.json()["error"]["code"] == "user_not_found"
    # one card per user: the field is unique
    clash = http.post("/api/dentist", json={"name": "Мина 2", "user": mina.id}, headers=as_admin)
    assert clash.status_code == 409, clash.text


def test_a_required_user_default_needs_a_user(write_setup: Callable[..., Path],
                                              db_url: str) -> None:
    folder = write_setup({"note.yaml": """
        fields:
          text: {type: text, required: true}
          author: {type: user, required: true, default: $user}
    """})
    kt = Kartoteka(load_setup(folder), Settings(DatabaseSettings(url=db_url)))
    kt.migrate()
    try:
        with TestClient(create_app(kt), base_url="http://127.0.0.1",
                        raise_server_exceptions=False) as client:
            response = client.post("/api/note", json={"text": "без автора"})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["details"][0]["field"] == "author"
            user, token = kt.users.add("a@example.com", ["admin"])
            made = ok(client.post("/api/note", json={"text": "с автором"},
                                  headers={"Authorization": f"Bearer {token}"}), 201)
            assert made["author"] == user.id
    finally:
        kt.close()


@pytest.mark.parametrize(("files", "key", "problem"), [
    ({"setup.yaml": "timezone: Europe/Moskva\n", "a.yaml": "fields: {x: string}\n"},
     "timezone", "'Europe/Moskva' is not a time zone"),
    ({"a.yaml": "fields:\n  due: {type: date, default: tomorrow}\n"},
     "fields.due.default", "default 'tomorrow' is not a date nor a relative date"),
    ({"a.yaml": "fields:\n  due: {type: date, default: now}\n"},
     "fields.due.default", "a date has no time of day"),
    ({"a.yaml": "fields:\n  at: {type: datetime, default: now + 2 hours}\n"},
     "fields.at.default", "cannot be read"),
    ({"a.yaml": "fields:\n  who: {type: string, default: $user}\n"},
     "fields.who.default", "only a field of users holds"),
    ({"a.yaml": "fields:\n  who: {type: user, default: $user.team}\n"},
     "fields.who.default", "written $user"),
    ({"setup.yaml": "roles:\n  r:\n    a: {read: {due: {lt: today+1h}}}\n",
      "a.yaml": "fields:\n  due: date\n"},
     "roles.r.a.read", "a date moves by y, m, w or d"),
])
def test_bad_dynamic_declarations_are_located(write_setup: Callable[..., Path],
                                              files: dict[str, str], key: str,
                                              problem: str) -> None:
    with pytest.raises(SetupError) as raised:
        load_setup(write_setup(files))
    [diagnostic] = [d for d in raised.value.diagnostics if d.severity == "error"]
    assert diagnostic.key == key and diagnostic.line >= 1
    assert problem in diagnostic.message, diagnostic.message


def test_a_users_field_defaults_to_a_list_of_the_acting_user(write_setup: Callable[..., Path],
                                                             db_url: str) -> None:
    folder = write_setup({"setup.yaml": "timezone: Europe/Moscow\n", "task.yaml": """
        fields:
          subject: {type: string, required: true}
          observers: {type: users, default: $user}
    """})
    kt = Kartoteka(load_setup(folder), Settings(DatabaseSettings(url=db_url)))
    kt.migrate()
    try:
        with TestClient(create_app(kt), base_url="http://127.0.0.1",
                        raise_server_exceptions=False) as client:
            assert ok(client.post("/api/task", json={"subject": "ничья"}), 201)["observers"] \
                is None
            assert ok(client.get("/api/schema"))["timezone"] == "Europe/Moscow"
            user, token = kt.users.add("o@example.com", ["admin"])
            made = ok(client.post("/api/task", json={"subject": "моя"},
                                  headers={"Authorization": f"Bearer {token}"}), 201)
            assert made["observers"] == [user.id]
    finally:
        kt.close()


def test_a_computed_default_still_keeps_the_fields_bounds(write_setup: Callable[..., Path],
                                                          db_url: str, clock: Clock) -> None:
    folder = write_setup({"archive.yaml": """
        fields:
          title: string
          filed_on: {type: date, default: today - 1y, min: 2025-06-01}
    """})
    kt = Kartoteka(load_setup(folder), Settings(DatabaseSettings(url=db_url)), clock=clock)
    kt.migrate()
    try:
        with TestClient(create_app(kt), base_url="http://127.0.0.1",
                        raise_server_exceptions=False) as client:
            refused = client.post("/api/archive", json={"title": "старое"})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["details"] == [
                {"field": "filed_on",
                 "problem": "the default today-1y must be on or after 2025-06-01"}]
            assert ok(client.get("/api/archive"))["total"] == 0  # nothing half-written
            clock.now = utc("2026-07-01T12:00:00Z")
            assert ok(client.post("/api/archive", json={"title": "новое"}), 201)["filed_on"] \
                == "2025-07-01"
    finally:
        kt.close()
