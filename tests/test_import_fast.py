"""The import's fast path (engine/exchange/fast_rows.py) on SQLite and PostgreSQL: it
writes exactly the records and history of row-by-row creates, in Russian, Persian and
Chinese; a batch with a bad value anywhere goes the slow way, whose errors are the API's
422 details word for word; a unique value taken in a batch is found by the slow way;
all-or-none still leaves nothing; and a setup or a file that needs the slow way says why."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from api.app import create_app
from engine import Kartoteka
from engine.exchange import fast_rows
from engine.exchange.files import open_table
from engine.exchange.imports import ImportOptions, ImportResult
from kartoteka.cli import main
from tests.counting import rows_per_table

SETUP = {
    "setup.yaml": "name: Fast import\nlanguages: [ru, en, fa, zh]\ntimezone: Asia/Tehran\n",
    "item.yaml": """
        label: {ru: Товар, en: Item}
        title: "{name}"
        search: [name, code]
        fields:
          code:   {type: string, required: true, unique: true, max_length: 12, label: {ru: Код}}
          name:   {type: string, required: true, max_length: 40, label: {ru: Название, fa: نام, zh: 名称}}
          city:   {type: string, max_length: 100, index: true, label: {ru: Город}}
          price:  {type: money, min: 0, label: {ru: Цена}}
          qty:    {type: integer, min: 0, max: 1000, label: {ru: Количество}}
          active: {type: boolean, default: true, label: {ru: Активен}}
          since:  {type: date, label: {ru: С даты}}
          seen:   {type: datetime, label: {ru: Визит}}
          kind:
            type: choice
            options: {goods: {ru: Товар, zh: 商品}, service: {ru: Услуга}}
            label: {ru: Вид}
          email:  {type: email, label: {ru: Почта}}
          ratio:  {type: decimal, places: 3, label: {ru: Доля}}
          note:   {type: text, label: {ru: Примечание}}
    """,
    "contact.yaml": """
        title: "{name}"
        search: [name, phone]
        fields:
          name:   {type: string, required: true, max_length: 30, label: {ru: Имя}}
          phone:  {type: phone, label: {ru: Телефон}}
          site:   {type: url, label: {ru: Сайт}}
          tags:
            type: multichoice
            options: {vip: {ru: ВИП, zh: 贵宾}, new: {ru: Новый, fa: جدید}}
            label: {ru: Метки}
          bio:    {type: text, label: {ru: О себе}}
          score:  {type: decimal, places: 2, min: -5, max: 100, label: {ru: Балл}}
          born:   {type: date, min: 1900-01-01, label: {ru: Родился}}
          visits: {type: integer, max: 99, label: {ru: Визиты}}
          agreed: {type: boolean, label: {ru: Согласие}}
          mail:   {type: email, label: {ru: Почта}}
          amount: {type: money, label: {ru: Сумма}}
    """,
    "shop.yaml": """
        title: "{name}"
        fields:
          name: {type: string, required: true, unique: true}
          total: {type: money, rollup: {sum: deliveries.amount}}
    """,
    "visit.yaml": """
        fields:
          day: date
        links:
          shop: {to: shop}
    """,
    "delivery.yaml": """
        fields:
          number: {type: string, required: true}
          amount: money
        links:
          shop: {to: shop, reverse: deliveries}
    """,
}
HEADER = "Код;Название;Город;Цена;Количество;Активен;С даты;Визит;Вид;Почта;Доля;Примечание"
CITIES = ["Казань", "北京", "تهران", "Москва"]
PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


def good_row(i: int) -> str:
    qty = str(i % 1000).translate(PERSIAN) if i % 4 == 2 else str(i % 1000)
    return (f"K-{i:05d};Товар {i} 商品 کالا;{CITIES[i % 4]};{i} {i % 1000:03d},5;{qty};"
            f"{'да' if i % 2 else 'нет'};{1 + i % 28}.{1 + i % 12}.2026;31.12.2026 23:{i % 60:02d};"
            f"{'商品' if i % 3 else 'Услуга'};X{i}@Example.com;{i % 7},125;"
            f"{'' if i % 5 else 'примечание ' + str(i)}\n")


def run(kt: Kartoteka, text: str, entity: str = "item", **options: Any) -> ImportResult:
    table = open_table(io.BytesIO(text.encode("utf-8")), "items.csv")
    return kt.imports.run(entity, table, ImportOptions(**options))


def contents(kt: Kartoteka) -> tuple[list[Any], list[Any]]:
    """Every item and every history entry (`table_contents` of `item`)."""
    return table_contents(kt, "item")


@pytest.fixture
def kts(make_kt: Callable[..., Kartoteka],
        write_setup: Callable[..., Path]) -> Callable[[str], Kartoteka]:
    def make(name: str) -> Kartoteka:
        return make_kt(write_setup(SETUP, name=name))
    return make


def slow(kt: Kartoteka) -> Kartoteka:
    """`kt` with every create written on its own, as a single create writes it."""
    kt.bulk.plain.takes = lambda entity: False  # type: ignore[method-assign]
    return kt


@pytest.mark.parametrize("mode", ["all", "good"])
def test_the_fast_path_writes_what_single_creates_write(
        kts: Callable[[str], Kartoteka], mode: str) -> None:
    text = HEADER + "\n" + "".join(good_row(i) for i in range(23))
    found = []
    for fast in (True, False):
        kt = kts(f"same-{fast}-{mode}")
        result = run(kt if fast else slow(kt), text, mode=mode, batch_rows=5)
        assert (result.progress.created, result.progress.failed, result.errors) == (23, 0, [])
        assert (result.slow_path is None, result.slow_batches) == (fast, 0)
        assert result.progress.rows_committed == 23
        found.append(contents(kt))
        if fast:
            items = {item["code"]: item
                     for item in kt.records.list_page("item", [("sort", "id")]).items}
        clean(kt)
    assert found[0] == found[1]
    first = items["K-00001"]
    assert (first["name"], first["city"], first["price"], first["qty"], first["active"]) == \
        ("Товар 1 商品 کالا", "北京", "1001.50", 1, True)
    assert (first["since"], first["seen"], first["kind"], first["ratio"]) == \
        ("2026-02-02", "2026-12-31T19:31:00Z", "goods", "1.125")  # 23:31 in Tehran (+03:30)
    assert items["K-00006"]["qty"] == 6  # written ۶
    assert items["K-00000"]["active"] is False and items["K-00005"]["note"] == "примечание 5"


def clean(kt: Kartoteka) -> None:
    """A clean slate for the other way (every `kts` of a test shares one database)."""
    for table in ("item", "kt_change"):
        with kt.db.write(system="test: a clean slate") as conn:
            conn.execute(sa.text(f"DELETE FROM {table}"))


def test_a_default_fills_a_blank_cell_as_it_fills_a_missing_key(
        kts: Callable[[str], Kartoteka]) -> None:
    """A blank cell is a null, as the slow way sends it: a default fills a missing key only."""
    found = []
    for fast in (True, False):
        kt = kts(f"default-{fast}")
        result = run(kt if fast else slow(kt), "Код;Название;Активен\nA;Б;\n")
        assert result.errors == []
        found.append(contents(kt))
        clean(kt)
    assert found[0] == found[1]
    run(kt, "Код;Название\nA;Б\n")
    assert kt.records.list_page("item", []).items[0]["active"] is True


#: rows whose values the cell readers take but the entity refuses: (column, cell, field,
#: the value the API is sent)
REFUSED = [
    ("Код", "K-123456789012", "code", "K-123456789012"),  # longer than 12
    ("Количество", "1 001", "qty", 1001),  # above max
    ("Количество", "-1", "qty", -1),  # below min
    ("Цена", "-0,5", "price", "-0.5"),  # below min 0
    ("Цена", "1,005", "price", "1.005"),  # a money's 2 places
    ("Почта", "не почта", "email", "не почта"),
    ("Доля", "0,0001", "ratio", "0.0001"),  # 3 places
    ("Название", "長" * 41, "name", "長" * 41),
]


def test_a_bad_value_sends_its_batch_the_slow_way_with_the_apis_errors(
        kts: Callable[[str], Kartoteka], tmp_path: Path) -> None:
    """Every batch with a refused value goes the slow way (the good batches stay fast),
    and each error is what POST /api/item answers for the same value in its 422."""
    kt = kts("refused")
    rows = [good_row(i) for i in range(3 * len(REFUSED))]
    headers = HEADER.split(";")
    for n, (column, cell, _, _) in enumerate(REFUSED):
        cells = rows[3 * n].rstrip("\n").split(";")
        cells[headers.index(column)] = cell
        rows[3 * n] = ";".join(cells) + "\n"
    rows += [good_row(i) for i in range(100, 106)]  # two good batches of 3
    result = run(kt, HEADER + "\n" + "".join(rows), mode="good", batch_rows=3)
    assert (result.progress.created, result.progress.failed) == (len(rows) - len(REFUSED),
                                                                len(REFUSED))
    assert (result.slow_path, result.slow_batches) == (None, len(REFUSED))
    errors = {e.row: e for e in result.errors}
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        for n, (column, cell, name, value) in enumerate(REFUSED):
            error = errors[3 * n + 2]  # the header is row 1
            body = {"code": f"API-{n}", "name": "API", name: value}
            answer = http.post("/api/item", json=body)
            assert answer.status_code == 422, answer.text
            details = {d["field"]: d["problem"] for d in answer.json()["error"]["details"]}
            assert (error.column, error.value, error.problem, error.code) == \
                (column, cell, details[name], answer.json()["error"]["code"])


def test_a_cell_the_reader_refuses_is_reported_each_time_it_repeats(
        kts: Callable[[str], Kartoteka]) -> None:
    """A refused cell is never remembered as a value: every row that has it is reported."""
    kt = kts("repeated")
    rows = [good_row(i) for i in range(6)]
    for n in (1, 4):
        cells = rows[n].split(";")
        cells[6], cells[8] = "31.02.2026", "人"  # no such date; no such option
        rows[n] = ";".join(cells)
    result = run(kt, HEADER + "\n" + "".join(rows), mode="good", batch_rows=2)
    assert [(e.row, e.column, e.value) for e in result.errors] == [
        (3, "С даты", "31.02.2026"), (3, "Вид", "人"), (6, "С даты", "31.02.2026"),
        (6, "Вид", "人")]
    assert result.errors[0].problem == "is not a real date"
    assert (result.progress.created, result.slow_batches) == (4, 2)


def test_a_taken_unique_value_and_all_or_none(kts: Callable[[str], Kartoteka]) -> None:
    """The database refuses a batch with a code taken (by a record before the import or by
    a row of the file): the slow way says which row; all-or-none then writes nothing."""
    kt = kts("taken")
    kt.records.create("item", {"code": "K-00004", "name": "До импорта"})
    text = HEADER + "\n" + "".join(good_row(i) for i in range(10)) + good_row(7)
    before = rows_per_table(kt, "kt_import_job")
    result = run(kt, text, batch_rows=4)
    assert [(e.row, e.column, e.code) for e in result.errors] == [
        (6, "Код", "unique_violation"), (12, "Код", "unique_violation")]
    assert (result.written, result.progress.rows_committed) == (False, 0)
    assert rows_per_table(kt, "kt_import_job") == before
    result = run(kt, text, mode="good", batch_rows=4)
    assert (result.progress.created, result.progress.failed, result.slow_batches) == (9, 2, 2)
    codes = [item["code"] for item in kt.records.list_page("item", [("sort", "id")]).items]
    assert codes == ["K-00004", *[f"K-{i:05d}" for i in range(10) if i != 4]]


def test_what_needs_the_slow_way_says_so(kts: Callable[[str], Kartoteka]) -> None:
    kt = kts("why")
    assert run(kt, HEADER + "\n" + good_row(1), upsert_by=("code",)).slow_path == \
        "it updates records by a natural key (upsert_by)"
    assert run(kt, "name\nЛавка\n", entity="shop").slow_path is None
    result = run(kt, "number;shop\nN-1;Лавка\n", entity="delivery")  # it feeds a roll-up
    assert "a create of delivery does more than its INSERT" in str(result.slow_path)
    result = run(kt, "day;shop\n31.12.2026;Лавка\n", entity="visit")  # a link by title
    assert result.slow_path == "the column shop is not a field of visit filled by value"
    assert (result.progress.created, result.errors) == (1, [])
    assert run(kt, "Код;Город\nA;Б\n").slow_path == "the file has no column for name"
    result = run(kt, "Название;Wide\nX;Y\n", skip_unknown=True)
    assert result.slow_path == "the file has no column for code"


def test_typed_xlsx_cells_and_values_at_type_edges_as_single_creates(
        kts: Callable[[str], Kartoteka]) -> None:
    """An XLSX's numbers, dates and booleans (never remembered: only text cells are) and
    values at the edges of their types go in as row-by-row creates store them."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER.split(";"))
    sheet.append([12345.0, 7, "北京", 0.1, 0.0, True, dt.datetime(2026, 12, 31),
                  dt.datetime(1, 1, 1, 3, 30), "goods", "a@b.ir", 0.125, None])
    sheet.append(["'=K-2", "’" + "ы" * 39, "", "9 999 999 999 999 999,99", 1000, False,
                  dt.date(2028, 2, 29), "2026-12-31T18:30:00Z", "УСЛУГА", None, "-0,001", "\t"])
    sheet.append(["K-3", "x", None, "0", "۱۰۰۰", 1, "29/02/2028", None, None, None, "1,5", None])
    out = io.BytesIO()
    book.save(out)
    found = []
    for fast in (True, False):
        kt = kts(f"xlsx-{fast}")
        table = open_table(io.BytesIO(out.getvalue()), "items.xlsx")
        result = (kt if fast else slow(kt)).imports.run("item", table, ImportOptions())
        assert (result.progress.created, result.errors, result.slow_batches) == (3, [], 0)
        assert (result.slow_path is None) == fast
        found.append(contents(kt))
        clean(kt)
    assert found[0] == found[1]
    items, _ = found[0]
    assert [item[:3] for item in items] == [(1, "12345", "7"), (1, "=K-2", "’" + "ы" * 39),
                                            (1, "K-3", "x")]


