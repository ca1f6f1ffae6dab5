"""Concurrent requests on both databases: each thread has its own TestClient (its own
event loop, like separate API workers) and they start together at a barrier. Each race is
repeated, since one run may not interleave badly. Whatever the interleaving, the answer
is a clean 2xx/4xx — never a 500 — and the data stays consistent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from typing import Any

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from tests.races import together

ROUNDS = 20


@pytest.fixture
def clients(kt: Kartoteka) -> Iterator[list[TestClient]]:
    """Four HTTP clients, each over its own app instance on the same engine."""
    with ExitStack() as stack:
        yield [stack.enter_context(TestClient(create_app(kt), base_url="http://127.0.0.1",
                                              raise_server_exceptions=False))
               for _ in range(4)]


def _post(client: TestClient, entity: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/api/{entity}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _statuses(responses: list[httpx.Response]) -> list[int]:
    for response in responses:
        assert response.status_code < 500, response.text
    return sorted(r.status_code for r in responses)


def test_same_unique_value_created_at_once(clients: list[TestClient]) -> None:
    a, b = clients[:2]
    for round_ in range(ROUNDS):
        sku = f"SKU-{round_}"
        responses = together([partial(c.post, "/api/product", json={"sku": sku, "name": n})
                               for c, n in ((a, "from a"), (b, "from b"))])
        assert _statuses(responses) == [201, 409], [r.text for r in responses]
        [conflict] = [r for r in responses if r.status_code == 409]
        error = conflict.json()["error"]
        assert error["code"] == "unique_violation"
        assert error["details"][0]["field"] == "sku"
        page = a.get("/api/product", params={"sku": sku}).json()
        assert page["total"] == 1
        [winner] = [r for r in responses if r.status_code == 201]
        assert page["items"] == [winner.json()]
    assert a.get("/api/product").json()["total"] == ROUNDS


def test_same_unique_value_set_by_two_patches_at_once(clients: list[TestClient]) -> None:
    a, b = clients[:2]
    for round_ in range(ROUNDS):
        first = _post(a, "client", {"name": f"First {round_}"})
        second = _post(a, "client", {"name": f"Second {round_}"})
        email = f"shared{round_}@example.com"
        responses = together([partial(c.patch, f"/api/client/{r['id']}", json={"email": email})
                               for c, r in ((a, first), (b, second))])
        assert _statuses(responses) == [200, 409], [r.text for r in responses]
        assert a.get("/api/client", params={"email": email}).json()["total"] == 1


def test_patches_with_the_same_if_match(clients: list[TestClient]) -> None:
    a, b = clients[:2]
    record = _post(a, "product", {"sku": "P-1", "name": "start"})
    path = f"/api/product/{record['id']}"
    for round_ in range(ROUNDS):
        etag = a.get(path).headers["etag"]
        responses = together([partial(c.patch, path, json={"name": f"{n}{round_}"},
                                       headers={"If-Match": etag})
                               for c, n in ((a, "a"), (b, "b"))])
        assert _statuses(responses) == [200, 412], [r.text for r in responses]
        [stale] = [r for r in responses if r.status_code == 412]
        assert stale.json()["error"]["code"] == "stale_version"
        [won] = [r for r in responses if r.status_code == 200]
        current = a.get(path)
        assert current.json() == won.json()
        assert current.json()["version"] == round_ + 2
        assert current.headers["etag"] == f'"{round_ + 2}"'


def test_many_concurrent_creates_all_succeed(make_kt: Callable[..., Kartoteka],
                                             clients: list[TestClient]) -> None:
    # a second engine on the same database, as a second API process would be
    other = make_kt()
    per_thread = 15

    def over_http(client: TestClient, tag: str) -> Callable[[], list[int]]:
        def run() -> list[int]:
            return [client.post("/api/client", json={"name": f"{tag}-{i}", "city": "Kazan"}).status_code
                    for i in range(per_thread)]
        return run

    def direct(engine: Kartoteka, tag: str) -> Callable[[], list[int]]:
        def run() -> list[int]:
            for i in range(per_thread):
                engine.records.create("client", {"name": f"{tag}-{i}"})
            return [201] * per_thread
        return run

    calls = [over_http(c, f"http{n}") for n, c in enumerate(clients)]
    calls += [direct(other, "other-a"), direct(other, "other-b")]
    results = together(calls)
    assert Counter(status for statuses in results for status in statuses) == {201: per_thread * len(calls)}
    page = clients[0].get("/api/client", params={"limit": "500"}).json()
    assert page["total"] == per_thread * len(calls)
    assert len({item["id"] for item in page["items"]}) == page["total"]
    assert len({item["name"] for item in page["items"]}) == page["total"]


def test_same_link_put_at_once_is_idempotent(clients: list[TestClient]) -> None:
    a, b = clients[:2]
    buyer = _post(a, "client", {"name": "Buyer"})
    for round_ in range(ROUNDS):
        sale = _post(a, "sale", {"number": f"S-{round_}", "client": buyer["id"]})
        product = _post(a, "product", {"sku": f"P-{round_}", "name": "P"})
        link = f"/api/sale/{sale['id']}/products/{product['id']}"
        responses = together([partial(c.put, link) for c in (a, b)])
        assert _statuses(responses) == [204, 204], [r.text for r in responses]
        after = a.get(f"/api/sale/{sale['id']}").json()
        assert after["products"] == [product["id"]]
        assert after["version"] == 2, "one change, one new version"


def test_same_link_deleted_at_once(clients: list[TestClient]) -> None:
    a, b = clients[:2]
    buyer = _post(a, "client", {"name": "Buyer"})
    for round_ in range(ROUNDS):
        product = _post(a, "product", {"sku": f"P-{round_}", "name": "P"})
        sale = _post(a, "sale", {"number": f"S-{round_}", "client": buyer["id"],
                                 "products": [product["id"]]})
        link = f"/api/sale/{sale['id']}/products/{product['id']}"
        responses = together([partial(c.delete, link) for c in (a, b)])
        assert _statuses(responses) == [204, 404], [r.text for r in responses]
        after = a.get(f"/api/sale/{sale['id']}").json()
        assert after["products"] == [] and after["version"] == 2


def test_delete_racing_a_new_link_to_it(clients: list[TestClient]) -> None:
    """Deleting a client while a sale is created for it: either the sale wins (and the
    delete is restricted) or the delete wins (and the sale is refused) — never both."""
    a, b = clients[:2]
    outcomes: Counter[tuple[int, int]] = Counter()
    for round_ in range(ROUNDS):
        target = _post(a, "client", {"name": f"Client {round_}"})
        create, delete = together([
            partial(a.post, "/api/sale", json={"number": f"S-{round_}", "client": target["id"]}),
            partial(b.delete, f"/api/client/{target['id']}"),
        ])
        pair = (create.status_code, delete.status_code)
        assert pair in ((201, 409), (422, 204)), (create.text, delete.text)
        outcomes[pair] += 1
        exists = a.get(f"/api/client/{target['id']}").status_code == 200
        sales = a.get("/api/sale", params={"number": f"S-{round_}"}).json()["items"]
        assert exists == bool(sales)
        assert all(sale["client"] == target["id"] for sale in sales)
    assert sum(outcomes.values()) == ROUNDS
