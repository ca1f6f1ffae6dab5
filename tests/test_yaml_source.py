"""A setup's YAML is parsed by libyaml (PyYAML's C extension) when it is installed, and by
PyYAML's own parser when libyaml refuses a file (the diagnostics are written for its
messages): both must read every file alike — the same values, and every key and value at
the same line and column — or a consultant's error would point at another place."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.setup import source
from engine.setup.source import SourceFile, read_yaml

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted([*ROOT.glob("schemas/**/*.yaml"), *ROOT.glob("examples/**/*.yaml")])

TRICKY = {
    "unicode": "label: {ru: Клиент, fa: مشتری, zh: 客户}\nfields:\n  имя: {type: string}\n",
    "crlf": "a: 1\r\nb:\r\n  - x\r\n  - 'y: z'\r\n",
    "bom": "\ufeffname: Ромашка\nlist: [1, 2, 3]\n",
    "anchors": "base: &b {type: string, max_length: 20}\nname: *b\ncode: {<<: *b, unique: true}\n",
    "scalars": ("t: true\nyes_: yes\nno_: no\non_: on\nn: null\ni: 0x1F\nf: 1.5e3\n"
                "d: 2024-05-01\nts: 2024-05-01 10:00:00+03:00\ns: '007'\nq: \"a\\tb\"\n"),
    "blocks": "text: |\n  line one\n  line two\nfolded: >-\n  one\n  two\nempty:\n",
    "flow": "a: {b: [1, {c: d}], e: 'f, g'}\nh: [ ]\ni: { }\n",
    "comments": "# a comment\na: 1  # trailing\n# between\nb:\n  # inside\n  c: 2\n",
    "duplicate": "a: 1\nb: 2\na: 3\n",
    "keys": "1: one\n2024-01-01: day\nnull: nothing\n[a, b]: list\n",
    "bad date": "when: 2024-13-45\n",
    "tag": "a: !python/object {}\n",
}


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[object, ...], tuple[object, ...]]:
    fast = _read(path)
    with monkeypatch.context() as patched:
        patched.setattr(source, "_FastLoader", source._Loader)
        slow = _read(path)
    return fast, slow


def _read(path: Path) -> tuple[object, ...]:
    found, problems = read_yaml(path, path.name)
    assert found is None or isinstance(found, SourceFile)
    return (None if found is None else (found.data, found.value_marks, found.key_marks),
            [(p.code, p.message, p.line, p.column, p.hint) for p in problems])


def test_libyaml_is_there() -> None:
    """The fast path is taken (pyyaml's wheels ship libyaml)."""
    assert yaml.__with_libyaml__ and source._FastLoader is not source._Loader


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_every_setup_file_reads_alike(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _both(path, monkeypatch)
    assert fast == slow


@pytest.mark.parametrize("name", TRICKY)
def test_tricky_yaml_reads_alike(name: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "entity.yaml"
    path.write_bytes(TRICKY[name].encode("utf-8"))
    fast, slow = _both(path, monkeypatch)
    assert fast == slow
    assert fast[0] is not None  # each of them is a document


@pytest.mark.parametrize("text", [
    "a:\n\tb: 1\n", "a: 'open\nb: 2\n", "a: [1, 2\nb: 3\n", "a: b: c\n", "a: *missing\n",
    "- a\nb: 1\n", "a: 1\n---\nb: 2\n",
])
def test_a_file_libyaml_refuses_is_explained_by_pyyaml(text: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "entity.yaml"
    path.write_text(text, encoding="utf-8")
    fast, slow = _both(path, monkeypatch)
    assert fast == slow and fast[0] is None and fast[1][0][0] == "yaml.syntax"
