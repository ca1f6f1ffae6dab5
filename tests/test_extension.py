"""A field type written outside the engine works like a built-in: registered once, usable
in YAML, stored, validated on every write, published in the JSON Schemas, filterable — and
given the built-ins' behaviour by the same capabilities: `summable` (summed on the board and
the funnel, like money) and `refers_to_users` (ids checked against active users, like users).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import (
    ExtensionError,
    FieldType,
    Kartoteka,
    ValueProblem,
    check_setup,
    default_registry,
)
from engine.setup.spec import FieldSpec
from engine.types.columns import json_column
from engine.types.fields import IntegerType, StringType


class InnType(StringType):
    """A Russian taxpayer number: 10 or 12 digits with check digits."""

    name = "inn"
    accepts = frozenset()
    default_max_length = 12
    noun = "a taxpayer number (INN)"

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "string", "pattern": "^[0-9]{10}([0-9]{2})?$"}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        value = super().parse(field, value)
        if not _inn_valid(value):
            raise ValueProblem("has a wrong check digit")
        return value


def _inn_valid(inn: str) -> bool:
    def check(digits: str, weights: list[int]) -> int:
        return sum(int(d) * w for d, w in zip(digits, weights, strict=False)) % 11 % 10

    if len(inn) == 10:
        return check(inn, [2, 4, 10, 3, 5, 9, 4, 6, 8]) == int(inn[9])
    n11 = check(inn, [7, 2, 4, 10, 3, 5, 9, 4, 6, 8])
    n12 = check(inn, [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8])
    return n11 == int(inn[10]) and n12 == int(inn[11])


class RatingType(FieldType):
    """A whole-number rating from 1 to 5, stored as a small integer."""

    name = "rating"
    noun = "a rating from 1 to 5"

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return sa.SmallInteger()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": 5}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise ValueProblem(f"must be {self.noun}")
        return value

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        if not text.isdigit():
            raise ValueProblem(f"must be {self.noun}")
        return self.parse(field, int(text))


SETUP = {
    "company.yaml": """
        entity: company
        fields:
          name: {type: string, required: true}
          inn: {type: inn, unique: true}
          rating: rating
    """,
}


def test_unknown_type_without_the_plugin_is_a_setup_error(
        write_setup: Callable[[dict[str, str]], Path]) -> None:
    result = check_setup(write_setup(SETUP))
    assert result.setup is None
    messages = {(d.key, d.message) for d in result.errors}
    assert ("fields.inn.type", "unknown field type 'inn'") in messages
    assert ("fields.rating", "unknown field type 'rating'") in messages


def test_a_registered_field_type_works_end_to_end(
        write_setup: Callable[[dict[str, str]], Path], db_url: str) -> None:
    registry = default_registry()
    registry.register(InnType())
    registry.register(RatingType())
    kt = Kartoteka.open(write_setup(SETUP), db_url, registry=registry)
    try:
        kt.migrate()
        with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
            good = client.post("/api/company", json={"name": "Яндекс", "inn": "7736207543",
                                                     "rating": 5})
            assert good.status_code == 201, good.text
            assert good.json()["inn"] == "7736207543"
            bad = client.post("/api/company", json={"name": "X", "inn": "7736207544",
                                                    "rating": 9})
            assert bad.status_code == 422
            problems = {d["field"]: d["problem"] for d in bad.json()["error"]["details"]}
            assert problems["inn"] == "has a wrong check digit"
            assert problems["rating"] == "must be at most 5"
            found = client.get("/api/company", params={"rating[gte]": "4"}).json()
            assert [c["name"] for c in found["items"]] == ["Яндекс"]
            schema = client.get("/openapi.json").json()["components"]["schemas"]["CompanyCreate"]
            assert schema["properties"]["rating"]["maximum"] == 5
            assert client.get("/api/schema").json()["entities"]["company"]["fields"]["inn"][
                "type"] == "inn"
    finally:
        kt.close()


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ExtensionError, match="'string' is already registered"):
        default_registry().register(StringType())


# -- capabilities: what the board sums, whose ids are users -------------------------------

class PointsType(IntegerType):
    """Story points: whole numbers that add up, so the board and the funnel sum them."""

    name = "points"
    noun = "a number of points"
    summable = True

    def render_sum(self, field: FieldSpec, total: Any, percent: int = 100) -> Any:
        return int((Decimal(total or 0) * percent / 100).to_integral_value())


class ApproversType(FieldType):
    """The users who must approve a record: a list of user ids, each an active user."""

    name = "approvers"
    noun = "a list of user ids"
    operators = frozenset({"isnull"})
    sortable = False
    can_be_unique = False
    refers_to_users = True

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return json_column()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "array", "uniqueItems": True, "items": {"type": "integer", "minimum": 1}}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueProblem(f"must be {self.noun}")
        return sorted(set(value))


DEALS = {
    "deal.yaml": """
        entity: deal
        fields:
          title: {type: string, required: true}
          points: points
          approvers: approvers
        pipeline:
          stages: [{name: open, probability: 50}, {name: won, category: won}]
          final: [won]
    """,
}


def test_plugin_types_are_summed_on_the_board_and_checked_against_active_users(
        write_setup: Callable[[dict[str, str]], Path], db_url: str) -> None:
    registry = default_registry()
    registry.register(PointsType())
    registry.register(ApproversType())
    kt = Kartoteka.open(write_setup(DEALS), db_url, registry=registry)
    try:
        kt.migrate()
        # summable: the covering index carries the column, so the sums come from it
        indexes = {tuple(c.name for c in index.columns)
                   for index in kt.storage["deal"].table.indexes}
        assert ("stage", "kt_reached", "points") in indexes
        anna, token = kt.users.add("anna@example.com", ["admin"])
        boris, _ = kt.users.add("boris@example.com", ["admin"])
        kt.users.disable("boris@example.com")
        with TestClient(create_app(kt), raise_server_exceptions=False, base_url="http://127.0.0.1",
                        headers={"Authorization": f"Bearer {token}"}) as http:
            for body in ({"title": "A", "points": 3, "approvers": [anna.id]},
                         {"title": "B", "points": 5},
                         {"title": "C", "points": 13}):
                made = http.post("/api/deal", json=body)
                assert made.status_code == 201, made.text
            won = made.json()["id"]
            assert http.post(f"/api/deal/{won}/stage", json={"to": "won"}).status_code == 200

            for approvers in ([boris.id], [anna.id, 999]):
                refused = http.post("/api/deal", json={"title": "D", "approvers": approvers})
                assert refused.status_code == 422, refused.text
                error = refused.json()["error"]
                assert error["code"] == "user_not_found"
                assert error["details"][0]["field"] == "approvers"
                assert "no active user with id" in error["details"][0]["problem"]

            columns = {c["stage"]: c for c in http.get("/api/deal/board").json()["columns"]}
            assert columns["open"]["sums"] == {"points": 8}
            assert columns["won"]["sums"] == {"points": 13}
            funnel = {s["stage"]: s for s in http.get("/api/deal/funnel").json()["stages"]}
            assert funnel["open"]["current"] == {"count": 2, "sums": {"points": 8}}
            assert funnel["open"]["forecast"] == {"points": 4}
            assert funnel["won"]["forecast"] == {"points": None}  # no probability given
    finally:
        kt.close()


def test_a_summable_type_must_say_how_its_sums_render() -> None:
    class Tally(IntegerType):
        name = "tally"
        summable = True

    with pytest.raises(ExtensionError, match="override render_sum"):
        default_registry().register(Tally())
