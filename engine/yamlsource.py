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


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
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
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = exc.problem or "invalid YAML"
        return None, [
            Diagnostic("yaml.syntax", f"is not valid YAML: {problem}", display_name, line, column,
                       hint="check the indentation and quoting on this line")
        ]
    except yaml.YAMLError as exc:
        return None, [Diagnostic("yaml.syntax", f"is not valid YAML: {exc}", display_name)]
    finally:
        loader.dispose()
    source = SourceFile(display_name, None)
    problems: list[Diagnostic] = []
    if node is None:
        source.data = None
        return source, problems
    source.data = _construct(loader, node, (), source, problems)
    return source, problems


def _construct(loader: _Loader, node: yaml.Node, path: Path_, source: SourceFile,
               problems: list[Diagnostic]) -> Any:
    source.value_marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(source.diagnostic(
                    "yaml.key", path, "keys must be plain names, not lists or mappings"))
                continue
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key) if key is not None else "null"
            key_path = (*path, key)
            if key in result:
                first = source.key_marks.get(key_path, (0, 0))[0]
                source.key_marks[key_path] = (key_node.start_mark.line + 1,
                                              key_node.start_mark.column + 1)
                problems.append(source.diagnostic(
                    "yaml.duplicate_key", key_path,
                    f"key {key!r} is written twice in this mapping (first on line {first})",
                    "keep one of them", at_key=True))
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
    try:
        return loader.construct_object(node)
    except yaml.YAMLError as exc:
        problems.append(source.diagnostic("yaml.value", path, f"cannot be read: {exc}"))
        return None
