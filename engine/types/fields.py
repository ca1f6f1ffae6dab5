"""Field types: each one a registered object that knows its column, its JSON Schema,
how it parses a value, how it renders one, and how it filters.

Adding a field type means writing one subclass of `FieldType` and registering it:

    class Percent(IntegerType):
        name = "percent"
        def json_schema(self, field, *, read=False):
            return {**super().json_schema(field, read=read), "minimum": 0, "maximum": 100}

    registry = default_registry()
    registry.register(Percent())
    setup = load_setup("my-setup", registry=registry)

The built-in types below are registered through the same `register` call. The module is
long because it holds all sixteen of them, one small class each.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from decimal import Context, Decimal, InvalidOperation
from itertools import repeat
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import ExtensionError
from engine.types.columns import (
    ExactDecimal,
    UTCDateTime,
    json_column,
    present_of,
    utc_text,
    with_nones,
)


class FieldSpec(Protocol):
    """What a field type reads of a declared field: the setup's `FieldSpec` (in
    `engine.setup.spec`) is one. A protocol, so types sit below the setup language."""

    @property
    def name(self) -> str: ...
    @property
    def required(self) -> bool: ...
    @property
    def min(self) -> Any: ...
    @property
    def max(self) -> Any: ...
    @property
    def min_length(self) -> int | None: ...
    @property
    def max_length(self) -> int | None: ...
    @property
    def pattern(self) -> str | None: ...
    @property
    def options(self) -> tuple[str, ...] | None: ...
    @property
    def params(self) -> Mapping[str, Any]: ...

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ALL_COMPARISONS = frozenset({"eq", "ne", "lt", "lte", "gt", "gte", "in", "isnull"})
TEXT_OPERATORS = ALL_COMPARISONS | {"contains", "startswith"}
OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "startswith", "isnull")


class ValueProblem(ValueError):
    """A value that a field cannot take; the message says why, in the user's terms."""


#: the published form of `check_text`'s first rule, on every string without a pattern of
#: its own: JSON Schema cannot say "no lone surrogate", but it can say "no NUL"
NO_NUL = "^[^\\u0000]*$"


