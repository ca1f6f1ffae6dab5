"""GET /api/{e}/export and `kartoteka export`, on SQLite and PostgreSQL, through real HTTP:
every field type at its edges read back from CSV and from XLSX (openpyxl), the list's
filters, search and sort giving the same records in the same order, a manager's scope and
hidden fields with real tokens, locale values and labels, formula escaping, bad parameters
as 400s, and the command line."""

from __future__ import annotations

import csv
import datetime as dt
import io
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from api import create_app
from api.export import _Gone, _Pipe
from engine import Kartoteka
from engine.records import export as export_module
from kartoteka.cli import main

SETUP = {
    "setup.yaml": """
        name: Export test
        languages: [en, ru, fa, zh]
        timezone: Europe/Moscow
        roles:
          manager:
            deal: {create: all, read: own, update: own, hidden: [margin]}
            company: {read: all}
          director:
            "*": {create: all, read: all, update: all, delete: all}
          clerk:
            company: {read: all}
    """,
    "company.yaml": """
        label: {en: Company, ru: Компания}
        plural: {en: Companies, ru: Компании}
        search: [name]
        fields:
          name: {type: string, required: true, label: {en: Name, ru: Название}}
    """,
    "deal.yaml": """
        label: {en: Deal, ru: Сделка}
        plural: {en: Deals, ru: Сделки}
        owner: true
        search: [title, notes]
        fields:
          title:  {type: string, label: {en: Title, ru: Название, fa: عنوان, zh: 标题}}
          notes:  text
          amount: {type: money, label: {en: Amount, ru: Сумма}}
          margin: {type: decimal, digits: 10, places: 3}
          count:  integer
          signed: boolean
          due_on: date
          met_at: datetime
          status:
            type: choice
            options: {new: {en: New, ru: Новая}, won: {en: Won, ru: Выиграна}}
          tags:   {type: multichoice, options: [hot, cold]}
          extra:  json
        links:
          company:  {to: company}
          partners: {to: company, many: true}
        pipeline:
          stages:
            - {name: lead, label: {en: Lead, ru: Лид}}
            - {name: done, label: {en: Done, ru: Готово}}
          final: [done]
    """,
}

#: text that breaks naive CSV and spreadsheets: delimiters, quotes, newlines, formulas, scripts
NASTY = ['a,b;c "quoted" \'single\'', "line one\nline two\r\nthree", "=HYPERLINK(\"x\")",
         "+1", "-1", "@SUM(A1)", "Ромашка ООО «Лютик»", "شرکت پارس", "北京贸易有限公司",
         "tab\tinside", "  spaces  ", ""]


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


def seed_edges(kt: Kartoteka) -> list[dict[str, Any]]:
    """Records at every type's edges (as the system)."""
    create = kt.records.create
    companies = [create("company", {"name": name})["id"] for name in ("Альфа", "بتا", "伽马")]
    rows = [
        {"title": NASTY[0], "notes": NASTY[1], "amount": "9999999999999999.99",
         "margin": "9999999.999", "count": 2**63 - 1, "signed": True, "due_on": "0001-01-01",
         "met_at": "0001-01-01T00:00:00Z", "status": "won", "tags": ["hot", "cold"],
         "extra": {"k": ["v", 1, None]}, "company": companies[0], "partners": companies},
        {"title": NASTY[2], "notes": NASTY[6], "amount": "-9999999999999999.99",
         "margin": "-0.001", "count": -(2**63), "signed": False, "due_on": "9999-12-31",
         "met_at": "9999-12-31T20:59:59Z", "status": "new", "tags": [], "extra": "=1+1",
         "partners": [companies[2]]},
        {"title": NASTY[7], "notes": NASTY[8], "amount": "1234.50", "margin": "0.000",
         "count": 0, "due_on": "2026-12-31", "met_at": "2026-12-31T21:30:00Z",
         "company": companies[1]},
        *({"title": text, "amount": "0.01"} for text in NASTY[3:6] + NASTY[9:]),
        {},
    ]
    return [create("deal", row) for row in rows]


