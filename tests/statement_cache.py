"""One compiled-statement cache for every engine a test process makes, per database kind.

SQLAlchemy compiles a statement to SQL once per engine and keeps it in that engine's cache.
A server has one engine, so it compiles each of its statements once; the test suite makes a
new engine for nearly every test (a fresh database each), and compiled the same few hundred
statements again in every one: ~13% of the CPU of the tests that call the API.

Here every connection of every engine is given one shared cache (SQLAlchemy's own
`compiled_cache` execution option, set as each connection opens). SQLAlchemy keys a
compiled statement by the statement's full structure (tables, columns, types, options) and
by the dialect object; an engine's dialect is a new object, so the key's dialect is read as
what decides the SQL: its class, the server's version and parameter style, the default
schema. Equal keys, equal SQL: what a test sees is what its own engine would have compiled.

Installed for the whole test session by tests/conftest.py (`install`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

#: compiled statements kept per database kind before the cache starts afresh (a test
#: process compiles ~1,500 distinct statements over the whole suite)
LIMIT = 20_000


class SharedCompiled:
    """The mapping SQLAlchemy reads (`get`) and fills (`[key] = compiled`), keyed as above."""

    def __init__(self) -> None:
        self._compiled: dict[Any, Any] = {}

    @staticmethod
    def _key(key: tuple[Any, ...]) -> tuple[Any, ...]:
        dialect = key[0]
        return ((type(dialect), dialect.server_version_info, dialect.paramstyle,
                 dialect.default_schema_name), *key[1:])

    def get(self, key: tuple[Any, ...], default: Any = None) -> Any:
        return self._compiled.get(self._key(key), default)

    def __setitem__(self, key: tuple[Any, ...], compiled: Any) -> None:
        if len(self._compiled) >= LIMIT:
            self._compiled.clear()
        self._compiled[self._key(key)] = compiled

    def __len__(self) -> int:
        return len(self._compiled)


_CACHES: dict[str, SharedCompiled] = {}


def _share(connection: sa.Connection) -> None:
    cache = _CACHES.setdefault(connection.dialect.name, SharedCompiled())
    connection.execution_options(compiled_cache=cache)


def install() -> None:
    if not event.contains(sa.Engine, "engine_connect", _share):
        event.listen(sa.Engine, "engine_connect", _share)
