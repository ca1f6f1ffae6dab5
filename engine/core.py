"""`Kartoteka`: one loaded setup bound to one database — the engine's front door.

    from engine import Kartoteka
    kt = Kartoteka.open("schemas", "sqlite:///crm.db")
    kt.migrate()
    sale = kt.records.create("sale", {"number": "S-1", "client": 7})

Each instance owns its storage (SQLAlchemy MetaData), validators and connection pool;
nothing is global, so tests and several setups in one process do not interfere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.access.acting import Acting
from engine.access.scopes import guard
from engine.access.sessions import Sessions, SessionSettings
from engine.access.users import Users
from engine.automations.intake import Intakes
from engine.automations.notifications import Notifications
from engine.automations.subscriptions import Webhooks
from engine.automations.worker import Action, Automations
from engine.errors import SettingsError
from engine.exchange.imports import Imports
from engine.exchange.jobs import ImportJobs
from engine.process.reports import Reports
from engine.process.stages import StageMoves
from engine.process.timeline import Timeline
from engine.records.bulk import Bulk
from engine.records.describe import describe_setup
from engine.records.merge import Merger
from engine.records.saved_views import SavedViews
from engine.records.schemas import schemas_of
from engine.records.service import Records
from engine.setup.loader import load_setup
from engine.setup.roles import ADMIN
from engine.setup.spec import SetupSpec
from engine.storage.database import Database, DatabaseSettings
from engine.storage.migrate import MigrationPlan, apply, plan, verify
from engine.storage.tables import Storage
from engine.types.fields import FieldTypeRegistry, default_registry
from engine.types.moments import Clock, system_clock

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """An engine's settings; each value is checked when they are built (`SettingsError`)."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    max_body_bytes: int = MAX_BODY_BYTES
    #: how long web sessions and invitations last; the limit on failed sign-ins
    sessions: SessionSettings = field(default_factory=SessionSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.database, DatabaseSettings):
            raise SettingsError("database must be a DatabaseSettings")
        if not isinstance(self.sessions, SessionSettings):
            raise SettingsError("sessions must be a SessionSettings (engine.access.sessions)")
        value = self.max_body_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingsError(f"max_body_bytes is {value!r}: it must be a whole number of "
                                "bytes, at least 1")


class Kartoteka:
    """A setup, its generated storage and schemas, and the records service over a database."""

    def __init__(self, setup: SetupSpec, settings: Settings | None = None, *,
                 registry: FieldTypeRegistry | None = None, clock: Clock | None = None,
                 storage: Storage | None = None, actions: Mapping[str, Action] | None = None):
        self.setup = setup
        self.settings = settings or Settings()
        self.registry = registry or default_registry()
        #: the generated tables; `storage` shares one already built for this setup (the
        #: tests build many engines over few setups: the tables are the bulk of an
        #: engine's start-up, and nothing changes them once built)
        self.storage = storage if storage is not None else Storage(setup, self.registry)
        self.db = Database(self.settings.database)
        self.schemas = schemas_of(self.storage)
        #: who this instance acts for in the current context: `with kt.acting.as_user(u):`
        self.acting = Acting()
        guard(self.db.engine, [table.table for table in self.storage.entities.values()])
        #: the current moment for relative dates and dynamic defaults (`today`, `now+2h`):
        #: the system's clock unless one is given (a test freezing "today")
        self.clock: Clock = clock or system_clock
        self.records = Records(self.storage, self.db, self.schemas, self.acting, self.clock)
        self.stages = StageMoves(self.records)
        self.timeline = Timeline(self.records)
        self.reports = Reports(self.records)
        self.bulk = Bulk(self.records)
        self.merger = Merger(self.records)  # POST /api/{e}/{id}/merge (engine/records/merge.py)
        self.imports = Imports(self.records, self.bulk)
        self.import_jobs = ImportJobs(self.imports, self.acting)
        self.users = Users(self.storage.users, self.storage.tokens, self.db,
                           frozenset(setup.roles) | {ADMIN}, acting=self.acting,
                           manages_users=self.records.access.manages_users,
                           languages=setup.languages)
        #: passwords, browser sessions and invitations of those users (the web app's sign-in)
        self.sessions = Sessions(self.storage.sessions, self.users, self.db,
                                 self.settings.sessions)
        #: what the system does by itself: `kt.automations.run_pending()` runs what is due
        #: (`kartoteka serve` and `kartoteka worker` do it in the background)
        actions = dict(actions or {})
        missing = sorted({a.params["action"] for automation in setup.automations
                          for a in automation.actions if a.kind == "call"} - set(actions))
        if missing:
            raise SettingsError(f"the setup's automations call {', '.join(missing)}: pass "
                                "them as actions= (see docs/extending.md, 'Actions')")
        self.automations = Automations(self.records, self.stages, self.users, actions,
                                       setup.timezone)
        self.notifications = Notifications(self.storage, self.db, self.acting)
        #: webhook subscriptions an admin makes over the API (`/api/webhooks`)
        self.webhooks = Webhooks(self.storage.webhooks, self.db, setup,
                                 self.records.journal.outbox, self.users.may_manage)
        #: each user's saved views of the entities' lists (`/api/views`, the web app)
        self.views = SavedViews(self.storage.views, self.db, setup, self.records.parser,
                                self.acting)
        #: records arriving without a user's token (setup.yaml `intakes:`)
        self.intakes = Intakes(self.records, setup.intakes)

    @classmethod
    def open(cls, folder: str | Path, database_url: str | None = None, *,
             registry: FieldTypeRegistry | None = None, clock: Clock | None = None,
             actions: Mapping[str, Action] | None = None, **settings: Any) -> Kartoteka:
        """Load a setup folder (raising `SetupError` on problems) and bind it to a database."""
        known = [f.name for f in fields(Settings) if f.name != "database"]  # from the URL
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(map(repr, unknown))}: give "
                                "the database URL as database_url; the others are "
                                + ", ".join(known))
        registry = registry or default_registry()
        setup = load_setup(folder, registry, actions=tuple(actions or ()))
        db_settings = DatabaseSettings(url=database_url) if database_url else DatabaseSettings()
        return cls(setup, Settings(database=db_settings, **settings), registry=registry,
                   clock=clock, actions=actions)

    def plan(self) -> MigrationPlan:
        return plan(self.storage, self.db)

    def migrate(self) -> MigrationPlan:
        return apply(self.storage, self.db)

    def verify_database(self) -> None:
        verify(self.storage, self.db)

    def describe(self) -> dict[str, Any]:
        return describe_setup(self.setup, self.schemas)

    def close(self) -> None:
        self.db.dispose()
