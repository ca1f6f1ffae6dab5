"""`kartoteka check | migrate | serve | user | import` — a thin shell over the engine.

Errors from the engine (`KartotekaError`) become a clean message and exit code 1; a
traceback is printed only with `--traceback`. Click handles usage errors (exit 2).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from engine.core import Kartoteka, Settings
from engine.errors import KartotekaError, SetupError
from engine.setup.loader import check_setup
from engine.setup.spec import SetupSpec
from engine.storage.database import DEFAULT_URL, DatabaseSettings
from kartoteka.cli_durations import duration, session_lengths, session_settings

DB_OPTION = click.option(
    "--db", "db_url", envvar="KARTOTEKA_DATABASE_URL", default=DEFAULT_URL, show_default=True,
    help="Database URL: sqlite:///file.db or postgresql+psycopg://user@host/name "
         "(or set KARTOTEKA_DATABASE_URL).")
UP_TO_DATE = "The database matches the setup; nothing to do."
SETUP_ARG = click.argument("setup", type=click.Path(file_okay=False, path_type=Path))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--traceback", is_flag=True, help="Show the full traceback of an error.")
@click.version_option(package_name="kartoteka")
@click.pass_context
def main(ctx: click.Context, traceback: bool) -> None:
    """Kartoteka turns a folder of YAML files into a business database with a REST API."""
    ctx.obj = {"traceback": traceback}


def _guarded(ctx: click.Context, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except SetupError as error:
        _print_diagnostics(error.diagnostics)
        ctx.exit(1)
    except KartotekaError as error:
        if ctx.obj.get("traceback"):
            raise
        details = "".join(f"\n  {d.field}: {d.problem}" for d in getattr(error, "details", ()))
        click.echo(f"error: {error}{details}", err=True)
        ctx.exit(1)
    except sa.exc.OperationalError as error:
        if ctx.obj.get("traceback"):
            raise
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        click.echo(f"error: cannot use the database: {reason}", err=True)
        ctx.exit(1)


def _print_diagnostics(diagnostics: Any) -> None:
    errors = [d for d in diagnostics if d.severity == "error"]
    for diagnostic in diagnostics:
        click.echo(str(diagnostic), err=True)
    if errors:
        click.echo(f"{len(errors)} error(s); nothing was loaded.", err=True)


def _open(setup_dir: Path, db_url: str, **settings: Any) -> Kartoteka:
    from engine.automations.actions import installed_actions

    actions = installed_actions()  # the Python actions a setup's automations may call:
    result = check_setup(setup_dir, actions=actions)
    if result.setup is None:
        raise SetupError(result.diagnostics)
    return Kartoteka(result.setup, Settings(database=DatabaseSettings(url=db_url), **settings),
                     actions=actions)


@main.command()
@SETUP_ARG
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as JSON.")
@click.option("--indexes", is_flag=True,
              help="Also list the indexes the setup generates, each with why.")
@click.pass_context
def check(ctx: click.Context, setup: Path, as_json: bool, indexes: bool) -> None:
    """Check a setup; print a summary, or every problem with file:line and key."""
    from engine.automations.actions import installed_actions

    result = check_setup(setup, actions=_guarded(ctx, installed_actions))
    if as_json:
        click.echo(json.dumps({"ok": result.setup is not None,
                               "diagnostics": [d.as_json() for d in result.diagnostics]},
                              ensure_ascii=False, indent=2))
        ctx.exit(0 if result.setup is not None else 1)
    if result.setup is None:
        _print_diagnostics(result.diagnostics)
        ctx.exit(1)
    for warning in result.warnings:
        click.echo(str(warning), err=True)
    click.echo(summary(result.setup))
    if indexes:
        click.echo(index_list(result.setup))


def _scope_words(scope: Any) -> str:
    if scope.kind == "any":
        return " or ".join(_scope_words(part) for part in scope.any)
    return "condition" if scope.kind == "where" else str(scope.kind)


def index_list(setup: SetupSpec) -> str:
    """The generated indexes per entity, each with the declaration that asks for it."""
    from engine.storage.tables import Storage

    storage = Storage(setup)
    lines = ["Indexes (generated for what the setup declares; ask for one with index: true):"]
    for name, table in storage.entities.items():
        uniques = [(str(c.name), ", ".join(col.name for col in c.columns))
                   for c in table.table.constraints if isinstance(c, sa.UniqueConstraint)]
        lines.append(f"  {name}: {len(table.index_reasons) + len(uniques)}")
        for index, why in table.index_reasons.items():
            lines.append(f"    {index} — {why}")
        for constraint, columns in uniques:
            lines.append(f"    {constraint} — unique: true ({columns})")
    return "\n".join(lines)


def summary(setup: SetupSpec) -> str:
    """A short description of a setup: entities, fields, links, stages."""
    lines = []
    fields = sum(len(e.fields) for e in setup.entities.values())
    links = sum(len(e.links) for e in setup.entities.values())
    pipelines = sum(len(e.pipeline.pipelines) for e in setup.entities.values() if e.pipeline)
    lines.append(f"{setup.name}: {len(setup.entities)} entities, {fields} fields, "
                 f"{links} links, {pipelines} pipeline(s) — OK")
    for entity in setup.entities.values():
        parts = [f"{len(entity.fields)} fields"]
        if entity.links:
            parts.append("links " + ", ".join(
                f"{l.name}→{'|'.join(l.targets)}{'[]' if l.many else ''}" for l in entity.links.values()))
        reverse = setup.reverse_links[entity.name]
        if reverse:
            parts.append("reverse " + ", ".join(reverse))
        if entity.pipeline:
            for name, pipeline in entity.pipeline.pipelines.items():
                label = "stages" if name == "default" else f"{name} stages"
                parts.append(f"{label} {' → '.join(pipeline.stage_names)}")
        lines.append(f"  {entity.name}: " + "; ".join(parts))
    for role in setup.roles.values():
        reads = [f"{entity}({_scope_words(grant.scope('read'))})"
                 for entity, grant in role.grants.items() if grant.scope("read").kind != "none"]
        hidden = [f"{entity}.{name}" for entity, grant in role.grants.items()
                  for name in sorted(grant.hidden)]
        line = f"  role {role.name}: reads " + (", ".join(reads) or "nothing")
        lines.append(line + ("; hides " + ", ".join(hidden) if hidden else ""))
    for automation in setup.automations:
        lines.append(f"  automation {automation.name}: {automation.entity} "
                     f"{_trigger_words(automation)} → "
                     + ", ".join(action.kind for action in automation.actions))
    return "\n".join(lines)


def _trigger_words(automation: Any) -> str:
    from engine.setup.automations import UNIT_SECONDS

    if automation.stages:
        return f"{automation.on} {'|'.join(sorted(automation.stages))}"
    if automation.on == "date":
        seconds = abs(automation.offset_seconds)
        if not seconds:
            return f"when {automation.date_field} comes"
        unit, size = next((u, n) for u, n in reversed(UNIT_SECONDS.items()) if seconds % n == 0)
        count = seconds // size
        side = "after" if automation.offset_seconds > 0 else "before"
        return f"{count} {unit}{'s' if count != 1 else ''} {side} {automation.date_field}"
    if automation.on == "schedule":
        return f"on schedule '{automation.schedule}'"
    if automation.changed:
        return f"{automation.on} ({', '.join(automation.changed)})"
    return str(automation.on)


@main.command()
@SETUP_ARG
@DB_OPTION
@click.option("--plan", "plan_only", is_flag=True, help="Print what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --plan or --history: print JSON.")
@click.option("--allow-data-loss", is_flag=True,
              help="Also apply steps that lose data (remove, retype with unconvertible values, "
                   "relink), after writing a backup.")
@click.option("--backup-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the backup goes (default: beside the SQLite file; the current "
                   "folder for PostgreSQL).")
@click.option("--history", "show_history", is_flag=True,
              help="List the setup versions applied to the database; change nothing.")
@click.pass_context
def migrate(ctx: click.Context, setup: Path, db_url: str, plan_only: bool, as_json: bool,
            allow_data_loss: bool, backup_dir: Path | None, show_history: bool) -> None:
    """Bring the database in step with the setup: plan, or apply in one transaction.

    Safe steps are applied; steps that lose data need --allow-data-loss (a backup is
    written first); refused steps (duplicates under a new unique rule, empty rows under a
    new required rule without a default, ...) stop the migration. See docs/migrations.md.
    """
    from engine.storage import migrations

    def run() -> None:
        kt = _open(setup, db_url)
        try:
            if show_history:
                _print_history(migrations.history(kt.db), as_json)
                return
            if plan_only:
                plan = migrations.plan(kt.storage, kt.db)
                if as_json:
                    click.echo(json.dumps(plan.as_json(), ensure_ascii=False, indent=2))
                else:
                    _print_plan(plan)
                ctx.exit(1 if plan.refusals else 0)
            applied = migrations.apply(
                kt.storage, kt.db, allow_data_loss=allow_data_loss, backup_dir=backup_dir,
                on_step=lambda step: click.echo(f"{_mark(step)} {step}"),
                on_progress=click.echo)
            if applied.backup is not None:
                click.echo(f"Backup written first: {applied.backup}")
            steps = applied.plan.steps
            click.echo(UP_TO_DATE if not steps else f"Applied {len(steps)} step(s).")
        finally:
            kt.close()
    _guarded(ctx, run)


def _mark(step: Any) -> str:
    """`+` safe, `!` loses data (needs --allow-data-loss), `x` refused."""
    return {"safe": "+", "loses data": "!", "refused": "x"}[step.kind]


def _print_plan(plan: Any) -> None:
    for step in plan.steps:
        line = f"{_mark(step)} {step}"
        if step.refusal:
            line += f"\n    refused: {step.refusal}"
        elif step.loses_data:
            line += "\n    loses data: applied only with --allow-data-loss, after a backup"
        click.echo(line)
    if plan.up_to_date:
        click.echo(UP_TO_DATE)
    elif plan.refusals:
        click.echo(f"{len(plan.refusals)} step(s) refused: change the setup or the data first.")
    elif plan.data_loss:
        click.echo(f"{len(plan.data_loss)} step(s) lose data: migrate with --allow-data-loss "
                   "to apply them (a backup is written first).")
    else:
        click.echo(f"{len(plan.steps)} step(s), all safe: migrate applies them in one transaction.")


def _print_history(entries: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"id": e.id, "applied_at": e.applied_at.isoformat(),
                                "setup": e.setup_name, "digest": e.digest, "steps": list(e.steps),
                                "allow_data_loss": e.allow_data_loss, "backup": e.backup}
                               for e in entries], ensure_ascii=False, indent=2))
        return
    if not entries:
        click.echo("No setup has been applied to this database yet.")
    for entry in entries:
        flag = ", with --allow-data-loss" if entry.allow_data_loss else ""
        click.echo(f"#{entry.id} {entry.applied_at:%Y-%m-%d %H:%M:%S} UTC  {entry.setup_name}  "
                   f"version {entry.digest[:12]}: {len(entry.steps)} step(s){flag}")
        for step in entry.steps:
            click.echo(f"    {step}")
        if entry.backup:
            click.echo(f"    backup: {entry.backup}")


LOOPBACK_NAMES = {"localhost"}


def _host_name(text: str) -> str:
    from api.guard import normalize_host  # the api package is imported by serve only

    return normalize_host(text)


def _origin(text: str) -> str:
    from api.guard import normalize_origin

    return normalize_origin(text)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _each(normalize: Callable[[str], str]) -> Callable[[click.Context, click.Parameter, Any],
                                                         tuple[str, ...]]:
    """A click callback: every value of a repeatable option (commas split one), normalized."""
    def callback(_ctx: click.Context, _param: click.Parameter, values: Any) -> tuple[str, ...]:
        found: list[str] = []
        for value in values or ():
            for part in str(value).split(","):
                if part.strip():
                    try:
                        found.append(normalize(part))
                    except ValueError as error:
                        raise click.BadParameter(str(error)) from None
        return tuple(dict.fromkeys(found))
    return callback


def _served_names(host: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The Host names to answer besides loopback ones: those given, and the address served
    on when it is a single address or name (0.0.0.0 and :: name no host)."""
    if _is_loopback(host) or host in ("0.0.0.0", "::", ""):
        return allowed
    try:
        bind = _host_name(host)
    except ValueError:
        return allowed
    return tuple(dict.fromkeys((*allowed, bind)))


