"""The default setup served end to end: create, read, list, on both databases."""

from starlette.testclient import TestClient


def test_create_then_read_a_client_with_cyrillic_name(client: TestClient) -> None:
    created = client.post("/api/client", json={"name": "ООО «Ромашка»", "city": "Казань"})
    assert created.status_code == 201
    record = created.json()
    assert created.headers["location"] == f"/api/client/{record['id']}"
    fetched = client.get(created.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == record
    assert fetched.headers["etag"] == '"1"'
    listed = client.get("/api/client", params={"q": "ромашка"}).json()
    assert listed["total"] == 1 and listed["items"][0]["name"] == "ООО «Ромашка»"


def test_responses_are_compact_utf8_not_ascii_escapes(client: TestClient) -> None:
    created = client.post("/api/client", json={"name": "北京贸易有限公司", "city": "Тегеран تهران"})
    assert created.status_code == 201
    raw = created.content
    assert "北京贸易有限公司".encode() in raw
    assert "تهران".encode() in raw
    assert b"\\u" not in raw and b'": ' not in raw
