"""Bring a database in step with a setup: the engine's entry points to `engine/migrations/`.

`plan` lists the steps (add, rename, retype, require, make unique, relink, move stages,
remove) with their counts; `apply` makes the safe ones in one transaction and refuses
the rest; `verify` says whether the database is behind its setup. Every applied setup is
recorded in `kt_setup_history`.
"""

from __future__ import annotations

from engine.storage.database import Database
from engine.storage.migrations import MigrationPlan, plan, verify
from engine.storage.migrations import apply as apply_plan
from engine.storage.tables import Storage

__all__ = ["MigrationPlan", "apply", "plan", "verify"]


def apply(storage: Storage, database: Database) -> MigrationPlan:
    """Apply the safe steps in one transaction; raise `MigrationRefused` for any other."""
    return apply_plan(storage, database).plan
