"""YAML → plain Python values, keeping the line and column of every key and value.

PyYAML's composer gives nodes with marks; we construct the values ourselves so each one
can be traced back to its place in the file. Two YAML 1.1 surprises are switched off:
`yes`/`no`/`on`/`off` stay strings (only `true`/`false` are booleans, as in YAML 1.2),
and a key written twice in one mapping is an error instead of a silent overwrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import Diagnostic

Path_ = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose booleans are only true/false."""


#: the same loader over libyaml's parser (PyYAML's C extension, in its wheels): PyYAML's
#: pure-Python scanner was most of loading a setup — of `check`, `serve` and every engine's
#: start (the default setup: 50 → 14 ms). A file it refuses is parsed again by `_Loader`,
#: whose error messages the diagnostics are written for (tests/test_yaml_source.py: both
#: read every file alike, values and marks).
_FastLoader: type[yaml.SafeLoader] = _Loader
if getattr(yaml, "__with_libyaml__", False):
    class _CLoader(yaml.CSafeLoader):
        """CSafeLoader whose booleans are only true/false."""

    _FastLoader = _CLoader  # type: ignore[assignment]

_LOADERS: tuple[type[yaml.SafeLoader], ...] = (_Loader, _FastLoader)
for _loader in _LOADERS:
    _loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )


@dataclass
class SourceFile:
    """One parsed YAML file: its data and where each path sits in it."""

    name: str
    data: Any
    value_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def line_of(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Line and column of a path's value (or its key); falls back to the nearest parent."""
        marks = self.key_marks if key else self.value_marks
        probe = tuple(path)
        while probe:
            if probe in marks:
                return marks[probe]
            if not key and probe in self.key_marks:
                return self.key_marks[probe]
            probe = probe[:-1]
        return self.value_marks.get((), (1, 1))

    def diagnostic(
        self,
        code: str,
        path: Path_,
        message: str,
        hint: str = "",
        *,
        at_key: bool = False,
        severity: str = "error",
    ) -> Diagnostic:
        line, column = self.line_of(path, key=at_key)
        return Diagnostic(
            code=code,
            message=message,
            file=self.name,
            line=line,
            column=column,
            path=tuple(path),
            hint=hint,
            severity=severity,
        )


def read_yaml(path: Path, display_name: str) -> tuple[SourceFile | None, list[Diagnostic]]:
    """Parse one file. Returns the source (None when unreadable) and any problems found."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [
            Diagnostic("yaml.encoding", f"is not UTF-8 text ({exc.reason})", display_name, 1, 1,
                       hint="save the file as UTF-8")
        ]
    except OSError as exc:
        return None, [Diagnostic("yaml.unreadable", f"cannot be read: {exc.strerror}", display_name)]
    try:
        loader, node = _compose(_FastLoader, text)
    except yaml.YAMLError:  # said as PyYAML's own parser says it
        try:
            loader, node = _compose(_Loader, text)
        except yaml.MarkedYAMLError as exc:
            return None, [_syntax_diagnostic(exc, text, display_name)]
        except yaml.YAMLError as exc:
            return None, [Diagnostic("yaml.syntax", f"is not valid YAML: {exc}", display_name,
                                     1, 1, hint="check the indentation and quoting")]
    source = SourceFile(display_name, None)
    problems: list[Diagnostic] = []
    if node is None:
        source.data = None
        return source, problems
    source.data = _construct(loader, node, (), source, problems)
    return source, problems


def _compose(kind: type[yaml.SafeLoader], text: str) -> tuple[yaml.SafeLoader, yaml.Node | None]:
    """The loader (for its constructors) and the one document's node tree of `text`."""
    loader = kind(text)
    try:
        return loader, loader.get_single_node()
    finally:
        loader.dispose()


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, source: SourceFile,
               problems: list[Diagnostic]) -> Any:
    source.value_marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(source.diagnostic(
                    "yaml.key", path, "keys must be plain names, not lists or mappings"))
                continue
            key, problem = _scalar(loader, key_node)
            if problem is not None:
                key = key_node.value
            if not isinstance(key, str):
                key = str(key) if key is not None else "null"
            key_path = (*path, key)
            if key in result:
                # the first occurrence keeps its marks: its value is the one loaded
                first = source.key_marks.get(key_path, (0, 0))[0]
                problems.append(Diagnostic(
                    "yaml.duplicate_key",
                    f"key {key!r} is written twice in this mapping (first on line {first})",
                    source.name, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                    key_path, "keep one of them, or rename this one"))
                continue
            source.key_marks[key_path] = (key_node.start_mark.line + 1,
                                          key_node.start_mark.column + 1)
            result[key] = _construct(loader, value_node, key_path, source, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*path, index), source, problems)
            for index, item in enumerate(node.value)
        ]
    value, problem = _scalar(loader, node)
    if problem is not None:
        problems.append(Diagnostic("yaml.value", problem[0], source.name,
                                   node.start_mark.line + 1, node.start_mark.column + 1,
                                   tuple(path), problem[1]))
    return value


