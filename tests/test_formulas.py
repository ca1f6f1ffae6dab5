"""Formula fields over HTTP on both databases: exact arithmetic, dates, text in several
scripts, conditionals and nulls, paths through links two deep, recomputation when a
linked record changes or goes, the 422 for a client that sends one, filters and sorts on
them, and a property test that the stored values always equal a recomputation from scratch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from engine import Kartoteka, check_setup
from engine.setup.expressions import NOW, TODAY, FormulaProblem, compile_formula, finish
from engine.storage.migrations import apply, plan

Record = dict[str, Any]

FILES = {
    "region.yaml": """
entity: region
fields:
  name: {type: string}
  rate: {type: decimal, places: 4}
""",
    "client.yaml": """
entity: client
fields:
  name: {type: string, required: true}
  discount: {type: decimal, places: 2}
  tier: {type: string, formula: "if(coalesce(discount, 0) > 10, 'gold', 'plain')"}
links:
  region: {to: region, on_delete: set_null}
""",
    "sale.yaml": """
entity: sale
fields:
  number: {type: string}
  amount: {type: money}
  price: {type: decimal, places: 1}
  due: {type: date}
  net: {type: money, index: true,
        formula: "amount * (1 - coalesce(client.discount, 0) / 100)"}
  sum: {type: decimal, places: 2, formula: "price + 0.2"}
  rate: {type: decimal, places: 4, formula: "client.region.rate * 2"}
  days_left: {type: integer, formula: "due - today"}
  label: {type: string, formula: "number & ' / ' & client.name & ' ' & client.tier"}
  shout: {type: text, formula: "upper(concat(number, '!', len(number)))"}
  follow_up: {type: date, formula: "due + 30 days"}
  big: {type: boolean, formula: "net >= 1000 or stage = 'won'"}
  rounded: {type: integer, formula: "round(amount / 3)"}
links:
  client: {to: client, on_delete: set_null}
pipeline:
  stages: [lead, won, lost]
  final: [won, lost]
