"""Kartoteka's engine: a YAML setup becomes tables, JSON Schemas and a records service.

The steps — load → check → model → generate → serve — are layers, each importing only
the ones below it (checked by import-linter, contracts in pyproject.toml):
`process` (stages, timeline, reports) → `records` (reads and writes, the list language,
JSON Schemas) → `access` (who is acting, users, scopes) → `storage` (database, tables,
journal, migrations) → `setup` (YAML → frozen spec, names, roles) → `types` (field and
column types) → `errors`. `core` (`Kartoteka`) ties them to a database. The engine never
imports the HTTP layer (`api/`) nor the command line.
"""

from engine.core import Kartoteka, Settings
from engine.errors import (
    Conflict,
    DatabaseMismatch,
    Diagnostic,
    ExtensionError,
    KartotekaError,
    MalformedRequest,
    MigrationRefused,
    NotFound,
    RequestError,
    SettingsError,
    SetupError,
    StaleVersion,
    ValidationFailed,
)
from engine.setup.loader import check_setup, load_setup
from engine.storage.database import DatabaseSettings
from engine.types.fields import FieldType, FieldTypeRegistry, ValueProblem, default_registry

__all__ = [
    "Conflict", "DatabaseMismatch", "DatabaseSettings", "Diagnostic", "ExtensionError", "FieldType",
    "FieldTypeRegistry", "Kartoteka", "KartotekaError", "MalformedRequest", "MigrationRefused",
    "NotFound", "RequestError", "Settings", "SettingsError", "SetupError", "StaleVersion", "ValidationFailed",
    "ValueProblem", "check_setup", "default_registry", "load_setup",
]
