"""Access by construction: a statement over an entity table runs only when the access
layer built it (`Access.scoped`) or it says why it reaches every record (`Access.unscoped`,
a system connection). A new read path that forgets the scope fails here and in the first
test that takes it — it cannot leak records quietly. The users service checks its caller
itself, whoever calls it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine import Kartoteka
from engine.errors import Forbidden, UnscopedStatement


@pytest.fixture
def manager_and_records(kt: Kartoteka) -> dict[str, int]:
    anna, _ = kt.users.add("anna@example.com", ["manager"])
    boris, _ = kt.users.add("boris@example.com", ["manager"])
    ids = {}
    for user, name in ((anna, "Ромашка"), (boris, "دانا")):
        with kt.acting.as_user(user):
            ids[name] = kt.records.create("client", {"name": name, "city": "Kazan"},
                                          owner=user.id)["id"]
    return {"anna": anna.id, "boris": boris.id, **ids}


def test_an_unscoped_read_of_an_entity_table_is_refused_before_it_runs(kt: Kartoteka) -> None:
    client = kt.storage["client"].table
    with kt.db.read() as conn, pytest.raises(UnscopedStatement, match="client"):
        conn.execute(sa.select(client.c.name))
    with kt.db.read() as conn, pytest.raises(UnscopedStatement, match="client"):
        conn.execute(sa.select(sa.func.count()).select_from(client))


def test_an_entity_table_hidden_in_a_subquery_is_found(kt: Kartoteka) -> None:
    client, changes = kt.storage["client"].table, kt.storage.changes
    sneaky = sa.select(changes.c.id).where(
        changes.c.record_id.in_(sa.select(client.c.id).where(client.c.name == "x")))
    with kt.db.read() as conn, pytest.raises(UnscopedStatement, match="client"):
        conn.execute(sneaky)
    joined = sa.select(changes.c.id).join_from(changes, client, changes.c.record_id == client.c.id)
    with kt.db.read() as conn, pytest.raises(UnscopedStatement, match="client"):
        conn.execute(joined)


def test_unscoped_updates_and_deletes_are_refused_and_change_nothing(
        kt: Kartoteka, manager_and_records: dict[str, int]) -> None:
    client = kt.storage["client"].table
    for statement in (sa.update(client).values(city="Moscow"), sa.delete(client)):
        with pytest.raises(UnscopedStatement), kt.db.write() as conn:
            conn.execute(statement)
    with kt.db.read(system="test") as conn:
        assert conn.execute(sa.select(client.c.city)).scalars().all() == ["Kazan", "Kazan"]


def test_the_scoped_builder_narrows_to_the_acting_user(
        kt: Kartoteka, manager_and_records: dict[str, int]) -> None:
    client = kt.storage["client"].table
    access = kt.records.access
    anna = kt.users.get(manager_and_records["anna"])
    with kt.acting.as_user(anna), kt.db.read() as conn:
        names = conn.execute(access.scoped(sa.select(client.c.name), "client", "read")).scalars()
        assert list(names) == ["Ромашка"]
        # a scoped subquery inside a statement over another table passes, still narrowed
        changes = kt.storage.changes
        mine = conn.execute(sa.select(changes.c.record_id).where(
            changes.c.entity == "client",
            changes.c.record_id.in_(access.scoped(sa.select(client.c.id), "client", "read")))
        ).scalars().all()
        assert set(mine) == {manager_and_records["Ромашка"]}
    with kt.db.read() as conn:  # as the system: everything, still through the builder
        everyone = conn.execute(access.scoped(sa.select(client.c.name), "client", "read"))
        assert sorted(everyone.scalars()) == sorted(["Ромашка", "دانا"])


def test_saying_why_lets_a_statement_reach_every_record(
        kt: Kartoteka, manager_and_records: dict[str, int]) -> None:
    client = kt.storage["client"].table
    statement = kt.records.access.unscoped(sa.select(sa.func.count()).select_from(client),
                                           "test: a uniqueness check sees every record")
    with kt.db.read() as conn:
        assert conn.execute(statement).scalar_one() == 2
    with kt.db.read(system="test: a report of everything") as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(client)).scalar_one() == 2


def test_two_engines_in_one_process_act_for_their_own_users(
        make_kt: object, kt: Kartoteka) -> None:
    user, _ = kt.users.add("anna@example.com", ["manager"])
    with kt.acting.as_user(user):
        assert kt.acting.user == user
        assert kt.users.acting.user == user  # the users service shares its engine's Acting
    assert kt.acting.user is None


def test_the_users_service_checks_its_caller_itself(
        kt: Kartoteka, manager_and_records: dict[str, int]) -> None:
    anna = kt.users.get(manager_and_records["anna"])
    admin, _ = kt.users.add("root@example.com", ["admin"])
    with kt.acting.as_user(anna):
        for call in (kt.users.list, lambda: kt.users.get(admin.id),
                     lambda: kt.users.create({"email": "eve@example.com", "roles": ["admin"]}),
                     lambda: kt.users.change(anna.id, {"roles": ["admin"]}),
                     lambda: kt.users.issue(admin.id),
                     lambda: kt.users.tokens_of(admin.id),
                     lambda: kt.users.disable("root@example.com")):
            with pytest.raises(Forbidden):
                call()
    assert kt.users.get(anna.id).roles == ("manager",)
    assert [u.email for u in kt.users.list()][-1] == "root@example.com"  # nothing was added
    with kt.acting.as_user(admin):
        assert len(kt.users.list()) == 3


def test_an_unknown_entity_is_not_found_with_a_hint(kt: Kartoteka) -> None:
    from engine.errors import NotFound
    with pytest.raises(NotFound, match="did you mean 'client'"):
        kt.records.create("clinet", {"name": "x"})
