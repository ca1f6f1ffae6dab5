"""Import from CSV and XLSX on SQLite and PostgreSQL: encodings and delimiters, headers by
label in Russian, Persian and Chinese, values as people write them, every bad row reported
with its row, column and value, dry runs and all-or-none leaving the database exactly as
it was, upserts, links by a unique field and by title, unknown and hidden columns refused
before any row, a manager's scope, the HTTP job from 202 to done, and the CLI."""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from engine import Kartoteka
from engine.errors import MalformedRequest
from engine.exchange.cells import Locale, default_readers
from engine.exchange.files import open_table
from engine.exchange.imports import ImportOptions, ImportResult
from engine.types.fields import ValueProblem
from kartoteka.cli import main
from tests.counting import rows_per_table

SETUP = {
    "setup.yaml": """
        name: Import test
        languages: [ru, en, fa, zh]
        timezone: Europe/Moscow
        roles:
          manager:
            client: {create: all, read: own, update: own, hidden: [secret]}
            deal: {create: all, read: own, update: own}
    """,
    "client.yaml": """
        label: {ru: Клиент, en: Client, fa: مشتری, zh: 客户}
        title: "{name}"
        owner: true
        fields:
          name:
            {type: string, required: true, max_length: 99, label: {ru: Название, en: Name, fa: نام, zh: 名称}}
          inn: {type: string, unique: true, pattern: "^[0-9]{10}$", label: {ru: ИНН, en: Tax number}}
          phone: {type: phone, label: {ru: Телефон, en: Phone, fa: تلفن, zh: 电话}}
          since: {type: date, label: {ru: Клиент с, en: Since, zh: 开始日期}}
          limit: {type: money, min: 0, label: {ru: Лимит, en: Credit limit, fa: سقف اعتبار}}
          staff: {type: integer, min: 0, label: {ru: Сотрудников, en: Staff}}
          vip: {type: boolean, label: {ru: VIP}}
          kind:
            type: choice
            label: {ru: Тип, en: Kind, zh: 类型}
            options: {small: {ru: Малый, en: Small, fa: کوچک, zh: 小}, big: {ru: Крупный, en: Big, zh: 大}}
          secret: {type: string, label: {ru: Секрет}}
          deals_total: {type: money, rollup: {sum: deals.amount}, label: {ru: Итого сделок}}
    """,
    "deal.yaml": """
        label: {ru: Сделка, en: Deal}
        owner: true
        fields:
          number: {type: string, required: true, unique: true, label: {ru: Номер, en: Number}}
          amount: {type: money, label: {ru: Сумма, en: Amount}}
          signed_at: {type: datetime, label: {ru: Подписана, en: Signed}}
        links:
          client: {to: client, required: true, reverse: deals, label: {ru: Клиент, en: Client}}
    """,
}

HEADER_RU = "Название;ИНН;Телефон;Клиент с;Лимит;Сотрудников;VIP;Тип"


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


def counts(kt: Kartoteka) -> tuple[int, ...]:
    """Rows of every table but the jobs' (records, history, links)."""
    return rows_per_table(kt, "kt_import_job")


def run(kt: Kartoteka, data: bytes, name: str = "file.csv", entity: str = "client",
        **options: Any) -> ImportResult:
    reading = {k: options.pop(k) for k in ("delimiter", "encoding", "sheet") if k in options}
    table = open_table(io.BytesIO(data), name, **reading)
    return kt.imports.run(entity, table, ImportOptions(**options))


def records(kt: Kartoteka, entity: str = "client") -> list[dict[str, Any]]:
    return kt.records.list_page(entity, [("sort", "id")]).items


def xlsx(rows: list[list[Any]], sheet: str = "Клиенты") -> bytes:
    book = openpyxl.Workbook()
    worksheet = book.active
    assert worksheet is not None
    worksheet.title = sheet
    for row in rows:
        worksheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# -- reading files and values ----------------------------------------------------------------
def test_cp1251_with_semicolons_and_russian_headers(kt: Kartoteka) -> None:
    text = (HEADER_RU + "\nРомашка;1655000001;+7 916 123-45-67;31.12.2026;1\u00a0234,50;12;да;Малый\n"
            "Лютик;1655000002;;2026-01-02;12,5;1 200;нет;крупный\n")
    data = text.encode("cp1251")
    table = open_table(io.BytesIO(data), "clients.csv")
    # read once: no count of the rows first; the progress is by bytes of the file's size
    assert (table.encoding, table.delimiter, table.total, table.size) == \
        ("cp1251", ";", None, len(data))
    seen: list[tuple[int, float | None]] = []
    result = kt.imports.run("client", table, ImportOptions(), on_progress=lambda p: seen.append(
        (p.rows_done, p.fraction)))
    assert (result.progress.created, result.progress.failed, result.written) == (2, 0, True)
    assert seen == [(2, 1.0)] and result.progress.rows_total == 2
    first, second = records(kt)
    assert (first["name"], first["since"], first["limit"], first["staff"], first["vip"],
            first["kind"]) == ("Ромашка", "2026-12-31", "1234.50", 12, True, "small")
    assert (second["limit"], second["staff"], second["vip"], second["kind"]) == \
        ("12.50", 1200, False, "big")
    assert result.columns["Клиент с"] == "since"


