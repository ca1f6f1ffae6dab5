"""Every example setup under examples/ is checked, migrated and exercised through HTTP.

Nothing here names an example or an entity: the folders are discovered, and the values
are generated from each loaded setup (field types, bounds, options, patterns, links), so
a new example is covered as soon as its folder exists. For every entity, in an order
where required link targets exist first, one record is created with every field and
every link filled, read back, found by a filter on each of its fields and links, and its
links followed both ways; then the records are deleted newest first, where a `restrict`
link must answer 409 until the record pointing here is deleted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from pathlib import Path
from re import _constants as sre
from re import _parser as sre_parse
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, check_setup
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec, SetupSpec
from tests.conftest import EXAMPLES

EXAMPLE_DIRS = sorted(p for p in EXAMPLES.iterdir()
                      if p.is_dir() and not p.name.startswith((".", "_")))
by_folder = pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=[p.name for p in EXAMPLE_DIRS])

#: text in the scripts the users write in (DOMAIN.md): Cyrillic, Persian, CJK, Latin
SAMPLES = (
    "Ёлкин и партнёры",
    "شرکت مهندسی پارس‌نگار",  # with a zero-width non-joiner, as Persian is typed
    "上海华东机电有限公司",
    "Zoë Ångström",
)
#: sent with a Tehran offset, answered in UTC
DATETIME_SENT = "2024-03-15T14:30:00+03:30"
DATETIME_UTC = "2024-03-15T11:00:00Z"
JSON_VALUE = {"модель": "ThinkPad T14", "内存": 16, "فعال": True, "ports": [1, 2.5, None]}


def test_examples_exist() -> None:
    assert EXAMPLE_DIRS, f"no example setups under {EXAMPLES}"


@by_folder
def test_example_has_a_readme(folder: Path) -> None:
    readme = folder / "README.md"
    assert readme.is_file(), f"{folder.name} has no README.md"
    assert len(readme.read_text(encoding="utf-8").strip()) > 200, f"{readme} is nearly empty"


@by_folder
def test_example_checks_without_errors(folder: Path) -> None:
    result = check_setup(folder)
    assert result.errors == [], "\n".join(str(d) for d in result.errors)
    assert result.setup is not None
    assert (folder / "setup.yaml").is_file()


@by_folder
def test_example_labels_are_translated(folder: Path) -> None:
    """Examples show off several languages: every label is given in each of them."""
    setup = check_setup(folder).setup
    assert setup is not None
    languages = set(setup.languages)
    assert len(languages) >= 2, f"{folder.name}: setup.yaml should declare two or more languages"
    missing: list[str] = []

    def need(label: Any, where: str) -> None:
        absent = languages - set(label)
        if absent:
            missing.append(f"{where}: {', '.join(sorted(absent))}")

    for entity in setup.entities.values():
        need(entity.label, entity.name)
        need(entity.plural, f"{entity.name} plural")
        for spec in entity.fields.values():
            need(spec.label, f"{entity.name}.{spec.name}")
        for link in entity.links.values():
            need(link.label, f"{entity.name}.{link.name}")
        for pipeline in (entity.pipeline.pipelines.values() if entity.pipeline else ()):
            for stage in pipeline.stages:
                need(stage.label, f"{entity.name} stage {stage.name}")
    assert not missing, "labels without a translation:\n" + "\n".join(missing)


@by_folder
def test_example_serves_every_entity(folder: Path, make_kt: Callable[..., Kartoteka]) -> None:
    kt = make_kt(folder)
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        _Exercise(kt.setup, client).run()


def _without(values: dict[str, Any], names: set[str]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name not in names}


# -- the generic exercise ------------------------------------------------------------------

@dataclass
class _Record:
    entity: str
    id: int
    sent: dict[str, Any]
    expected: dict[str, Any] = field(default_factory=dict)  # field or link → JSON value
    json: dict[str, Any] = field(default_factory=dict)  # the latest answer from the server


class _Exercise:
    def __init__(self, setup: SetupSpec, client: TestClient):
        self.setup = setup
        self.client = client
        self.records: dict[str, _Record] = {}  # one record per entity
        self.order: list[str] = []
        self.counter = 0
        self.ruled = _values_in_rules(setup)

    def run(self) -> None:
        assert self.client.get("/api/schema").status_code == 200
        assert self.client.get("/openapi.json").status_code == 200
        for name in creation_order(self.setup):
            self.create(self.setup.entities[name])
        self.fill_remaining_links()
        for record in self.records.values():
            self.read_back(record)
        for record in self.records.values():
            self.find_by_filters(record)
            self.follow_links(record)
        self.delete_all()

    # -- create ---------------------------------------------------------------------------
    def create(self, entity: EntitySpec) -> None:
        body: dict[str, Any] = {}
        expected: dict[str, Any] = {}
        for spec in entity.fields.values():
            if spec.computed:
                continue  # computed by the server: a body naming it is refused
            sent, rendered = self.value_for(entity, spec)
            body[spec.name] = sent
            expected[spec.name] = rendered
        for link in entity.links.values():
            value = self.link_value(link)
            if value is None:
                assert not link.required, (
                    f"{entity.name}.{link.name} is required but no target exists yet")
                continue
            body[link.name] = value
            expected[link.name] = value
        answer = self.client.post(f"/api/{entity.name}", json=body)
        assert answer.status_code == 201, (entity.name, body, answer.text)
        created = answer.json()
        assert answer.headers["location"] == f"/api/{entity.name}/{created['id']}"
        assert answer.headers["etag"] == '"1"'
        assert created["version"] == 1
        if entity.pipeline is not None:
            selector = body.get(entity.pipeline.pipeline_by) if entity.pipeline.pipeline_by else None
            expected["stage"] = entity.pipeline.for_record(selector).initial
        record = _Record(entity.name, created["id"], body, expected, created)
        self.records[entity.name] = record
        self.order.append(entity.name)
        _assert_values(record, created, "create")

    def link_value(self, link: LinkSpec) -> Any:
        if link.polymorphic:
            for target in link.targets:
                if target in self.records:
                    return {"entity": target, "id": self.records[target].id}
            return None
        target = self.records.get(link.target)
        if target is None:
            return None
        return [target.id] if link.many else target.id

    def fill_remaining_links(self) -> None:
        """Links whose targets were created later (cycles, links to the same entity)."""
        for record in self.records.values():
            entity = self.setup.entities[record.entity]
            patch = {name: self.link_value(link) for name, link in entity.links.items()
                     if name not in record.sent}
            patch = {name: value for name, value in patch.items() if value is not None}
            if not patch:
                continue
            answer = self.client.patch(f"/api/{record.entity}/{record.id}", json=patch)
            assert answer.status_code == 200, (record.entity, patch, answer.text)
            record.sent.update(patch)
            record.expected.update(patch)
            record.json = answer.json()
            assert record.json["version"] == 2
            _assert_values(record, record.json, "update")

    # -- read -----------------------------------------------------------------------------
    def read_back(self, record: _Record) -> None:
        url = f"/api/{record.entity}/{record.id}"
        answer = self.client.get(url)
        assert answer.status_code == 200, answer.text
        assert answer.headers["etag"] == f'"{record.json["version"]}"'
        entity = self.setup.entities[record.entity]
        # records created after this one add up into its roll-ups (and the formulas reading
        # them): those may differ from the write's answer, everything else may not
        moved = {s.name for s in entity.fields.values() if s.computed} \
            if any(s.rollup is not None for s in entity.fields.values()) else set()
        assert _without(answer.json(), moved) == _without(record.json, moved), \
            f"{url}: read differs from what the write answered"
        record.json = answer.json()
        _assert_values(record, answer.json(), "read")
        if entity.links:
            included = self.client.get(url, params={"include": ",".join(entity.links)})
            assert included.status_code == 200, included.text
            for name, link in entity.links.items():
                value, wanted = included.json()[name], record.expected.get(name)
                if link.many:
                    assert [r["id"] for r in value] == wanted, (url, name, value)
                elif link.polymorphic:
                    assert value["record"]["id"] == wanted["id"], (url, name, value)
                else:
                    assert value["id"] == wanted, (url, name, value)

    def find_by_filters(self, record: _Record) -> None:
        entity = self.setup.entities[record.entity]
        queries: list[dict[str, str]] = [{"id": str(record.id)}]
        for spec in entity.fields.values():
            if not spec.computed:
                queries.append(_filter_for(spec, record.expected[spec.name]))
        if "stage" in record.expected:
            queries.append({"stage": record.expected["stage"]})
        for name, link in entity.links.items():
            value = record.expected.get(name)
            if value is None:
                continue
            if link.polymorphic:
                queries.append({name: f"{value['entity']}:{value['id']}"})
            elif link.many:
                queries.append({name: str(value[0])})
            else:
                queries.append({name: str(value)})
                queries.append({f"{name}.id": str(value)})
        for source, link in self.setup.inbound_links[record.entity]:
            pointing = self.records.get(source)
            if link.reverse and pointing is not None and _points_at(pointing, link, record):
                queries.append({f"{link.reverse}.id": str(pointing.id)})
        for spec_name in entity.search:
            text = record.expected[spec_name]
            queries.append({"q": text[:40].upper()})
        for params in queries:
            answer = self.client.get(f"/api/{record.entity}", params=params)
            assert answer.status_code == 200, (record.entity, params, answer.text)
            page = answer.json()
            found = [item["id"] for item in page["items"]]
            assert found == [record.id], (record.entity, params, page)
            assert page["total"] == 1
            assert page["items"][0] == record.json, (record.entity, params)

    def follow_links(self, record: _Record) -> None:
        entity = self.setup.entities[record.entity]
        ways: dict[str, set[int]] = {}
        for name, link in entity.links.items():
            value = record.expected.get(name)
            if value is None:
                ways[name] = set()
            elif link.polymorphic:
                ways[name] = {value["id"]}
            else:
                ways[name] = set(value) if link.many else {value}
        for way, reverse in self.setup.reverse_links[record.entity].items():
            pointing = self.records.get(reverse.entity)
            linked = pointing is not None and _points_at(pointing, reverse.link, record)
            ways[way] = {pointing.id} if linked and pointing is not None else set()
        for way, ids in ways.items():
            url = f"/api/{record.entity}/{record.id}/{way}"
            answer = self.client.get(url)
            assert answer.status_code == 200, (url, answer.text)
            page = answer.json()
            assert {item["id"] for item in page["items"]} == ids, (url, page)
            assert page["total"] == len(ids), (url, page)

    # -- delete ---------------------------------------------------------------------------
    def delete_all(self) -> None:
        live = {name: record.id for name, record in self.records.items()}
        self.refuse_restricted(live)
        for name in reversed(self.order):
            if name in live:
                self.delete(name, live, depth=0)
        for name in self.order:
            page = self.client.get(f"/api/{name}").json()
            assert page["total"] == 0, (name, page)

    def refuse_restricted(self, live: dict[str, int]) -> None:
        """Deleting a record that a `restrict` link points at (directly, or at a record the
        delete would cascade to) is refused with 409, and changes nothing."""
        state = self.current(live)
        for name in self.order:
            doomed = self.cascade_closure(name, state)
            if not any(target in doomed and source not in doomed and link.on_delete == "restrict"
                       for source, link, target in self.pointers(state)):
                continue
            url = f"/api/{name}/{live[name]}"
            answer = self.client.delete(url)
            assert answer.status_code == 409, (url, "is still linked through a restrict link",
                                               answer.status_code, answer.text)
            assert answer.json()["error"]["code"] == "delete_restricted", answer.text
            assert self.current(live) == state, f"a refused DELETE {url} changed records"

    def delete(self, name: str, live: dict[str, int], depth: int) -> None:
        assert depth <= len(self.order), "restrict links form a cycle the test cannot break"
        state = self.current(live)
        doomed = self.cascade_closure(name, state)
        blockers = sorted({source for source, link, target in self.pointers(state)
                           if target in doomed and source not in doomed
                           and link.on_delete == "restrict"})
        url = f"/api/{name}/{live[name]}"
        answer = self.client.delete(url)
        if blockers:
            assert answer.status_code == 409, (
                f"{url}: {', '.join(blockers)} still link here with on_delete restrict",
                answer.status_code, answer.text)
            assert answer.json()["error"]["code"] == "delete_restricted", answer.text
            for blocker in blockers:
                if blocker in live:
                    self.delete(blocker, live, depth + 1)
            self.delete(name, live, depth + 1)
            return
        assert answer.status_code == 204, (url, answer.status_code, answer.text)
        assert self.client.get(url).status_code == 404
        assert self.client.delete(url).status_code == 404
        for gone in doomed:
            del live[gone]
            gone_url = f"/api/{gone}/{state[gone]['id']}"
            assert self.client.get(gone_url).status_code == 404, (
                f"{gone_url} should have been deleted along with {url} (on_delete cascade)")
        after = self.current(live)
        for source, link, target in self.pointers(state):
            if target in doomed and source not in doomed:
                value = after[source][link.name]
                if link.many:
                    assert state[target]["id"] not in value, (source, link.name, value)
                else:
                    assert value is None, (
                        f"{source}.{link.name} should be emptied (on_delete set_null)", value)

    def current(self, live: dict[str, int]) -> dict[str, dict[str, Any]]:
        state = {}
        for name, record_id in live.items():
            answer = self.client.get(f"/api/{name}/{record_id}")
            assert answer.status_code == 200, (name, record_id, answer.text)
            state[name] = answer.json()
        return state

    def pointers(self, state: dict[str, dict[str, Any]]) -> Iterator[tuple[str, LinkSpec, str]]:
        """(source entity, link, target entity) for every link between live records."""
        for source, record in state.items():
            for link in self.setup.entities[source].links.values():
                value = record[link.name]
                if value is None or value == []:
                    continue
                if link.polymorphic:
                    target = value["entity"]
                    if target in state and state[target]["id"] == value["id"]:
                        yield source, link, target
                elif link.target in state and (
                        state[link.target]["id"] in value if link.many
                        else state[link.target]["id"] == value):
                    yield source, link, link.target

    def cascade_closure(self, name: str, state: dict[str, dict[str, Any]]) -> set[str]:
        doomed = {name}
        grew = True
        while grew:
            grew = False
            for source, link, target in self.pointers(state):
                if target in doomed and source not in doomed and link.on_delete == "cascade" \
                        and not link.many:
                    doomed.add(source)
                    grew = True
        return doomed

    # -- values ---------------------------------------------------------------------------
    def value_for(self, entity: EntitySpec, spec: FieldSpec) -> tuple[Any, Any]:
        """(what is sent, what the API answers) for one field, valid under its declaration."""
        self.counter += 1
        kind = spec.type.name
        where = f"{entity.name}.{spec.name}"
        if kind in ("string", "text"):
            if spec.pattern is not None:
                value = _matching(spec, where)
            else:
                value = self.text(spec, long=kind == "text")
            return value, value
        if kind == "email":
            value = f"user.{self.counter}@example.com"
            return _fits(value, spec, where), value
        if kind == "phone":
            value = f"+98 21 8765 {1000 + self.counter}"
            return _fits(value, spec, where), value
        if kind == "url":
            value = f"https://example.com/files/{self.counter}?lang=fa"
            return _fits(value, spec, where), value
        if kind == "integer":
            value = _integer_in(spec)
            return value, value
        if kind in ("decimal", "money"):
            number = _decimal_in(spec)
            places = spec.params["places"]
            rendered = f"{number:.{places}f}"
            # money as a string, decimal as a JSON number: both are accepted
            return (rendered if kind == "money" else float(number)), rendered
        if kind == "boolean":
            value = spec.default is not True
            return value, value
        if kind == "date":
            # each date a day later than the one before: a rule `valid_to > valid_from` holds
            value = _date_in(spec, self.counter).isoformat()
            return value, value
        if kind == "datetime":
            return DATETIME_SENT, DATETIME_UTC
        if kind == "choice":
            options = list(spec.options or ())
            # not the default, nor a value a rule names (`status: {ne: blocked}`)
            choices = ([o for o in options if o != spec.default and o not in self.ruled]
                       or [o for o in options if o != spec.default] or options)
            return choices[-1], choices[-1]
        if kind == "multichoice":
            options = list(spec.options or ())
            chosen = options[:3]
            return list(reversed(chosen)), chosen  # answered in declaration order
        if kind == "json":
            return JSON_VALUE, JSON_VALUE
        pytest.fail(f"{where}: the test cannot generate a {kind} value; teach value_for")

    def text(self, spec: FieldSpec, *, long: bool) -> str:
        sample = SAMPLES[self.counter % len(SAMPLES)]
        value = (" \n".join(SAMPLES) + f" {self.counter}") if long else f"{sample} {self.counter}"
        limit = spec.type.max_length(spec)  # type: ignore[attr-defined]  # string and text
        if limit is not None and len(value) > limit:
            value = value[:limit].strip() or "ж" * limit
        if spec.min_length is not None and len(value) < spec.min_length:
            value += "ж" * (spec.min_length - len(value))
        return value


def creation_order(setup: SetupSpec) -> list[str]:
    """Entities ordered so required link targets come first; among those ready, ones whose
    every link target already exists come first, so most links are filled at creation."""
    order: list[str] = []
    remaining = sorted(setup.entities)

    def targets(entity: EntitySpec, only_required: bool) -> list[tuple[str, ...]]:
        groups = []
        for link in entity.links.values():
            if only_required and not link.required:
                continue
            others = tuple(t for t in link.targets if t != entity.name)
            if link.polymorphic and only_required:
                groups.append(others)  # any one of them will do
            else:
                groups.extend((t,) for t in others)
        return groups

    def satisfied(entity: EntitySpec, only_required: bool) -> bool:
        return all(not group or any(t in order for t in group)
                   for group in targets(entity, only_required))

    while remaining:
        ready = [n for n in remaining if satisfied(setup.entities[n], only_required=True)]
        assert ready, f"required links form a cycle among: {', '.join(remaining)}"
        complete = [n for n in ready if satisfied(setup.entities[n], only_required=False)]
        chosen = (complete or ready)[0]
        order.append(chosen)
        remaining.remove(chosen)
    return order


def _assert_values(record: _Record, answer: dict[str, Any], what: str) -> None:
    for key, wanted in record.expected.items():
        assert answer.get(key) == wanted, (
            f"{record.entity}.{key} after {what}: sent {record.sent.get(key)!r}, "
            f"expected {wanted!r}, got {answer.get(key)!r}")


def _points_at(pointing: _Record, link: LinkSpec, record: _Record) -> bool:
    value = pointing.expected.get(link.name)
    if value is None:
        return False
    if link.polymorphic:
        return bool(value == {"entity": record.entity, "id": record.id})
    if link.target != record.entity:
        return False
    return record.id in value if link.many else bool(value == record.id)


def _filter_for(spec: FieldSpec, rendered: Any) -> dict[str, str]:
    operators = spec.type.operators
    if spec.type.name == "multichoice":
        return {f"{spec.name}[contains]": rendered[0]}
    if "eq" not in operators:
        return {f"{spec.name}[isnull]": "false"}
    if isinstance(rendered, bool):
        return {spec.name: "true" if rendered else "false"}
    return {spec.name: str(rendered)}


# -- values within a declaration -----------------------------------------------------------

def _fits(value: str, spec: FieldSpec, where: str) -> str:
    limit = spec.max_length
    assert limit is None or len(value) <= limit, f"{where}: max_length {limit} is too short to test"
    return value


def _integer_in(spec: FieldSpec) -> int:
    low = math.ceil(spec.min) if spec.min is not None else None
    high = math.floor(spec.max) if spec.max is not None else None
    if low is not None and high is not None:
        return (low + high) // 2
    if low is not None:
        return low + 7
    if high is not None:
        return min(high, 42)
    return 42


def _decimal_in(spec: FieldSpec) -> Decimal:
    digits, places = spec.params["digits"], spec.params["places"]
    step = Decimal(1).scaleb(-places)
    limit = Decimal(10) ** (digits - places) - step
    low = max(Decimal(str(spec.min)), -limit) if spec.min is not None else -limit
    high = min(Decimal(str(spec.max)), limit) if spec.max is not None else limit
    nice = Decimal("1234.5678").quantize(step, rounding=ROUND_DOWN)
    if low <= nice <= high:
        return nice
    middle = ((low + high) / 2).quantize(step, rounding=ROUND_DOWN)
    if middle < low:
        middle = low.quantize(step, rounding=ROUND_UP)
    return middle


def _values_in_rules(setup: SetupSpec) -> frozenset[str]:
    """Every text a rule's `when` or `require` compares with, at any depth."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, (tuple, list, frozenset, set)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for member in dataclasses.fields(value):
                walk(getattr(value, member.name))

    for rules in setup.rules.values():
        for rule in rules.rules:
            walk((rule.when, rule.require))
    return frozenset(found)