@main.command()
@SETUP_ARG
@DB_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--migrate", "auto_migrate", is_flag=True,
              help="Create what is missing in the database before serving.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, envvar="KARTOTEKA_ALLOWED_HOSTS",
              callback=_each(_host_name), metavar="NAME",
              help="A name clients reach the server by (the Host header), besides localhost, "
                   "127.0.0.1 and [::1]; repeatable. *.example.com for subdomains, * for any "
                   "(unsafe). Or KARTOTEKA_ALLOWED_HOSTS, comma-separated.")
@click.option("--cors-origin", "cors_origins", multiple=True, envvar="KARTOTEKA_CORS_ORIGINS",
              callback=_each(_origin), metavar="ORIGIN",
              help="A web app's exact origin allowed to call the API from a browser "
                   "(https://app.example.com); repeatable. Or KARTOTEKA_CORS_ORIGINS, "
                   "comma-separated. Default: none (no CORS).")
@click.option("--no-worker", "no_worker", is_flag=True,
              help="Do not run the automations' worker in this process (run `kartoteka "
                   "worker` elsewhere instead).")
@click.option("--session-idle", "session_idle", callback=duration, envvar="KARTOTEKA_SESSION_IDLE",
              metavar="DURATION",
              help="A browser's sign-in ends after this long without a request: 30m, 8h, 2d "
                   "(default 12h). Or KARTOTEKA_SESSION_IDLE.")
