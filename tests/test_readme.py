"""The README's walkthroughs are run, not just read: the printing house's `kartoteka migrate`
commands (with and without `--plan`) and curl calls (through the ASGI app, in the order
shown), and "Who may do what"'s `kartoteka user add` and Anna's calls with her token, must
print what the README shows, on SQLite and on PostgreSQL.

`kartoteka check` outputs are compared by tests/test_docs.py. Here the printing house's
files are written into a temp folder `printshop/`, `sqlite:///shop.db` is replaced by the
test's database, and before comparing: timestamps become `<time>`, the seconds measured in a
stage become `<seconds>`, and a `…` in a shown answer stands for any text. Response headers
shown after `curl -si` must be there with that value (the README leaves out `date`,
`server` and `content-length`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from kartoteka.cli import main
from tests.test_docs import ROOT, Block, Section, sections

README = ROOT / "README.md"
DEFAULT_SETUP = ROOT / "schemas"
WALKTHROUGH = "Five minutes with a new setup: a printing house"
ROLES = "Who may do what"
SHOWN_DB = "sqlite:///shop.db"
SHOWN_ORIGIN = "http://127.0.0.1:8001"
SERVED_DB = "sqlite:///kartoteka.db"  # what ./scripts/serve serves
SERVED_ORIGIN = "http://127.0.0.1:8000"
TOKEN = re.compile(r"(?<![\w-])kt_[A-Za-z0-9_-]{20,}")
#: an invitation link's token (`kartoteka user add` prints one), new each time too
INVITATION = re.compile(r"(?<![\w-])kti_[A-Za-z0-9_-]{20,}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
SECONDS = re.compile(r'"(average_seconds|median_seconds)":\d+(\.\d+)?')


@dataclass
class Command:
    block: Block
    line: str
    output: list[str]


def walkthrough(title: str = WALKTHROUGH) -> Section:
    found = [s for s in sections(README) if s.title == title]
    assert found, f"README.md has no section {title!r}"
    return found[0]


def commands(section: Section) -> Iterator[Command]:
    """Every `$ ...` line of the section's console blocks, with the lines it printed."""
    for block in section.blocks:
        if block.language != "console":
            continue
        current: Command | None = None
        for line in block.lines:
            if line.startswith("$ "):
                if current is not None:
                    yield current
                current = Command(block, line[2:], [])
            elif current is not None:
                current.output.append(line.rstrip())
        if current is not None:
            yield current


@pytest.fixture
def printshop(tmp_path: Path) -> Path:
    folder = tmp_path / "printshop"
    folder.mkdir()
    for name, block in walkthrough().files().items():
        (folder / name).write_text(block.text, encoding="utf-8")
    return folder


def test_the_walkthrough_shows_migrate_and_curl() -> None:
    shown = [c.line.split()[:2] for c in commands(walkthrough())]
    assert ["kartoteka", "migrate"] in shown and ["curl", "-si"] in shown, shown


def _migrate(command: Command, folder: Path, db_url: str) -> None:
    args = shlex.split(command.line)[1:]
    args = [str(folder) if a == folder.name else db_url if a == SHOWN_DB else a for a in args]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    actual = [line.rstrip() for line in result.output.splitlines()]
    assert actual == command.output, (
        f"README.md, block at line {command.block.line}: `{command.line}` prints something "
        "else now; the real output is:\n" + "\n".join(actual))


@dataclass
class Curl:
    method: str
    path: str
    headers: dict[str, str]
    body: str | None
    show_headers: bool


def parse_curl(line: str, origin: str = SHOWN_ORIGIN) -> Curl:
    words = shlex.split(line)[1:]
    method, headers, body, url, show = "GET", {}, None, "", False
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-X":
            method, index = words[index + 1], index + 1
        elif word == "-H":
            name, _, value = words[index + 1].partition(":")
            headers[name.strip()] = value.strip()
            index += 1
        elif word == "-d":
            body, index = words[index + 1], index + 1
            method = "POST" if method == "GET" else method
        elif word.startswith("-"):
            show = show or "i" in word
        else:
            url = word
        index += 1
    assert url.startswith(origin), url
    return Curl(method, url[len(origin):], headers, body, show)


