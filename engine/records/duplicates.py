"""Duplicate control on every write, and the candidates of a record (`duplicates:`).

A create or an update that changes what a rule compares is checked inside its transaction,
once its row is written (a unique constraint, the database's own word, answers first) and
before it commits: the rules' keys of the new values are looked up
(engine/storage/duplicates.py: index lookups, never a scan), similar candidates scored
with rapidfuzz's token sort ratio (names with different numbers in them, `Филиал 1` and
`Филиал 2`, are never similar). When records match:

- a `warn` rule refuses the write with 409 `possible_duplicate` unless the caller confirmed
  it (`with duplicates.confirmed():`, which the API opens for `X-Confirm-Duplicate: true`);
- a `block` rule refuses it with 409 `duplicate`, confirmed or not.

The 409 names only the candidates the caller may read, with their titles, the rule that
matched and its score; a candidate out of the caller's scope is never named, but still
counts: the answer says a duplicate exists that they cannot see (one entry without an id),
so a manager cannot create a second "Ромашка" of another manager's without being told,
and learns nothing about it but that it exists. A refused write is undone: nothing of it is
left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from rapidfuzz import fuzz

from engine.errors import Conflict, ErrorDetail, NotFound
from engine.records.titles import Titles
from engine.setup.duplicates import DuplicateRule, numbers, rule_keys, split_value
from engine.setup.spec import EntitySpec
from engine.storage.duplicates import forget_keys, rules_of, shadow_values, write_keys

if TYPE_CHECKING:
    from engine.records.service import Records

#: candidates looked at per blocking key (a key many records share is a weak hint)
PER_KEY = 50
#: candidates named, at most
SHOWN = 20
WHY = "duplicate control compares a record with every record; only those the caller " \
      "may read are named"


@dataclass(frozen=True)
class Match:
    record_id: int
    rule: DuplicateRule
    score: int


class DuplicateFound(Conflict):
    """A write would make a record that looks like others; nothing was written. `details`
    name the candidates the caller may read (with `id`, `title`, `rule`, `score`), and one
    entry without an id when some are out of their scope."""

    code = "possible_duplicate"

    def __init__(self, message: str, details: Sequence[ErrorDetail],
                 candidates: Sequence[dict[str, Any]], *, blocked: bool):
        super().__init__(message, details, code="duplicate" if blocked else None)
        self.candidates = list(candidates)
        self.blocked = blocked

    def as_json(self) -> dict[str, Any]:
        body = super().as_json()
        body["error"]["details"] = self.candidates
        return body


class Duplicates:
    """The duplicate control of one engine's records."""

    def __init__(self, records: Records):
        self.records = records
        self.storage = records.storage
        self.titles = Titles(records)
        #: each rule's statements, built on first use (`_statements`)
        self._built: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._confirmed: ContextVar[str] = ContextVar(
            f"kartoteka_duplicates_{id(self):x}", default="")

    @contextmanager
    def confirmed(self, level: str = "warn") -> Iterator[None]:
        """Writes inside are not refused for possible duplicates (`warn` rules; `block`
        rules still refuse); level `all`: nor for duplicates (a merge's own update); ``:
        checked as usual."""
        token = self._confirmed.set(level)
        try:
            yield
        finally:
            self._confirmed.reset(token)

    def has_rules(self, entity: str) -> bool:
        return bool(rules_of(self.storage[entity].spec))

    # -- the write path --------------------------------------------------------------------
    def prepare(self, spec: EntitySpec, values: Mapping[str, Any],
                changed: Mapping[str, Any] | None = None) -> dict[str, str | None]:
        """The shadow columns to write with a record (`values`: all its columns; `changed`:
        what an update changes, so only the rules reading those are recomputed)."""
        if not rules_of(spec):
            return {}
        return shadow_values(spec, values, None if changed is None else list(changed))

    def after_write(self, conn: sa.Connection, spec: EntitySpec, record_id: int,
                    shadows: Mapping[str, str | None], *, created: bool) -> None:
        """Check a record just written in this transaction (so a unique constraint, the
        database's own word, speaks first) and keep its keys. Raises DuplicateFound, and
        the transaction undoes the write."""
        if not shadows:
            return
        if conn.dialect.name == "postgresql":
            _lock_values(conn, spec, shadows)
        matches = self.matches(conn, spec, shadows, record_id)
        if matches:
            self.refuse(conn, spec, matches)
        write_keys(conn, self.storage, spec, record_id, shadows, created=created)

    def forget(self, conn: sa.Connection, entity: str, ids: list[int]) -> None:
        forget_keys(conn, self.storage, entity, ids)

    def refuse(self, conn: sa.Connection, spec: EntitySpec, matches: Sequence[Match]) -> None:
        blocked = any(m.rule.mode == "block" for m in matches)
        level = self._confirmed.get()
        if level == "all" or (level and not blocked):
            return
        candidates, hidden = self.describe(conn, spec, matches)
        details = [ErrorDetail(c["field"], c["problem"]) for c in candidates]
        what = "is the same" if blocked else "may be the same"
        count = len({m.record_id for m in matches})
        message = (f"this {spec.name} {what} as {count} other record(s): "
                   + ", ".join(sorted({m.rule.words() for m in matches})))
        if hidden:
            message += f"; {'a duplicate exists' if blocked else 'a possible duplicate exists'}" \
                       " that you cannot see"
        message += ("; it cannot be written (the setup blocks duplicates here)" if blocked else
                    "; send it again with the header X-Confirm-Duplicate: true to write it "
                    "anyway, or change the existing record instead")
        raise DuplicateFound(message, details, candidates, blocked=blocked)

    def describe(self, conn: sa.Connection, spec: EntitySpec,
                 matches: Sequence[Match]) -> tuple[list[dict[str, Any]], bool]:
        """The candidates the caller may read, as the 409 and the list name them, and
        whether some were left out (out of the caller's scope)."""
        best: dict[int, Match] = {}
        for match in matches:
            if match.record_id not in best or match.score > best[match.record_id].score:
                best[match.record_id] = match
        ids = sorted(best, key=lambda i: (-best[i].score, i))
        visible = {r["id"]: r for r in self.records.fetch(conn, spec.name, ids)}
        titles = self.titles.of(conn, spec.name, visible)
        candidates: list[dict[str, Any]] = []
        for record_id in ids:
            record = visible.get(record_id)
            if record is None:
                continue
            match = best[record_id]
            shown = record.get(match.rule.field)
            candidates.append({
                "field": match.rule.field,
                "problem": (f"is like that of {spec.name} {record_id}" if match.rule.similar
                            else f"is the same as that of {spec.name} {record_id}")
                + (f" ({shown})" if shown is not None else ""),
                "rule": match.rule.name, "id": record_id,
                "title": titles.get(record_id), "score": match.score,
                "mode": match.rule.mode})
        hidden = len(candidates) < len(ids)
        candidates = candidates[:SHOWN]
        if hidden:
            rule = next(best[i].rule for i in ids if i not in visible)
            candidates.append({"field": rule.field, "rule": rule.name, "mode": rule.mode,
                               "problem": "a record you cannot see has the same or a similar "
                                          "value"})
        return candidates, hidden

    # -- finding ---------------------------------------------------------------------------
    def matches(self, conn: sa.Connection, spec: EntitySpec,
                shadows: Mapping[str, str | None], record_id: int | None) -> list[Match]:
        """The records that match a record's shadow values, by each rule (not itself)."""
        found: list[Match] = []
        for rule in rules_of(spec):
            stored = shadows.get(rule.column)
            if stored is None:
                continue
            if rule.similar:
                found += self._similar(conn, spec, rule, stored, record_id)
            else:
                found += self._exact(conn, spec, rule, stored, record_id)
        return found

    def _exact(self, conn: sa.Connection, spec: EntitySpec, rule: DuplicateRule, stored: str,
               record_id: int | None) -> list[Match]:
        ids = conn.execute(self._statements(spec, rule)[0],
                           {"kt_value": stored, "kt_self": record_id or 0}).scalars().all()
        return [Match(i, rule, 100) for i in ids]

    def _similar(self, conn: sa.Connection, spec: EntitySpec, rule: DuplicateRule, stored: str,
                 record_id: int | None) -> list[Match]:
        by_key, fetch = self._statements(spec, rule)[1:]
        assert by_key is not None and fetch is not None
        ids: set[int] = set()
        for key in rule_keys(stored):
            ids.update(conn.execute(by_key, {"kt_key": key, "kt_self": record_id or 0})
                       .scalars())
        if not ids:
            return []
        within, text = split_value(stored)
        digits = numbers(text)
        found = []
        for other_id, other in conn.execute(fetch, {"kt_ids": sorted(ids)}):
            if other is None:
                continue
            other_within, other_text = split_value(other)
            if other_within != within or numbers(other_text) != digits:
                continue  # another group; or `Филиал 1` and `Филиал 2`: alike, but two records
            score = round(fuzz.token_sort_ratio(text, other_text))
            if score >= rule.threshold:
                found.append(Match(other_id, rule, score))
        return found

    def _statements(self, spec: EntitySpec, rule: DuplicateRule) -> tuple[Any, Any, Any]:
        """A rule's statements, built once (the guard walks a statement once, and SQLAlchemy
        compiles it once): the exact lookup, the similar rule's key lookup and its
        candidates' values."""
        cached = self._built.get((spec.name, rule.name))
        if cached is not None:
            return cached
        table = self.storage[spec.name].table
        other = table.c.id != sa.bindparam("kt_self")
        access = self.records.access
        exact = access.unscoped(sa.select(table.c.id).where(
            table.c[rule.column] == sa.bindparam("kt_value"), other)
            .order_by(table.c.id).limit(PER_KEY), WHY)
        by_key = fetch = None
        keys = self.storage.duplicate_keys
        if rule.similar and keys is not None:
            by_key = sa.select(keys.c.record_id).where(
                keys.c.entity == spec.name, keys.c.rule == rule.column[:64],
                keys.c.key == sa.bindparam("kt_key"),
                keys.c.record_id != sa.bindparam("kt_self")).limit(PER_KEY)
            fetch = access.unscoped(sa.select(table.c.id, table.c[rule.column]).where(
                table.c.id.in_(sa.bindparam("kt_ids", expanding=True))), WHY)
        built = (exact, by_key, fetch)
        self._built[(spec.name, rule.name)] = built
        return built

    # -- GET /api/{e}/{id}/duplicates --------------------------------------------------------
    def candidates(self, entity: str, record_id: int) -> dict[str, Any]:
        """The records like one the caller may read, as they may read them."""
        table = self.storage[entity]
        spec = table.spec
        if not 1 <= record_id < 2**63:
            raise NotFound(f"no {entity} with id {record_id}")
        with self.records.db.read() as conn:
            row = conn.execute(self.records.access.scoped(
                sa.select(table.table).where(table.table.c.id == record_id), entity, "read")
            ).first()
            if row is None:
                raise NotFound(f"no {entity} with id {record_id}")
            shadows = shadow_values(spec, dict(row._mapping))
            matches = self.matches(conn, spec, shadows, record_id)
            items, hidden = self.describe(conn, spec, matches)
        return {"items": [{k: v for k, v in item.items() if k != "problem"}
                          for item in items if "id" in item], "hidden": hidden}


_LOCK = sa.text("SELECT pg_advisory_xact_lock(:kt_key)")


def _lock_values(conn: sa.Connection, spec: EntitySpec, shadows: Mapping[str, str | None]) -> None:
    """On PostgreSQL, wait for any other transaction writing a record with the same value
    (an exact rule's) or blocking key (a similar rule's) of `spec` to end: its check runs
    after its write, in READ COMMITTED, so without this two concurrent writes of one value
    would each miss the other's uncommitted row. A lock per value, held to the end of the
    transaction, taken in one order (no deadlock between two such writers)."""
    keys: set[int] = set()
    for rule in rules_of(spec):
        stored = shadows.get(rule.column)
        if stored is None:
            continue
        for value in (rule_keys(stored) if rule.similar else (stored,)):
            digest = hashlib.blake2b(f"{spec.name}\0{rule.column}\0{value}".encode(),
                                     digest_size=8).digest()
            keys.add(int.from_bytes(digest, "big", signed=True))
    for key in sorted(keys):
        conn.execute(_LOCK, {"kt_key": key})
