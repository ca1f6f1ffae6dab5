"""Duplicate control in the setup language: which records are the same client twice.

```yaml
duplicates:
  mode: warn                   # warn (the default): 409 unless the caller confirms; block: 409
  rules:
    same_email: {exact: email}                       # e-mail ignoring case and spaces
    same_phone: {exact: phone}                       # a phone by its digits
    similar_name: {similar: name, within: [city], threshold: 85}
    same_inn: {exact: inn, mode: block}              # a rule may have its own mode
```

An `exact` rule compares one field's normalised value (`normal_value`): a phone by its
digits (any script's digits) — in E.164 when setup.yaml names a `region:`
(engine/setup/phones.py), an e-mail case-folded without spaces, other text case-folded
(NFKC, ё = е, Arabic ي/ك = Persian ی/ک) without spaces or punctuation, a number or choice as
written. A `similar` rule scores a text field's normalised words with rapidfuzz's token
sort ratio (0–100) against the records sharing one of its blocking keys (`blocking_keys`:
its words, their first letters, its sorted words; Chinese, Japanese and Korean runs, which
have no spaces, as character pairs). `within` names fields or single links whose values
must be the same too; a record with an empty `within` member or an empty compared field is
never a duplicate by that rule (SQL's rule for NULL, as for `unique:`).

This module checks the block (every problem with file, line and hint), builds frozen
`DuplicateRule`s and holds the normalisation both the storage (keys kept with each
record, engine/storage/duplicates.py) and the check (engine/records/duplicates.py) use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import Diagnostic
from engine.setup.names import did_you_mean, identifier_problem, link_column
from engine.setup.phones import e164
from engine.setup.source import SourceFile
from engine.setup.spec import FieldSpec, LinkSpec, Location
from engine.types.fields import (
    ChoiceType,
    EmailType,
    FieldType,
    IntegerType,
    PhoneType,
    StringType,
    fold_text,
)

MODES = ("warn", "block")
DEFAULT_THRESHOLD = 85
RULE_KEYS = ("exact", "similar", "within", "threshold", "mode")
#: the longest blocking key kept (a longer word is cut)
KEY_LENGTH = 190
#: the longest shadow value kept: an exact one compares by its first 600 characters (at
#: most 2,400 bytes: under PostgreSQL's limit for a B-tree index entry)
EXACT_LENGTH = 600
SIMILAR_LENGTH = 4000
#: the blocking keys one record keeps per similar rule, at most
MAX_KEYS = 24
#: separates the `within` part of a key from the value part
WITHIN_MARK = "\x1f"

#: the meta-schema of `duplicates:` (its inside is checked below, where messages say more)
SHAPE: dict[str, Any] = {
    "type": "object",
    "x-message": "must be a mapping such as {mode: warn, rules: {same_email: {exact: email}}}, "
                 "not {value}",
    "x-hint": "write duplicates: {rules: {same_email: {exact: email}}}",
}


@dataclass(frozen=True)
class DuplicateRule:
    """One way two records of an entity are the same: an exact normalised value, or a
    similar text (score ≥ `threshold`), within the same values of `within`."""

    name: str
    entity: str
    field: str
    similar: bool
    within: tuple[str, ...] = ()
    #: the columns of `within` (a link's id column)
    within_columns: tuple[str, ...] = ()
    threshold: int = 100
    mode: str = "warn"
    location: Location = dataclasses.field(default_factory=lambda: Location(""))
    #: an exact phone rule's country (setup.yaml's `region:`): numbers compared in E.164
    region: str | None = None

    @property
    def column(self) -> str:
        """The record's shadow column holding this rule's normalised value, named with a
        digest of what the keys depend on: a changed rule is a new column, filled anew."""
        key: tuple[object, ...] = (self.field, self.similar, self.within)
        if self.region is not None:  # a new region: new keys (none: the columns of before)
            key = (*key, self.region)
        what = repr(key).encode()
        return f"kt_dk_{self.name}_{hashlib.sha1(what).hexdigest()[:6]}"

    def words(self) -> str:
        how = f"a {self.field} similar to this one" if self.similar else f"the same {self.field}"
        return how + (f" in the same {' and '.join(self.within)}" if self.within else "")


@dataclass(frozen=True)
class EntityDuplicates:
    entity: str
    rules: tuple[DuplicateRule, ...]

    @property
    def fields(self) -> frozenset[str]:
        """The fields and links whose change may make a record a duplicate."""
        return frozenset(name for rule in self.rules for name in (rule.field, *rule.within))


# -- normalisation ---------------------------------------------------------------------------

def _digits(text: str) -> str:
    """The digits of a phone, in any script (Persian ۰۹۱۲ is 0912)."""
    return "".join(str(unicodedata.digit(c)) for c in text if c.isdigit()
                   and unicodedata.digit(c, None) is not None)


def _letters(text: str) -> str:
    """Folded text without spaces or punctuation: letters, marks and digits only."""
    return "".join(c for c in fold_text(text) if unicodedata.category(c)[0] in "LMN")


def _email(text: str) -> str:
    return "".join(fold_text(text).split())


#: how an exact rule normalises a field, by its type (the first that the type is);
#: types not listed cannot identify a duplicate
_NORMALISERS: tuple[tuple[type[FieldType], Callable[[str], str]], ...] = (
    (PhoneType, _digits),
    (EmailType, _email),
    (StringType, _letters),
    (IntegerType, str),
    (ChoiceType, str),
)


def normaliser(field_type: FieldType) -> Callable[[str], str] | None:
    return next((fn for kind, fn in _NORMALISERS if isinstance(field_type, kind)), None)


def normal_text(text: str) -> str:
    """Words as a similar rule compares them: folded, punctuation made space, one space
    between words."""
    folded = fold_text(text)
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else " " for c in folded)
    return " ".join(kept.split())


def numbers(text: str) -> list[str]:
    """The numbers in a normalised text, in order, as digits of any script (`Филиал ۲` has
    2): a similar rule never matches texts whose numbers differ."""
    found, run = [], ""
    for char in text:
        if char.isdigit() and unicodedata.digit(char, None) is not None:
            run += str(unicodedata.digit(char))
        elif run:
            found.append(run.lstrip("0") or "0")
            run = ""
    if run:
        found.append(run.lstrip("0") or "0")
    return found


def _is_cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) == "W" and unicodedata.category(char)[0] == "L"


def _split_scripts(word: str) -> Iterator[tuple[str, bool]]:
    """`ooo北京科技` → (`ooo`, False), (`北京科技`, True)."""
    run, cjk = "", False
    for char in word:
        kind = _is_cjk(char)
        if run and kind != cjk:
            yield run, cjk
            run = ""
        run, cjk = run + char, kind
    if run:
        yield run, cjk


def blocking_keys(text: str) -> list[str]:
    """The keys under which a similar record is looked for: each word (`t:`), the first
    four letters of each longer word (`p:`, a typo near the end still meets), the sorted
    words (`s:`), and character pairs of Chinese, Japanese and Korean runs (`t:`)."""
    words = normal_text(text).split()
    keys: dict[str, None] = {}
    for word in words:
        for run, cjk in _split_scripts(word):
            if cjk:
                pairs = [run[i:i + 2] for i in range(len(run) - 1)] or [run]
                keys.update(dict.fromkeys("t:" + pair for pair in pairs))
            elif len(run) >= 2:
                keys["t:" + run] = None
                if len(run) >= 5:
                    keys["p:" + run[:4]] = None
    if words:
        keys = {"s:" + " ".join(sorted(words)): None, **keys}
    return [key[:KEY_LENGTH] for key in list(keys)[:MAX_KEYS]]


def within_part(rule: DuplicateRule, values: Mapping[str, Any]) -> str | None:
    """The `within` members' values as one text (None when one is empty); `values` by
    column (a link's id column)."""
    parts = []
    for name in rule.within_columns:
        value = values.get(name)
        if value is None or value == "":
            return None
        parts.append(normal_text(value) if isinstance(value, str) else str(value))
    return "\x1e".join(parts)


def rule_value(rule: DuplicateRule, field: FieldSpec, values: Mapping[str, Any]) -> str | None:
    """What the rule's shadow column holds for a record's `values` (by field or link name):
    the `within` part, then the normalised value; None when the record takes no part."""
    value = values.get(rule.field)
    within = within_part(rule, values)
    if value is None or within is None:
        return None
    if rule.similar:
        normal = normal_text(str(value))
    else:
        normalise = normaliser(field.type)
        normal = normalise(str(value)) if normalise is not None else str(value)
        if rule.region is not None and isinstance(field.type, PhoneType):
            normal = e164(str(value), rule.region) or normal
    if not normal:
        return None
    return (within + WITHIN_MARK + normal)[:SIMILAR_LENGTH if rule.similar else EXACT_LENGTH]


def split_value(stored: str) -> tuple[str, str]:
    """A shadow value's (`within` part, normalised value)."""
    within, _, normal = stored.partition(WITHIN_MARK)
    return within, normal


def rule_keys(stored: str) -> list[str]:
    """A similar rule's blocking keys of one shadow value, each within its group."""
    within, normal = split_value(stored)
    return [(within + WITHIN_MARK + key)[:KEY_LENGTH] for key in blocking_keys(normal)]


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


# -- the loader's check ----------------------------------------------------------------------

def check_duplicates(source: SourceFile, entity: str, data: Mapping[str, Any],
                     fields: Mapping[str, FieldSpec], links: Mapping[str, LinkSpec],
                     declared: Sequence[str], *, region: str | None = None,
                     ) -> tuple[EntityDuplicates | None, list[Diagnostic]]:
    """The entity's `duplicates:` block checked: its rules, and every problem found;
    `region` (setup.yaml's) is how its exact phone rules read a number without +."""
    block = data.get("duplicates")
    if block is None:
        return None, []
    checker = _Checker(source, entity, fields, links, declared)
    rules = checker.block(block)
    if checker.diagnostics or not rules:
        return None, checker.diagnostics
    if region is not None:
        rules = [dataclasses.replace(rule, region=region) if not rule.similar
                 and isinstance(fields[rule.field].type, PhoneType) else rule for rule in rules]
    return EntityDuplicates(entity, tuple(rules)), []


class _Checker:
    def __init__(self, source: SourceFile, entity: str, fields: Mapping[str, FieldSpec],
                 links: Mapping[str, LinkSpec], declared: Sequence[str]):
        self.source = source
        self.entity = entity
        self.fields = fields
        self.links = links
        self.declared = declared
        self.diagnostics: list[Diagnostic] = []

    def problem(self, path: tuple[str | int, ...], message: str, hint: str,
                at_key: bool = False, code: str = "duplicates.rule") -> None:
        self.diagnostics.append(self.source.diagnostic(code, path, message, hint,
                                                       at_key=at_key))

    def block(self, block: Mapping[str, Any]) -> list[DuplicateRule]:
        base: tuple[str | int, ...] = ("duplicates",)
        for key in block:
            if key not in ("mode", "rules"):
                self.problem((*base, key), f"unknown key {key!r}",
                             did_you_mean(str(key), ("mode", "rules"))
                             or "duplicates takes mode and rules", at_key=True,
                             code="duplicates.key")
        mode = self.mode(block, base, "warn")
        rules = block.get("rules")
        if not isinstance(rules, dict) or not rules:
            self.problem((*base, "rules") if "rules" in block else base,
                         "must name at least one rule, e.g. {same_email: {exact: email}}"
                         if "rules" in block else "'rules' is missing",
                         "write rules: {same_email: {exact: email}, similar_name: "
                         "{similar: name, within: [city]}}", code="duplicates.rules")
            return []
        found = [self.rule(str(name), body, mode) for name, body in rules.items()]
        return [rule for rule in found if rule is not None]

    def mode(self, body: Mapping[str, Any], path: tuple[str | int, ...], default: str) -> str:
        mode = body.get("mode", default)
        if mode not in MODES:
            self.problem((*path, "mode"), f"mode {mode!r} is not warn or block",
                         did_you_mean(str(mode), MODES) or "write mode: warn (409 unless the "
                         "client confirms) or mode: block (409 always)", code="duplicates.mode")
            return default
        return str(mode)

    def rule(self, name: str, body: Any, mode: str) -> DuplicateRule | None:
        path: tuple[str | int, ...] = ("duplicates", "rules", name)
        before = len(self.diagnostics)
        problem = identifier_problem(name)
        if problem:
            self.problem(path, f"rule name {problem}", "rule names are lower_snake, e.g. "
                         "same_email: the 409 names them", at_key=True)
        if not isinstance(body, dict):
            self.problem(path, "must be a mapping such as {exact: email} or {similar: name}",
                         "write same_email: {exact: email}")
            return None
        for key in body:
            if key not in RULE_KEYS:
                self.problem((*path, key), f"unknown key {key!r}",
                             did_you_mean(str(key), RULE_KEYS)
                             or "a rule takes " + ", ".join(RULE_KEYS), at_key=True)
        kinds = [k for k in ("exact", "similar") if k in body]
        if len(kinds) != 1:
            self.problem(path, "names both exact and similar" if kinds else
                         "says neither exact nor similar",
                         "give one: exact: <field> (the same normalised value) or "
                         "similar: <field> (a similar text)")
            return None
        similar = kinds[0] == "similar"
        field = self.field(body[kinds[0]], (*path, kinds[0]), similar)
        within = self.within(body.get("within"), (*path, "within"))
        threshold = 100
        if similar:
            threshold = body.get("threshold", DEFAULT_THRESHOLD)
            if isinstance(threshold, bool) or not isinstance(threshold, int) \
                    or not 0 <= threshold <= 100:
                self.problem((*path, "threshold"), f"must be a whole number from 0 to 100, "
                             f"not {threshold!r}", "write threshold: 85 (100: the same words "
                             "in any order; lower finds more, and more false alarms)")
        elif "threshold" in body:
            self.problem((*path, "threshold"), "is for similar rules; an exact rule compares "
                         "whole normalised values", "remove threshold, or write similar: "
                         + str(body["exact"]), at_key=True)
        rule_mode = self.mode(body, path, mode)
        if len(self.diagnostics) != before or field is None:
            return None
        columns = tuple(link_column(n) if n in self.links else n for n in within)
        return DuplicateRule(name, self.entity, field, similar, within, columns, int(threshold),
                             rule_mode, Location(self.source.name,
                                                 self.source.line_of(path, key=True)[0]))

    def field(self, name: Any, path: tuple[str | int, ...], similar: bool) -> str | None:
        if not isinstance(name, str):
            self.problem(path, f"must name one field, not {name!r}",
                         "write exact: email, or similar: name")
            return None
        spec = self.fields.get(name)
        if spec is None:
            if name not in self.declared or name in self.links:
                what = "a link; a rule compares a field" if name in self.links \
                    else f"no field {name!r}"
                self.problem(path, what, did_you_mean(name, list(self.fields))
                             or "fields: " + ", ".join(self.fields))
            return None
        if spec.computed:
            self.problem(path, f"{name!r} is computed by the server", "compare a field "
                         "clients enter")
            return None
        if similar and not isinstance(spec.type, StringType):
            self.problem(path, f"{name!r} is {_a(spec.type.name)} field; similar compares text",
                         "use exact: " + name + ", or name a string or text field")
            return None
        if not similar and normaliser(spec.type) is None:
            self.problem(path, f"{name!r} is {_a(spec.type.name)} field, which cannot identify "
                         "a duplicate", "name a text, e-mail, phone, url, integer or choice "
                         "field")
            return None
        return name

    def within(self, raw: Any, path: tuple[str | int, ...]) -> tuple[str, ...]:
        if raw is None:
            return ()
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            self.problem(path, f"must name fields or links, not {raw!r}",
                         "write within: [city]")
            return ()
        for index, name in enumerate(names):
            at = (*path, index) if isinstance(raw, list) else path
            link = self.links.get(name)
            spec = self.fields.get(name)
            if link is not None:
                if link.many or link.polymorphic:
                    many = "many records" if link.many else "several entities"
                    self.problem(at, f"{name!r} is a link to {many}",
                                 "name a field or a link to one record")
            elif spec is None:
                if name not in self.declared:
                    self.problem(at, f"no field or link {name!r}",
                                 did_you_mean(name, [*self.fields, *self.links])
                                 or "fields: " + ", ".join(self.fields))
            elif normaliser(spec.type) is None:
                self.problem(at, f"{name!r} is {_a(spec.type.name)} field", "name a text, "
                             "integer or choice field, or a link")
        if len(set(names)) != len(names):
            self.problem(path, "names the same member twice", "name each once")
        return tuple(names)