def read_csv(response: Any, delimiter: str = ",") -> list[list[str]]:
    assert response.status_code == 200, response.text
    text = response.content.decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def listed(http: TestClient, query: str = "", **headers: str) -> list[dict[str, Any]]:
    """Every record the list answers for `query`, page after page."""
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = http.get(f"/api/deal?limit=500&{query}&cursor={cursor}", headers=headers).json()
        items += page["items"]
        if not page["next"]:
            return items
        cursor = page["next"]


def as_text(value: Any, json_value: bool = False) -> str:
    """A list value as the ISO export writes it (a `json` field's always in JSON form)."""
    if value is None:
        return ""
    if json_value:
        import json
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        import json
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def test_csv_round_trips_every_type_at_its_edges_as_the_list_renders_it(
        kt: Kartoteka, http: TestClient) -> None:
    seed_edges(kt)
    rows = read_csv(http.get("/api/deal/export?headers=names&escape_formulas=false"))
    records = listed(http)
    header, body = rows[0], rows[1:]
    assert header == list(records[0])  # every key of the list's records, in its order
    assert body == [[as_text(record[key], json_value=key == "extra") for key in header]
                    for record in records]
    by_title = {row[header.index("title")]: row for row in body}
    assert by_title[NASTY[0]][header.index("notes")] == NASTY[1]  # newlines kept, \r\n too
    assert by_title[NASTY[0]][header.index("amount")] == "9999999999999999.99"  # exact
    assert by_title[NASTY[0]][header.index("partners")] == "1;2;3"
    assert by_title[NASTY[0]][header.index("due_on")] == "0001-01-01"
    assert by_title[NASTY[2]][header.index("count")] == str(-(2**63))


def test_csv_escapes_text_that_a_spreadsheet_would_run_unless_asked_not_to(
        kt: Kartoteka, http: TestClient) -> None:
    seed_edges(kt)
    rows = read_csv(http.get("/api/deal/export?headers=names&sort=id"))
    header = rows[0]
    titles = [row[header.index("title")] for row in rows[1:]]
    assert "'=HYPERLINK(\"x\")" in titles and "'+1" in titles and "'-1" in titles
    assert "'@SUM(A1)" in titles and "'tab\tinside" not in titles  # starts with t
    extras = [row[header.index("extra")] for row in rows[1:]]
    assert '"=1+1"' in extras  # a JSON string in its JSON form: quoted, never a formula
    amounts = [row[header.index("amount")] for row in rows[1:]]
    assert "-9999999999999999.99" in amounts  # a negative number is a number, untouched


def test_locale_values_labels_bom_and_delimiter_in_russian(kt: Kartoteka, http: TestClient) -> None:
    seed_edges(kt)
    response = http.get("/api/deal/export", params={
        "values": "locale", "language": "ru", "bom": "true", "delimiter": ";", "sort": "id"})
    assert response.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline=""),
                           delimiter=";"))
    header = rows[0]
    assert header[:5] == ["ID", "Создано", "Изменено", "Версия", "Ответственный"]
    assert {"Название", "Сумма", "Этап"} <= set(header)
    assert {"Margin", "Company", "Partners"} <= set(header)  # no ru label: the default one
    first, second, third = rows[1], rows[2], rows[3]
    col = header.index
    assert third[col("Сумма")] == "1234,50" and first[col("Margin")] == "9999999,999"
    assert third[col("Due on")] == "31.12.2026"
    assert third[col("Met at")] == "01.01.2027 00:30:00"  # Europe/Moscow, UTC+3
    assert first[col("Due on")] == "01.01.0001"
    assert first[col("Signed")] == "да" and second[col("Signed")] == "нет"
    assert first[col("Status")] == "Выиграна" and second[col("Status")] == "Новая"
    assert first[col("Этап")] == "Лид"
    assert first[col("Tags")] == "hot;cold"
    assert first[col("Partners")] == "1;2;3"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="deal-')
    assert urllib.parse.quote("Сделки-") in disposition and "filename*=UTF-8''" in disposition