def check_text(value: str) -> None:
    """Text that both databases store: no NUL character, no lone UTF-16 surrogate."""
    if "\x00" in value:
        raise ValueProblem("must not contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueProblem("is not valid Unicode text (a lone surrogate)") from None


def _check_texts(texts: Sequence[str | None]) -> None:
    """`check_text` of each text, by one check of their join: NUL and lone surrogates
    are in it exactly when in one of them (Python never pairs two lone surrogates)."""
    check_text("".join(filter(None, texts)))  # None and "" add nothing to the join


class FieldType:
    """Base of every field type. Subclasses set `name` and override what differs."""

    name: ClassVar[str]
    #: common declaration keys this type accepts (beyond required, unique, default, ...)
    accepts: ClassVar[frozenset[str]] = frozenset()
    #: type-specific declaration keys: name → JSON Schema of the value (for the meta-schema)
    extra_keys: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    operators: ClassVar[frozenset[str]] = ALL_COMPARISONS
    sortable: ClassVar[bool] = True
    #: may be named in an entity's `search:` list
    searchable: ClassVar[bool] = False
    #: may be `unique: true`
    can_be_unique: ClassVar[bool] = True
    #: a JSON-Schema-ish word for messages: "must be {noun}"
    noun: ClassVar[str] = "a value"
    #: its values are quantities that add up (money, points): the board and the funnel show
    #: each stage's SQL sum, the funnel its `forecast` (the sum × the stage's probability),
    #: and the covering indexes of a pipeline entity carry the column, so those sums are read
    #: from the index alone. A summable type says how a sum renders: `render_sum`
    summable: ClassVar[bool] = False
    #: its values are user ids (a task's observers): `parse` returns a list of ids, and a
    #: write is refused (422 `user_not_found`) unless each is an active user of the database
    refers_to_users: ClassVar[bool] = False
    #: "date" or "datetime": its filter values and defaults may be relative moments
    #: (`today-30d`, `now+2h`, `start_of_month`: engine/types/moments.py), resolved in the
    #: setup's time zone when a query runs or a record is created
    moment_kind: ClassVar[str | None] = None

    # -- declaration ----------------------------------------------------------------
    def params(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Type-specific keys of a declaration, with their defaults filled in."""
        return {key: raw[key] for key in self.extra_keys if key in raw}

    def check(self, field: FieldSpec) -> Iterator[tuple[str, str, str]]:
        """Problems with a declaration: (key, message, hint). Types add their own."""
        if field.min is not None and field.max is not None and field.min > field.max:
            yield "min", f"min {field.min} is greater than max {field.max}", "swap them"
        if (field.min_length is not None and field.max_length is not None
                and field.min_length > field.max_length):
            yield "min_length", "min_length is greater than max_length", "swap them"
        return
        yield

    # -- users (refers_to_users) -----------------------------------------------------
    def user_ids(self, value: Any) -> list[int]:
        """The user ids a parsed value of a `refers_to_users` type names (a list, by default)."""
        return list(value or ())

    def user_default(self, field: FieldSpec, user_id: int) -> Any:
        """The value `default: $user` gives a `refers_to_users` field created by `user_id`."""
        return [user_id]

    # -- storage ---------------------------------------------------------------------
    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        raise NotImplementedError

    # -- JSON ------------------------------------------------------------------------
    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, field: FieldSpec, value: Any) -> Any:
        """A JSON value (already checked by the JSON Schema) → the Python value stored."""
        return value

    def parse_many(self, field: FieldSpec, values: Sequence[Any]) -> list[Any]:
        """`parse` of each value (None stays None), or ValueProblem when `parse` refuses
        any of them (not necessarily in its words: the caller finds them one by one).
        For an import's column of a batch (engine/exchange/fast_rows.py), where a call of
        `parse` per value costs more than its work: a type may override this with a few
        passes over all the values, mostly in C, that give exactly what `parse` gives —
        and only while `parse` is its own (`_own_parse`: a subclass with a `parse` of its
        own gets this loop)."""
        parse = self.parse
        return [None if value is None else parse(field, value) for value in values]

    def _own_parse(self, cls: type[FieldType]) -> bool:
        """Whether this type parses as `cls` does (its `parse` is `cls`'s own)."""
        return type(self).parse is cls.parse

    def render(self, field: FieldSpec, value: Any) -> Any:
        """The stored Python value → its JSON form."""
        return value

    def render_many(self, field: FieldSpec, values: Sequence[Any]) -> list[Any]:
        """`render` of each value (None stays None), for a batch's column (bulk's and an
        import's creates, engine/records/plain_creates.py); a type may give the same by a
        pass over them in C, while `render` is its own (`_own_render`)."""
        render = self.render
        return [None if value is None else render(field, value) for value in values]

    def _own_render(self, cls: type[FieldType]) -> bool:
        return type(self).render is cls.render

    #: render is the identity: the hot path can skip it
    renders_as_is: ClassVar[bool] = True

    def render_sum(self, field: FieldSpec, total: Any, percent: int = 100) -> Any:
        """A summable type's sum (as the database's SUM returns it; None when no record was
        summed, which is 0) weighed by `percent`, the stage's probability → its JSON form."""
        raise NotImplementedError(f"field type {self.name!r} is summable, so it must say "
                                  "how its sums render: override render_sum")

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        """A query-string value → the Python value to compare with (no range checks)."""
        return self.parse(field, text)

    # -- queries ---------------------------------------------------------------------
    def filter(
        self, field: FieldSpec, column: Any, op: str, value: Any, dialect: str
    ) -> ColumnElement[bool]:
        if op == "eq":
            return column == value  # type: ignore[no-any-return]
        if op == "ne":
            return sa.or_(column != value, column.is_(None))
        if op == "lt":
            return column < value  # type: ignore[no-any-return]
        if op == "lte":
            return column <= value  # type: ignore[no-any-return]
        if op == "gt":
            return column > value  # type: ignore[no-any-return]
        if op == "gte":
            return column >= value  # type: ignore[no-any-return]
        if op == "in":
            return column.in_(value)  # type: ignore[no-any-return]
        if op == "contains":
            return column.contains(value, autoescape=True)  # type: ignore[no-any-return]
        if op == "startswith":
            return column.startswith(value, autoescape=True)  # type: ignore[no-any-return]
        if op == "isnull":
            return column.is_(None) if value else column.is_not(None)  # type: ignore[no-any-return]
        raise ValueProblem(f"operator {op!r} does not apply")


def _with_bounds(schema: dict[str, Any], field: FieldSpec, *, numeric: bool) -> dict[str, Any]:
    if numeric:
        if field.min is not None:
            schema["minimum"] = field.min
        if field.max is not None:
            schema["maximum"] = field.max
    else:
        if field.min_length is not None:
            schema["minLength"] = field.min_length
        if field.max_length is not None:
            schema["maxLength"] = field.max_length
        if field.pattern is not None:
            schema["pattern"] = field.pattern
    return schema


# -- text ---------------------------------------------------------------------------------

class StringType(FieldType):
    name = "string"
    accepts = frozenset({"min_length", "max_length", "pattern"})
    operators = TEXT_OPERATORS
    searchable = True
    noun = "a string"
    default_max_length: ClassVar[int | None] = 255

    def max_length(self, field: FieldSpec) -> int | None:
        return field.max_length if field.max_length is not None else self.default_max_length

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        limit = self.max_length(field)
        return sa.String(limit) if limit else sa.Text()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        schema = _with_bounds({"type": "string"}, field, numeric=False)
        limit = self.max_length(field)
        if limit:
            schema["maxLength"] = limit
        if field.required and not read and "minLength" not in schema:
            schema["minLength"] = 1  # a required text is not an empty one
        schema.setdefault("pattern", NO_NUL)
        return schema

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueProblem(f"must be {self.noun}")
        check_text(value)
        return value

    def parse_many(self, field: FieldSpec, values: Sequence[Any]) -> list[Any]:
        if self._own_parse(StringType) and present_of(values, str) is not None:
            _check_texts(values)
            return list(values)
        return super().parse_many(field, values)

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        # a filter value is a piece to compare with, not a value to store: `email[contains]=
        # example.org` is no e-mail address, and need not be
        check_text(text)
        return text


class TextType(StringType):
    name = "text"
    default_max_length = None
    noun = "a text"


class ShapedStringType(StringType):
    """A string that must also match `_shape` (an e-mail address, a phone number):
    refused with `_not_shaped` otherwise."""

    _shape: ClassVar[re.Pattern[str]]
    _not_shaped: ClassVar[str]

    def parse(self, field: FieldSpec, value: Any) -> Any:
        value = super().parse(field, value)
        if not self._shape.match(value):
            raise ValueProblem(self._not_shaped)
        return value

    def parse_many(self, field: FieldSpec, values: Sequence[Any]) -> list[Any]:
        texts = present_of(values, str) if self._own_parse(ShapedStringType) else None
        if texts is not None and all(map(self._shape.match, texts)):
            _check_texts(texts)
            return list(values)
        return super().parse_many(field, values)


class EmailType(ShapedStringType):
    name = "email"
    accepts = frozenset({"max_length"})
    default_max_length = 254
    noun = "an e-mail address"
    _shape = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
    _not_shaped = "is not an e-mail address (name@example.com)"

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {**super().json_schema(field, read=read), "format": "email"}


class PhoneType(ShapedStringType):
    name = "phone"
    accepts = frozenset({"max_length"})
    default_max_length = 32
    noun = "a phone number"
    #: at least three ASCII digits before an extension; the published pattern is this one,
    #: so a number the schema allows is one the server takes
    _shape = re.compile(r"^\+?(?:[ ()./-]*[0-9]){3}[0-9 ()./-]*(?: *(?:ext\.?|x|#) *[0-9]+)?$")
    _not_shaped = "is not a phone number (digits, spaces, + ( ) - . allowed)"

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {**super().json_schema(field, read=read), "pattern": self._shape.pattern}


class UrlType(StringType):
    name = "url"
    accepts = frozenset({"max_length"})
    default_max_length = 2048
    noun = "a URL"

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {**super().json_schema(field, read=read), "format": "uri"}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        value = super().parse(field, value)
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https", "ftp") or not parts.netloc or " " in value:
            raise ValueProblem("is not a URL (https://example.com/...)")
        return value


# -- numbers ------------------------------------------------------------------------------

class IntegerType(FieldType):
    name = "integer"
    accepts = frozenset({"min", "max"})
    noun = "an integer"

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return sa.BigInteger()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
        return _with_bounds(schema, field, numeric=True)

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueProblem(f"must be {self.noun}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueProblem("is out of range for a 64-bit integer")
        return value

    def parse_many(self, field: FieldSpec, values: Sequence[Any]) -> list[Any]:
        numbers = present_of(values, int) if self._own_parse(IntegerType) else None
        if numbers and INT64_MIN <= min(numbers) and max(numbers) <= INT64_MAX:
            return list(values)
        return super().parse_many(field, values)

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        if not re.fullmatch(r"-?[0-9]{1,19}", text.strip()):
            raise ValueProblem(f"must be {self.noun}")
        return self.parse(field, int(text))


class DecimalType(FieldType):
    """Exact decimal numbers: JSON numbers or numeric strings in, strings with exactly
    `places` decimals out; stored without float on both databases."""

    name = "decimal"
    accepts = frozenset({"min", "max"})
    extra_keys: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "digits": {"type": "integer", "minimum": 1, "maximum": 18},
        "places": {"type": "integer", "minimum": 0, "maximum": 17},
    }
    default_digits: ClassVar[int] = 18
    default_places: ClassVar[int] = 6
    noun = "a number"
    renders_as_is = False
    _shape = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")

    def params(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "digits": raw.get("digits", self.default_digits),
            "places": raw.get("places", self.default_places),
        }

    def check(self, field: FieldSpec) -> Iterator[tuple[str, str, str]]:
        yield from super().check(field)
        digits, places = field.params["digits"], field.params["places"]
        if places >= digits:
            yield ("places", f"places ({places}) must be less than digits ({digits})",
                   "digits counts every digit, places the ones after the point")

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return ExactDecimal(field.params["digits"], field.params["places"])

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        places = field.params["places"]
        if read:
            return {"type": "string", "pattern": self._shape.pattern,
                    "description": f"exact decimal with {places} places, as a string"}
        schema: dict[str, Any] = {
            "type": ["string", "number"],
            # a string: its digits before and after the point; a number: the same as bounds
            # and a step (the server's validator checks the step exactly, see `number_decimal`)
            "pattern": self.pattern(field),
            "description": f"exact decimal, at most {places} places; a number or a string",
            "exclusiveMaximum": self.limit(field), "exclusiveMinimum": -self.limit(field),
            "multipleOf": 1 if places == 0 else float(Decimal(1).scaleb(-places)),
        }
        return _with_bounds(schema, field, numeric=True)

    @staticmethod
    def pattern(field: FieldSpec) -> str:
        """The strings the field takes: at most digits-places digits before the point
        (leading zeros aside), at most `places` after it (trailing zeros aside); no sign
        when the field's minimum is not negative."""
        whole, places = field.params["digits"] - field.params["places"], field.params["places"]
        sign = "" if field.min is not None and field.min >= 0 else "-?"
        fraction = rf"(\.[0-9]{{1,{places}}}0*)?" if places else r"(\.0+)?"
        return rf"^{sign}0*[0-9]{{1,{whole}}}{fraction}$"

    @staticmethod
    def limit(field: FieldSpec) -> int:
        """The first whole number too large for the field: 10 ** digits before the point."""
        return int(10 ** (field.params["digits"] - field.params["places"]))

    def _decimal(self, value: Any) -> Decimal:
        if isinstance(value, bool):
            raise ValueProblem(f"must be {self.noun}")
        if isinstance(value, str):
            if not self._shape.match(value.strip()):
                raise ValueProblem(f"must be {self.noun}, like 1234.50")
            value = value.strip()
        if isinstance(value, float):
            value = repr(value)
        try:
            number = Decimal(value)
        except (InvalidOperation, TypeError, ValueError):
            raise ValueProblem(f"must be {self.noun}") from None
        if not number.is_finite():
            raise ValueProblem("must be a finite number")
        return number

    def _exact(self, field: FieldSpec, number: Decimal) -> Decimal:
        """`number` with exactly the field's places, or a ValueProblem saying why not."""
        digits, places = field.params["digits"], field.params["places"]
        if number and number.adjusted() + 1 > digits - places:
            raise ValueProblem(
                f"is too large: at most {digits - places} digits before the decimal point")
        exact = number.quantize(Decimal(1).scaleb(-places))
        if exact != number:
            raise ValueProblem(f"has more than {places} decimal places")
        return exact

    def parse(self, field: FieldSpec, value: Any) -> Any:
        near = (number_decimal(value, field.params["places"])
                if isinstance(value, float | Decimal) else None)
        number = self._exact(field, near if near is not None else self._decimal(value))
        if field.min is not None and number < Decimal(str(field.min)):
            raise ValueProblem(f"must be at least {field.min}")
        if field.max is not None and number > Decimal(str(field.max)):
            raise ValueProblem(f"must be at most {field.max}")
        return number

    def parse_many(self, field: FieldSpec, values: Sequence[Any]) -> list[Any]:
        """`parse` of texts (an import's cells, read as `1234.50`) in passes over them all:
        each matches `_shape`, their Decimals are quantized to the field's places and must
        equal themselves, the largest fits the digits, the least and the greatest the
        bounds — `parse`'s steps, each over the column. Any other values, one by one."""
        texts = present_of(values, str) if self._own_parse(DecimalType) else None
        if texts:
            try:
                done = self._exact_texts(field, texts)
            except ArithmeticError:  # `parse` says what it says of the value
                done = None
            if done is not None:
                return with_nones(values, done)
        return super().parse_many(field, values)

    def _exact_texts(self, field: FieldSpec, texts: list[str]) -> list[Decimal] | None:
        """The exact numbers of decimal texts (None: `parse` refuses one of them, or
        must say why)."""
        stripped = list(map(str.strip, texts))
        if not all(map(self._shape.match, stripped)):
            return None
        numbers = list(map(Decimal, stripped))  # finite: digits only, by `_shape`
        digits, places = field.params["digits"], field.params["places"]
        largest = max(map(Decimal.copy_abs, numbers))  # the greatest adjusted() of all
        if largest and largest.adjusted() + 1 > digits - places:
            return None
        exact = list(map(Decimal.quantize, numbers, repeat(Decimal(1).scaleb(-places))))
        if exact != numbers:
            return None
        if field.min is not None and min(exact) < Decimal(str(field.min)):
            return None
        if field.max is not None and max(exact) > Decimal(str(field.max)):
            return None
        return exact

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        return self._exact(field, self._decimal(text))

    def render(self, field: FieldSpec, value: Any) -> Any:
        return None if value is None else f"{value:.{field.params['places']}f}"

    def render_many(self, field: FieldSpec, values: Sequence[Any]) -> list[Any]:
        numbers = present_of(values, Decimal) if self._own_render(DecimalType) else None
        if not numbers:
            return super().render_many(field, values)
        # as render: format is what the f-string calls
        return with_nones(values, list(map(format, numbers,
                                            repeat(f".{field.params['places']}f"))))

    def render_sum(self, field: FieldSpec, total: Any, percent: int = 100) -> Any:
        number = Decimal(0) if total is None else Decimal(total)
        if percent != 100:
            number = (number * percent / 100).quantize(Decimal(1).scaleb(-field.params["places"]))
        return self.render(field, number)


#: enough digits for any float written out in full, whatever places a field has
WIDE = Context(prec=800)


def number_decimal(value: float | Decimal, places: int) -> Decimal | None:
    """The decimal with `places` places that a JSON number stands for, or None.

    Most clients (JavaScript's among them) hold numbers as binary floats and write them
    as a float prints (`0.1 + 0.2` is sent as 0.30000000000000004): a number written so,
    within one unit of float precision (one ulp) of a decimal with `places` places, stands
    for that decimal. Any other number stands for itself, so it must have at most `places`
    places (0.005 for 2 places stands for none: None)."""
    exact = Decimal(repr(value)) if isinstance(value, float) else value
    if not exact.is_finite():
        return None
    if exact.adjusted() > WIDE.prec // 2:  # far beyond any column; whole if its exponent is
        return exact if exact == exact.to_integral_value() else None
    nearest = exact.quantize(Decimal(1).scaleb(-places), context=WIDE)
    if nearest == exact:
        return nearest
    as_float = float(exact)
    if Decimal(repr(as_float)) == exact and abs(float(nearest) - as_float) <= math.ulp(as_float):
        return nearest
    return None


class MoneyType(DecimalType):
    name = "money"
    default_places = 2
    summable = True
    noun = "an amount of money"


# -- others -------------------------------------------------------------------------------

class BooleanType(FieldType):
    name = "boolean"
    operators = frozenset({"eq", "ne", "isnull"})
    can_be_unique = False
    noun = "true or false"

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return sa.Boolean()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "boolean"}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueProblem(f"must be {self.noun}")
        return value

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueProblem("must be true or false")


class DateType(FieldType):
    name = "date"
    accepts = frozenset({"min", "max"})
    noun = "a date (YYYY-MM-DD)"
    renders_as_is = False
    moment_kind = "date"
    _shape = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return sa.Date()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "string", "format": "date"}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            day = value
        elif isinstance(value, str) and self._shape.match(value):
            try:
                day = dt.date.fromisoformat(value)
            except ValueError:
                raise ValueProblem(f"is not a real date: {value}") from None
        else:
            raise ValueProblem(f"must be {self.noun}")
        if field.min is not None and day < dt.date.fromisoformat(str(field.min)):
            raise ValueProblem(f"must be on or after {field.min}")
        if field.max is not None and day > dt.date.fromisoformat(str(field.max)):
            raise ValueProblem(f"must be on or before {field.max}")
        return day

    def parse_many(self, field: FieldSpec, values: Sequence[Any]) -> list[Any]:
        texts = present_of(values, str) if self._own_parse(DateType) else None
        if texts and all(map(self._shape.match, texts)):
            try:
                days = list(map(dt.date.fromisoformat, texts))
            except ValueError:  # not a real date: `parse` says which
                days = []
            if days and (field.min is None or min(days) >= dt.date.fromisoformat(
                    str(field.min))) and (field.max is None or max(days) <= dt.date.fromisoformat(
                        str(field.max))):
                return with_nones(values, days)
        return super().parse_many(field, values)

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        # `today`, `today-30d`... are read by the filter grammar before this (moment_kind)
        if not self._shape.match(text):
            raise ValueProblem(f"must be {self.noun}, or a relative date such as today-30d")
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise ValueProblem(f"is not a real date: {text}") from None

    def render(self, field: FieldSpec, value: Any) -> Any:
        return None if value is None else value.isoformat()

    def render_many(self, field: FieldSpec, values: Sequence[Any]) -> list[Any]:
        days = present_of(values, dt.date) if self._own_render(DateType) else None
        if not days:
            return super().render_many(field, values)
        return with_nones(values, list(map(dt.date.isoformat, days)))


class DateTimeType(FieldType):
    name = "datetime"
    noun = "a date and time in ISO 8601 with an offset (2024-05-01T10:00:00+03:00)"
    renders_as_is = False
    moment_kind = "datetime"
    _shape = re.compile(
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
        r"(Z|z|[+-][0-9]{2}:?[0-9]{2})$"
    )

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return UTCDateTime()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "string", "format": "date-time"}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            moment = value
        elif isinstance(value, str) and self._shape.match(value):
            try:
                moment = dt.datetime.fromisoformat(value.replace("z", "Z"))
            except ValueError:
                raise ValueProblem(f"is not a real date and time: {value}") from None
        elif isinstance(value, str) and re.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+$", value):
            raise ValueProblem("has no time zone: add Z for UTC or an offset such as +03:00")
        else:
            raise ValueProblem(f"must be {self.noun}")
        if moment.tzinfo is None:
            raise ValueProblem("has no time zone: add Z for UTC or an offset such as +03:00")
        try:
            return moment.astimezone(dt.UTC)
        except OverflowError:
            raise ValueProblem("is out of range: years 1 to 9999 in UTC") from None

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        # `now`, `now-2h`, `start_of_month`... are read by the filter grammar (moment_kind)
        return self.parse(field, text)

    def render(self, field: FieldSpec, value: Any) -> Any:
        if value is None:
            return None
        return utc_text(value)