def test_utf8_bom_commas_and_persian_and_chinese_labels(kt: Kartoteka) -> None:
    text = ("نام,名称 ,电话,سقف اعتبار,类型\n"  # Persian and Chinese labels, a stray space
            "شرکت پارس,,+98 21 1234,۱۲۳٫۵,کوچک\n")
    with pytest.raises(MalformedRequest) as refused:  # نام and 名称 both fill name
        run(kt, text.encode("utf-8-sig"))
    assert "fills name" in str(refused.value.details)
    text = "نام,电话,سقف اعتبار,类型,开始日期\nشرکت پارس,+98 21 1234,۱۲۳٫۵,کوچک,2026/3/21\n" \
           "北京贸易,010-1234,\"1,234.5\",大,2026年1月2日\n"
    table = open_table(io.BytesIO(text.encode("utf-8-sig")), "x.csv")
    assert (table.encoding, table.delimiter) == ("utf-8-sig", ",")
    result = kt.imports.run("client", table, ImportOptions())
    assert result.progress.failed == 0, result.errors
    persian, chinese = records(kt)
    assert (persian["name"], persian["limit"], persian["kind"], persian["since"]) == \
        ("شرکت پارس", "123.50", "small", "2026-03-21")
    # the setup's first language is Russian: a lone comma is a decimal comma; with a dot
    # after it, the comma separates thousands
    assert (chinese["name"], chinese["limit"], chinese["kind"], chinese["since"]) == \
        ("北京贸易", "1234.50", "big", "2026-01-02")


def test_xlsx_with_typed_cells_and_a_named_sheet(kt: Kartoteka) -> None:
    data = xlsx([["Name", "Tax number", "Phone", "Since", "Credit limit", "Staff", "VIP", "Kind"],
                 ["Ромашка", 1655000001, 79161234567, dt.datetime(2026, 12, 31), 1234.5, 12.0,
                  True, "Small"],
                 [None, None, None, None, None, None, None, None],  # an empty row: skipped
                 ["Bad", "1655000002", None, "someday", -5, 1.5, "maybe", "huge"]])
    with pytest.raises(MalformedRequest, match="no sheet"):
        run(kt, data, "c.xlsx", sheet="Sheet1")
    result = run(kt, data, "c.xlsx", sheet="Клиенты", mode="good")
    assert (result.progress.created, result.progress.failed) == (1, 1)
    [made] = records(kt)
    assert (made["inn"], made["phone"], made["since"], made["limit"], made["staff"],
            made["vip"]) == ("1655000001", "79161234567", "2026-12-31", "1234.50", 12, True)
    bad = {(e.row, e.column) for e in result.errors}  # every cell that cannot be read
    assert bad == {(4, "Since"), (4, "Staff"), (4, "VIP"), (4, "Kind")}


def test_every_bad_value_is_reported_with_row_column_and_value(kt: Kartoteka) -> None:
    text = (HEADER_RU + "\n"
            "Хороший;1655000001;;;;;;\n"
            ";1655000002;;;;;;\n"  # name is required
            "Плохой ИНН;12345;;;;;;\n"  # the pattern
            "Даты;1655000003;;31.02.2026;;;;\n"
            "Деньги;1655000004;;;-1;;;\n"  # min 0
            "Целые;1655000005;;;;1,5;;\n"
            "Длинное " + "я" * 99 + ";1655000006;;;;;;\n"
            "Хороший;1655000001;;;;;;\n")  # the same tax number again
    result = run(kt, text.encode("utf-8"), mode="good")
    assert (result.progress.created, result.progress.failed) == (1, 7)
    reported = {(e.row, e.column): (e.value, e.problem) for e in result.errors}
    assert reported[(3, "Название")][1].startswith("is required")
    assert reported[(4, "ИНН")][0] == "12345"
    assert reported[(5, "Клиент с")] == ("31.02.2026", "is not a real date")
    assert "at least 0" in reported[(6, "Лимит")][1]
    assert reported[(7, "Сотрудников")][0] == "1,5"
    assert (8, "Название") in reported
    assert reported[(9, "ИНН")] == ("1655000001", "is already taken by another record")


@pytest.mark.parametrize(("kind", "cell", "expected"), [
    ("decimal", "1 234 567,89", "1234567.89"), ("decimal", "1\u202f234,5", "1234.5"),
    ("decimal", "-0,5", "-0.5"), ("decimal", "1.234,5", "1234.5"), ("decimal", "١٢٣", "123"),
    ("decimal", "12abc", ValueProblem), ("decimal", "1,2,3", ValueProblem),
    ("integer", "9 223 372 036 854 775 807", 9223372036854775807), ("integer", 3.0, 3),
    ("integer", "1e3", ValueProblem), ("integer", True, ValueProblem),
    ("boolean", "Да", True), ("boolean", "НЕТ", False), ("boolean", "是", True),
    ("boolean", "خیر", False), ("boolean", 0, False), ("boolean", "2", ValueProblem),
    ("date", "1.2.2026", "2026-02-01"), ("date", "29.02.2028", "2028-02-29"),
    ("date", "29.02.2027", ValueProblem), ("date", "2026-13-01", ValueProblem),
    ("date", "31/12/26", "2026-12-31"), ("date", "2026-12-31 00:00:00", "2026-12-31"),
    ("date", "2026-12-31 10:00", ValueProblem),
    ("datetime", "31.12.2026 18:30", "2026-12-31T15:30:00Z"),  # Moscow time, in UTC
    ("datetime", "01.01.0001 03:00", "0001-01-01T00:00:00Z"),
    ("datetime", "01.01.0001 02:59", ValueProblem),  # before the first moment stored
    ("datetime", "2026-12-31T18:30:00Z", "2026-12-31T18:30:00Z"),
    ("datetime", "31.12.2026 25:00", ValueProblem),
])
def test_cells_as_people_write_them(kind: str, cell: Any, expected: Any) -> None:
    readers = default_readers()
    from engine.types.fields import default_registry

    field_type = default_registry().get(kind)
    assert field_type is not None
    field: Any = type("F", (), {"name": "x", "type": field_type, "options": None,
                                "option_labels": {}, "params": {}})()
    locale = Locale(thousands_comma=False, timezone=dt.timezone(dt.timedelta(hours=3)))
    read = readers.reader(field_type)
    if expected is ValueProblem:
        with pytest.raises(ValueProblem):
            read(field, cell, locale)
    else:
        assert read(field, cell, locale) == expected