@click.option("--session-max", "session_max", callback=duration, envvar="KARTOTEKA_SESSION_MAX",
              metavar="DURATION",
              help="A browser's sign-in ends this long after it began, however used: 8h, 30d "
                   "(default 14d). Or KARTOTEKA_SESSION_MAX.")
@click.pass_context
def serve(ctx: click.Context, setup: Path, db_url: str, host: str, port: int,
          auto_migrate: bool, allowed_hosts: tuple[str, ...], cors_origins: tuple[str, ...],
          no_worker: bool, session_idle: float | None, session_max: float | None) -> None:
    """Serve the setup's REST API (docs at /docs) and run its automations."""
    import uvicorn

    from api.app import ApiSettings, create_app
    from api.guard import ANY_HOST, LOOPBACK_HOSTS

    sessions = session_settings(session_idle, session_max)

    def build() -> tuple[Any, bool]:
        kt = _open(setup, db_url, sessions=sessions)
        has_users = kt.users.any_users()
        if not has_users and not _is_loopback(host):
            kt.close()
            click.echo(
                f"error: refusing to serve on {host}: this database has no users, so the API "
                "is open to anyone who can reach it. Serve on 127.0.0.1 (the default), or add "
                "a user first: kartoteka user add EMAIL --role ROLE", err=True)
            ctx.exit(1)

        if auto_migrate:
            for step in kt.migrate().steps:
                click.echo(f"+ {step}")
        _verified(kt, setup, db_url)
        kt.import_jobs.interrupt_orphans()  # jobs a stopped server left: engine/exchange/jobs.py
        return create_app(kt, ApiSettings(allowed_hosts=names, cors_origins=cors_origins,
                                          worker=not no_worker)), has_users

    names = _served_names(host, allowed_hosts)
    app, has_users = _guarded(ctx, build)
    access = ("every /api call needs a token or a signed-in browser (/app/sign-in)" if has_users
              else "the API is open: no users yet, loopback only")
    click.echo(f"Serving {setup} on http://{host}:{port} (docs: http://{host}:{port}/docs); "
               f"{access}.", err=True)
    if ANY_HOST in names:
        click.echo("warning: --allowed-host '*': the API answers whatever host name a request "
                   "gives, so a web page can reach it through DNS rebinding"
                   + ("" if has_users else ", and while the database has no users such a page "
                      "can create an admin") + "; give the server's names instead.", err=True)
    else:
        click.echo("Answering requests for " + ", ".join((*LOOPBACK_HOSTS, *names)) + " (Host).",
                   err=True)
        if not _is_loopback(host) and not allowed_hosts:
            click.echo("note: requests naming this server otherwise (its DNS name or address) are "
                       "refused with 400; add --allowed-host NAME (or KARTOTEKA_ALLOWED_HOSTS) "
                       "for each name clients use.", err=True)
    if session_idle is not None or session_max is not None:
        click.echo(f"Browser sessions end after {session_lengths(sessions)}.", err=True)
    if cors_origins:
        click.echo("Browsers may call the API from " + ", ".join(cors_origins) + " (CORS).",
                   err=True)
    loop, parser = server_stack()
    click.echo(f"Event loop {loop}, HTTP parser {parser}"
               + ("." if (loop, parser) == ("uvloop", "httptools") else
                  " (uvloop and httptools, about 2x faster, are not importable here)."), err=True)
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get("KARTOTEKA_LOG_LEVEL", "info"),
                access_log=False, loop=loop, http=parser)