class _OptionsType(FieldType):
    """A type whose values come from the field's `options`."""

    accepts = frozenset({"options"})

    def check(self, field: FieldSpec) -> Iterator[tuple[str, str, str]]:
        yield from super().check(field)
        if not field.options:
            yield "options", f"a {self.name} field needs a list of options", "options: [a, b, c]"


class ChoiceType(_OptionsType):
    name = "choice"
    operators = frozenset({"eq", "ne", "in", "isnull"})
    searchable = True
    noun = "one of the options"

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return sa.String(max((len(o) for o in field.options or ("",)), default=1) or 1)

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "string", "enum": list(field.options or ())}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if value not in (field.options or ()):
            raise ValueProblem("must be one of: " + ", ".join(field.options or ()))
        return value


class MultichoiceType(_OptionsType):
    """Several of the options; stored as a JSON array in option order; `contains` finds
    the records that have an option, `isnull` the ones with none."""

    name = "multichoice"
    operators = frozenset({"contains", "isnull"})
    sortable = False
    can_be_unique = False
    noun = "a list of options"

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return json_column()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "string", "enum": list(field.options or ())},
                "uniqueItems": True}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if not isinstance(value, list) or any(v not in (field.options or ()) for v in value):
            raise ValueProblem("must be a list of: " + ", ".join(field.options or ()))
        if len(set(value)) != len(value):
            raise ValueProblem("names an option twice")
        # stored in declaration order, so equal sets are equal values
        return [option for option in field.options or () if option in value]

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        if text not in (field.options or ()):
            raise ValueProblem("must be one of: " + ", ".join(field.options or ()))
        return text

    def filter(self, field: FieldSpec, column: Any, op: str, value: Any,
               dialect: str) -> ColumnElement[bool]:
        if op == "contains":
            return _array_contains(column, value, dialect)
        return super().filter(field, column, op, value, dialect)


