"""Rules of records that a user notices: ids are never reused, versions move whenever a
record changes (including by someone else's delete), ways back filter like links, and a
record whose pipeline changes lands in a stage of its new pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, check_setup
from kartoteka.cli import main


def test_a_deleted_records_id_is_never_given_again(client: TestClient) -> None:
    first = client.post("/api/client", json={"name": "Первый"}).json()
    assert client.delete(f"/api/client/{first['id']}").status_code == 204
    second = client.post("/api/client", json={"name": "Второй"}).json()
    assert second["id"] > first["id"]
    assert client.get(f"/api/client/{first['id']}").status_code == 404


def test_losing_a_many_to_many_link_by_a_delete_bumps_the_version(client: TestClient) -> None:
    client_id = client.post("/api/client", json={"name": "C"}).json()["id"]
    carrier = client.post("/api/logistics", json={"name": "ТрансЛогистик"}).json()["id"]
    sale = client.post("/api/sale", json={"number": "S-1", "client": client_id}).json()
    assert client.put(f"/api/sale/{sale['id']}/carriers/{carrier}").status_code == 204
    before = client.get(f"/api/sale/{sale['id']}")
    assert before.json()["carriers"] == [carrier]
    # carriers are restrict by default: unlink by hand, then the carrier may go
    assert client.delete(f"/api/logistics/{carrier}").status_code == 409
    assert client.delete(f"/api/sale/{sale['id']}/carriers/{carrier}").status_code == 204
    after_unlink = client.get(f"/api/sale/{sale['id']}").json()
    assert after_unlink["version"] == before.json()["version"] + 1
    assert after_unlink["carriers"] == []


def test_set_null_many_to_many_delete_bumps_the_records_that_lost_the_link(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[[dict[str, str]], Path]) -> None:
    kt = make_kt(write_setup({
        "tag.yaml": "entity: tag\nfields: {name: string}\n",
        "note.yaml": "entity: note\nfields: {text: text}\n"
                     "links: {tags: {to: tag, many: true, on_delete: set_null, reverse: notes}}\n",
    }))
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as client:
        tag = client.post("/api/tag", json={"name": "срочно"}).json()["id"]
        note = client.post("/api/note", json={"text": "x", "tags": [tag]}).json()
        assert client.delete(f"/api/tag/{tag}").status_code == 204
        after = client.get(f"/api/note/{note['id']}")
        assert after.json()["tags"] == []
        assert after.json()["version"] == note["version"] + 1
        assert after.headers["etag"] != f'"{note["version"]}"'


def test_a_way_back_filters_by_id_and_by_emptiness(client: TestClient) -> None:
    with_sale = client.post("/api/client", json={"name": "С продажей"}).json()["id"]
    without = client.post("/api/client", json={"name": "Без продаж"}).json()["id"]
    sale = client.post("/api/sale", json={"number": "S-9", "client": with_sale}).json()["id"]
    task = client.post("/api/task", json={"subject": "Позвонить",
                                          "about": {"entity": "client", "id": without}}).json()["id"]

    def names(**params: str) -> list[int]:
        answer = client.get("/api/client", params=params)
        assert answer.status_code == 200, answer.text
        return [c["id"] for c in answer.json()["items"]]

    assert names(sales=str(sale)) == [with_sale]
    assert names(**{"sales[isnull]": "true"}) == [without]
    assert names(**{"sales[isnull]": "1"}) == [without]
    assert names(**{"sales[isnull]": "false"}) == [with_sale]
    assert names(tasks=str(task)) == [without]
    assert names(**{"tasks[in]": f"{task},999"}) == [without]
    refused = client.get("/api/client", params={"sales[gt]": "1"})
    assert refused.status_code == 400
    assert refused.json()["error"]["details"][0]["field"] == "sales[gt]"


def test_many_to_many_isnull_takes_1_and_0(client: TestClient) -> None:
    client_id = client.post("/api/client", json={"name": "C"}).json()["id"]
    product = client.post("/api/product", json={"sku": "P-1", "name": "Бумага"}).json()["id"]
    linked = client.post("/api/sale", json={"number": "A", "client": client_id,
                                            "products": [product]}).json()["id"]
    bare = client.post("/api/sale", json={"number": "B", "client": client_id}).json()["id"]
    for text, expected in (("1", [bare]), ("true", [bare]), ("0", [linked]), ("false", [linked])):
        items = client.get("/api/sale", params={"products[isnull]": text}).json()["items"]
        assert [s["id"] for s in items] == expected, text


FREIGHT = {
    "shipment.yaml": """
        entity: shipment
        fields:
          ref: {type: string, required: true}
          mode: {type: choice, options: [sea, air], default: sea}
        pipelines:
          sea: {stages: [request, booking, loading, at_sea, delivered], final: [delivered]}
          air: {stages: [request, booking, in_flight, delivered], final: [delivered]}
        pipeline_by: mode
    """,
}


def test_changing_the_field_that_picks_the_pipeline(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[[dict[str, str]], Path]) -> None:
    kt = make_kt(write_setup(FREIGHT))
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as client:
        air = client.post("/api/shipment", json={"ref": "A-1", "mode": "air"}).json()
        assert air["stage"] == "request"
        # 'request' exists in both pipelines: the record stays where it is
        moved = client.patch(f"/api/shipment/{air['id']}", json={"mode": "sea"}).json()
        assert (moved["mode"], moved["stage"]) == ("sea", "request")
    # a stage the new pipeline lacks sends the record to the new pipeline's first stage
    table = kt.storage["shipment"].table
    with kt.db.write(system="test") as conn:
        conn.execute(table.update().where(table.c.id == air["id"]).values(stage="at_sea"))
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as client:
        switched = client.patch(f"/api/shipment/{air['id']}", json={"mode": "air"}).json()
        assert (switched["mode"], switched["stage"]) == ("air", "request")


def test_malformed_if_match_is_412_with_a_readable_reason(client: TestClient) -> None:
    record = client.post("/api/client", json={"name": "C"}).json()
    answer = client.patch(f"/api/client/{record['id']}", json={"city": "Kazan"},
                          headers={"If-Match": "\"banana\""})
    assert answer.status_code == 412
    assert "names no version" in answer.json()["error"]["message"]
    assert client.get(f"/api/client/{record['id']}").json()["city"] is None


@pytest.mark.parametrize(("text", "expected"), [
    ("default: -5\n    min: 0", "must be at least 0"),
    ("default: abcdef\n    max_length: 3", "must be at most 3 characters long"),
])
def test_a_default_must_obey_its_own_field(write_setup: Callable[[dict[str, str]], Path],
                                           text: str, expected: str) -> None:
    kind = "integer" if "min" in text else "string"
    folder = write_setup({"thing.yaml": f"entity: thing\nfields:\n  x:\n    type: {kind}\n    {text}\n"})
    result = check_setup(folder)
    assert result.setup is None
    (error,) = result.errors
    assert (error.file, error.line, error.key) == ("thing.yaml", 5,
                                                   "fields.x.default")
    assert expected in error.message


def test_a_title_names_fields_of_the_linked_entity(
        write_setup: Callable[[dict[str, str]], Path]) -> None:
    folder = write_setup({
        "client.yaml": "entity: client\nfields: {name: string}\n",
        "sale.yaml": "entity: sale\ntitle: '{number} {client.nmae}'\nfields: {number: string}\n"
                     "links: {client: client}\n",
    })
    (error,) = check_setup(folder).errors
    assert (error.file, error.line, error.key) == ("sale.yaml", 2, "title")
    assert "client has no field 'nmae'" in error.message and "did you mean 'name'?" in error.hint


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite://", "in-memory SQLite"),
    ("mysql://u@h/db", "unsupported database 'mysql'"),
    ("not a url", "is not a database URL"),
    ("postgresql://nobody@127.0.0.1:1/none", "cannot use the database"),
])
def test_bad_database_urls_are_clean_errors(url: str, expected: str) -> None:
    result = CliRunner().invoke(main, ["migrate", "schemas", "--db", url])
    assert result.exit_code == 1
    assert expected in result.output
    assert "Traceback" not in result.output