@main.command()
@SETUP_ARG
@DB_OPTION
@click.option("--once", is_flag=True, help="Process what is due now, then stop.")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0.05, 3600),
              help="Seconds between looks at the queue when nothing wakes the worker.")
@click.option("--dead", "list_dead", is_flag=True,
              help="List the dead letters (events that failed every attempt), then stop.")
@click.option("--retry", "retry_ids", multiple=True, type=click.IntRange(1), metavar="ID",
              help="Put this dead event back in the queue (repeatable), then stop.")
@click.pass_context
def worker(ctx: click.Context, setup: Path, db_url: str, once: bool, poll: float,
           list_dead: bool, retry_ids: tuple[int, ...]) -> None:
    """Run the setup's automations: take due events from the database's outbox and run
    what they trigger (several workers may share one PostgreSQL database)."""
    from engine.automations.runner import Runner

    kt = _guarded(ctx, lambda: _verified(_open(setup, db_url), setup, db_url))
    try:
        if list_dead or retry_ids:
            for event_id in retry_ids:
                event = _guarded(ctx, partial(kt.automations.retry, event_id))
                click.echo(f"event {event['id']} is pending again: the next look runs it")
            if list_dead:
                dead = kt.automations.events("dead", 500)
                for event in dead:
                    click.echo(f"{event['id']}\t{event['kind']}\t{event['entity']} "
                               f"{event['record_id']}\t{event['attempts']} attempts\t"
                               f"{event['last_error']}")
                click.echo(f"{len(dead)} dead letter(s)" + ("; retry one with --retry ID"
                                                             if dead else "."))
            return
        if once:
            done = 0
            while batch := _guarded(ctx, lambda: kt.automations.run_pending(limit=500)):
                done += batch
            click.echo(f"Processed {done} event(s).")
            return
        click.echo(f"Running the automations of {setup} ({len(kt.setup.automations)}); "
                   "Ctrl+C stops.", err=True)
        runner = Runner(kt.automations, poll=poll)
        try:
            runner.run()
        except KeyboardInterrupt:
            click.echo("Stopped.", err=True)
    finally:
        kt.close()


