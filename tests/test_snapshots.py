"""Snapshots of what the default setup (`schemas/`) generates, so that any change to the
generated JSON Schemas or to the API's operations shows up in review as a diff.

- `tests/snapshots/default_setup/<Entity>.json`: per entity, its read, create and patch
  JSON Schemas under their OpenAPI component names (`Sale`, `SaleCreate`, `SalePatch`),
  exactly as published in `/openapi.json`, key order included (it is the order the docs
  show fields in);
- `tests/snapshots/default_setup/openapi_paths.txt`: every operation of `/openapi.json`,
  one `METHOD path operationId` per line, sorted.

When a test fails it prints a unified diff (snapshot → generated). If the change is
intended, regenerate the files and commit them with the change:

    KARTOTEKA_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_snapshots.py

(The update run writes the files, deletes snapshots of entities that no longer exist,
and passes.)
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api import create_app
from engine import Kartoteka
from engine.setup.names import pascal

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETUP = ROOT / "schemas"
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots" / "default_setup"
PATHS_FILE = "openapi_paths.txt"
UPDATE = os.environ.get("KARTOTEKA_UPDATE_SNAPSHOTS", "") not in ("", "0")
HOW_TO_UPDATE = ("if the change is intended, regenerate the snapshots: "
                 "KARTOTEKA_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_snapshots.py")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def default_kt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kartoteka]:
    """The default setup; generating schemas and OpenAPI needs no migrated database."""
    folder = tmp_path_factory.mktemp("snapshots")
    kt = Kartoteka.open(DEFAULT_SETUP, f"sqlite:///{folder / 'unused.db'}")
    yield kt
    kt.close()


@pytest.fixture(scope="module")
def openapi(default_kt: Kartoteka) -> dict[str, Any]:
    return create_app(default_kt).openapi()


def entity_snapshots(kt: Kartoteka) -> dict[str, str]:
    """File name → text, one file per entity."""
    files = {}
    for name, schemas in kt.schemas.items():
        names = schemas.names
        document = {names["read"]: schemas.read, names["create"]: schemas.create,
                    names["patch"]: schemas.patch}
        files[f"{pascal(name)}.json"] = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return files


def paths_snapshot(document: dict[str, Any]) -> str:
    lines = sorted(f"{method.upper()} {path} {operation.get('operationId', '-')}"
                   for path, item in document["paths"].items()
                   for method, operation in item.items() if method in METHODS)
    return "\n".join(lines) + "\n"


def compare(generated: dict[str, str], *, owned: list[str]) -> None:
    """Compare generated texts with the files in SNAPSHOTS; in update mode, write them.

    `owned`: the snapshot files this comparison is responsible for (a stale one among them,
    which nothing generates any more, is a difference too)."""
    stale = sorted(set(owned) - set(generated))
    if UPDATE:
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        for filename, text in generated.items():
            path = SNAPSHOTS / filename
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
        for filename in stale:
            (SNAPSHOTS / filename).unlink()
        return
    problems = []
    for filename, text in sorted(generated.items()):
        path = SNAPSHOTS / filename
        if not path.exists():
            problems.append(f"{path.relative_to(ROOT)}: no snapshot yet (generated {len(text)} characters)")
            continue
        recorded = path.read_text(encoding="utf-8")
        if recorded != text:
            diff = difflib.unified_diff(recorded.splitlines(keepends=True), text.splitlines(keepends=True),
                                        fromfile=f"{path.relative_to(ROOT)} (snapshot)",
                                        tofile=f"{filename} (generated now)")
            problems.append("".join(diff).rstrip("\n"))
    for filename in stale:
        problems.append(f"{(SNAPSHOTS / filename).relative_to(ROOT)}: nothing generates this any more")
    if problems:
        pytest.fail("generated artefacts differ from the snapshots:\n\n" + "\n\n".join(problems)
                    + f"\n\n{HOW_TO_UPDATE}", pytrace=False)


def test_entity_json_schemas_match_snapshots(default_kt: Kartoteka) -> None:
    owned = [p.name for p in SNAPSHOTS.glob("*.json")] if SNAPSHOTS.exists() else []
    compare(entity_snapshots(default_kt), owned=owned)


def test_openapi_operations_match_snapshot(openapi: dict[str, Any]) -> None:
    compare({PATHS_FILE: paths_snapshot(openapi)}, owned=[PATHS_FILE])


def test_snapshots_are_what_openapi_publishes(default_kt: Kartoteka, openapi: dict[str, Any]) -> None:
    """The per-entity snapshots are the components clients see, not a private copy."""
    components = openapi["components"]["schemas"]
    for schemas in default_kt.schemas.values():
        names = schemas.names
        assert components[names["read"]] == schemas.read
        assert components[names["create"]] == schemas.create
        assert components[names["patch"]] == schemas.patch
