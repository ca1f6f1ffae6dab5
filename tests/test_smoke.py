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