# -- modes -------------------------------------------------------------------------------------
BATCHED = (HEADER_RU + "\n" + "".join(f"Клиент {i};16550000{i:02d};;;;;;\n" for i in range(1, 8))
           + "Плохой;1;;;;;;\n")


def test_dry_run_writes_nothing_and_reports_the_same(kt: Kartoteka) -> None:
    before = counts(kt)
    result = run(kt, BATCHED.encode(), dry_run=True, batch_rows=3)
    assert (result.progress.created, result.progress.failed, result.written) == (7, 1, False)
    assert [(e.row, e.column) for e in result.errors] == [(9, "ИНН")]
    assert counts(kt) == before
    good = run(kt, (HEADER_RU + "\nА;1655000001;;;;;;\n").encode(), dry_run=True, mode="good")
    assert good.progress.created == 1 and not good.written and counts(kt) == before


def test_all_or_none_rolls_back_every_batch(kt: Kartoteka) -> None:
    before = counts(kt)
    result = run(kt, BATCHED.encode(), batch_rows=3)  # three batches; the last row is bad
    assert (result.progress.failed, result.written) == (1, False)
    assert counts(kt) == before  # records, history: nothing of the two good batches
    good = run(kt, BATCHED.encode(), batch_rows=3, mode="good")
    assert (good.progress.created, good.progress.failed, good.written) == (7, 1, True)
    assert good.progress.rows_committed == 8
    assert len(records(kt)) == 7


def test_upsert_by_a_natural_key(kt: Kartoteka) -> None:
    run(kt, (HEADER_RU + "\nРомашка;1655000001;;;100;;;\nЛютик;1655000002;;;;;;\n").encode())
    text = "ИНН;Лимит;Тип\n1655000001;250,00;Крупный\n1655000003;1;\n"
    result = run(kt, text.encode(), upsert_by=("inn",), mode="good")
    assert (result.progress.created, result.progress.updated) == (0, 1)
    # a new tax number is a create, and a client needs its name: the error names the field
    assert [(e.row, e.column, e.problem) for e in result.errors] == [(3, "", "name: is required")]
    first = records(kt)[0]
    assert (first["name"], first["limit"], first["kind"], first["version"]) == \
        ("Ромашка", "250.00", "big", 2)
    named = "Название;ИНН;Лимит\nРомашка;1655000001;300\nНовая;1655000003;1\n"
    result = run(kt, named.encode(), upsert_by=("inn",))
    assert (result.progress.created, result.progress.updated) == (1, 1)
    assert [c["name"] for c in records(kt)] == ["Ромашка", "Лютик", "Новая"]
    with pytest.raises(MalformedRequest, match="not valid"):
        run(kt, "ИНН\n1\n".encode(), upsert_by=("phone",))  # not unique


def test_links_by_unique_field_by_title_and_ambiguous_titles(kt: Kartoteka) -> None:
    run(kt, (HEADER_RU + "\nРомашка;1655000001;;;;;;\nЛютик;1655000002;;;;;;\n"
             "Лютик;1655000003;;;;;;\n").encode())
    ids = [c["id"] for c in records(kt)]
    text = ("Номер;Сумма;Клиент;Подписана\n"
            "D-1;100;Ромашка;31.12.2026 10:00\n"  # by title
            "D-2;200;Лютик;\n"  # two clients are titled Лютик
            "D-3;300;Нет такого;\n")
    result = run(kt, text.encode(), entity="deal", mode="good")
    assert (result.progress.created, result.progress.failed) == (1, 2)
    problems = {e.row: e.problem for e in result.errors}
    assert "several client records" in problems[3] and "no client titled" in problems[4]
    text = "Номер;Сумма;Клиент.ИНН\nD-2;200;1655000003\nD-3;1;9999999999\n"
    result = run(kt, text.encode(), entity="deal", mode="good")
    assert (result.progress.created, result.progress.failed) == (1, 1)
    assert result.errors[0].column == "Клиент.ИНН" and result.errors[0].value == "9999999999"
    deals = records(kt, "deal")
    assert [(d["number"], d["client"]) for d in deals] == [("D-1", ids[0]), ("D-2", ids[2])]
    assert deals[0]["signed_at"] == "2026-12-31T07:00:00Z"  # Moscow time, stored in UTC
    assert kt.records.get("client", ids[2])["deals_total"] == "200.00"  # the roll-up