def _array_contains(column: Any, value: Any, dialect: str) -> ColumnElement[bool]:
    """A JSON array column holds `value` (a GIN-friendly `@>` on PostgreSQL)."""
    if dialect == "postgresql":
        contains: ColumnElement[bool] = column.op("@>")(
            sa.cast(sa.literal([value], json_column()), postgresql.JSONB))
        return contains
    each = sa.func.json_each(column).table_valued("value")
    return sa.exists().where(each.c.value == value)


class UsersType(FieldType):
    """Several users of the database, by id (a task's observers): a JSON array, in id
    order; `contains` finds the records naming a user (`observers[contains]=7`, or
    `{observers: {contains: $user}}` in a role's condition), `isnull` those naming none.
    The engine checks that every id is an active user when a record is written."""

    name = "users"
    refers_to_users = True
    operators = frozenset({"contains", "isnull"})
    sortable = False
    can_be_unique = False
    noun = "a list of user ids"
    MAX_USERS = 100

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return json_column()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "array", "uniqueItems": True, "maxItems": self.MAX_USERS,
                "items": {"type": "integer", "minimum": 1, "maximum": INT64_MAX}}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if not isinstance(value, list) or any(
                isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= INT64_MAX
                for v in value):
            raise ValueProblem("must be a list of user ids")
        if len(set(value)) != len(value):
            raise ValueProblem("names a user twice")
        if len(value) > self.MAX_USERS:
            raise ValueProblem(f"names more than {self.MAX_USERS} users")
        return sorted(value)

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        if not (text.isascii() and text.isdigit() and 0 < len(text) < 19 and int(text) > 0):
            raise ValueProblem("must be a user id")
        return int(text)

    def filter(self, field: FieldSpec, column: Any, op: str, value: Any,
               dialect: str) -> ColumnElement[bool]:
        if op == "contains":
            return _array_contains(column, value, dialect)
        return super().filter(field, column, op, value, dialect)


