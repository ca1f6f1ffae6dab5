"""Docs that tests check: README.md and docs/*.md stay true to the code.

Conventions in the Markdown files (fenced code blocks):

- a ```yaml block whose first line is `# file: <name>.yaml` is a file of the setup shown in
  its section (a `#` or `##` heading and everything under it, `###` subsections included);
  each section's files are written into a fresh folder and must pass `engine.check_setup`;
- a ```yaml block whose first line is `# broken: <name>.yaml` shows a mistake: the section's
  files with this one added (or replacing the file of that name) must fail the check;
- a ```console block whose first line is `$ kartoteka check [--json] <folder>` and that
  directly follows one of those yaml blocks (no other code block between them) shows the
  real output of the check on that setup (the good one, or the broken variant just shown):
  the test runs the command and compares the output line by line.

Besides: every field type the registry knows is documented in docs/setup-language.md, and
every filter operator in docs/api.md (each written as `name` in backticks); and every route
of the app generated for the default setup is in docs/api.md in its generic form, with its
method (`POST /api/{e}/{id}/stage`: `{e}` for the entity, `{link}` for a link or way back).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from api import create_app
from engine import Kartoteka, check_setup, default_registry
from engine.types.fields import OPERATORS
from kartoteka.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETUP = ROOT / "schemas"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETUP_LANGUAGE = ROOT / "docs" / "setup-language.md"
API = ROOT / "docs" / "api.md"

FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
MARKER = re.compile(r"^#\s*(?P<kind>file|broken):\s*(?P<name>[a-z][a-z0-9_]*\.ya?ml)\s*$")
CHECK_COMMAND = re.compile(r"^\$ kartoteka check\b(?P<args>.*)$")


@dataclass
class Block:
    language: str
    lines: list[str]
    line: int  # where the block's first content line is, in its document

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass
class Section:
    doc: Path
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}#{self.title}"

    def marked(self, block: Block) -> tuple[str, str] | None:
        """('file' | 'broken', file name) for a marked yaml block, else None."""
        if block.language not in ("yaml", "yml") or not block.lines:
            return None
        match = MARKER.match(block.lines[0].strip())
        return (match["kind"], match["name"]) if match else None

    def files(self) -> dict[str, Block]:
        files: dict[str, Block] = {}
        for block in self.blocks:
            mark = self.marked(block)
            if mark and mark[0] == "file":
                assert mark[1] not in files, (
                    f"{self.id}: {mark[1]} is shown twice as a file of one setup "
                    f"(lines {files[mark[1]].line} and {block.line}); "
                    "use '# broken:' for a variant, or put it under another heading")
                files[mark[1]] = block
        return files


def sections(doc: Path) -> list[Section]:
    """The document cut at `#` and `##` headings, with the code blocks of each part."""
    result = [Section(doc, "(top)")]
    lines = doc.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence:
            closing, body = fence.group(1), []
            start = index + 2
            index += 1
            while index < len(lines) and not lines[index].strip().startswith(closing):
                body.append(lines[index])
                index += 1
            result[-1].blocks.append(Block(fence.group(2).lower(), body, start))
        else:
            heading = HEADING.match(line)
            if heading and len(heading.group(1)) <= 2:
                result.append(Section(doc, heading.group(2)))
        index += 1
    return [s for s in result if s.blocks]


ALL_SECTIONS = [s for doc in DOCS for s in sections(doc)]
SETUP_SECTIONS = [s for s in ALL_SECTIONS if any(s.marked(b) for b in s.blocks)]


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_the_docs_show_setups() -> None:
    shown = {s.doc.name for s in SETUP_SECTIONS}
    assert {"README.md", "setup-language.md"} <= shown, (
        "README.md and docs/setup-language.md show setups as ```yaml blocks whose first line "
        "is '# file: <name>.yaml'")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_marks_are_well_formed(doc: Path) -> None:
    """A yaml block that starts like a mark but is not one would silently go unchecked."""
    for section in sections(doc):
        for block in section.blocks:
            first = block.lines[0].strip() if block.lines else ""
            if block.language in ("yaml", "yml") and re.match(r"#\s*(file|broken)\b", first, re.I):
                assert section.marked(block), (
                    f"{section.id}, line {block.line}: write '# file: name.yaml' "
                    f"or '# broken: name.yaml', not {first!r}")


@pytest.mark.parametrize("section", SETUP_SECTIONS, ids=lambda s: s.id)
def test_setups_shown_in_the_docs(section: Section, tmp_path: Path) -> None:
    files = {name: block.text for name, block in section.files().items()}
    if files:
        result = check_setup(write(tmp_path / "good", files))
        assert result.setup is not None, (
            f"{section.id}: the files shown do not pass `kartoteka check`:\n"
            + "\n".join(str(d) for d in result.errors))
    for number, block in enumerate(section.blocks):
        mark = section.marked(block)
        if mark and mark[0] == "broken":
            variant = {**files, mark[1]: block.text}
            result = check_setup(write(tmp_path / f"broken{number}", variant))
            assert result.setup is not None or result.errors, "unreachable"
            assert result.setup is None, (
                f"{section.id}, line {block.line}: the broken {mark[1]} passes the check")


def _check_outputs(section: Section) -> list[tuple[Block, dict[str, str], Block]]:
    """(console block, the files it checks, the yaml block it follows)."""
    files = {name: block.text for name, block in section.files().items()}
    found = []
    for previous, block in zip(section.blocks, section.blocks[1:], strict=False):
        mark = section.marked(previous)
        if block.language == "console" and block.lines and CHECK_COMMAND.match(block.lines[0]) \
                and mark is not None:
            shown = {**files, mark[1]: previous.text} if mark[0] == "broken" else files
            found.append((block, shown, previous))
    return found


CHECKED_OUTPUTS = [(s, *found) for s in SETUP_SECTIONS for found in _check_outputs(s)]


@pytest.mark.parametrize(("section", "console", "files", "after"), CHECKED_OUTPUTS,
                         ids=[f"{s.id}:{c.line}" for s, c, _, _ in CHECKED_OUTPUTS])
def test_check_outputs_shown_in_the_docs(section: Section, console: Block, files: dict[str, str],
                                         after: Block, tmp_path: Path) -> None:
    match = CHECK_COMMAND.match(console.lines[0])
    assert match is not None
    args = shlex.split(match["args"])
    assert args and not args[-1].startswith("-"), f"{section.id}: name the folder last"
    folder = write(tmp_path / args[-1], files)
    expected = []
    for line in console.lines[1:]:
        if line.startswith("$ "):
            break
        expected.append(line.rstrip())
    result = CliRunner().invoke(main, ["check", *args[:-1], str(folder)])
    actual = [line.rstrip() for line in result.output.splitlines()]
    assert actual == expected, (
        f"{section.id}, line {console.line}: `kartoteka check` prints something else now; "
        "the real output is:\n" + "\n".join(actual))


def _documented(doc: Path) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", doc.read_text(encoding="utf-8")))


def test_every_field_type_is_documented() -> None:
    missing = [name for name in default_registry().names() if name not in _documented(SETUP_LANGUAGE)]
    assert not missing, f"docs/setup-language.md does not document field types: {missing}"


def test_every_filter_operator_is_documented() -> None:
    missing = [op for op in OPERATORS if op not in _documented(API)]
    assert not missing, f"docs/api.md does not document filter operators: {missing}"


def _generic(path: str, kt: Kartoteka) -> str:
    """`/api/sale/{id}/products/{other_id}` -> `/api/{e}/{id}/{link}/{other_id}`, and
    `/api/sale/{id}/links/products` -> `/api/{e}/{id}/links/{link}`."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "api" and parts[2] in kt.setup.entities:
        entity = parts[2]
        parts[2] = "{e}"
        ways = {*kt.setup.entities[entity].links, *kt.setup.reverse_links[entity]}
        if len(parts) > 4 and parts[4] in ways:
            parts[4] = "{link}"
        elif len(parts) > 5 and parts[4] == "links" and parts[5] in ways:
            parts[5] = "{link}"
    return "/".join(parts)


def test_every_route_is_documented(tmp_path: Path) -> None:
    kt = Kartoteka.open(DEFAULT_SETUP, f"sqlite:///{tmp_path / 'docs.db'}")
    try:
        app = create_app(kt)
        calls = {f"GET {app.openapi_url}", "GET /docs"}  # /docs: api.docs, not FastAPI's
        for route in app.routes:
            path = getattr(route, "path", "")
            if path.startswith("/api/") and getattr(route, "include_in_schema", True):
                calls.update(f"{method} {_generic(path, kt)}"
                             for method in getattr(route, "methods", None) or () if method != "HEAD")
    finally:
        kt.close()
    assert any("{link}" in call for call in calls) and any("/board" in call for call in calls)
    text = API.read_text(encoding="utf-8")
    missing = sorted(call for call in calls
                     if not re.search(r"(?<![\w/{}])" + re.escape(call) + r"(?![\w/{}])", text))
    assert not missing, f"docs/api.md does not mention these calls (as `METHOD /path`): {missing}"