def _verified(kt: Kartoteka, setup: Path, db_url: str) -> Kartoteka:
    """`kt`, once its database holds what its setup needs (closed, and the error saying
    which `kartoteka migrate` to run, when it does not)."""
    from engine.storage.migrations import verify

    fix = f"kartoteka migrate {setup}" + ("" if db_url == DEFAULT_URL else " --db URL")
    try:
        verify(kt.storage, kt.db, fix=fix)
    except KartotekaError:
        kt.close()
        raise
    return kt


def server_stack() -> tuple[str, str]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools (dependencies) when
    importable — about 2x the requests per second of asyncio + h11 on small answers —
    named, not left to uvicorn's `auto`, so the server says what it runs on."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    parser = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    return loop, parser


@main.group()
def user() -> None:
    """Manage the users who may call the API, and their tokens."""


@contextmanager
def _sessions(db_url: str, setup: Path | None) -> Iterator[Any]:
    """The users of a database with their passwords, browser sessions and invitations
    (engine/access/sessions.py: disabling a user here ends their sessions too), its
    connections closed afterwards."""
    from engine.access.sessions import Sessions
    from engine.access.users import Users
    from engine.setup.roles import ADMIN
    from engine.storage.database import Database
    from engine.storage.sessions import session_tables
    from engine.storage.users import user_tables

    roles: frozenset[str] | None = None  # without a setup, any role name is taken on trust
    languages: tuple[str, ...] | None = None  # ... and any language code
    if setup is not None:
        result = check_setup(setup)
        if result.setup is None:
            raise SetupError(result.diagnostics)
        roles = frozenset(result.setup.roles) | {ADMIN}
        languages = result.setup.languages
    metadata = sa.MetaData()
    users, tokens = user_tables(metadata)
    tables = session_tables(metadata)
    database = Database(DatabaseSettings(url=db_url))
    try:
        yield Sessions(tables, Users(users, tokens, database, roles, languages=languages),
                       database)
    finally:
        database.dispose()


@contextmanager
def _users(db_url: str, setup: Path | None) -> Iterator[Any]:
    """The users of a database, its connections closed afterwards."""
    with _sessions(db_url, setup) as sessions:
        yield sessions.users