def test_persian_values_and_a_tab_delimiter(kt: Kartoteka, http: TestClient) -> None:
    kt.records.create("deal", {"title": "قرارداد", "amount": "-12.50", "signed": True,
                               "due_on": "1403-01-01"})
    rows = read_csv(http.get("/api/deal/export?values=locale&language=fa&delimiter=tab"),
                    delimiter="\t")
    col = rows[0].index
    assert rows[1][col("عنوان")] == "قرارداد"
    assert rows[1][col("Amount")] == "-12٫50" and rows[1][col("Signed")] == "بله"
    assert rows[1][col("Due on")] == "1403/01/01"
    english = read_csv(http.get("/api/deal/export?values=locale&language=en"))
    assert english[1][english[0].index("Due on")] == "1403-01-01"  # English keeps ISO dates
    assert english[1][english[0].index("Signed")] == "yes"


def test_accept_language_picks_the_headers_language(kt: Kartoteka, http: TestClient) -> None:
    kt.records.create("deal", {"title": "x"})
    fa = read_csv(http.get("/api/deal/export", headers={"Accept-Language": "fa-IR, en;q=0.5"}))
    assert "عنوان" in fa[0]
    zh = read_csv(http.get("/api/deal/export?language=zh", headers={"Accept-Language": "fa"}))
    assert "标题" in zh[0]


def test_xlsx_reads_back_with_typed_cells_and_exact_money(kt: Kartoteka, http: TestClient) -> None:
    seed_edges(kt)
    response = http.get("/api/deal/export?format=xlsx&headers=names&sort=id")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == export_module.MEDIA_TYPES["xlsx"]
    assert 'filename="deal-' in response.headers["content-disposition"]
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    sheet = book.active
    assert sheet is not None and sheet.title == "Deals"
    assert sheet.freeze_panes == "A2" and sheet["A1"].font.b
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    col = header.index
    first, second, third = rows[1], rows[2], rows[3]
    # XML reads a line end as \n (CSV keeps \r\n)
    assert first[col("title")] == NASTY[0] and first[col("notes")] == NASTY[1].replace("\r\n", "\n")
    assert second[col("title")] == NASTY[2]  # text, not a formula
    cell = sheet.cell(row=3, column=col("title") + 1)
    assert cell.data_type == "s"
    # past Excel's 15 digits: text, so no digit is lost; within: a number
    assert first[col("amount")] == "9999999999999999.99"
    assert second[col("amount")] == "-9999999999999999.99"
    assert first[col("count")] == str(2**63 - 1)
    assert third[col("amount")] == 1234.5 and third[col("count")] == 0
    assert sheet.cell(row=4, column=col("amount") + 1).number_format == "0.00"
    assert third[col("margin")] == 0
    assert first[col("due_on")] == "0001-01-01"  # before 1900: Excel cannot hold it
    assert second[col("due_on")] == dt.datetime(9999, 12, 31)
    assert third[col("met_at")] == dt.datetime(2026, 12, 31, 21, 30)  # UTC with values=iso
    assert first[col("signed")] is True and second[col("signed")] is False
    assert first[col("partners")] == "1;2;3" and first[col("company")] == 1
    assert third[col("title")] == NASTY[7] and third[col("notes")] == NASTY[8]


def test_xlsx_in_locale_takes_labels_and_the_setups_time_zone(kt: Kartoteka,
                                                               http: TestClient) -> None:
    seed_edges(kt)
    response = http.get("/api/deal/export?format=xlsx&values=locale&language=ru&sort=id")
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None and sheet.title == "Сделки"
    rows = list(sheet.iter_rows(values_only=True))
    col = list(rows[0]).index
    assert rows[3][col("Met at")] == dt.datetime(2027, 1, 1, 0, 30)
    assert rows[1][col("Status")] == "Выиграна" and rows[1][col("Этап")] == "Лид"


QUERIES = [
    "sort=-amount,title",
    "q=ромашка",
    "q=%E5%8C%97%E4%BA%AC",
    "amount[gte]=0.01&sort=-id",
    "company.name=Альфа",
    "partners=3",
    "signed=false",
    "due_on[lt]=2000-01-01",
    "status[in]=won,new&sort=status",
    "title[isnull]=true",
]