def test_the_command_line_says_when_an_import_takes_the_slower_way(
        kts: Callable[[str], Kartoteka], tmp_path: Path,
        db_url: str) -> None:
    kts("cli")
    source = tmp_path / "items.csv"
    source.write_text(HEADER + "\n" + good_row(1), encoding="utf-8")

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, ["import", *args, str(source), "--setup",
                                         str(tmp_path / "cli"), "--db", db_url],
                                  catch_exceptions=False)

    fast = cli("item")
    assert fast.exit_code == 0 and "Imported: 1 created" in fast.stdout
    assert "slower way" not in fast.stderr
    slow = cli("item", "--upsert-by", "code")
    assert slow.exit_code == 0 and "Imported: 0 created, 1 updated" in slow.stdout
    assert "note: the import took its slower way (each row as a JSON body), as it updates " \
        "records by a natural key (upsert_by)" in slow.stderr


#: cells people write per column of HEADER: (good ones, bad ones); `{n}` is the row's number
CELLS = [
    (["K-{n}", " K-{n} ", "'=K-{n}", "ك-{n}", "k-{n}\u200c"], ["K-1", "", "K-" + "9" * 11]),
    (["Товар", "商品", "کالا", "長" * 40, "Ёлка"], ["", "  ", "長" * 41, "a\x00b"]),
    (["Казань", "北京", "", "تهران"], ["x" * 101]),
    (["1 234,50", "1,5", "0", "۱۲۳٫۵", "1.234,5", "", "1'000"], ["-1", "12abc", "1,005"]),
    (["0", "1000", "۱۰", "", "1 000"], ["1001", "-1", "1,5", "9" * 20]),
    (["да", "нет", "是", "خیر", "", "TRUE", "0"], ["2"]),
    (["31.12.2026", "2026-01-02", "", "1/2/26", "2026年12月31日"], ["29.02.2027", "32.01.2026"]),
    (["31.12.2026 23:30", "2026-12-31T18:30:00Z", ""], ["31.12.2026 25:00", "01.01.0001 02:59"]),
    (["Товар", "goods", "УСЛУГА", "", "service"], ["人"]),
    (["a@b.ru", "", "X@Example.COM"], ["не почта", "a@b"]),
    (["0,125", "1", "", "-0,001"], ["0,0001", "abc"]),
    (["", "примечание", "多行\nтекст", "\t"], []),
]