class UserType(FieldType):
    """One user of the database, by id (a task's assignee, the login of a dentist's card):
    a whole number; `eq ne in isnull` filters (`assignee=7`, `{assignee: $user}` or
    `{dentist.user: $user}` in a role's condition); `default: $user` is the acting user.
    The engine checks that the id is an active user when a record is written."""

    name = "user"
    refers_to_users = True
    operators = frozenset({"eq", "ne", "in", "isnull"})
    noun = "a user id"

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return sa.BigInteger()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": INT64_MAX}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT64_MAX:
            raise ValueProblem(f"must be {self.noun}")
        return value

    def parse_text(self, field: FieldSpec, text: str) -> Any:
        if not (text.isascii() and text.isdigit() and 0 < len(text) < 19 and int(text) > 0):
            raise ValueProblem(f"must be {self.noun}")
        return int(text)

    def user_ids(self, value: Any) -> list[int]:
        return [] if value is None else [value]

    def user_default(self, field: FieldSpec, user_id: int) -> Any:
        return user_id


class JsonType(FieldType):
    name = "json"
    operators = frozenset({"isnull"})
    sortable = False
    can_be_unique = False
    noun = "any JSON value"

    def column_type(self, field: FieldSpec) -> sa.types.TypeEngine[Any]:
        return json_column()

    def json_schema(self, field: FieldSpec, *, read: bool = False) -> dict[str, Any]:
        return {}

    def parse(self, field: FieldSpec, value: Any) -> Any:
        return _plain_json(value, depth=0)