def _invitation(sessions: Any, email: str, url: str) -> None:
    """Make and print a user's one-time link to choose a password."""
    _, token, _ = sessions.invite(email)
    click.echo("Its link to choose a password for the web app (works once, for "
               f"{sessions.settings.invitation_days:g} days):", err=True)
    click.echo(f"{url.rstrip('/')}/app/invite/{token}")


URL_OPTION = click.option("--url", default="http://127.0.0.1:8000", show_default=True,
                          envvar="KARTOTEKA_URL",
                          help="Where the web app is served, for the invitation link (or "
                               "KARTOTEKA_URL).")


SETUP_OPTION = click.option("--setup", "setup", type=click.Path(file_okay=False, path_type=Path),
                            help="Check the role (and language) against this setup's.")


@user.command("add")
@click.argument("email")
@click.option("--role", "roles", multiple=True, required=True, help="A role (repeatable).")
@click.option("--team", default=None)
@click.option("--name", default=None)
@click.option("--language", default=None,
              help="The language of the user's notifications, one of the setup's "
                   "(default: its first).")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None,
              help="The token expires after this many days (default: never).")
@SETUP_OPTION
@URL_OPTION
@DB_OPTION
@click.pass_context
def user_add(ctx: click.Context, email: str, roles: tuple[str, ...], team: str | None,
             name: str | None, language: str | None, expires_days: int | None,
             setup: Path | None, url: str, db_url: str) -> None:
    """Add a user; print its API token, once (it is stored only as a hash), and its
    invitation link to choose a password for the web app."""
    def run() -> None:
        with _sessions(db_url, setup) as sessions:
            sessions.require_tables()
            added, token = sessions.users.add(email, list(roles), team=team, name=name,
                                              expires_days=expires_days, language=language)
            click.echo(f"Added {added.email} ({', '.join(added.roles)}).", err=True)
            _invitation(sessions, added.email, url)  # first: the token stays the last line
            click.echo("Its API token, shown once:", err=True)
            click.echo(token)
    _guarded(ctx, run)


@user.command("invite")
@click.argument("email")
@URL_OPTION
@DB_OPTION
@click.pass_context
def user_invite(ctx: click.Context, email: str, url: str, db_url: str) -> None:
    """Print a new one-time link for a user to choose a password (older links stop working)."""
    def run() -> None:
        with _sessions(db_url, None) as sessions:
            _invitation(sessions, email, url)
    _guarded(ctx, run)


@user.command("password")
@click.argument("email")
@DB_OPTION
@click.pass_context
def user_password(ctx: click.Context, email: str, db_url: str) -> None:
    """Set a user's password from a prompt (not echoed); their browser sessions end."""
    def run() -> None:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True,
                                err=True)
        with _sessions(db_url, None) as sessions:
            done = sessions.set_password_of(email, password)
        click.echo(f"Set the password of {done.email}; their browser sessions ended.")
    _guarded(ctx, run)


@user.command("token")
@click.argument("email")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None)
@DB_OPTION
@click.pass_context
def user_token(ctx: click.Context, email: str, expires_days: int | None, db_url: str) -> None:
    """Print a new API token for a user, once."""
    def run() -> None:
        with _users(db_url, None) as users:
            click.echo(users.token(email, expires_days=expires_days))
    _guarded(ctx, run)


@user.command("list")
@DB_OPTION
@click.pass_context
def user_list(ctx: click.Context, db_url: str) -> None:
    """List the users."""
    def run() -> None:
        with _users(db_url, None) as users:
            found_users = users.list()
        for found in found_users:
            state = "active" if found.active else "disabled"
            click.echo(f"{found.id}\t{found.email}\t{','.join(found.roles)}\t"
                       f"{found.team or '-'}\t{state}")
    _guarded(ctx, run)


@user.command("disable")
@click.argument("email")
@DB_OPTION
@click.pass_context
def user_disable(ctx: click.Context, email: str, db_url: str) -> None:
    """Disable a user, revoke all of its tokens and end its browser sessions."""
    def run() -> None:
        with _users(db_url, None) as users:
            done = users.disable(email)
        click.echo(f"Disabled {done.email}; its tokens and sessions no longer work.")
    _guarded(ctx, run)


import kartoteka.cli_export  # noqa: E402, F401  (registers `kartoteka export` on `main`)
from kartoteka import cli_screenshots  # noqa: E402, F401  (registers `kartoteka screenshots`)
from kartoteka.cli_import import import_command  # noqa: E402 (it builds on the helpers above)

main.add_command(import_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