@pytest.mark.parametrize("query", QUERIES)
def test_filters_search_and_sort_answer_what_the_list_answers(
        kt: Kartoteka, http: TestClient, query: str) -> None:
    seed_edges(kt)
    rows = read_csv(http.get(f"/api/deal/export?headers=names&{query}"))
    assert [int(row[0]) for row in rows[1:]] == [r["id"] for r in listed(http, query)]


def test_more_rows_than_a_chunk_are_all_written_in_order(
        kt: Kartoteka, http: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "CHUNK_ROWS", 7)
    company = kt.records.create("company", {"name": "C"})["id"]
    for n in range(40):
        kt.records.create("deal", {"title": f"d{n:02}", "partners": [company] if n % 3 else []})
    rows = read_csv(http.get("/api/deal/export?headers=names&sort=-title"))
    assert [row[rows[0].index("title")] for row in rows[1:]] == [f"d{n:02}" for n in range(39, -1, -1)]
    assert [row[rows[0].index("partners")] for row in rows[1:]] == \
        [str(company) if n % 3 else "" for n in range(39, -1, -1)]
    book = openpyxl.load_workbook(io.BytesIO(http.get("/api/deal/export?format=xlsx").content))
    assert book.active is not None and book.active.max_row == 41
    monkeypatch.setattr(export_module, "EXCEL_SHEET_ROWS", 15)  # Excel's 1,048,575, smaller
    book = openpyxl.load_workbook(io.BytesIO(http.get(
        "/api/deal/export?format=xlsx&headers=names&sort=title").content))
    assert book.sheetnames == ["Deals", "Deals (2)", "Deals (3)"]
    sheets = [list(sheet.iter_rows(values_only=True)) for sheet in book.worksheets]
    assert [len(rows) for rows in sheets] == [16, 16, 11]
    assert all(rows[0] == sheets[0][0] for rows in sheets)  # the header on every sheet
    title = sheets[0][0].index("title")
    assert [row[title] for rows in sheets for row in rows[1:]] == [f"d{n:02}" for n in range(40)]


def test_a_manager_gets_their_records_without_hidden_fields_a_director_all(
        kt: Kartoteka) -> None:
    manager, manager_token = kt.users.add("m@example.com", ["manager"])
    other, _ = kt.users.add("o@example.com", ["manager"])
    _, director_token = kt.users.add("d@example.com", ["director"])
    for n, owner in enumerate([manager.id, other.id, manager.id, None]):
        kt.records.create("deal", {"title": f"deal {n}", "margin": "1.500", "owner": owner})
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as http:
        as_manager = {"Authorization": f"Bearer {manager_token}"}
        as_director = {"Authorization": f"Bearer {director_token}"}
        rows = read_csv(http.get("/api/deal/export?headers=names", headers=as_manager))
        assert "margin" not in rows[0]
        assert [row[rows[0].index("title")] for row in rows[1:]] == ["deal 0", "deal 2"]
        assert [int(r[0]) for r in rows[1:]] == [r["id"] for r in listed(http, "", **as_manager)]
        sheet = openpyxl.load_workbook(io.BytesIO(http.get(
            "/api/deal/export?format=xlsx&headers=names", headers=as_manager).content)).active
        assert sheet is not None
        assert "margin" not in [c.value for c in sheet[1]] and sheet.max_row == 3
        for refused in ("margin=1.5", "sort=margin", "margin[isnull]=false"):
            answer = http.get(f"/api/deal/export?{refused}", headers=as_manager)
            assert answer.status_code == 400, refused
            same = http.get(f"/api/deal?{refused}", headers=as_manager).json()  # as unknown
            assert answer.json()["error"]["details"] == same["error"]["details"]
        rows = read_csv(http.get("/api/deal/export?headers=names", headers=as_director))
        assert "margin" in rows[0] and len(rows) == 5
        assert http.get("/api/deal/export").status_code == 401
        clerk = {"Authorization": f"Bearer {kt.users.add('c@example.com', ['clerk'])[1]}"}
        refused = http.get("/api/deal/export?format=xlsx", headers=clerk)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "operation_forbidden"
        assert http.get("/api/company/export", headers=clerk).status_code == 200
        assert http.get("/api/deal/export", headers={"Authorization": "Bearer nope"}).status_code == 401