@pytest.mark.parametrize("seed", [1, 2])
def test_random_cells_good_and_bad_store_and_report_what_the_slow_way_does(
        kts: Callable[[str], Kartoteka], seed: int) -> None:
    """Rows of cells drawn at random, one in fifty bad: the fast path (with the slow way
    for the batches it is not sure of) creates, stores, records in history and reports
    exactly what the slow way does for every row."""
    draw = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(HEADER.split(";"))
    for n in range(90):
        writer.writerow([draw.choice(bad if bad and draw.random() < 0.02 else good)
                         .replace("{n}", str(n)) for good, bad in CELLS])
    found = []
    for fast in (True, False):
        kt = kts(f"random-{seed}-{fast}")
        result = run(kt if fast else slow(kt), out.getvalue(), mode="good", batch_rows=3)
        found.append((result.progress.created, result.progress.failed,
                      [(e.row, e.column, e.value, e.problem, e.code) for e in result.errors],
                      contents(kt)))
        if fast:
            assert result.slow_path is None and 0 < result.slow_batches < 30
        clean(kt)
    assert found[0] == found[1]
    assert found[0][0] > 45 and found[0][1] > 0


#: a contact's cells per column: (good ones, bad ones); `{n}` is the row's number
CONTACT_CELLS = [
    ("Имя", ["Иван {n}", " 张伟 {n} ", "'=SUM(A{n})", "'+7 {n}", "مریم {n}", "Ёжик", "x" * 30],
     ["", "  ", "y" * 31, "a\x00b"]),
    ("Телефон", ["+7 (495) 123-45-67", "'+98 21 1234 5678", "", "8 800 555 35 35 ext 12"],
     ["abc", "12"]),
    ("Сайт", ["https://пример.рф/путь", "http://example.com/?q=1", ""], ["ftp:/x", "пример"]),
    ("Метки", ["ВИП", "vip; new", "贵宾,جدید", "", "Новый"], ["нет такой", "vip;vip"]),
    ("О себе", ["", "многострочный\nтекст", "長" * 100, "  пробелы  ", "'=1+1"], []),
    ("Балл", ["1,5", "100", "-5", "99,99", "", "0,1", "۱۲٫۵"], ["100,01", "-5,01", "1,001"]),
    ("Родился", ["31.12.2026", "01.01.1900", "2026-02-28", "", "29/02/2028"],
     ["31.12.1899", "30.02.2026"]),
    ("Визиты", ["0", "99", "-3", "", "۹۹"], ["100", "1,5"]),
    ("Согласие", ["да", "нет", "是", "否", "", "true"], ["может"]),
    ("Почта", ["a@b.ru", "", "Имя@пример.рф"], ["a@b", "не почта"]),
    ("Сумма", ["1 234 567,89", "0", "", "12,5", "-0,5"], ["1,234", "abc"]),
]