def _date_in(spec: FieldSpec, offset: int = 0) -> dt.date:
    low = dt.date.fromisoformat(str(spec.min)) if spec.min is not None else dt.date.min
    high = dt.date.fromisoformat(str(spec.max)) if spec.max is not None else dt.date.max
    nice = dt.date(2024, 3, 15) + dt.timedelta(days=offset)
    return nice if low <= nice <= high else low if spec.min is not None else high


def _matching(spec: FieldSpec, where: str) -> str:
    """A string matching the field's pattern and length bounds."""
    assert spec.pattern is not None
    low = spec.min_length or 0
    high = spec.type.max_length(spec)  # type: ignore[attr-defined]  # string and text
    parsed = sre_parse.parse(spec.pattern)
    for extra in range(8):
        value = _generate(parsed, extra)
        if re.search(spec.pattern, value) and low <= len(value) <= (high or len(value)):
            return value
    pytest.fail(f"{where}: cannot generate a value for pattern {spec.pattern!r}; teach _generate")


def _generate(items: Any, extra: int) -> str:
    out: list[str] = []
    for op, arg in items:
        if op is sre.LITERAL:
            out.append(chr(arg))
        elif op is sre.NOT_LITERAL:
            out.append("x" if chr(arg) != "x" else "y")
        elif op is sre.ANY:
            out.append("x")
        elif op is sre.IN:
            out.append(_in_class(arg))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, sub = arg
            count = low + extra if high is sre.MAXREPEAT else min(high, low + extra)
            out.extend(_generate(sub, extra) for _ in range(count))
        elif op in (sre.SUBPATTERN, sre.ATOMIC_GROUP):
            out.append(_generate(arg[-1] if op is sre.SUBPATTERN else arg, extra))
        elif op is sre.BRANCH:
            out.append(_generate(arg[1][0], extra))
        elif op is sre.CATEGORY:
            out.append(_CATEGORY_SAMPLES[arg])
        elif op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            continue
        else:
            raise AssertionError(f"pattern construct {op} is not supported by the test")
    return "".join(out)