""",
}


@pytest.fixture
def setup_dir(write_setup: Callable[..., Path]) -> Path:
    return write_setup(FILES)


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], setup_dir: Path) -> Kartoteka:
    return make_kt(setup_dir)


@pytest.fixture
def client(kt: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


def _post(client: TestClient, entity: str, body: dict[str, Any]) -> Record:
    response = client.post(f"/api/{entity}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _patch(client: TestClient, entity: str, record_id: int, body: dict[str, Any]) -> Record:
    response = client.patch(f"/api/{entity}/{record_id}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _get(client: TestClient, entity: str, record_id: int) -> Record:
    response = client.get(f"/api/{entity}/{record_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_money_is_exact_and_rounded_half_up(client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "A", "discount": "12.5"})
    sale = _post(client, "sale", {"number": "S1", "amount": "100.10", "price": "0.1",
                                  "client": buyer["id"]})
    assert sale["net"] == "87.59"  # 87.5875 rounded half up
    assert sale["sum"] == "0.30"  # 0.1 + 0.2, exactly
    assert sale["rounded"] == 33
    assert _get(client, "sale", sale["id"])["net"] == "87.59"
    assert _patch(client, "sale", sale["id"], {"amount": "0.05"})["net"] == "0.04"


def test_dates_and_today(client: TestClient) -> None:
    today = dt.datetime.now(dt.UTC).date()
    due = today + dt.timedelta(days=10)
    sale = _post(client, "sale", {"number": "S1", "due": due.isoformat()})
    assert sale["days_left"] == 10
    assert sale["follow_up"] == (due + dt.timedelta(days=30)).isoformat()
    assert _patch(client, "sale", sale["id"], {"due": None})["days_left"] is None


def test_text_in_several_scripts_and_nulls(client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "Иванов 王 رضا"})
    sale = _post(client, "sale", {"number": "№5", "client": buyer["id"]})
    assert sale["label"] == "№5 / Иванов 王 رضا plain"
    assert sale["shout"] == "№5!2"
    lonely = _post(client, "sale", {"number": "x"})
    assert lonely["label"] is None  # & propagates null, as SQL's ||
    assert lonely["shout"] == "X!1"  # concat() skips nulls
    assert lonely["net"] is None and lonely["rate"] is None


def test_conditionals_and_stage(client: TestClient) -> None:
    sale = _post(client, "sale", {"number": "S", "amount": "5"})
    assert sale["big"] is False
    moved = client.post(f"/api/sale/{sale['id']}/stage", json={"to": "won"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["big"] is True
    assert _get(client, "sale", sale["id"])["big"] is True


def test_a_linked_change_updates_every_dependent(client: TestClient) -> None:
    region = _post(client, "region", {"name": "North", "rate": "0.0125"})
    buyer = _post(client, "client", {"name": "A", "discount": "10", "region": region["id"]})
    sales = [_post(client, "sale", {"number": f"S{i}", "amount": "200", "client": buyer["id"]})
             for i in range(3)]
    assert {s["net"] for s in sales} == {"180.00"}
    assert {s["rate"] for s in sales} == {"0.0250"}
    version = _get(client, "sale", sales[0]["id"])["version"]
    _patch(client, "client", buyer["id"], {"discount": "25"})
    _patch(client, "region", region["id"], {"rate": "1"})
    for sale in sales:
        stored = _get(client, "sale", sale["id"])
        assert (stored["net"], stored["rate"], stored["version"]) == ("150.00", "2.0000", version)
        assert stored["label"].endswith("gold")  # a formula reading a formula of the client
    other = _post(client, "region", {"name": "South", "rate": "3"})
    _patch(client, "client", buyer["id"], {"region": other["id"]})
    assert _get(client, "sale", sales[1]["id"])["rate"] == "6.0000"
    assert client.delete(f"/api/region/{other['id']}").status_code == 204
    assert _get(client, "sale", sales[1]["id"])["rate"] is None
    assert client.delete(f"/api/client/{buyer['id']}").status_code == 204
    assert _get(client, "sale", sales[2]["id"])["net"] == "200.00"


def test_a_client_sending_a_formula_gets_422(client: TestClient) -> None:
    response = client.post("/api/sale", json={"number": "S", "net": "1", "label": "x"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "field_computed"
    assert {d["field"] for d in error["details"]} == {"net", "label"}
    sale = _post(client, "sale", {"number": "S"})
    response = client.patch(f"/api/sale/{sale['id']}", json={"net": None})
    assert response.status_code == 422 and response.json()["error"]["code"] == "field_computed"
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "net" not in schemas["SaleCreate"]["properties"]
    assert "net" not in schemas["SalePatch"]["properties"]
    assert schemas["Sale"]["properties"]["net"]["readOnly"] is True


def test_filter_and_sort_on_a_formula(client: TestClient) -> None:
    for amount in ("300", "100", "200"):
        _post(client, "sale", {"number": amount, "amount": amount})
    listed = client.get("/api/sale", params={"net[gte]": "150", "sort": "-net"}).json()
    assert [item["number"] for item in listed["items"]] == ["300", "200"]


def test_an_overflowing_result_writes_nothing(client: TestClient) -> None:
    sale = _post(client, "sale", {"number": "S", "amount": "1"})
    response = client.patch(f"/api/sale/{sale['id']}", json={"due": "9999-12-30"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "formula_out_of_range"
    assert _get(client, "sale", sale["id"])["due"] is None


# -- the property: stored formulas equal a recomputation from scratch ---------------------
def _from_scratch(kt: Kartoteka) -> None:
    """Every formula of every record evaluated again in Python from the raw rows."""
    setup = kt.storage.setup
    with kt.db.read(system="test: compare with a recomputation") as conn:
        rows = {name: {row.id: dict(row._mapping) for row in conn.execute(
            kt.storage[name].table.select())} for name in setup.entities}
    now = dt.datetime.now(dt.UTC)
    for name, entity in setup.entities.items():
        formulas = [f for f in entity.fields.values() if f.formula is not None]
        ordered = kt.records.formulas.entities[name].fields if formulas else []
        for record in rows[name].values():
            env: dict[str, Any] = {TODAY: now.date(), NOW: now}
            for field in ordered:
                assert field.formula is not None
                for path in field.formula.paths:
                    env[".".join(path)] = _follow(setup, rows, name, record, path)
            for field in ordered:
                assert field.formula is not None
                value = finish(field.formula.evaluate(env), field.type.name,
                               field.params.get("places"))
                env[field.name] = value
                assert record[field.name] == value, (name, record["id"], field.name)


def _follow(setup: Any, rows: dict[str, dict[int, Record]], entity: str, record: Record,
            path: tuple[str, ...]) -> Any:
    for step in path[:-1]:
        target = setup.entity(entity).links[step].target
        linked = record[f"{step}_id"]
        if linked is None:
            return None
        record, entity = rows[target][linked], target
    return record[path[-1]]


ACTIONS = st.lists(st.tuples(
    st.sampled_from(["region", "client", "sale", "update_client", "update_region",
                     "update_sale", "relink", "delete_client", "delete_region", "move"]),
    st.integers(0, 5), st.integers(0, 5),
    st.decimals(min_value=0, max_value=99, places=2, allow_nan=False)), max_size=25)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_stored_formulas_equal_a_recomputation(make_kt: Callable[..., Kartoteka],
                                               setup_dir: Path, actions: list[Any]) -> None:
    kt = make_kt(setup_dir)
    made: dict[str, list[int]] = {"region": [], "client": [], "sale": []}

    def pick(entity: str, index: int) -> int | None:
        ids = made[entity]
        return ids[index % len(ids)] if ids else None

    with TestClient(create_app(kt), base_url="http://127.0.0.1") as client:
        for action, first, second, number in actions:
            text = str(number)
            if action == "region":
                made["region"].append(_post(client, "region", {"rate": text})["id"])
            elif action == "client":
                made["client"].append(_post(client, "client", {
                    "name": f"К{first}", "discount": text, "region": pick("region", first)})["id"])
            elif action == "sale":
                made["sale"].append(_post(client, "sale", {
                    "number": f"S{first}", "amount": text, "price": "1.5",
                    "client": pick("client", second)})["id"])
            elif action.startswith("update_"):
                entity = action.removeprefix("update_")
                key = {"client": "discount", "region": "rate", "sale": "amount"}[entity]
                target = pick(entity, first)
                if target is not None:
                    _patch(client, entity, target, {key: text})
            elif action == "relink":
                sale, buyer = pick("sale", first), pick("client", second)
                if sale is not None:
                    _patch(client, "sale", sale, {"client": buyer})
                buyer, region = pick("client", first), pick("region", second)
                if buyer is not None:
                    _patch(client, "client", buyer, {"region": region})
            elif action.startswith("delete_"):
                entity = action.removeprefix("delete_")
                target = pick(entity, first)
                if target is not None:
                    assert client.delete(f"/api/{entity}/{target}").status_code == 204
                    made[entity].remove(target)
            else:
                target = pick("sale", first)
                if target is not None:
                    client.post(f"/api/sale/{target}/stage",
                                json={"to": ["lead", "won", "lost"][second % 3]})
    _from_scratch(kt)
    kt.close()


# -- migrations -------------------------------------------------------------------------
def test_adding_changing_and_removing_a_formula_is_a_planned_migration(
        db_url: str, open_kt: Callable[..., Kartoteka],
        write_setup: Callable[..., Path]) -> None:
    plain = FILES["sale.yaml"].split("  net:")[0] + "links:\n  client: {to: client}\n"
    files = {**FILES, "sale.yaml": plain}
    first = open_kt(write_setup(files, "v1"), db_url)
    first.migrate()
    for amount in ("10", "20", "30"):
        first.records.create("sale", {"number": amount, "amount": amount})
    first.close()

    with_formula = plain.replace("fields:\n", "fields:\n  double: {type: money, formula: "
                                              "\"amount * 2\"}\n", 1)
    second = open_kt(write_setup({**files, "sale.yaml": with_formula}, "v2"), db_url)
    steps = [str(step) for step in plan(second.storage, second.db).steps]
    assert "recompute 3 rows of sale.double (new formula)" in steps, steps
    heard: list[str] = []
    apply(second.storage, second.db, on_progress=heard.append)
    assert heard == ["  sale: 3 of 3 rows computed"]
    assert sorted(str(r["double"]) for r in _all(second, "sale")) == ["20.00", "40.00", "60.00"]
    assert plan(second.storage, second.db).up_to_date
    second.close()

    changed = with_formula.replace("amount * 2", "amount / 3")
    third = open_kt(write_setup({**files, "sale.yaml": changed}, "v3"), db_url)
    steps = [str(step) for step in plan(third.storage, third.db).steps]
    assert steps == ["recompute 3 rows of sale.double (formula changed)"], steps
    third.migrate()
    assert sorted(str(r["double"]) for r in _all(third, "sale")) == ["10.00", "3.33", "6.67"]
    third.close()

    removed = open_kt(write_setup(files, "v4"), db_url)
    steps = [str(step) for step in plan(removed.storage, removed.db).steps]
    assert len(steps) == 1 and steps[0].startswith("remove field sale.double"), steps
    removed.close()


def _all(kt: Kartoteka, entity: str) -> list[Record]:
    return kt.records.list_page(entity, [("limit", "100")]).items


def test_the_benchmark_runs(tmp_path: Path) -> None:
    """bench/formulas.py does not rot: a tiny run recomputes every row (no timing)."""
    from bench.formulas import measure

    result = measure(f"sqlite:///{tmp_path / 'bench.db'}", 300, tmp_path / "setup")
    assert result["rows"] == 300


def test_money_formulas_add_up_on_the_board(client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "A", "discount": "50"})
    for amount in ("10.01", "20.03"):
        _post(client, "sale", {"number": amount, "amount": amount, "client": buyer["id"]})
    board = client.get("/api/sale/board").json()
    lead = board["columns"][0]
    assert lead["sums"]["net"] == "15.03"  # 5.01 (5.005 half up) + 10.02 (10.015 half up)


# -- the language, without a database -------------------------------------------------
FIELDS = {"n": "integer", "d": "number", "t": "text", "b": "boolean", "day": "date",
          "at": "datetime", "empty": "number", "none": "text"}
ENV = {"n": 7, "d": Decimal("2.50"), "t": "Привет 世界", "b": True,
       "day": dt.date(2024, 2, 28), "at": dt.datetime(2024, 1, 1, 23, 30, tzinfo=dt.UTC),
       "empty": None, "none": None, TODAY: dt.date(2024, 3, 1),
       NOW: dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)}


def _resolve(path: tuple[str, ...], position: int) -> str:
    return FIELDS[".".join(path)]


@pytest.mark.parametrize(("source", "kind", "value"), [
    ("0.1 + 0.2", "number", Decimal("0.3")),
    ("n / 2", "number", Decimal("3.5")),
    ("n * 3 - 1", "integer", 20),
    ("-(n + 1) * 2", "integer", -16),
    ("round(1 / 3 * 3, 2)", "number", Decimal("1.00")),
    ("d / 0", "number", None),
    ("round(d)", "integer", 3),
    ("round(-d)", "integer", -3),
    ("round(d * 1.005, 2)", "number", Decimal("2.51")),
    ("abs(-d)", "number", Decimal("2.50")),
    ("min(n, d, empty)", "number", Decimal("2.50")),
    ("max(n, d)", "number", 7),
    ("coalesce(empty, n, 1)", "number", 7),
    ("empty + 1", "number", None),
    ("day + 2 days", "date", dt.date(2024, 3, 1)),
    ("day - 1 week", "date", dt.date(2024, 2, 21)),
    ("today - day", "integer", 2),
    ("at + 2 hours", "datetime", dt.datetime(2024, 1, 2, 1, 30, tzinfo=dt.UTC)),
    ("date(at) + (n) days", "date", dt.date(2024, 1, 8)),
    ("now > at", "boolean", True),
    ("t & '!' & n", "text", "Привет 世界!7"),
    ("t & none", "text", None),
    ("concat(t, none, ' ', d, ' ', b, ' ', day)", "text", "Привет 世界 2.50 true 2024-02-28"),
    ("len(t)", "integer", 9),
    ("upper(t)", "text", "ПРИВЕТ 世界"),
    ("lower('ÄÖ Ру')", "text", "äö ру"),
    ("'it''s' & \" \"\"x\"\"\"", "text", 'it\'s "x"'),
    ("if(d > 2, 'big', 'small')", "text", "big"),
    ("if(empty > 2, 'big', 'small')", "text", "small"),
    ("not b", "boolean", False),
    ("b and empty > 1", "boolean", None),
    ("not b and empty > 1", "boolean", False),
    ("b or empty > 1", "boolean", True),
    ("n = 7 and t != 'x' and d <= 2.5 and d >= 2.5 and n <> 8 and n == 7", "boolean", True),
    ("null", "null", None),
    ("if(b, null, 1)", "integer", None),
])
def test_expressions(source: str, kind: str, value: Any) -> None:
    formula = compile_formula(source, _resolve)
    assert formula.type == kind
    assert formula.evaluate(ENV) == value
    assert type(formula.evaluate(ENV)) is type(value)


@pytest.mark.parametrize(("source", "message", "position"), [
    ("n +", "expected a value", 3),
    ("(n", "expected ')'", 2),
    ("n n", "unexpected 'n'", 2),
    ("'x", "text is not closed", 0),
    ("n ^ 2", "unexpected character '^'", 2),
    ("t + 1", "cannot apply '+' to a text and an integer", 2),
    ("day + 1", "cannot apply '+' to a date and an integer", 4),
    ("day + 2 hours", "cannot apply '+' to a date and a duration", 4),
    ("d days", "a duration counts whole days, not a number", 0),
    ("if(n, 1, 2)", "if() needs a boolean here, not an integer", 3),
    ("if(b, 1, 'x')", "if() mixes integer and text", 0),
    ("round(d, n)", "round() takes its places as a whole number written out", 9),
    ("round(d, 1, 2)", "round() takes 1 to 2 argument(s), not 3", 0),
    ("lenght(t)", "no function 'lenght'", 0),
    ("upper(n)", "upper() needs a text here, not an integer", 6),
    ("b < b", "cannot apply '<' to a boolean and a boolean", 2),
    ("day & 1 days", "cannot apply '&' to a date and a days", 4),
    ("not n", "'not' needs a boolean, not an integer", 0),
])
def test_broken_expressions_point_at_the_problem(source: str, message: str,
                                                 position: int) -> None:
    with pytest.raises(FormulaProblem) as raised:
        compile_formula(source, _resolve)
    assert raised.value.message.startswith(message), raised.value.message
    assert raised.value.position == position
    assert raised.value.hint or message.startswith(("cannot apply '<'", "'not'", "if() mixes"))


def test_a_setup_error_shows_the_character(write_setup: Callable[..., Path]) -> None:
    folder = write_setup({"sale.yaml": "fields:\n  amount: {type: money}\n"
                                       "  net: {type: money, formula: \"amount * amout\"}\n"})
    [error] = check_setup(folder).errors
    assert (error.file, error.line, error.key) == ("sale.yaml", 3, "fields.net.formula")
    assert "(at character 10: amount * ⟨here⟩amout)" in error.message
    assert error.hint == "did you mean 'amount'?"


def test_changed_recomputes_what_reads_a_column_changed_elsewhere(
        kt: Kartoteka, client: TestClient) -> None:
    """`Formulas.changed` is the call for a stored value changed outside a record write (a
    roll-up): the records reading it, directly or through links, follow."""
    import sqlalchemy as sa

    buyer = _post(client, "client", {"name": "A", "discount": "10"})
    sale = _post(client, "sale", {"number": "S", "amount": "100", "client": buyer["id"]})
    table = kt.storage["client"].table
    with kt.db.write(system="test: a roll-up's own write") as conn:
        conn.execute(sa.update(table).where(table.c.id == buyer["id"]).values(
            discount=Decimal("20")).execution_options(kt_unscoped="test"))
        kt.records.formulas.changed(conn, "client", [buyer["id"]], {"discount"})
    assert _get(client, "client", buyer["id"])["tier"] == "gold"
    stored = _get(client, "sale", sale["id"])
    assert (stored["net"], stored["label"]) == ("80.00", "S / A gold")