def table_contents(kt: Kartoteka, table: str) -> tuple[list[Any], list[Any]]:
    """Every row of `table` and every history entry, without the moments they were
    written, ids as ranks."""
    with kt.db.read(system="test: contents") as conn:
        rows = [dict(row._mapping) for row in conn.execute(sa.text(f"SELECT * FROM {table} "
                                                                    "ORDER BY id"))]
        rank = {row["id"]: n for n, row in enumerate(rows)}
        found = [tuple(v for k, v in row.items() if k not in ("id", "created_at", "updated_at"))
                 for row in rows]
        history = [(entity, rank[record_id], by, action, changes) for entity, record_id, by,
                   action, changes in conn.execute(sa.text(
                       'SELECT entity, record_id, "by", action, changes FROM kt_change '
                       "ORDER BY id"))]
    return found, history


@pytest.mark.parametrize(("seed", "bad"), [(3, 0.0), (4, 0.03)])
def test_every_field_type_column_by_column_stores_what_the_slow_way_does(
        kts: Callable[[str], Kartoteka], seed: int, bad: float) -> None:
    """The fast path converts a batch column by column (text columns stripped at once,
    values remembered per column, the schema checked per column): phone, URL,
    multichoice, text, decimal with bounds, dates with a minimum, integers, booleans,
    e-mail and money, in Russian, Chinese and Persian, with decimal commas, 31.12.2026,
    blank and escaped cells, store, journal and report exactly what the slow way does;
    a file of good cells only never needs the slow way."""
    draw = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow([header for header, _, _ in CONTACT_CELLS])
    for n in range(120):
        writer.writerow([draw.choice(wrong if wrong and draw.random() < bad else good)
                         .replace("{n}", str(n)) for _, good, wrong in CONTACT_CELLS])
    found = []
    for fast in (True, False):
        kt = kts(f"contact-{seed}-{fast}")
        result = run(kt if fast else slow(kt), out.getvalue(), entity="contact", mode="good",
                     batch_rows=4)
        found.append((result.progress.created, result.progress.failed,
                      [(e.row, e.column, e.value, e.problem, e.code) for e in result.errors],
                      table_contents(kt, "contact")))
        if fast:
            assert result.slow_path is None
            assert (result.slow_batches == 0) is (bad == 0), result.errors[:3]
        for table in ("contact", "kt_change"):
            with kt.db.write(system="test: a clean slate") as conn:
                conn.execute(sa.text(f"DELETE FROM {table}"))
    assert found[0] == found[1]
    created, failed, _, (rows, history) = found[0]
    assert created + failed == 120 and len(history) == created
    assert (failed == 0) is (bad == 0)
    texts = {value for row in rows for value in row if isinstance(value, str)}
    assert "Ёжик" in texts and any(text.startswith(("=SUM(", "+7 ")) for text in texts)
    assert not any(text.startswith("'") for text in texts)  # the export's escape taken off


def test_a_column_that_remembers_all_it_may_still_converts_every_cell(
        kts: Callable[[str], Kartoteka], monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a column remembers all it may and a batch's cells are all new, the next
    batches are not looked up (fast_rows.UNREMEMBERED): the records are the same."""
    monkeypatch.setattr(fast_rows, "REMEMBERED", 3)
    monkeypatch.setattr(fast_rows, "UNREMEMBERED", 2)
    skipped = []
    convert = fast_rows.ColumnConverter.__call__

    def spied(self: Any, cells: Any) -> Any:
        skipped.append(self.unlooked > 0)
        return convert(self, cells)
    monkeypatch.setattr(fast_rows.ColumnConverter, "__call__", spied)
    text = HEADER + "\n" + "".join(good_row(i) for i in range(40))
    found = []
    for fast in (True, False):
        kt = kts(f"unlooked-{fast}")
        result = run(kt if fast else slow(kt), text, batch_rows=5)
        assert (result.progress.created, result.errors, result.slow_batches) == (40, [], 0)
        found.append(contents(kt))
        clean(kt)
    assert found[0] == found[1]
    assert any(skipped)
