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

from engine import SettingsError, check_setup
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
        assert any(line.startswith(f"+ add entity {entity} (new table") for line in steps), result.stdout
    assert tables_in(db_file) == []


def test_migrate_creates_tables_then_has_nothing_to_do(tmp_path: Path) -> None:
    db_file = tmp_path / "crm.db"
    url = f"sqlite:///{db_file}"
    first = run("migrate", DEFAULT_SETUP, "--db", url)
    assert first.exit_code == 0, first.output + first.stderr
    assert "+ add entity sale (new table" in first.stdout
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


def test_migrate_adds_a_column_to_a_live_table(
        tmp_path: Path, write_setup: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    folder = write_setup({"client.yaml": CLIENT, "sale.yaml": SALE})
    assert run("migrate", folder, "--db", url).exit_code == 0
    with sqlite3.connect(tmp_path / "live.db") as conn:
        conn.execute("INSERT INTO client (created_at, updated_at, version, name) "
                     "VALUES ('2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z', 1, 'Ann')")

    write_setup({"client.yaml": textwrap.dedent(CLIENT) + "  phone: {type: phone, index: true}\n"})
    plan = run("migrate", folder, "--db", url, "--plan")
    assert plan.exit_code == 0, plan.output + plan.stderr
    assert "+ add field client.phone (phone, 1 existing row left empty)" in plan.stdout
    assert "+ add index ix_client_phone on client (phone)" in plan.stdout
    assert "all safe" in plan.stdout

    result = run("migrate", folder, "--db", url)
    assert result.exit_code == 0, result.output + result.stderr
    assert "Applied 2 step(s)." in result.stdout
    assert "nothing to do" in run("migrate", folder, "--db", url, "--plan").stdout
    with sqlite3.connect(tmp_path / "live.db") as conn:
        assert conn.execute("SELECT name, phone FROM client").fetchall() == [("Ann", None)]


def test_migrate_removes_a_column_only_with_the_flag_and_a_backup(
        tmp_path: Path, write_setup: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    folder = write_setup({"client.yaml": CLIENT, "sale.yaml": SALE})
    assert run("migrate", folder, "--db", url).exit_code == 0

    write_setup({"client.yaml": CLIENT.replace("      city: {type: string}\n", "")})
    plan = run("migrate", folder, "--db", url, "--plan")
    assert plan.exit_code == 0
    assert "! remove field client.city (string; 0 values would be lost)" in plan.stdout
    assert "--allow-data-loss" in plan.stdout

    refused = run("migrate", folder, "--db", url)
    assert refused.exit_code == 1
    assert "Traceback" not in refused.stderr
    assert "these steps lose data" in refused.stderr
    assert "remove field client.city" in refused.stderr
    assert "Nothing was changed." in refused.stderr
    assert not list(tmp_path.glob("live.before-migrate-*"))

    applied = run("migrate", folder, "--db", url, "--allow-data-loss")
    assert applied.exit_code == 0, applied.output + applied.stderr
    backups = list(tmp_path.glob("live.before-migrate-*.db"))
    assert len(backups) == 1
    assert f"Backup written first: {backups[0]}" in applied.stdout
    with sqlite3.connect(backups[0]) as conn:
        assert "city" in [row[1] for row in conn.execute("PRAGMA table_info(client)")]

    history = run("migrate", folder, "--db", url, "--history")
    assert history.exit_code == 0
    assert history.stdout.count("\n#") + history.stdout.startswith("#") == 2
    assert "with --allow-data-loss" in history.stdout
    assert f"backup: {backups[0]}" in history.stdout
    entries = json.loads(run("migrate", folder, "--db", url, "--history", "--json").stdout)
    assert [len(e["steps"]) > 0 for e in entries] == [True, True]


def test_migrate_plan_names_refusals_in_plain_words(
        tmp_path: Path, write_setup: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    folder = write_setup({"client.yaml": CLIENT, "sale.yaml": SALE})
    assert run("migrate", folder, "--db", url).exit_code == 0
    with sqlite3.connect(tmp_path / "live.db") as conn:
        for name, city in (("Ann", "Kazan"), ("Ann", None), ("Bob", "x1")):
            conn.execute("INSERT INTO client (created_at, updated_at, version, name, city) VALUES "
                         "('2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z', 1, ?, ?)",
                         (name, city))
    write_setup({"client.yaml": CLIENT.replace("required: true}", "required: true, unique: true}")
                 .replace("city: {type: string}", "city: {type: integer, required: true}")})
    plan = run("migrate", folder, "--db", url, "--plan")
    assert plan.exit_code == 1
    assert ('x make field client.name unique (1 value appears more than once: "Ann" ×2 (#1, #2))'
            in plan.stdout)
    assert "refused: make each of these values different first" in plan.stdout
    assert ("change type of client.city from string to integer (0 values converted; 2 values "
            'would not convert and would become empty: #1 "Kazan" must be an integer; '
            '#3 "x1" must be an integer)') in plan.stdout
    assert "refused: the field is required and 3 rows would be empty; give it a `default:`" in plan.stdout

    as_json = json.loads(run("migrate", folder, "--db", url, "--plan", "--json").stdout)
    assert as_json["refused"] is True
    kinds = {step["step"]: step["kind"] for step in as_json["steps"]}
    assert kinds["AddUnique"] == "refused"
    assert kinds["Retype"] == "refused"

    result = run("migrate", folder, "--db", url, "--allow-data-loss")
    assert result.exit_code == 1
    assert "no flag makes these steps safe" in result.stderr


def test_a_step_the_database_refuses_midway_rolls_everything_back(
        tmp_path: Path, write_setup: Callable[..., Path]) -> None:
    db_file = tmp_path / "live.db"
    url = f"sqlite:///{db_file}"
    folder = write_setup({"client.yaml": CLIENT, "sale.yaml": SALE})
    assert run("migrate", folder, "--db", url).exit_code == 0
    with sqlite3.connect(db_file) as conn:
        conn.execute("INSERT INTO client (created_at, updated_at, version, name) "
                     "VALUES ('2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z', 1, 'Ann')")
        # a real failure inside the database: the fill of the new column is refused
        conn.execute("CREATE TRIGGER no_updates BEFORE UPDATE ON client "
                     "BEGIN SELECT RAISE(ABORT, 'client rows are frozen'); END")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db_file.read_bytes()

    write_setup({"client.yaml": textwrap.dedent(CLIENT) + "  phone: {type: phone, index: true}\n"
                 + "  tier: {type: string, default: basic}\n"})
    result = run("migrate", folder, "--db", url)
    assert result.exit_code == 1
    assert "+ add field client.phone (phone, 1 existing row left empty)" in result.stdout
    assert ("the step 'add field client.tier (string, 1 existing row gets the default \"basic\")' "
            "failed: client rows are frozen; the migration was rolled back") in result.stderr
    assert "Traceback" not in result.stderr
    with sqlite3.connect(db_file) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db_file.read_bytes() == before


def test_migrate_refuses_a_rename_onto_an_existing_name(
        tmp_path: Path, write_setup: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    folder = write_setup({"client.yaml": CLIENT + "      town: {type: string}\n", "sale.yaml": SALE})
    assert run("migrate", folder, "--db", url).exit_code == 0
    write_setup({"client.yaml": CLIENT.replace("city: {type: string}",
                                               "town: {type: string, renamed_from: city}")})
    plan = run("migrate", folder, "--db", url, "--plan")
    assert plan.exit_code == 1
    assert ("x rename field client.city to town\n    refused: the table already has a column town"
            in plan.stdout)


# -- serve ------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_serve_refuses_a_non_loopback_host(host: str, tmp_path: Path) -> None:
    result = run("serve", DEFAULT_SETUP, "--db", f"sqlite:///{tmp_path / 'x.db'}", "--host", host)
    assert result.exit_code == 1
    assert f"refusing to serve on {host}" in result.stderr
    assert "127.0.0.1" in result.stderr


def test_serve_refuses_a_database_behind_its_setup(
        tmp_path: Path, write_setup: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    folder = write_setup({"client.yaml": CLIENT, "sale.yaml": SALE})
    assert run("migrate", folder, "--db", url).exit_code == 0
    write_setup({"client.yaml": textwrap.dedent(CLIENT) + "  phone: {type: phone}\n"})
    result = run("serve", folder, "--db", url)
    assert result.exit_code == 1
    assert "the database does not match the setup" in result.stderr
    assert "- add field client.phone (phone, 0 rows affected)" in result.stderr
    assert f"`kartoteka migrate {folder} --db URL --plan`" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2() -> None:
    result = run("check")
    assert result.exit_code == 2
    assert "SETUP" in result.stderr


# -- bad settings: a message and exit 1, never a traceback ------------------------------------

def _bad_urls(tmp_path: Path) -> list[tuple[str, str]]:
    in_the_way = tmp_path / "plain-file"
    in_the_way.write_text("not a folder", encoding="utf-8")
    return [
        ("nonsense", "'nonsense' is not a database URL: use sqlite:///file.db or "
                     "postgresql+psycopg://user@host/name"),
        ("postgresql://u@h:notaport/db", "is not a database URL (its port is not a number)"),
        ("mysql://u@h/db", "unsupported database 'mysql': use sqlite:///file.db"),
        ("postgresql+nosuch://u@h/db", "no driver 'nosuch' for postgresql is installed"),
        (f"sqlite+pysqlcipher:///{tmp_path}/x.db", "no driver 'pysqlcipher' for sqlite"),
        ("sqlite:///:memory:", "an in-memory SQLite database would vanish"),
        (f"sqlite:///{in_the_way}/crm.db", f"cannot make the folder '{in_the_way}' for the "
                                           "SQLite database: a file is in the way"),
    ]


@pytest.mark.parametrize("command", [["migrate", str(DEFAULT_SETUP)], ["user", "list"],
                                     ["serve", str(DEFAULT_SETUP)]], ids=" ".join)
def test_a_bad_database_url_is_a_message_and_exit_1(command: list[str], tmp_path: Path) -> None:
    for url, expected in _bad_urls(tmp_path):
        result = run(*command, "--db", url)
        assert result.exit_code == 1, (url, result.output)
        assert result.stderr.startswith("error: "), (url, result.stderr)
        assert expected in result.stderr, (url, result.stderr)
        assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain-file"]


def test_traceback_shows_the_error_of_a_bad_setting() -> None:
    with pytest.raises(SettingsError, match="unsupported database 'mysql'"):
        run("--traceback", "migrate", DEFAULT_SETUP, "--db", "mysql://u@h/db")