_CATEGORY_SAMPLES = {
    sre.CATEGORY_DIGIT: "7", sre.CATEGORY_NOT_DIGIT: "a", sre.CATEGORY_SPACE: " ",
    sre.CATEGORY_NOT_SPACE: "a", sre.CATEGORY_WORD: "a", sre.CATEGORY_NOT_WORD: "-",
}


def _in_class(items: list[tuple[Any, Any]]) -> str:
    negated = bool(items) and items[0][0] is sre.NEGATE
    members = items[1:] if negated else items

    def contains(char: str) -> bool:
        for op, arg in members:
            if op is sre.LITERAL and chr(arg) == char:
                return True
            if op is sre.RANGE and arg[0] <= ord(char) <= arg[1]:
                return True
            if op is sre.CATEGORY and re.fullmatch(
                    {sre.CATEGORY_DIGIT: r"\d", sre.CATEGORY_NOT_DIGIT: r"\D",
                     sre.CATEGORY_SPACE: r"\s", sre.CATEGORY_NOT_SPACE: r"\S",
                     sre.CATEGORY_WORD: r"\w", sre.CATEGORY_NOT_WORD: r"\W"}[arg], char):
                return True
        return False

    candidates = "aA0xX7z-_ .жش"
    for char in candidates:
        if contains(char) != negated:
            return char
    op, arg = members[0]
    return chr(arg[0] if op is sre.RANGE else arg)
