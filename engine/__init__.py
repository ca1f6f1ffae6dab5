"""Kartoteka's engine: a YAML setup becomes tables, JSON Schemas and a records service.

The steps — load → check → model → generate → serve — live in their own modules:
`loader` (YAML → `spec`), `fieldtypes` (the type registry), `storage` (tables),
`jsonschemas` (validation), `query` (the list language), `records` (reads and writes),
`migrate` (create what is missing), `core` (`Kartoteka`, tying them to a database).
The engine never imports the HTTP layer (`api/`).
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
