"""Export → import reproduces the records, on both databases: every type at its edges, text
in Russian, Persian and Chinese, text a spreadsheet would run (escaped by the export, taken
back by the import), links found again by their titles. A file exported by Kartoteka
imports with no mapping but its ID column: into another database the records are created
(the ID column skipped), into the same one they are updated in place; the columns the
server sets and computes are skipped with a warning, never refused."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.exchange.files import open_table
from engine.exchange.imports import ImportOptions, ImportResult
from tests.pg import fresh_database
from tests.test_export import SETUP, seed_edges

TITLED = {**SETUP, "company.yaml": SETUP["company.yaml"].replace(
    "search: [name]", "search: [name]\n        title: \"{name}\"")}
TITLED["deal.yaml"] = TITLED["deal.yaml"].replace(
    "tags:   {type: multichoice, options: [hot, cold]}",
    "tags:   {type: multichoice, options: [hot, cold]}\n"
    "          doubled: {type: integer, formula: \"count\"}")
SERVER_SET = ("id", "created_at", "updated_at", "version", "owner", "stage", "doubled")
#: how each export is asked for: as the API writes values, and as Russian people do
EXPORTS = {"iso": {}, "locale": {"values": "locale", "language": "ru", "delimiter": ";",
                                 "bom": "true"}}


@pytest.fixture
def other(db_url: str, open_kt: Callable[..., Kartoteka], request: pytest.FixtureRequest,
          tmp_path: Path) -> Iterator[Callable[[Path], Kartoteka]]:
    """Another empty database of the same kind as `db_url`'s, with a setup migrated in."""
    opened: list[Kartoteka] = []
    drops: list[Callable[[], None]] = []

    def make(folder: Path) -> Kartoteka:
        if db_url.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / f'other-{len(opened)}.db'}"
        else:
            url, drop = fresh_database(request.getfixturevalue("postgres"))
            drops.append(drop)
        kt = open_kt(folder, url)
        kt.migrate()
        opened.append(kt)
        return kt
    yield make
    for kt in opened:
        kt.close()
    for drop in drops:
        drop()


def exported(kt: Kartoteka, entity: str, how: str) -> bytes:
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        response = http.get(f"/api/{entity}/export",
                            params={"titles": "true", "sort": "id", **EXPORTS[how]})
    assert response.status_code == 200, response.text
    return response.content


def imported(kt: Kartoteka, entity: str, data: bytes,
             mapping: dict[str, str | None] | None = None) -> ImportResult:
    result = kt.imports.run(entity, open_table(io.BytesIO(data), f"{entity}.csv"),
                            ImportOptions(mapping=mapping))
    assert result.errors == [], result.errors[:3]
    return result


def contents(kt: Kartoteka) -> list[dict[str, Any]]:
    """Every deal as the user sees it, its links by the linked companies' names; what the
    server sets left out, an empty text or list as empty (a CSV cell cannot tell them
    apart), and text without the spaces around it (an import trims every cell)."""
    names = {c["id"]: c["name"] for c in kt.records.list_page("company", [("limit", "500")]).items}
    deals = kt.records.list_page("deal", [("sort", "id"), ("limit", "500")]).items
    return [{key: (names.get(value) if key == "company" else
                   sorted(names[i] for i in value) if key == "partners" else
                   None if value in ("", []) else
                   value.strip() if isinstance(value, str) else value)
             for key, value in deal.items() if key not in SERVER_SET} for deal in deals]


@pytest.mark.parametrize("how", list(EXPORTS))
def test_an_export_imported_into_another_database_gives_the_same_records(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        other: Callable[[Path], Kartoteka], how: str) -> None:
    folder = write_setup(TITLED)
    source = make_kt(folder)
    seed_edges(source)
    target = other(folder)
    assert target.records.list_page("deal", []).total == 0
    companies = imported(target, "company", exported(source, "company", how), {"ID": None})
    assert companies.progress.created == 3
    data = exported(source, "deal", how)
    result = imported(target, "deal", data, {"ID": None})
    assert result.progress.created == len(contents(source))
    skipped = {w.field: w.problem for w in result.warnings}
    header = "Создано" if how == "locale" else "Created"
    assert "which the server sets: skipped" in skipped[header]
    assert "server computes" in next(p for f, p in skipped.items() if f.startswith("Doubled")
                                     or f == "doubled")
    assert any("found by their titles" in problem for problem in skipped.values())
    assert contents(target) == contents(source)


def test_an_export_edited_and_imported_back_updates_the_records_in_place(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    kt = make_kt(write_setup(TITLED))
    seed_edges(kt)
    before = contents(kt)
    text = exported(kt, "deal", "locale").decode("utf-8-sig")
    edited = text.replace("1234,50", "2345,60")
    result = imported(kt, "deal", edited.encode("utf-8-sig"))
    assert (result.progress.created, result.progress.updated) == (0, len(before))
    after = contents(kt)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert [after[i]["amount"] for i in changed] == ["2345.60"]
    assert {k: v for k, v in after[changed[0]].items() if k != "amount"} == \
        {k: v for k, v in before[changed[0]].items() if k != "amount"}


def test_an_id_that_names_no_record_says_how_to_create_the_records_instead(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        other: Callable[[Path], Kartoteka]) -> None:
    folder = write_setup(TITLED)
    source, target = make_kt(folder), other(folder)
    seed_edges(source)
    result = target.imports.run("company", open_table(io.BytesIO(
        exported(source, "company", "iso")), "c.csv"), ImportOptions(mode="good"))
    assert result.progress.failed == 3 and result.progress.created == 0
    error = result.errors[0]
    assert error.column == "ID" and error.value == "1"
    assert "no company with id 1" in error.problem and "mapping {ID: null}" in error.problem


@pytest.mark.parametrize(("cell", "thousands_comma", "expected"), [
    ("-0,001", True, "-0.001"),  # a decimal comma: no thousands group starts with 0
    ("0,500", True, "0.500"),
    ("1,234", True, "1234"),
    ("-12,345,678", True, "-12345678"),
    ("1,234", False, "1.234"),
    ("1 234,50", False, "1234.50"),
])
def test_a_comma_is_a_thousands_separator_only_where_it_groups_thousands(
        cell: str, thousands_comma: bool, expected: str) -> None:
    import datetime as dt

    from engine.exchange.cells import Locale, read_decimal
    from engine.setup.spec import FieldSpec
    locale = Locale(thousands_comma, dt.UTC)
    assert read_decimal(FieldSpec.__new__(FieldSpec), cell, locale) == expected