def _normal(text: str) -> str:
    return SECONDS.sub(r'"\1":<seconds>', TIME.sub("<time>", text))


def _answer_matches(shown: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in _normal(shown).split("…"))
    return re.fullmatch(pattern, _normal(actual), re.S) is not None


def _call(client: TestClient, command: Command, origin: str = SHOWN_ORIGIN,
          tokens: dict[str, str] | None = None) -> None:
    """Run one shown curl call; `tokens` maps a token shown in the README to the real one."""
    curl = parse_curl(command.line, origin)
    for name, value in curl.headers.items():
        for shown, real in (tokens or {}).items():
            curl.headers[name] = value.replace(shown, real)
    answer = client.request(curl.method, curl.path, headers=curl.headers,
                            content=curl.body.encode() if curl.body is not None else None)
    where = f"README.md, block at line {command.block.line}: `{command.line[:80]}…`"
    output = list(command.output)
    if curl.show_headers:
        status = output.pop(0).split()
        assert answer.status_code == int(status[1]), f"{where}: {answer.status_code} {answer.text}"
        while output and output[0]:
            name, _, value = output.pop(0).partition(": ")
            assert answer.headers.get(name) == value, f"{where}: header {name} is " \
                f"{answer.headers.get(name)!r}"
        output = output[1:]
    body = "\n".join(output)
    actual = answer.text
    assert answer.status_code < 500, f"{where}: {actual}"
    if body:
        assert _answer_matches(body, actual), f"{where}: the real answer is\n{actual}"
    else:
        assert not actual, f"{where}: the real answer is\n{actual}"


def test_the_walkthrough_prints_what_the_readme_shows(printshop: Path, db_url: str) -> None:
    kt: Kartoteka | None = None
    client: TestClient | None = None
    try:
        for command in commands(walkthrough()):
            words = command.line.split()
            if words[:2] == ["kartoteka", "migrate"]:
                _migrate(command, printshop, db_url)
            elif words[0] == "curl":
                if client is None:
                    kt = Kartoteka.open(printshop, db_url)
                    client = TestClient(create_app(kt), base_url=SHOWN_ORIGIN,
                                        raise_server_exceptions=False)
                _call(client, command)
    finally:
        if kt is not None:
            kt.close()


def test_the_roles_walkthrough_prints_what_the_readme_shows(db_url: str) -> None:
    """`kartoteka user add` on the default setup, then Anna's calls with her token (the
    README's token stands for the real one, which is new each time)."""
    kt = Kartoteka.open(DEFAULT_SETUP, db_url)
    try:
        kt.migrate()
        kt.records.create("client", {"name": "Made before anyone had a token"})
        client = TestClient(create_app(kt), base_url=SERVED_ORIGIN, raise_server_exceptions=False)
        tokens: dict[str, str] = {}
        ran = 0
        for command in commands(walkthrough(ROLES)):
            words = command.line.split()
            if words[:3] == ["kartoteka", "user", "add"]:
                args = [str(DEFAULT_SETUP) if a == "schemas" else db_url if a == SERVED_DB else a
                        for a in shlex.split(command.line)[1:]]
                result = CliRunner().invoke(main, args, catch_exceptions=False)
                assert result.exit_code == 0, result.output
                real = TOKEN.findall(result.output)
                shown = TOKEN.findall("\n".join(command.output))
                assert len(real) == len(shown) == 1, (result.output, command.output)
                tokens[shown[0]] = real[0]
                def masked(text: str) -> str:
                    return INVITATION.sub("<invitation>", TOKEN.sub("<token>", text))
                assert masked(result.output).splitlines() == \
                    [masked(line) for line in command.output], result.output
            elif words[0] == "curl":
                _call(client, command, SERVED_ORIGIN, tokens)
            ran += 1
        assert ran >= 3 and tokens, "the roles walkthrough shows `kartoteka user add` and curl"
    finally:
        kt.close()
