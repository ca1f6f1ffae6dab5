"""The formula language: parse, type-check and compile an expression such as
`amount * (1 - coalesce(client.discount, 0) / 100)` once, when the setup loads.

Why a hand-written tokenizer and Pratt parser rather than Python's `eval` or a parser
library: the language is small (literals, names, eight operator levels, a dozen
functions), every error must point at the column of the formula it is about, and the
parsed tree is compiled to a tree of closures that evaluate with `Decimal` — no code
from a setup ever reaches Python's compiler, and no dependency is added for ~150 lines.

Null propagates as in SQL: an operator or function given null gives null, except
`coalesce` (the first value that is not null), `if` (a null condition takes the else
branch), `concat` (null is empty text), `min`/`max` (nulls are skipped), and `and`/`or`
(three-valued: `false and null` is false, `true or null` is true). Division by zero gives
null. Numbers are exact `Decimal`s; a money or decimal result is rounded to the field's
places half up (ROUND_HALF_UP) when stored — see docs/setup-language.md, "Formula fields".
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

# -- types ----------------------------------------------------------------------------------
INT, NUM, TEXT, BOOL, DATE, DATETIME, DAYS, DURATION, NULL = (
    "integer", "number", "text", "boolean", "date", "datetime", "days", "duration", "null")
NUMERIC = (INT, NUM)
#: the value types a field type gives a formula that reads it (types not listed cannot be read)
FIELD_TYPES: Mapping[str, str] = {
    "integer": INT, "decimal": NUM, "money": NUM, "string": TEXT, "text": TEXT,
    "email": TEXT, "phone": TEXT, "url": TEXT, "choice": TEXT, "boolean": BOOL,
    "date": DATE, "datetime": DATETIME,
}
#: the field types a formula may have, and the value types each accepts as its result
RESULT_TYPES: Mapping[str, tuple[str, ...]] = {
    "money": (INT, NUM), "decimal": (INT, NUM), "integer": (INT,), "string": (TEXT,),
    "text": (TEXT,), "boolean": (BOOL,), "date": (DATE,), "datetime": (DATETIME,),
}
UNITS: Mapping[str, tuple[str, dt.timedelta]] = {
    "day": (DAYS, dt.timedelta(days=1)), "days": (DAYS, dt.timedelta(days=1)),
    "week": (DAYS, dt.timedelta(weeks=1)), "weeks": (DAYS, dt.timedelta(weeks=1)),
    "hour": (DURATION, dt.timedelta(hours=1)), "hours": (DURATION, dt.timedelta(hours=1)),
    "minute": (DURATION, dt.timedelta(minutes=1)),
    "minutes": (DURATION, dt.timedelta(minutes=1)),
}
KEYWORDS = frozenset({"and", "or", "not", "true", "false", "null", "today", "now"})
TODAY, NOW = ":today", ":now"  # keys of the evaluation environment for the clock


class FormulaProblem(Exception):
    """A broken formula: what is wrong, where (0-based character offset), how to fix it."""

    def __init__(self, message: str, position: int, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.position = position
        self.hint = hint


# -- tokens ---------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>[0-9]+(\.[0-9]+)?)
  | (?P<text>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><=|>=|!=|<>|==|[-+*/()<>=,&])
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str  # number | text | name | op | end
    text: str
    position: int


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            char = source[position]
            if char in "'\"":
                raise FormulaProblem("text is not closed", position,
                                     f"end it with {char}; write {char}{char} for {char} inside")
            hint = ("field names are Latin letters, digits and _; write text in quotes: "
                    "'text'" if char.isalpha() else "operators are + - * / & = != < <= > >=")
            raise FormulaProblem(f"unexpected character {char!r}", position, hint)
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group(), position))
        position = match.end()
    tokens.append(Token("end", "", len(source)))
    return tokens


# -- the tree -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    position: int


@dataclass(frozen=True)
class Literal(Node):
    value: Any
    type: str


@dataclass(frozen=True)
class Name(Node):
    path: tuple[str, ...]


@dataclass(frozen=True)
class Clock(Node):
    which: str  # today | now


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Duration(Node):
    amount: Node
    unit: str


@dataclass(frozen=True)
class Call(Node):
    function: str
    args: tuple[Node, ...]


# binding powers: or < and < not < comparison < & < + - < * / < unary minus < unit
_INFIX = {"or": 10, "and": 20, "=": 40, "==": 40, "!=": 40, "<>": 40, "<": 40, "<=": 40,
          ">": 40, ">=": 40, "&": 50, "+": 60, "-": 60, "*": 70, "/": 70}
_SPELLING = {"==": "=", "<>": "!="}


class _Parser:
    def __init__(self, source: str):
        self.tokens = tokenize(source)
        self.index = 0

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, text: str, hint: str) -> Token:
        token = self.take()
        if token.text != text:
            found = repr(token.text) if token.kind != "end" else "the end of the formula"
            raise FormulaProblem(f"expected {text!r}, found {found}", token.position, hint)
        return token

    def parse(self) -> Node:
        node = self.expression(0)
        token = self.peek()
        if token.kind != "end":
            raise FormulaProblem(f"unexpected {token.text!r}", token.position,
                                 "join values with an operator: + - * / & and or")
        return node

    def expression(self, power: int) -> Node:
        node = self.prefix()
        while True:
            token = self.peek()
            if token.kind == "name" and token.text in UNITS:
                self.take()
                node = Duration(token.position, node, token.text)
                continue
            op = token.text if token.kind in ("op", "name") else ""
            bound = _INFIX.get(op)
            if bound is None or bound <= power:
                return node
            self.take()
            right = self.expression(bound)
            node = Binary(token.position, _SPELLING.get(op, op), node, right)

    def prefix(self) -> Node:
        token = self.take()
        if token.kind == "number":
            number = Decimal(token.text)
            return Literal(token.position, int(token.text) if "." not in token.text else number,
                           INT if "." not in token.text else NUM)
        if token.kind == "text":
            quote = token.text[0]
            return Literal(token.position, token.text[1:-1].replace(quote * 2, quote), TEXT)
        if token.text == "(":
            node = self.expression(0)
            self.expect(")", "close the bracket")
            return node
        if token.text == "-":
            return Unary(token.position, "-", self.expression(80))
        if token.text == "+":
            return self.expression(80)
        if token.kind == "name":
            word = token.text
            if word == "not":
                return Unary(token.position, "not", self.expression(30))
            if word in ("true", "false"):
                return Literal(token.position, word == "true", BOOL)
            if word == "null":
                return Literal(token.position, None, NULL)
            if word in ("today", "now"):
                if self.peek().text == "(":  # today() reads as today
                    self.take()
                    self.expect(")", f"write {word} or {word}()")
                return Clock(token.position, word)
            if self.peek().text == "(":
                self.take()
                args: list[Node] = []
                if self.peek().text != ")":
                    args.append(self.expression(0))
                    while self.peek().text == ",":
                        self.take()
                        args.append(self.expression(0))
                self.expect(")", "separate the arguments with commas and close the bracket")
                return Call(token.position, word, tuple(args))
            return Name(token.position, tuple(word.split(".")))
        found = "the end of the formula" if token.kind == "end" else repr(token.text)
        raise FormulaProblem(f"expected a value, found {found}", token.position,
                             "a value is a number, 'text', a field name, or a function call")


def parse(source: str) -> Node:
    """The tree of one formula, or a `FormulaProblem` pointing at the broken place."""
    return _Parser(source).parse()


# -- type checking --------------------------------------------------------------------------
#: resolves a field path (`client.discount`) to its value type; raises FormulaProblem
Resolver = Callable[[tuple[str, ...], int], str]


@dataclass(frozen=True)
class Typed:
    """A checked formula: its result type and the field paths it reads."""

    tree: Node
    type: str
    paths: frozenset[tuple[str, ...]]
    uses_clock: bool


_FUNCTIONS = ("if", "coalesce", "round", "min", "max", "abs", "len", "upper", "lower",
              "concat", "date")


def check(tree: Node, resolve: Resolver) -> Typed:
    checker = _Checker(resolve)
    kind = checker.type_of(tree)
    return Typed(tree, kind, frozenset(checker.paths), checker.clock)


def _unify(kinds: Sequence[str], position: int, what: str) -> str:
    known = [k for k in kinds if k != NULL]
    if not known:
        return NULL
    if all(k in NUMERIC for k in known):
        return INT if all(k == INT for k in known) else NUM
    if all(k == known[0] for k in known):
        return known[0]
    raise FormulaProblem(f"{what} mixes {' and '.join(sorted(set(known)))}", position,
                         "give every branch the same kind of value")


class _Checker:
    def __init__(self, resolve: Resolver):
        self.resolve = resolve
        self.paths: set[tuple[str, ...]] = set()
        self.clock = False

    def type_of(self, node: Node) -> str:
        method: Callable[[Any], str] = getattr(self, "_" + type(node).__name__.lower())
        return method(node)

    def _literal(self, node: Literal) -> str:
        return node.type

    def _name(self, node: Name) -> str:
        kind = self.resolve(node.path, node.position)
        self.paths.add(node.path)
        return kind

    def _clock(self, node: Clock) -> str:
        self.clock = True
        return DATE if node.which == "today" else DATETIME

    def _duration(self, node: Duration) -> str:
        kind = self.type_of(node.amount)
        if kind not in (INT, NULL):
            raise FormulaProblem(f"a duration counts whole {node.unit}, not {_a(kind)}",
                                 node.amount.position, f"write 30 {node.unit}, or round(x) {node.unit}")
        return UNITS[node.unit][0]

    def _unary(self, node: Unary) -> str:
        kind = self.type_of(node.operand)
        wanted = (BOOL,) if node.op == "not" else (*NUMERIC, DAYS, DURATION)
        if kind not in (*wanted, NULL):
            raise FormulaProblem(f"{node.op!r} needs {_a(wanted[0])}, not {_a(kind)}",
                                 node.position, "")
        return BOOL if node.op == "not" else kind

    def _binary(self, node: Binary) -> str:
        left, right = self.type_of(node.left), self.type_of(node.right)
        op = node.op
        result = _binary_type(op, left, right)
        if result is None:
            hint = ("join texts with &, e.g. first_name & ' ' & last_name"
                    if TEXT in (left, right) and op == "+" else
                    "compare values of the same kind" if _INFIX[op] == 40 else
                    "date - date gives days; date ± 3 days, datetime ± 2 hours"
                    if {left, right} & {DATE, DATETIME, DAYS, DURATION} else
                    "use numbers here")
            raise FormulaProblem(f"cannot apply {op!r} to {_a(left)} and {_a(right)}",
                                 node.position, hint)
        return result

    def _call(self, node: Call) -> str:
        name, args = node.function, node.args
        if name not in _FUNCTIONS:
            from engine.setup.names import did_you_mean
            raise FormulaProblem(f"no function {name!r}", node.position,
                                 did_you_mean(name, _FUNCTIONS)
                                 or "functions: " + ", ".join(_FUNCTIONS))
        kinds = [self.type_of(arg) for arg in args]
        arity = {"if": (3, 3), "round": (1, 2), "abs": (1, 1), "len": (1, 1), "upper": (1, 1),
                 "lower": (1, 1), "date": (1, 1)}.get(name, (1, 99))
        if not arity[0] <= len(args) <= arity[1]:
            count = str(arity[0]) if arity[0] == arity[1] else f"{arity[0]} to {arity[1]}"
            raise FormulaProblem(f"{name}() takes {count} argument(s), not {len(args)}",
                                 node.position, _USAGE[name])
        if name == "if":
            self._want(args[0], kinds[0], (BOOL,), name)
            return _unify(kinds[1:], node.position, "if()")
        if name in ("coalesce", "min", "max"):
            kind = _unify(kinds, node.position, f"{name}()")
            if name != "coalesce" and kind not in (*NUMERIC, TEXT, DATE, DATETIME, NULL):
                raise FormulaProblem(f"{name}() compares numbers, texts or dates, not {kind}",
                                     node.position, _USAGE[name])
            return kind
        if name == "round":
            self._want(args[0], kinds[0], NUMERIC, name)
            if len(args) == 1:
                return INT
            if not isinstance(args[1], Literal) or args[1].type != INT:
                raise FormulaProblem("round() takes its places as a whole number written out",
                                     args[1].position, _USAGE[name])
            return NUM
        if name == "abs":
            self._want(args[0], kinds[0], NUMERIC, name)
            return kinds[0]
        if name in ("len", "upper", "lower"):
            self._want(args[0], kinds[0], (TEXT,), name)
            return INT if name == "len" else TEXT
        if name == "date":
            self._want(args[0], kinds[0], (DATETIME, DATE), name)
            return DATE
        for arg, kind in zip(args, kinds, strict=True):  # concat
            self._want(arg, kind, (*NUMERIC, TEXT, BOOL, DATE, DATETIME), name)
        return TEXT

    @staticmethod
    def _want(node: Node, kind: str, wanted: tuple[str, ...], function: str) -> None:
        if kind not in (*wanted, NULL):
            raise FormulaProblem(f"{function}() needs {_a(wanted[0])} here, not {_a(kind)}",
                                 node.position, _USAGE[function])


_USAGE = {
    "if": "if(condition, value if true, value otherwise)",
    "coalesce": "coalesce(a, b, ...): the first that is not null",
    "round": "round(x) to a whole number, round(x, 2) to two places",
    "min": "min(a, b, ...)", "max": "max(a, b, ...)", "abs": "abs(x)",
    "len": "len(text)", "upper": "upper(text)", "lower": "lower(text)",
    "concat": "concat(a, b, ...): texts joined, nulls as empty text",
    "date": "date(datetime): its day in UTC",
}


def _binary_type(op: str, left: str, right: str) -> str | None:
    if NULL in (left, right):
        other = right if left == NULL else left
        return BOOL if _INFIX[op] <= 40 else TEXT if op == "&" else other
    if op in ("and", "or"):
        return BOOL if left == right == BOOL else None
    if _INFIX[op] == 40:
        if (left in NUMERIC and right in NUMERIC) or (left == right and left != DURATION):
            return BOOL if op in ("=", "!=") or left != BOOL else None
        return None
    if op == "&":
        return TEXT if DURATION not in (left, right) and DAYS not in (left, right) else None
    if left in NUMERIC and right in NUMERIC:
        if op == "/":
            return NUM
        return INT if left == right == INT else NUM
    table = {
        ("+", DATE, DAYS): DATE, ("+", DAYS, DATE): DATE, ("-", DATE, DAYS): DATE,
        ("-", DATE, DATE): INT,
        ("+", DATETIME, DAYS): DATETIME, ("+", DATETIME, DURATION): DATETIME,
        ("+", DAYS, DATETIME): DATETIME, ("+", DURATION, DATETIME): DATETIME,
        ("-", DATETIME, DAYS): DATETIME, ("-", DATETIME, DURATION): DATETIME,
        ("+", DAYS, DAYS): DAYS, ("-", DAYS, DAYS): DAYS,
        ("+", DURATION, DURATION): DURATION, ("-", DURATION, DURATION): DURATION,
    }
    return table.get((op, left, right))


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


# -- compiling to closures ------------------------------------------------------------------
#: the values a formula reads, by dotted path (`client.discount`), plus the clock keys
Env = Mapping[str, Any]
Evaluator = Callable[[Env], Any]


def compile_tree(tree: Node) -> Evaluator:
    """A closure computing the formula from an environment; built once per formula."""
    return _COMPILERS[type(tree)](tree)


def _c_literal(node: Node) -> Evaluator:
    assert isinstance(node, Literal)
    value = Decimal(node.value) if isinstance(node.value, Decimal) else node.value
    return lambda env: value


def _c_name(node: Node) -> Evaluator:
    assert isinstance(node, Name)
    key = ".".join(node.path)
    return lambda env: env[key]


def _c_clock(node: Node) -> Evaluator:
    assert isinstance(node, Clock)
    key = TODAY if node.which == "today" else NOW
    return lambda env: env[key]


def _c_duration(node: Node) -> Evaluator:
    assert isinstance(node, Duration)
    amount, step = compile_tree(node.amount), UNITS[node.unit][1]

    def duration(env: Env) -> Any:
        count = amount(env)
        return None if count is None else step * count
    return duration


def _c_unary(node: Node) -> Evaluator:
    assert isinstance(node, Unary)
    operand = compile_tree(node.operand)
    if node.op == "not":
        return lambda env: None if (v := operand(env)) is None else not v
    return lambda env: None if (v := operand(env)) is None else -v


def _divide(a: Any, b: Any) -> Any:
    if not b:
        return None
    if type(a) is int and type(b) is int:
        return Decimal(a) / b
    return a / b  # Decimal with int or Decimal: exact to the context's precision


def _subtract(a: Any, b: Any) -> Any:
    result = a - b
    if type(result) is dt.timedelta and type(a) is dt.date:
        return result.days  # date - date: whole days
    return result


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


_OPERATIONS: Mapping[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": _subtract, "*": operator.mul, "/": _divide,
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge, "&": lambda a, b: _text(a) + _text(b),
}


def _c_binary(node: Node) -> Evaluator:
    assert isinstance(node, Binary)
    left, right = compile_tree(node.left), compile_tree(node.right)
    if node.op == "and":
        def both(env: Env) -> Any:
            a = left(env)
            if a is False:
                return False
            b = right(env)
            return False if b is False else None if a is None or b is None else True
        return both
    if node.op == "or":
        def either(env: Env) -> Any:
            a = left(env)
            if a is True:
                return True
            b = right(env)
            return True if b is True else None if a is None or b is None else False
        return either
    operation = _OPERATIONS[node.op]
    if isinstance(node.right, Literal) and node.right.value is not None:
        constant = compile_tree(node.right)(None)  # type: ignore[arg-type]

        def with_constant(env: Env) -> Any:
            a = left(env)
            return None if a is None else operation(a, constant)
        return with_constant
    if isinstance(node.left, Literal) and node.left.value is not None:
        first = compile_tree(node.left)(None)  # type: ignore[arg-type]

        def after_constant(env: Env) -> Any:
            b = right(env)
            return None if b is None else operation(first, b)
        return after_constant

    def apply(env: Env) -> Any:
        a = left(env)
        if a is None:
            return None
        b = right(env)
        return None if b is None else operation(a, b)
    return apply


def _c_call(node: Node) -> Evaluator:
    assert isinstance(node, Call)
    args = [compile_tree(arg) for arg in node.args]
    name = node.function
    if name == "if":
        condition, then, otherwise = args
        return lambda env: then(env) if condition(env) is True else otherwise(env)
    if name == "coalesce" and len(args) == 2:
        head, tail = args
        return lambda env: tail(env) if (v := head(env)) is None else v
    if name == "coalesce":
        def coalesce(env: Env) -> Any:
            for arg in args:
                value = arg(env)
                if value is not None:
                    return value
            return None
        return coalesce
    if name in ("min", "max"):
        pick = min if name == "min" else max

        def extreme(env: Env) -> Any:
            values = [v for v in (arg(env) for arg in args) if v is not None]
            return pick(values) if values else None
        return extreme
    if name == "concat":
        return lambda env: "".join(_text(v) for v in (arg(env) for arg in args) if v is not None)
    if name == "round":
        value = args[0]
        places = node.args[1].value if len(node.args) == 2 else 0  # type: ignore[attr-defined]
        quantum = Decimal(1).scaleb(-places)
        if len(node.args) == 1:
            return lambda env: None if (v := value(env)) is None else int(
                Decimal(v).quantize(quantum, ROUND_HALF_UP))
        return lambda env: None if (v := value(env)) is None else Decimal(v).quantize(
            quantum, ROUND_HALF_UP)
    single: Mapping[str, Callable[[Any], Any]] = {
        "abs": abs, "len": len, "upper": str.upper, "lower": str.lower,
        "date": lambda v: v.astimezone(dt.UTC).date() if isinstance(v, dt.datetime) else v,
    }
    function, arg = single[name], args[0]
    return lambda env: None if (v := arg(env)) is None else function(v)


_COMPILERS: Mapping[type, Callable[[Node], Evaluator]] = {
    Literal: _c_literal, Name: _c_name, Clock: _c_clock, Duration: _c_duration,
    Unary: _c_unary, Binary: _c_binary, Call: _c_call,
}


# -- a formula field ------------------------------------------------------------------------
@dataclass(frozen=True)
class Formula:
    """A formula field's checked expression: what it reads and how it is computed.

    `paths` are the field paths it reads (`("amount",)`, `("client", "discount")`);
    `evaluate` takes them by dotted name, plus `:today`/`:now` when `uses_clock`."""

    source: str
    type: str
    paths: frozenset[tuple[str, ...]]
    uses_clock: bool
    evaluate: Evaluator = field(compare=False, repr=False)


def compile_formula(source: str, resolve: Resolver) -> Formula:
    """Parse, check and compile one formula; `FormulaProblem` says what is broken where."""
    typed = check(parse(source), resolve)
    return Formula(source, typed.type, typed.paths, typed.uses_clock, compile_tree(typed.tree))


def finish(value: Any, field_type: str, places: int | None) -> Any:
    """A computed value as the field stores it: numbers exact at the field's places,
    rounded half up; a whole number for an integer field."""
    if value is None:
        return None
    if field_type in ("money", "decimal"):
        try:
            return Decimal(value).quantize(Decimal(1).scaleb(-(places or 0)), ROUND_HALF_UP)
        except InvalidOperation:
            raise ValueError("is too large for the field") from None
    return value