def _plain_json(value: Any, depth: int) -> Any:
    if depth > 32:
        raise ValueProblem("is nested more than 32 levels deep")
    if isinstance(value, str):
        check_text(value)
        return value
    if isinstance(value, Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise ValueProblem("holds a number too large for a JSON field")
        return number
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueProblem("holds a whole number beyond 64 bits; send it as a string")
    if isinstance(value, list):
        return [_plain_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        for key in value:
            check_text(key)
        return {k: _plain_json(v, depth + 1) for k, v in value.items()}
    return value


class FieldTypeRegistry:
    """The field types one setup may use. Built-ins are registered like any plugin."""

    def __init__(self) -> None:
        self._types: dict[str, FieldType] = {}

    def register(self, field_type: FieldType) -> None:
        """Add a type; `ExtensionError` says why one cannot be added."""
        name = getattr(field_type, "name", None)
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ExtensionError(f"field type name {name!r} is not an identifier: give the "
                                 "class a lower-case name such as 'rating'")
        if name in self._types:
            raise ExtensionError(f"field type {name!r} is already registered: give yours "
                                 "another name, or start from a registry without it")
        if field_type.summable and type(field_type).render_sum is FieldType.render_sum:
            raise ExtensionError(f"field type {name!r} is summable but does not say how its "
                                 "sums render: override render_sum (see DecimalType)")
        self._types[name] = field_type

    def get(self, name: str) -> FieldType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def all_extra_keys(self) -> dict[str, Mapping[str, Any]]:
        keys: dict[str, Mapping[str, Any]] = {}
        for field_type in self._types.values():
            keys.update(field_type.extra_keys)
        return keys


BUILTIN_TYPES: tuple[type[FieldType], ...] = (
    StringType, TextType, IntegerType, DecimalType, MoneyType, BooleanType, DateType,
    DateTimeType, EmailType, PhoneType, UrlType, ChoiceType, MultichoiceType, UsersType,
    UserType, JsonType,
)


def default_registry() -> FieldTypeRegistry:
    """A fresh registry holding the built-in types; add your own with `register`."""
    registry = FieldTypeRegistry()
    for cls in BUILTIN_TYPES:
        registry.register(cls())
    return registry


def fold_text(text: str) -> str:
    """The form text is searched in: NFKC, case-folded, with letters people type
    interchangeably made one (Arabic/Persian yeh and kaf, Cyrillic yo)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    # translating by a table looks up every character: only text that has one of its letters
    return folded.translate(_FOLD_TABLE) if _FOLDED.search(folded) else folded


_FOLD_TABLE = str.maketrans({
    "\u064a": "\u06cc",  # Arabic yeh → Persian yeh
    "\u0649": "\u06cc",  # alef maksura → Persian yeh
    "\u0643": "\u06a9",  # Arabic kaf → Persian keheh
    "\u0451": "\u0435",  # ё → е
    "\u200c": " ",       # zero-width non-joiner → space (Persian half-space)
})
_FOLDED = re.compile("[" + "".join(map(chr, _FOLD_TABLE)) + "]")