def test_unknown_columns_are_refused_before_any_row(kt: Kartoteka) -> None:
    before = counts(kt)
    text = "Название;Цвет;Итого сделок;;ИНН\nА;красный;5;x;1655000001\n"
    with pytest.raises(MalformedRequest) as refused:
        run(kt, text.encode())
    problems = {d.field: d.problem for d in refused.value.details}
    assert "matches no field" in problems["Цвет"]
    assert "Итого сделок" not in problems  # computed: skipped with a warning (below)
    assert "no header" in problems["(column 4, no header)"]
    assert counts(kt) == before
    result = run(kt, "Название;Цвет;Итого сделок;ИНН\nА;красный;5;1655000001\n".encode(),
                 skip_unknown=True)
    assert result.progress.created == 1
    warned = {w.field: w.problem for w in result.warnings}
    assert list(warned) == ["Цвет", "Итого сделок"]
    assert "computes" in warned["Итого сделок"] and warned["Итого сделок"].endswith("skipped")
    assert records(kt)[-1]["deals_total"] == "0.00"  # the 5 in the file changed nothing
    mapped = run(kt, "Фирма;Цвет\nБ;синий\n".encode(),
                 mapping={"Фирма": "name", "Цвет": None})
    assert mapped.progress.created == 1 and mapped.columns == {"Фирма": "name"}


# -- through HTTP, as a manager --------------------------------------------------------------
def upload(http: TestClient, entity: str, data: bytes, name: str = "clients.csv",
           **fields: str) -> Any:
    headers = fields.pop("headers", None)
    return http.post(f"/api/{entity}/import", files={"file": (name, data)}, data=fields,
                     headers=headers)  # type: ignore[arg-type]


def finished(http: TestClient, location: str, **headers: str) -> dict[str, Any]:
    for _ in range(200):
        job = http.get(location, headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"the job did not end: {job}")


def test_a_csv_is_read_once_and_its_progress_goes_by_bytes(kt: Kartoteka) -> None:
    lines = ["Название;ИНН"] + [f"Клиент {i} 客户;{1655000000 + i}" for i in range(2500)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    seen: list[tuple[int, int | None, float | None, float | None]] = []
    table = open_table(io.BytesIO(data), "clients.csv")
    result = kt.imports.run("client", table, ImportOptions(mode="good", batch_rows=500),
                            on_progress=lambda p: seen.append(
                                (p.rows_done, p.bytes_done, p.fraction, p.eta)))
    assert result.progress.created == 2500 and result.progress.rows_total == 2500
    assert [done for done, *_ in seen] == [500, 1000, 1500, 2000, 2500]
    fractions = [fraction for _, _, fraction, _ in seen]
    assert all(f is not None and 0 < f <= 1 for f in fractions) and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and fractions[0] < 1.0
    assert all(b is not None and b <= len(data) for _, b, _, _ in seen)
    assert seen[-1][3] == 0.0  # nothing left


def test_the_http_job_from_202_to_done_with_its_error_report(kt: Kartoteka,
                                                             http: TestClient) -> None:
    data = xlsx([["Название", "ИНН", "Лимит"], ["Ромашка", "1655000001", "10,5"],
                 ["Плохой", "1", "x"]])
    answer = upload(http, "client", data, "c.xlsx", mode="good")
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] in ("queued", "running", "done") and "rows_done" in job
    assert answer.headers["location"] == f"/api/client/import/{job['id']}"
    done = finished(http, answer.headers["location"])
    assert (done["status"], done["created"], done["failed"], done["rows_total"]) == ("done", 1, 1, 2)
    assert (done["fraction"], done["eta_seconds"]) == (1.0, None)
    assert {(e["row"], e["column"]) for e in done["errors"]} == {(3, "Лимит")}
    report = http.get(answer.headers["location"] + "/report")
    assert report.headers["content-type"].startswith("text/csv")
    lines = report.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "row,column,value,problem,code" and len(lines) == 2
    assert http.get("/api/client").json()["total"] == 1
    assert http.get("/api/client/import/999").status_code == 404
    assert http.get("/api/deal/import/" + str(job["id"])).status_code == 404  # another entity
    dry = upload(http, "client", "Название\nБ\n".encode(), dry_run="true")
    assert finished(http, dry.headers["location"])["written"] is False
    assert http.get("/api/client").json()["total"] == 1


