"""Broken setups: every problem is reported at once, each naming file, line, key, what is
wrong and what would be right; a setup with an error is never half-loaded.

Each folder under `tests/broken_setups/` is one case: `setup/` holds the broken setup and
`expected.yaml` lists the errors it must produce, exactly (no more, no fewer):

    errors:
      - file: sale.yaml            # `<setup>` for a problem with the folder itself
        line: 14
        key: links.client.to       # Diagnostic.key: dotted path, list positions as [2]
        code: link.target
        message: "no entity 'clients'"     # a substring of the message
        hint: "did you mean 'client'?"     # a substring of the hint

To add a case, add a folder; the tests below pick it up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import Diagnostic, SetupError, check_setup, load_setup

CASES_DIR = Path(__file__).resolve().parent / "broken_setups"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "expected.yaml").is_file())
FOLDER = "<setup>"  # in expected.yaml: the diagnostic names the setup folder itself


def _expected(case: str) -> list[dict[str, Any]]:
    data = yaml.safe_load((CASES_DIR / case / "expected.yaml").read_text(encoding="utf-8"))
    errors: list[dict[str, Any]] = data["errors"]
    return errors


def _file_of(expected: dict[str, Any], folder: Path) -> str:
    return str(folder) if expected["file"] == FOLDER else str(expected["file"])


def _listing(diagnostics: list[Diagnostic]) -> str:
    return "\n".join(f"  [{d.code}] {d.file}:{d.line} {d.key!r}: {d.message}; {d.hint}"
                     for d in diagnostics)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30
    for case in CASES:
        assert (CASES_DIR / case / "setup").is_dir(), case
        assert _expected(case), f"{case}/expected.yaml lists no errors"


@pytest.mark.parametrize("case", CASES)
def test_broken_setup_reports_every_error_with_its_place(case: str) -> None:
    folder = CASES_DIR / case / "setup"
    result = check_setup(folder)

    assert result.setup is None, "a setup with an error must not load"
    errors = result.errors
    expected = _expected(case)
    unmatched = list(errors)
    for want in expected:
        where = (_file_of(want, folder), want["line"], want["key"], want["code"])
        found = [d for d in unmatched if (d.file, d.line, d.key, d.code) == where]
        assert found, f"no error at {where}; got:\n{_listing(errors)}"
        diagnostic = found[0]
        unmatched.remove(diagnostic)
        assert want["message"] in diagnostic.message, _listing([diagnostic])
        assert want.get("hint", "") in diagnostic.hint, _listing([diagnostic])
    assert not unmatched, f"errors not in {case}/expected.yaml:\n{_listing(unmatched)}"


@pytest.mark.parametrize("case", CASES)
def test_every_error_has_a_place_and_a_way_out(case: str) -> None:
    folder = CASES_DIR / case / "setup"
    for diagnostic in check_setup(folder).errors:
        assert diagnostic.file, diagnostic
        assert diagnostic.message and diagnostic.hint, diagnostic
        if diagnostic.file == str(folder):
            continue  # the folder itself (missing, no entity files) has no line
        assert (folder / diagnostic.file).is_file(), diagnostic
        assert diagnostic.line > 0 and diagnostic.column > 0, diagnostic
        lines = (folder / diagnostic.file).read_text(encoding="utf-8").splitlines() or [""]
        assert diagnostic.line <= len(lines), diagnostic


@pytest.mark.parametrize("case", CASES)
def test_load_setup_raises_with_file_line_key_lines(case: str) -> None:
    folder = CASES_DIR / case / "setup"
    with pytest.raises(SetupError) as raised:
        load_setup(folder)
    text = str(raised.value)
    assert text.startswith(f"{len(_expected(case))} problem(s) in the setup:\n")
    for want in _expected(case):
        where = f"{_file_of(want, folder)}:{want['line']}" if want["line"] else _file_of(want, folder)
        head = f"{where} {want['key']}: " if want["key"] else f"{where}: "
        line = next((ln for ln in text.splitlines() if ln.startswith(head)), None)
        assert line is not None, f"no line starting {head!r} in:\n{text}"
        assert want["message"] in line and want.get("hint", "") in line
    assert {d.code for d in raised.value.diagnostics} >= {w["code"] for w in _expected(case)}


def test_the_spec_example_reads_as_the_spec_writes_it() -> None:
    """SPEC §1: "sale.yaml:14 links.client.to: no entity 'clients'; did you mean 'client'?"."""
    errors = check_setup(CASES_DIR / "link_unknown_entity" / "setup").errors
    assert [str(d) for d in errors] == [
        "sale.yaml:14 links.client.to: no entity 'clients'; did you mean 'client'?"]


def test_errors_are_listed_in_file_and_line_order() -> None:
    errors = check_setup(CASES_DIR / "several_errors_in_several_files" / "setup").errors
    files = [d.file for d in errors]
    assert files[0] == "setup.yaml"
    places = [(d.file, d.line, d.column) for d in errors[1:]]
    assert places == sorted(places)
    assert len(set(files)) == 5


def test_a_missing_folder_is_one_error(tmp_path: Path) -> None:
    result = check_setup(tmp_path / "nowhere")
    assert result.setup is None
    [error] = result.errors
    assert error.code == "setup.missing" and error.file == str(tmp_path / "nowhere")
    assert "does not exist" in error.message and error.hint


def test_non_yaml_files_and_hidden_files_are_ignored(write_setup: Any) -> None:
    folder = write_setup({
        "client.yaml": """
            entity: client
            fields:
              name: {type: string}
        """,
        "README.md": "feilds: this is not a setup file\n",
        ".draft.yaml": "entity: [broken\n",
    })
    result = check_setup(folder)
    assert result.setup is not None, _listing(result.diagnostics)
    assert list(result.setup.entities) == ["client"]


def test_a_fixed_setup_loads(write_setup: Any) -> None:
    """The broken cases are one edit away from loading: the checks are not over-eager."""
    folder = write_setup({
        "client.yaml": """
            entity: client
            title: "{name}"
            search: [name, city]
            fields:
              name: {type: string, required: true}
              city: {type: string}
              kind: {type: choice, options: ['0', '10', '20'], default: '10'}
              inn: {type: string, pattern: '^[0-9]{10}$'}
              signed_on: {type: date, default: 2024-12-31}
        """,
        "sale.yaml": """
            entity: sale
            title: "{number} {client.name}"
            fields:
              number: {type: string}
              contract_no: {type: string, required_in_stages: [contract]}
            links:
              client: {to: client, required: true, on_delete: restrict, reverse: sales}
              payer: {to: client, on_delete: set_null, reverse: paid_sales}
            pipeline:
              stages: [lead, contract, won, lost]
              final: [won, lost]
              transitions: {lead: [contract, lost], contract: [won, lost]}
        """,
        "shipment.yaml": """
            entity: shipment
            fields:
              mode: {type: choice, options: [sea, air]}
            pipelines:
              sea: {stages: [booked, at_sea, delivered]}
              air: {stages: [booked, in_flight, delivered]}
            pipeline_by: mode
        """,
    })
    result = check_setup(folder)
    assert result.setup is not None, _listing(result.diagnostics)
    assert result.errors == []
    assert result.setup.entities["client"].fields["signed_on"].default.isoformat() == "2024-12-31"