@pytest.mark.parametrize(("query", "field"), [
    ("format=pdf", "format"),
    ("limit=5", "limit"),
    ("offset=1", "offset"),
    ("cursor=abc", "cursor"),
    ("include=company", "include"),
    ("format=xlsx&delimiter=;", "delimiter"),
    ("format=xlsx&bom=true", "bom"),
    ("delimiter=x", "delimiter"),
    ("bom=yes", "bom"),
    ("headers=titles", "headers"),
    ("values=excel", "values"),
    ("language=de", "language"),
    ("format=csv&format=xlsx", "format"),
    ("nope=1", "nope"),
    ("amount[gte]=abc", "amount[gte]"),
    ("sort=nope", "sort"),
    ("q=" + "я" * 201, "q"),
    ("title[near]=x", "title[near]"),
])
def test_bad_parameters_are_refused_with_400_naming_them(
        kt: Kartoteka, http: TestClient, query: str, field: str) -> None:
    response = http.get(f"/api/deal/export?{query}")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "invalid_query"
    assert field in [d["field"] for d in error["details"]]


def test_every_bad_parameter_is_named_at_once_and_other_methods_are_405(
        kt: Kartoteka, http: TestClient) -> None:
    error = http.get("/api/deal/export?format=doc&limit=1&nope=2").json()["error"]
    assert [d["field"] for d in error["details"]] == ["limit", "format", "nope"]
    assert http.post("/api/deal/export", json={}).status_code == 405
    assert http.get("/api/nothing/export").status_code == 404