def test_bad_uploads_are_4xx_and_queue_nothing(kt: Kartoteka, http: TestClient) -> None:
    before = counts(kt)
    cases = [
        upload(http, "client", "Цвет\nкрасный\n".encode()),  # unknown column
        upload(http, "client", b"Name\nx\n", mode="some"),
        upload(http, "client", b"Name\nx\n", dry_run="perhaps"),
        upload(http, "client", b"Name\nx\n", upsert_by="name"),  # not unique
        upload(http, "client", b"Name\nx\n", color="red"),  # not a field of the form
        upload(http, "client", b"Name\nx\n", mapping="columns: [1, 2]"),
        upload(http, "client", b"", "empty.csv"),
        upload(http, "client", b"PK\x03\x04broken", "x.xlsx"),
        upload(http, "client", "Name\nx\n".encode("utf-16-le"), encoding="nonsense"),
        http.post("/api/client/import", data={"mode": "all"}),  # no file
    ]
    for answer in cases:
        assert answer.status_code in (400, 415), answer.text
        assert answer.json()["error"]["code"] in ("invalid_import", "unsupported_media_type")
    assert counts(kt) == before
    # a multipart body anywhere else, or from a foreign web page, is refused outright
    elsewhere = http.post("/api/client", files={"file": ("x.csv", b"Name\nx\n")})
    assert elsewhere.status_code == 415
    foreign = upload(http, "client", b"Name\nx\n", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 415 and "evil.example" in foreign.json()["error"]["message"]
    own = upload(http, "client", b"Name\nx\n", headers={"Origin": "http://127.0.0.1"})
    assert own.status_code == 202
    assert finished(http, own.headers["location"])["created"] == 1


def test_a_manager_imports_in_their_scope_only(kt: Kartoteka, http: TestClient) -> None:
    kt.users.add("boss@example.com", ["admin"])
    manager, token = kt.users.add("m@example.com", ["manager"])
    _other, other_token = kt.users.add("o@example.com", ["manager"])
    auth = {"Authorization": f"Bearer {token}"}
    theirs = http.post("/api/client", json={"name": "Чужой", "inn": "1655000009"},
                       headers={"Authorization": f"Bearer {other_token}"}).json()
    hidden = upload(http, "client", "Название;Секрет\nА;x\n".encode(), headers=auth)
    assert hidden.status_code == 400
    assert "Секрет" in str(hidden.json()["error"]["details"])
    data = "ИНН;Название\n1655000009;Перехвачен\n1655000010;Свой\n".encode()
    answer = upload(http, "client", data, headers=auth, mode="good", upsert_by="inn")
    assert answer.status_code == 202, answer.text
    done = finished(http, answer.headers["location"], **auth)
    assert (done["created"], done["failed"]) == (1, 1)  # the other's record is not theirs
    assert kt.records.get("client", theirs["id"])["name"] == "Чужой"
    by_id = upload(http, "client", f"id;Название\n{theirs['id']};Перехвачен\n".encode(),
                   headers=auth, mode="good")
    assert finished(http, by_id.headers["location"], **auth)["errors"][0]["code"] == "not_found"
    assert kt.records.get("client", theirs["id"])["name"] == "Чужой"
    mine = http.get("/api/client", headers=auth).json()["items"]
    assert [(c["name"], c["owner"]) for c in mine] == [("Свой", manager.id)]
    # a job is its starter's: another user gets 404
    other_auth = {"Authorization": f"Bearer {other_token}"}
    assert http.get(answer.headers["location"], headers=other_auth).status_code == 404
    assert http.get(answer.headers["location"]).status_code == 401


def test_jobs_left_running_by_a_stopped_server_are_interrupted(kt: Kartoteka) -> None:
    table = kt.storage.import_jobs
    with kt.db.write(system="test: a job of a stopped process") as conn:
        conn.execute(sa.insert(table).values(
            entity="client", status="running", file_name="x.csv", options={},
            created_at=dt.datetime.now(dt.UTC), rows_done=2000, rows_total=5000,
            rows_committed=2000, created=2000, updated=0, failed=0))
    assert kt.import_jobs.interrupt_orphans() == 1
    job = kt.import_jobs.get(1, user=None)
    assert (job["status"], job["rows_committed"]) == ("interrupted", 2000)


# -- the command line --------------------------------------------------------------------------
def test_cli_dry_run_then_import_with_an_error_report(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path], tmp_path: Path,
        db_url: str) -> None:
    setup = write_setup(SETUP)
    kt = make_kt(setup)
    source = tmp_path / "clients.csv"
    source.write_bytes((HEADER_RU + "\nРомашка;1655000001;;;;;;\nПлохой;1;;;;;;\n").encode("cp1251"))
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("columns:\n  Название: nothing\n", encoding="utf-8")
    runner = CliRunner()

    def cli(*args: str | Path) -> Any:
        return runner.invoke(main, ["import", *map(str, args), "--setup", str(setup),
                                    "--db", db_url], catch_exceptions=False)

    dry = cli("client", source, "--dry-run")
    assert dry.exit_code == 1 and "Dry run: 1 created" in dry.stdout
    assert "row 3, ИНН '1'" in dry.stderr
    assert records(kt) == []
    errors = tmp_path / "errors.csv"
    done = cli("client", source, "--mode", "good", "--errors", errors)
    assert done.exit_code == 1 and "Imported: 1 created" in done.stdout
    assert errors.read_text(encoding="utf-8-sig").splitlines()[1].startswith("3,ИНН,1,")
    assert [c["name"] for c in records(kt)] == ["Ромашка"]
    bad_mapping = cli("client", source, "--mapping", mapping)
    assert bad_mapping.exit_code == 1 and "'nothing'" in bad_mapping.stderr
    mapping.write_text("columns:\n  Название: 5\n", encoding="utf-8")
    located = cli("client", source, "--mapping", mapping)
    assert located.exit_code == 1 and "mapping.yaml:2 columns.Название" in located.stderr