def _scalar(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, tuple[str, str] | None]:
    """A scalar's value, or None and (message, hint) when YAML cannot build it."""
    try:
        return loader.construct_object(node), None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = ("a setup is plain YAML: remove the '!' tag" if "tag" in problem
                else "check how this value is written")
        return None, (f"cannot be read: {problem}", hint)
    except (ValueError, OverflowError) as exc:
        # a date-like scalar that is no real date: 2024-13-45
        if node.tag.endswith(":timestamp"):
            return None, (f"{node.value!r} is not a real date or time ({exc})",
                          "write a real date as YYYY-MM-DD, or quote the text: '...'")
        return None, (f"{node.value!r} cannot be read ({exc})", "quote the text: '...'")


#: PyYAML's problem text → what to do about it, in the setup author's terms.
_SYNTAX_HINTS = (
    ("found character '\\t'", "indent with spaces: YAML does not allow tab characters"),
    ("mapping values are not allowed",
     "a second ': ' on one line: quote a value that contains ': ', e.g. title: \"a: b\""),
    ("expected <block end>",
     "this line is indented differently from the lines above it: keys of one mapping "
     "start in the same column"),
    ("expected '<document start>'",
     "this line is indented differently from the lines above it: top-level keys start "
     "in the first column"),
    ("undefined alias", "'*name' needs an anchor '&name' earlier; quote the text if '*' is meant"),
)


def _syntax_diagnostic(exc: yaml.MarkedYAMLError, text: str, display_name: str) -> Diagnostic:
    """A parser error, placed where the author should look.

    The problem mark is where the parser gave up; when that is the end of the file (an
    unclosed quote or bracket), the context mark (where the quote or bracket opened) is
    the useful place. A context on another line is named in the message either way.
    """
    problem = exc.problem or "invalid YAML"
    problem_mark, context_mark = exc.problem_mark, exc.context_mark
    mark = problem_mark or context_mark
    if problem_mark is not None and context_mark is not None and problem_mark.index >= len(text):
        mark = context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = f"is not valid YAML: {problem}"
    context = re.sub(r"^while (parsing|scanning) (an? )?", "", exc.context or "").strip()
    opened = context_mark.line + 1 if context_mark is not None else 0
    if context and opened and opened != line:
        message += f" (in the {context} that starts on line {opened})"
    hint = "check the indentation and quoting on this line"
    if "quoted scalar" in context:
        hint = f"the quote opened on line {opened} is not closed"
    elif "flow mapping" in context or "flow sequence" in context:
        bracket = "{" if "mapping" in context else "["
        closing = "}" if bracket == "{" else "]"
        hint = (f"the '{bracket}' opened on line {opened} needs a '{closing}' on its line, "
                "or a comma is missing between its entries")
    else:
        for needle, text_hint in _SYNTAX_HINTS:
            if needle in problem:
                hint = text_hint
                break
    return Diagnostic("yaml.syntax", message, display_name, line, column, hint=hint)