def test_a_field_named_like_a_control_is_filtered_in_its_operator_form(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    kt = make_kt(write_setup({"item.yaml": """
        fields:
          format: string
          language: string
    """}))
    kt.records.create("item", {"format": "A4", "language": "ru"})
    kt.records.create("item", {"format": "A5", "language": "en"})
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        rows = read_csv(http.get("/api/item/export?format[eq]=A5&headers=names&format=csv"))
        assert [row[rows[0].index("format")] for row in rows[1:]] == ["A5"]


def test_openapi_publishes_the_export_with_its_media_types_and_parameters(http: TestClient) -> None:
    operation = http.get("/openapi.json").json()["paths"]["/api/deal/export"]["get"]
    content = operation["responses"]["200"]["content"]
    assert set(content) == {"text/csv", export_module.MEDIA_TYPES["xlsx"]}
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["format"]["schema"]["enum"] == ["csv", "xlsx"]
    assert params["language"]["schema"]["enum"] == ["en", "ru", "fa", "zh"]
    assert {"q", "sort", "headers", "values", "bom", "delimiter", "escape_formulas"} <= set(params)
    assert "limit" not in params and "cursor" not in params


def test_the_pipe_stops_the_export_when_the_client_is_gone() -> None:
    pipe = _Pipe()
    pipe.write(b"x" * 10)
    pipe.gone.set()
    with pytest.raises(_Gone):
        pipe.write(b"y" * export_module.FLUSH_BYTES)
    assert pipe.get() is None  # a reader left waiting is let go too


# -- the command line ------------------------------------------------------------------------
def test_cli_exports_to_a_file_and_to_stdout_as_the_system_or_as_a_user(
        kt: Kartoteka, write_setup: Callable[..., Path], tmp_path: Path) -> None:
    setup = write_setup(SETUP)
    url = str(kt.db.engine.url.render_as_string(hide_password=False))
    manager, _ = kt.users.add("m@example.com", ["manager"])
    kt.records.create("deal", {"title": "mine", "margin": "2.000", "owner": manager.id})
    kt.records.create("deal", {"title": "Чужая; \"сделка\"", "amount": "10.00"})
    runner = CliRunner()
    out = tmp_path / "deals.xlsx"
    result = runner.invoke(main, ["export", str(setup), "deal", "--db", url, "--format", "xlsx",
                                  "--out", str(out), "--headers", "names"])
    assert result.exit_code == 0, result.output
    assert "Exported 2 deal record(s)" in result.stderr
    sheet = openpyxl.load_workbook(out).active
    assert sheet is not None and sheet.max_row == 3
    result = runner.invoke(main, ["export", str(setup), "deal", "--db", url, "--where",
                                  "amount[gte]=5", "--values", "locale", "--language", "ru",
                                  "--delimiter", ";", "--bom"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout_bytes.decode("utf-8-sig"), newline=""),
                           delimiter=";"))
    assert rows[1][rows[0].index("Сумма")] == "10,00" and len(rows) == 2
    result = runner.invoke(main, ["export", str(setup), "deal", "--db", url, "--as-user",
                                  "M@example.com", "--headers", "names"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert "margin" not in rows[0] and [r[rows[0].index("title")] for r in rows[1:]] == ["mine"]


def test_cli_refuses_bad_input_and_leaves_no_file(kt: Kartoteka, write_setup: Callable[..., Path],
                                                  tmp_path: Path) -> None:
    setup = write_setup(SETUP)
    url = str(kt.db.engine.url.render_as_string(hide_password=False))
    runner = CliRunner()
    out = tmp_path / "x.csv"
    for args, code, says in (
        (["--where", "nope=1"], 1, "nope: deal has no field or link 'nope'"),
        (["--where", "no-equals"], 2, "is not FIELD=VALUE"),
        (["--as-user", "ghost@example.com"], 1, "no user ghost@example.com"),
        (["--language", "de"], 1, "language: must be one of the setup's languages"),
    ):
        result = runner.invoke(main, ["export", str(setup), "deal", "--db", url, "--out",
                                      str(out), *args])
        assert result.exit_code == code, result.output
        assert says in result.stderr
        assert not out.exists() and not list(tmp_path.glob(".x.csv*"))
    result = runner.invoke(main, ["export", str(setup), "deals", "--db", url])
    assert result.exit_code == 1 and "no entity 'deals'" in result.stderr


def test_links_to_several_entities_and_links_that_carry_data_are_written_as_ids(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    kt = make_kt(write_setup({
        "procedure.yaml": "fields:\n  name: string\n",
        "plan.yaml": """
            fields:
              title: string
            links:
              procedures:
                to: procedure
                many: true
                through:
                  price: {type: money, required: true}
        """,
        "note.yaml": """
            fields:
              text: string
            links:
              about: {to: [plan, procedure]}
        """}))
    first, second = (kt.records.create("procedure", {"name": n})["id"] for n in ("a", "b"))
    plan = kt.records.create("plan", {"procedures": [{"id": second, "price": "5.00"},
                                                     {"id": first, "price": "1.00"}]})["id"]
    kt.records.create("note", {"text": "x", "about": {"entity": "plan", "id": plan}})
    kt.records.create("note", {"text": "y"})
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        rows = read_csv(http.get("/api/plan/export?headers=names"))
        assert rows[1][rows[0].index("procedures")] == f"{first};{second}"
        rows = read_csv(http.get("/api/note/export?headers=names"))
        assert [row[rows[0].index("about")] for row in rows[1:]] == [f"plan:{plan}", ""]
        sheet = openpyxl.load_workbook(io.BytesIO(http.get(
            "/api/note/export?format=xlsx&headers=names").content)).active
        assert sheet is not None and sheet.cell(row=2, column=rows[0].index("about") + 1).value \
            == f"plan:{plan}"


def test_a_real_server_streams_an_export_and_stops_when_the_client_goes(tmp_path: Path) -> None:
    """Through uvicorn on a socket: the body is chunked (sent while it is written), a slow
    reader gets every row while the server's memory stays flat, and a reader that hangs up
    halfway leaves the server answering."""
    import http.client

    from bench.seed import seed
    from tests.test_reliability import Server

    rows = 30_000
    url = f"sqlite:///{tmp_path / 'served.db'}"
    seed(url, clients=rows, sales=0)
    server = Server(url, tmp_path / "server.log")
    server.start()
    try:
        before = server.rss_kb()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("GET", "/api/client/export?sort=-name")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("transfer-encoding") == "chunked"
        assert response.getheader("content-length") is None
        lines, peak = 0, before
        while chunk := response.read(256 * 1024):
            lines += chunk.count(b"\r\n")  # a row per line: no value here holds a newline
            peak = max(peak, server.rss_kb())
        connection.close()
        assert lines == rows + 1
        assert peak - before < 40_000, (before, peak)  # kB: a few chunks, not 30,000 rows
        for _ in range(3):  # hang up after the first chunk: the server goes on answering
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            connection.request("GET", "/api/client/export")
            assert connection.getresponse().read(1024)
            connection.close()
        status, page, _ = _get(server.port, "/api/client?limit=1")
        assert status == 200 and page["total"] == rows
    finally:
        server.stop()


def _get(port: int, path: str) -> tuple[int, Any, Any]:
    from tests.test_reliability import call

    return call(port, "GET", path)


def test_titles_of_linked_records_in_the_callers_scope_and_without_hidden_fields(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    kt = make_kt(write_setup({
        "setup.yaml": """
            languages: [en, ru]
            roles:
              manager:
                client: {read: own, hidden: [secret]}
                order: {read: all}
                city: {read: all}
        """,
        "city.yaml": "title: '{name}'\nfields:\n  name: string\n",
        "client.yaml": """
            label: {en: Client, ru: Клиент}
            owner: true
            title: "{name} {secret} / {city.name} #{id}"
            fields:
              name: string
              secret: string
            links:
              city: {to: city}
        """,
        "order.yaml": """
            fields:
              number: string
            links:
              client: {to: client, label: {en: Client, ru: Клиент}}
              lines: {to: city, many: true}
        """}))
    manager, token = kt.users.add("m@example.com", ["manager"])
    admin = {"Authorization": f"Bearer {kt.users.add('a@example.com', ['admin'])[1]}"}
    kazan = kt.records.create("city", {"name": "Казань"})["id"]
    mine = kt.records.create("client", {"name": "Альфа", "secret": "s3", "city": kazan,
                                        "owner": manager.id})["id"]
    theirs = kt.records.create("client", {"name": "Бета", "secret": "s4"})["id"]
    for client in (mine, theirs, None):
        kt.records.create("order", {"number": f"N{client}", "client": client})
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        rows = read_csv(http.get("/api/order/export?titles=true&headers=names", headers=admin))
        assert rows[0] == ["id", "created_at", "updated_at", "version", "number", "client",
                           "client (title)", "lines", "lines (title)"]
        assert [row[6] for row in rows[1:]] == [f"Альфа s3 / Казань #{mine}",
                                                f"Бета s4 / #{theirs}", ""]
        auth = {"Authorization": f"Bearer {token}"}
        rows = read_csv(http.get("/api/order/export?titles=true&language=ru", headers=auth))
        assert rows[0][5:7] == ["Клиент", "Клиент (название)"]
        # the other client's id is in the order, as in the list; its title is not readable
        assert [row[5:7] for row in rows[1:]] == [[str(mine), f"Альфа / Казань #{mine}"],
                                                  [str(theirs), ""], ["", ""]]
        assert http.get("/api/order/export?titles=yes", headers=auth).status_code == 400


def test_an_export_is_one_snapshot_while_others_write(
        kt: Kartoteka, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.records.export import Exporter

    monkeypatch.setattr(export_module, "CHUNK_ROWS", 2)
    company = kt.records.create("company", {"name": "C"})["id"]
    ids = [kt.records.create("deal", {"title": f"d{n}"})["id"] for n in range(6)]
    chunks = Exporter(kt.records, kt.clock).prepare("deal", [("sort", "id")]).chunks()
    first = next(chunks)
    kt.records.create("deal", {"title": "late"})
    kt.records.update("deal", ids[4], {"title": "changed"})
    kt.records.add_link("deal", ids[5], "partners", company)
    records = first + [record for chunk in chunks for record in chunk]
    assert [r["title"] for r in records] == [f"d{n}" for n in range(6)]
    assert records[5]["partners"] == []  # linked after the export started