def test_a_row_failing_after_it_wrote_leaves_nothing_of_itself(kt: Kartoteka) -> None:
    """A unique value taken fails in the database, after the row's INSERT was tried: its
    batch is redone row by row, and the rows around it are written once, with one history
    entry each."""
    run(kt, (HEADER_RU + "\nПервый;1655000001;;;;;;\n").encode())
    text = HEADER_RU + "\n" + "".join(
        f"Клиент {i};{1655000001 if i == 3 else 1655000010 + i};;;;;;\n" for i in range(6))
    result = run(kt, text.encode(), mode="good")
    assert (result.progress.created, result.progress.failed) == (5, 1)
    assert [(e.row, e.code) for e in result.errors] == [(5, "unique_violation")]
    with kt.db.read(system="test: history") as conn:
        changes = conn.execute(sa.text("SELECT count(*) FROM kt_change")).scalar_one()
    assert len(records(kt)) == 6 and changes == 6


def test_an_import_stopped_midway_leaves_nothing_or_its_committed_batches(
        write_setup: Callable[..., Path], tmp_path: Path) -> None:
    """A real `kartoteka import` process, interrupted (Ctrl-C) once it has written some
    batches: mode all leaves nothing, mode good exactly the committed batches, and says
    from which row of the file to resume."""
    import os
    import signal
    import subprocess
    import sys

    setup = write_setup(SETUP)
    source = tmp_path / "many.csv"
    source.write_text("Название;ИНН\n" + "".join(f"Клиент {i};{1600000000 + i}\n"
                                                  for i in range(400_000)), encoding="utf-8")
    root = Path(__file__).resolve().parent.parent
    for mode in ("all", "good"):
        url = f"sqlite:///{tmp_path / mode}.db"
        engine = Kartoteka.open(setup, url)
        engine.migrate()
        process = subprocess.Popen(
            [sys.executable, "-m", "kartoteka", "import", "client", str(source), "--setup",
             str(setup), "--db", url, "--mode", mode],
            cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            # a pytest-xdist worker ignores SIGINT, and a child inherits that (Python then
            # never raises KeyboardInterrupt): the import gets Ctrl-C as from a terminal
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.2)
                with engine.db.read(system="test: progress") as conn:
                    started = conn.execute(sa.text("SELECT count(*) FROM client")).scalar_one()
                # mode all writes one transaction nobody sees until it ends (its pages may
                # stay in SQLite's cache, so not even the WAL grows): interrupted once it
                # holds the write lock (however long a busy machine took to start it), and
                # a second more, far from the end of 400,000 rows
                if (mode == "good" and started >= 2000) or (mode == "all" and _locked(url)):
                    time.sleep(1 if mode == "all" else 0)
                    break
            # far more rows than it imports before the signal, however fast the machine:
            # it must still be running to be interrupted
            assert process.poll() is None, "the import ended before it was interrupted"
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 130, stderr
        with engine.db.read(system="test: after") as conn:
            written = conn.execute(sa.text("SELECT count(*) FROM client")).scalar_one()
        engine.close()
        if mode == "all":
            assert written == 0 and "nothing was imported" in stderr
        else:
            assert written >= 2000 and written % 1000 == 0, written
            assert f"{written} rows are imported" in stderr
            assert f"from row {written + 2} on" in stderr


def _locked(url: str) -> bool:
    """Whether another connection holds the SQLite database's write lock."""
    import sqlite3

    probe = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:  # database is locked
        return True
    finally:
        probe.close()


def test_rows_wider_than_the_header_and_values_at_type_edges(kt: Kartoteka) -> None:
    text = ("Название;Сотрудников;Лимит;Клиент с\n"
            "Широкая;1;2;;лишнее\n"  # a value beyond the header's columns
            "Край;9223372036854775807;99999999999999,99;01.01.0001\n"
            "За краем;9223372036854775808;;\n"
            "Деньги;;1e5;\n"
            "Отрицательные;-1;;\n"
            "Пробелы;  ;  ;  \n")  # blank cells: nulls
    result = run(kt, text.encode(), mode="good")
    problems = {(e.row, e.column): e.problem for e in result.errors}
    assert "beyond the 4 columns" in problems[(2, "(column 5)")]
    assert (4, "Сотрудников") in problems and (5, "Лимит") in problems
    assert "at least 0" in problems[(6, "Сотрудников")]
    assert result.progress.created == 2
    edge, blank = records(kt)
    assert (edge["staff"], edge["limit"], edge["since"]) == (2**63 - 1, "99999999999999.99",
                                                             "0001-01-01")
    assert (blank["name"], blank["staff"], blank["limit"], blank["since"]) == \
        ("Пробелы", None, None, None)


def _contents(kt: Kartoteka) -> tuple[list[Any], list[Any]]:
    """Every client and every history entry, without the moments they were written, and
    ids as ranks (both ways share one database file, whose ids are never reused)."""
    with kt.db.read(system="test: contents") as conn:
        rows = [dict(row._mapping) for row in conn.execute(sa.text("SELECT * FROM client ORDER BY id"))]
        rank = {row["id"]: n for n, row in enumerate(rows)}
        clients = [tuple(v for k, v in row.items() if k not in ("id", "created_at", "updated_at"))
                   for row in rows]
        history = [(entity, rank[record_id], by, action, changes) for entity, record_id, by,
                   action, changes in conn.execute(sa.text(
                       'SELECT entity, record_id, "by", action, changes FROM kt_change ORDER BY id'))]
    return clients, history


