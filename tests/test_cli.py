"""The command line, run for real: `kartoteka check | migrate | serve` (SPEC §3).

Most tests call the click command in-process (CliRunner, stdout and stderr apart); one
runs the installed console script to prove the entry point itself works.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from engine import check_setup
from kartoteka.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETUP = ROOT / "schemas"
BROKEN = ROOT / "tests" / "broken_setups"
ENTITIES = ("client", "sale", "supplier", "product", "logistics", "document", "task")
SALE_STAGES = "lead → proposal → negotiation → contract → invoiced → won → lost"

CLIENT = """
    entity: client
    title: "{name}"
    fields:
      name: {type: string, required: true}
      city: {type: string}
"""
SALE = """
    entity: sale
    fields:
      number: {type: string, required: true}
    links:
      client: {to: client, required: true, reverse: sales}
    pipeline:
      stages: [lead, won, lost]
      final: [won, lost]
"""


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def tables_in(db_file: Path) -> list[str]:
    if not db_file.exists():
        return []
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return sorted(name for (name,) in rows)


# -- check ------------------------------------------------------------------------------------

def test_check_default_setup_with_the_installed_script() -> None:
    script = Path(sys.executable).with_name("kartoteka")
    done = subprocess.run([str(script), "check", str(DEFAULT_SETUP)], capture_output=True,
                          text=True, encoding="utf-8", timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "7 entities" in done.stdout and "OK" in done.stdout
    for entity in ENTITIES:
        assert f"  {entity}: " in done.stdout
    assert SALE_STAGES in done.stdout


def test_check_broken_setup_prints_every_diagnostic_and_exits_1() -> None:
    folder = BROKEN / "several_errors_in_several_files" / "setup"
    result = run("check", folder)
    assert result.exit_code == 1
    errors = check_setup(folder).errors
    assert len(errors) == 7
    printed = result.stderr.splitlines()
    for error in errors:
        line = f"{error.file}:{error.line} {error.key}: {error.message}; {error.hint}"
        assert line in printed, result.stderr
    assert "sale.yaml:6 links.supplier.to: no entity 'suplier'" in result.stderr
    assert "setup.yaml:3 nmae: unknown key 'nmae'; did you mean 'name'?" in result.stderr
    assert "7 error(s); nothing was loaded." in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_check_prints_the_spec_example() -> None:
    result = run("check", BROKEN / "link_unknown_entity" / "setup")
    assert result.exit_code == 1
    assert "sale.yaml:14 links.client.to: no entity 'clients'; did you mean 'client'?" in result.stderr


def test_check_json_is_parseable() -> None:
    result = run("check", "--json", BROKEN / "several_errors_in_several_files" / "setup")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    errors = [d for d in report["diagnostics"] if d["severity"] == "error"]
    assert len(errors) == 7
    for diagnostic in errors:
        assert set(diagnostic) >= {"code", "file", "line", "column", "key", "message", "hint"}
        assert diagnostic["file"] and diagnostic["line"] > 0
    assert {"code": "link.target", "file": "sale.yaml", "line": 6, "key": "links.supplier.to"}.items() \
        <= next(d for d in errors if d["code"] == "link.target").items()


def test_check_json_on_a_good_setup() -> None:
    result = run("check", "--json", DEFAULT_SETUP)
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert all(d["severity"] != "error" for d in report["diagnostics"])


def test_check_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    result = run("check", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_check_a_yaml_syntax_error_is_a_message_not_a_traceback() -> None:
    result = run("check", BROKEN / "yaml_syntax_error" / "setup")
    assert result.exit_code == 1
    assert result.stderr.startswith("client.yaml:4: is not valid YAML:")
    assert "line 3" in result.stderr
    assert "Traceback" not in result.stderr


# -- migrate ----------------------------------------------------------------------------------

def test_migrate_plan_lists_steps_and_changes_nothing(tmp_path: Path) -> None:
    db_file = tmp_path / "plan.db"
    result = run("migrate", DEFAULT_SETUP, "--db", f"sqlite:///{db_file}", "--plan")
    assert result.exit_code == 0, result.output + result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    for entity in ENTITIES:
        assert any(line.startswith(f"+ create table {entity} (") for line in steps), result.stdout
    assert tables_in(db_file) == []


def test_migrate_creates_tables_then_has_nothing_to_do(tmp_path: Path) -> None:
    db_file = tmp_path / "crm.db"
    url = f"sqlite:///{db_file}"
    first = run("migrate", DEFAULT_SETUP, "--db", url)
    assert first.exit_code == 0, first.output + first.stderr
    assert "+ create table sale (" in first.stdout
    assert "Applied" in first.stdout
    assert set(ENTITIES) <= set(tables_in(db_file))

    second = run("migrate", DEFAULT_SETUP, "--db", url)
    assert second.exit_code == 0, second.output + second.stderr
    assert not [line for line in second.stdout.splitlines() if line.startswith("+ ")]
    assert "matches the setup" in second.stdout

    plan = run("migrate", DEFAULT_SETUP, "--db", url, "--plan")
    assert plan.exit_code == 0
    assert "nothing to do" in plan.stdout


def test_migrate_takes_the_database_from_the_environment(tmp_path: Path) -> None:
    db_file = tmp_path / "env.db"
    result = CliRunner(env={"KARTOTEKA_DATABASE_URL": f"sqlite:///{db_file}"}).invoke(
        main, ["migrate", str(DEFAULT_SETUP)], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    assert "client" in tables_in(db_file)


def test_migrate_a_broken_setup_touches_no_database(tmp_path: Path) -> None:
    db_file = tmp_path / "broken.db"
    result = run("migrate", BROKEN / "link_unknown_entity" / "setup", "--db", f"sqlite:///{db_file}")
    assert result.exit_code == 1
    assert "sale.yaml:14 links.client.to: no entity 'clients'" in result.stderr
    assert tables_in(db_file) == []


def test_migrate_refuses_to_add_a_column_to_an_existing_table(
        tmp_path: Path, write_setup: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    folder = write_setup({"client.yaml": CLIENT, "sale.yaml": SALE})
    assert run("migrate", folder, "--db", url).exit_code == 0

    write_setup({"client.yaml": textwrap.dedent(CLIENT) + "  phone: {type: phone}\n"})
    result = run("migrate", folder, "--db", url)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert "refuses" in result.stderr
    assert "table client has no column phone" in result.stderr
    assert "migrations feature" in result.stderr  # why, and what will lift it

    plan = run("migrate", folder, "--db", url, "--plan")
    assert plan.exit_code == 1
    assert "! table client has no column phone" in plan.stdout


def test_migrate_refuses_to_drop_a_column(tmp_path: Path, write_setup: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    folder = write_setup({"client.yaml": CLIENT, "sale.yaml": SALE})
    assert run("migrate", folder, "--db", url).exit_code == 0

    write_setup({"client.yaml": CLIENT.replace("      city: {type: string}\n", "")})
    result = run("migrate", folder, "--db", url)
    assert result.exit_code == 1
    assert "column client.city is in the database but not in the setup" in result.stderr
    assert "lose its data" in result.stderr


# -- serve ------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_serve_refuses_a_non_loopback_host(host: str, tmp_path: Path) -> None:
    result = run("serve", DEFAULT_SETUP, "--db", f"sqlite:///{tmp_path / 'x.db'}", "--host", host)
    assert result.exit_code == 1
    assert f"refusing to serve on {host}" in result.stderr
    assert "127.0.0.1" in result.stderr


def test_usage_errors_exit_2() -> None:
    result = run("check")
    assert result.exit_code == 2
    assert "SETUP" in result.stderr
