"""Labels for choice options, per language: published in /api/schema and the OpenAPI
document (as `x-labels`, which validators ignore), while the values stay the identifiers
bodies and filters use. Over real HTTP on SQLite and PostgreSQL; broken declarations are
located errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, SetupError, load_setup
from tests.openapi_check import openapi_problems

SETUP = {
    "setup.yaml": """
        name: Продажи
        languages: [en, ru, fa, zh]
    """,
    "deal.yaml": """
        fields:
          title: {type: string, required: true}
          status:
            type: choice
            default: new
            options:
              new:  {en: New, ru: Новая, fa: جدید, zh: 新}
              won:  {en: Won, ru: Выиграна}
              lost: Lost
              hold:
          tags:
            type: multichoice
            options:
              - vip
              - {value: опт, label: {en: Wholesale, ru: Опт, zh: 批发}}
              - {value: export, label: Export}
          size: {type: choice, options: [s, m, l]}
          owner_user: user
    """,
}

LABELS = {"new": {"en": "New", "ru": "Новая", "fa": "جدید", "zh": "新"},
          "won": {"en": "Won", "ru": "Выиграна"}, "lost": {"en": "Lost"}}


@pytest.fixture
def sales(write_setup: Callable[..., Path], make_kt: Callable[..., Kartoteka]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


@pytest.fixture
def http(sales: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(sales), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client


def test_the_schema_publishes_each_options_labels(http: TestClient) -> None:
    fields = http.get("/api/schema").json()["entities"]["deal"]["fields"]
    assert fields["status"]["options"] == ["new", "won", "lost", "hold"]
    assert fields["status"]["option_labels"] == LABELS  # `hold` has none: its value is shown
    assert fields["status"]["default"] == "new"
    assert fields["tags"]["options"] == ["vip", "опт", "export"]
    assert fields["tags"]["option_labels"] == {
        "опт": {"en": "Wholesale", "ru": "Опт", "zh": "批发"}, "export": {"en": "Export"}}
    assert "option_labels" not in fields["size"]


def test_openapi_keeps_the_values_and_adds_the_labels_in_the_first_language(
        http: TestClient) -> None:
    document = http.get("/openapi.json").json()
    assert not openapi_problems(document)
    schemas = document["components"]["schemas"]
    for name in ("Deal", "DealCreate", "DealPatch"):
        status = schemas[name]["properties"]["status"]
        assert [v for v in status["enum"] if v is not None] == ["new", "won", "lost", "hold"]
        assert status["x-labels"] == {"new": "New", "won": "Won", "lost": "Lost"}
        tags = schemas[name]["properties"]["tags"]
        assert tags["x-labels"] == {"опт": "Wholesale", "export": "Export"}
        jsonschema.Draft202012Validator.check_schema(schemas[name])


def test_bodies_and_filters_use_the_values(http: TestClient) -> None:
    made = http.post("/api/deal", json={"title": "Сделка", "tags": ["опт", "vip"]})
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "new" and made.json()["tags"] == ["vip", "опт"]
    assert http.post("/api/deal", json={"title": "x", "status": "won"}).status_code == 201
    # a label is not a value
    for body in ({"title": "x", "status": "Новая"}, {"title": "x", "status": "New"},
                 {"title": "x", "tags": ["Опт"]}):
        refused = http.post("/api/deal", json=body)
        assert refused.status_code == 422, refused.text
    assert http.get("/api/deal?status=won").json()["total"] == 1
    assert http.get("/api/deal", params={"tags[contains]": "опт"}).json()["total"] == 1
    wrong = http.get("/api/deal", params={"status": "Выиграна"})
    assert wrong.status_code == 400, wrong.text
    assert "must be one of: new, won, lost, hold" in wrong.json()["error"]["details"][0]["problem"]


def test_the_api_answers_as_its_openapi_document_says(sales: Kartoteka) -> None:
    """A short schemathesis run over the labelled setup: `x-labels` and the `user` type
    disturb neither generation nor response validation."""
    app = create_app(sales)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        document = client.get("/openapi.json").json()
    config = SchemathesisConfig.from_dict({"generation": {
        "max-examples": 10, "deterministic": True, "database": "none"}})
    schema = schemathesis.openapi.from_dict(document, config=config)
    ran = 0
    for result in schema.include(path_regex=r"^/api/deal$").get_all_operations():
        operation = result.ok()

        @hypothesis.settings(max_examples=10, deadline=None, derandomize=True, database=None)
        @hypothesis.given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(app=app, checks=[not_a_server_error, status_code_conformance,
                                                    response_schema_conformance])

        run()
        ran += 1
    assert ran == 2  # list and create


@pytest.mark.parametrize(("options", "key", "code", "problem"), [
    ("{new: {en: New, de: Neu}}", "fields.status.options.new.de", "field.option_label",
     "labels option 'new' in 'de', which is not a language of the setup"),
    ("[new, {value: new, label: Новая}]", "fields.status.options[1]", "field.options",
     "lists the option 'new' twice"),
    ("[new, {value: won, label: {en: Won, ры: Выиграна}}]",
     "fields.status.options[1].label.ры", "field.option_label", "in 'ры'"),
    ("[new, {value: won, lable: Won}]", "fields.status.options[1].lable", "shape.unknown_key",
     "unknown key 'lable'"),
    ("[new, {label: Won}]", "fields.status.options[1]", "shape.missing_key", "'value' is missing"),
    ("{new: [New, Новая]}", "fields.status.options.new", "shape.anyOf",
     "must be the option's label"),
    ("{}", "fields.status.options", "shape.minProperties", "must not be empty"),
    ("[new, 5]", "fields.status.options[1]", "shape.type", "must be a text"),
])
def test_broken_option_labels_are_located(write_setup: Callable[..., Path], options: str,
                                          key: str, code: str, problem: str) -> None:
    folder = write_setup({
        "setup.yaml": "languages: [en, ru, fa, zh]\n",
        "deal.yaml": f"fields:\n  status: {{type: choice, options: {options}}}\n",
    })
    with pytest.raises(SetupError) as raised:
        load_setup(folder)
    found = [(d.key, d.code, d.message) for d in raised.value.diagnostics]
    assert any(k == key and c == code and problem in m for k, c, m in found), found
    assert all(d.line == 2 for d in raised.value.diagnostics)