@pytest.mark.parametrize("mode", ["all", "good"])
def test_many_creates_in_one_insert_write_what_single_creates_write(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path], mode: str) -> None:
    """A batch of new clients goes in one INSERT (engine/records/plain_creates.py): the
    records and their history are exactly those of row-by-row creates, bad rows included
    (a value refused, a unique value taken: then the batch is redone row by row)."""
    text = (HEADER_RU + "\n" + "".join(
        f"Клиент {i} 北京;{1655000100 + i if i != 7 else 1655000103};+7 900 {i:03d};"
        f"{1 + i % 28}.01.2026;{i} 000,5;{i};{'да' if i % 2 else 'нет'};Малый\n"
        for i in range(12)) + "Плохой;1;;;;;;\n")
    found = []
    for plain in (True, False):
        kt = make_kt(write_setup(SETUP, name=f"setup-{plain}-{mode}"))
        if not plain:
            kt.bulk.plain.takes = lambda entity: False  # type: ignore[method-assign]
        result = run(kt, text.encode(), mode=mode, batch_rows=5)
        found.append((result.progress.created, result.progress.failed,
                      [(e.row, e.column, e.code) for e in result.errors], _contents(kt)))
        for table in ("client", "kt_change"):
            with kt.db.write(system="test: a clean slate for the other way") as conn:
                conn.execute(sa.text(f"DELETE FROM {table}"))
    assert found[0] == found[1]
    assert (found[0][0], found[0][1]) == (11, 2)


EVENTS_SETUP = {
    "setup.yaml": """
        name: Import events
        languages: [ru, en]
        automations:
          greet:
            entity: lead
            on: created
            do: [{set: {note: "hello {name}"}}]
    """,
    "lead.yaml": """
        title: "{name}"
        search: [name]
        fields:
          name: {type: string, required: true, label: {ru: Имя}}
          code: {type: string, unique: true, label: {ru: Код}}
          amount: {type: money, label: {ru: Сумма}}
          note: {type: string, label: {ru: Заметка}}
    """,
}


def test_the_one_insert_path_writes_the_events_and_ids_of_single_creates(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """With an automation listening to creates, a batch through the one-insert path (ids
    reserved first, the rows by executemany or COPY) writes the same records, history and
    automation events (outbox rows) as row-by-row creates; a taken unique value in a batch
    sends it row by row, and the ids stay those the database would have given."""
    text = "Имя;Код;Сумма\n" + "".join(
        f"Лид {i} 北京 سلام;{'K-1' if i == 4 else f'K-{i}'};{i} 000,25\n" for i in range(9))
    found = []
    for plain in (True, False):
        kt = make_kt(write_setup(EVENTS_SETUP, name=f"events-{plain}"))
        if not plain:
            kt.bulk.plain.takes = lambda entity: False  # type: ignore[method-assign]
        result = run(kt, text.encode(), entity="lead", mode="good", batch_rows=3)
        with kt.db.read(system="test: events") as conn:
            ids = list(conn.execute(sa.text("SELECT id FROM lead ORDER BY id")).scalars())
            events = [tuple(row) for row in conn.execute(sa.text(
                "SELECT kind, entity, record_id, changes, depth, status, attempts FROM kt_event "
                "ORDER BY id"))]
            at = list(conn.execute(sa.text(
                "SELECT count(*) FROM kt_event e JOIN lead l ON l.id = e.record_id "
                "WHERE e.at = l.created_at")).scalars())
        assert at == [len(ids)]
        assert [(kind, record_id) for kind, _, record_id, *_ in events] == \
            [("create", i) for i in ids]
        if kt.db.dialect == "sqlite":  # the ids SQLite gives: the refused row took none
            assert ids == list(range(ids[0], ids[0] + 8))
        # (a PostgreSQL sequence is never rolled back: a refused batch leaves a gap there,
        # as a refused single create does)
        rank = {record_id: n for n, record_id in enumerate(ids)}
        found.append((result.progress.created, [(e.row, e.code) for e in result.errors],
                      [(kind, entity, rank[record_id], *rest)
                       for kind, entity, record_id, *rest in events],
                      _lead_contents(kt, rank)))
        for table in ("lead", "kt_change", "kt_event"):
            with kt.db.write(system="test: a clean slate for the other way") as conn:
                conn.execute(sa.text(f"DELETE FROM {table}"))
    assert found[0] == found[1]
    assert found[0][:2] == (8, [(6, "unique_violation")])


def _lead_contents(kt: Kartoteka, rank: dict[int, int]) -> tuple[list[Any], list[Any]]:
    with kt.db.read(system="test: contents") as conn:
        leads = [tuple(rank[v] if k == "id" else v for k, v in row._mapping.items()
                       if k not in ("created_at", "updated_at"))
                 for row in conn.execute(sa.text("SELECT * FROM lead ORDER BY id"))]
        history = [(entity, rank[record_id], by, action, changes)
                   for entity, record_id, by, action, changes in conn.execute(sa.text(
                       'SELECT entity, record_id, "by", action, changes FROM kt_change '
                       "ORDER BY id"))]
    return leads, history


TYPES_SETUP = {
    "setup.yaml": "name: Import types\nlanguages: [ru, en]\ntimezone: Asia/Tehran\n",
    "region.yaml": """
        title: "{name}"
        fields:
          name: {type: string, required: true, unique: true}
    """,
    "shop.yaml": """
        search: [name, note]
        fields:
          name: {type: string, required: true}
          note: text
          site: url
          mail: email
          phone: phone
          ratio: {type: decimal, places: 3}
          share: {type: integer, min: 0, max: 100}
          opened: datetime
          tags: {type: multichoice, options: [a, b, c]}
          extra: json
        links:
          region: {to: region}
    """,
}


def test_every_field_type_through_the_one_insert_path_as_through_single_creates(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """Text, url, e-mail, phone, decimal, integer, date-time (in the setup's zone),
    multichoice, JSON and a link by title go in by executemany (SQLite) or COPY
    (PostgreSQL) exactly as single creates store them."""
    text = ("name;note;site;mail;phone;ratio;share;opened;tags;extra;region\n"
            "Тегеран سلام;\"многострочный\nтекст 中文\";https://example.com/a;A@Example.com;"
            "+98 21 1234 5678;1,125;12;31.12.2026 23:30;a, c;{\"k\": [1, \"ы\"]};Север\n"
            "Пусто;;;;;;;;;;\n"
            "Москва;x;http://b.ru;b@b.ru;8 (916) 000-00-00;-0,001;100;2026-01-02T03:04:05+03:00;"
            "b;[1, 2];Юг\n")
    found = []
    for plain in (True, False):
        kt = make_kt(write_setup(TYPES_SETUP, name=f"types-{plain}"))
        if not plain:
            kt.bulk.plain.takes = lambda entity: False  # type: ignore[method-assign]
        with kt.db.write(system="test: regions") as conn:
            conn.execute(sa.text("DELETE FROM region"))
        for name in ("Север", "Юг"):
            kt.records.create("region", {"name": name})
        batches: list[int] = []
        kt.bulk.plain.write = _counted(kt.bulk.plain.write, batches)  # type: ignore[method-assign]
        result = run(kt, text.encode(), entity="shop")
        assert (result.progress.created, result.errors) == (3, [])
        assert batches == ([3] if plain else [])
        shops = [{k: v for k, v in shop.items() if k not in ("id", "created_at", "updated_at")}
                 for shop in records(kt, "shop")]
        regions = {r["id"]: r["name"] for r in records(kt, "region")}
        for shop in shops:
            shop["region"] = regions.get(shop["region"])
        with kt.db.read(system="test: search") as conn:
            search = list(conn.execute(sa.text("SELECT kt_search FROM shop ORDER BY id")).scalars())
        found.append((shops, search))
        with kt.db.write(system="test: a clean slate for the other way") as conn:
            conn.execute(sa.text("DELETE FROM shop"))
    assert found[0] == found[1]
    first = found[0][0][0]
    assert (first["ratio"], first["tags"], first["extra"], first["region"]) == \
        ("1.125", ["a", "c"], {"k": [1, "ы"]}, "Север")
    assert first["opened"] == "2026-12-31T20:00:00Z"  # 23:30 in Tehran (+03:30)


def _counted(write: Callable[..., Any], batches: list[int]) -> Callable[..., Any]:
    """`PlainCreates.write`, noting each batch's rows."""
    def counted(conn: Any, entity: str, rows: list[Any], **options: Any) -> Any:
        batches.append(len(rows))
        return write(conn, entity, rows, **options)
    return counted


def test_a_deferred_batch_keeps_its_events_in_the_order_they_happened(kt: Kartoteka) -> None:
    """Inside `Journal.deferred` (a bulk or import batch) the history and every automation
    event — of a change, of many, of a stage — are kept and written when the batch ends,
    in the order they happened: the worker meets a record's create before its stage."""
    journal = kt.records.journal
    journal.outbox.watched = frozenset({("client", "create"), ("client", "stage"),
                                        ("client", "update")})
    at = dt.datetime(2026, 12, 31, 20, 0, tzinfo=dt.UTC)
    with kt.db.write(system="test: journal") as conn:
        with journal.deferred(conn):
            journal.change(conn, "client", 1, "create", {"name": "Ромашка"}, by=None, at=at)
            journal.stage(conn, "client", 1, "main", None, "new", by=None, at=at, seconds=None)
            journal.changes_many(conn, "client", [2, 3], "update", {"vip": True}, by=None,
                                 at=at)
            journal.change(conn, "client", 4, "create", None, by=None, at=at)
            assert conn.execute(sa.text("SELECT count(*) FROM kt_event")).scalar_one() == 0
    with kt.db.read(system="test: events") as conn:
        events = [tuple(row) for row in conn.execute(sa.text(
            "SELECT kind, record_id FROM kt_event ORDER BY id"))]
        history = [tuple(row) for row in conn.execute(sa.text(
            "SELECT action, record_id FROM kt_change ORDER BY id"))]
    assert events == [("create", 1), ("stage", 1), ("update", 2), ("update", 3), ("create", 4)]
    assert sorted(history) == [("create", 1), ("create", 4), ("update", 2), ("update", 3)]


def test_a_csv_row_of_blank_cells_is_skipped_and_rows_keep_their_numbers() -> None:
    text = "a;b\nx;1\n\n;\n \t; \u00a0\n;y\n z ;\n\u00a0;\u2003\n"
    table = open_table(io.BytesIO(text.encode("utf-8")), "t.csv")
    assert list(table.rows) == [(2, ["x", "1"]), (6, ["", "y"]), (7, [" z ", ""])]
