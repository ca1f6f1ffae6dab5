"""Loaded setups shared by the tests of one session: parsing and checking the same YAML for
every test was a fifth of a database test's cost, and building its tables most of the rest
of an engine's start-up.

A setup is loaded once per folder name and file contents (not per path: `write_setup`
writes the same texts into each test's own tmp folder), and handed out with its `source`
set to the folder asked for; its generated tables (`Storage`) are built once too. Specs
and tables are never changed once built, so sharing them is safe; every test still builds
its own `Kartoteka` (its validators, services and connection pool) over them. A folder
that does not load raises `SetupError` every time, as `load_setup` does.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from engine import FieldTypeRegistry, default_registry, load_setup
from engine.setup.spec import SetupSpec
from engine.storage.tables import Storage


class SetupCache:
    def __init__(self, folder: Path | None = None) -> None:
        #: the registry the cached setups were checked against (their field types are its)
        self.registry: FieldTypeRegistry = default_registry()
        self._loaded: dict[tuple[str, tuple[tuple[str, str], ...]], SetupSpec] = {}
        #: each loaded setup's generated tables, built once (by the setup's identity)
        self._storage: dict[int, tuple[SetupSpec, Storage]] = {}
        #: a setup handed out for another folder → the one loaded (same tables)
        self._base: dict[int, SetupSpec] = {}
        self._keep: list[SetupSpec] = []
        #: each setup's migrated empty SQLite file (by the setup's identity)
        self._templates: dict[int, Path] = {}
        #: where the templates are written (a session's tmp folder; else a new one)
        self._folder: Path | None = folder

    def base(self, setup: SetupSpec) -> SetupSpec:
        """The setup as loaded, for one handed out for another folder (same contents)."""
        return self._base.get(id(setup), setup)

    def storage(self, setup: SetupSpec) -> Storage:
        """The tables of a setup this cache loaded, built once: every engine over it shares
        them (they are never changed once built)."""
        base = self._base.get(id(setup), setup)
        found = self._storage.get(id(base))
        if found is None:
            found = self._storage[id(base)] = (base, Storage(base, self.registry))
        return found[1]

    def sqlite_template(self, setup: SetupSpec, build: Callable[[Path], None]) -> Path:
        """A SQLite file holding `setup`'s migrated, empty database, made once per setup by
        `build(path)` (migrate into it, then close): a test copies it instead of migrating
        (creating the default setup's tables and indexes costs ~50 ms, a copy ~5 ms)."""
        base = self._base.get(id(setup), setup)
        path = self._templates.get(id(base))
        if path is None:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="kartoteka-templates-"))
            path = self._folder / f"template-{len(self._templates)}.db"
            build(path)
            # closed cleanly: everything is in the file, no write-ahead log to copy too
            assert not path.with_name(path.name + "-wal").exists(), path
            self._templates[id(base)] = path
        return path

    def load(self, folder: str | Path) -> SetupSpec:
        folder = Path(folder)
        if not folder.is_dir():
            return load_setup(folder, self.registry)  # raises SetupError, naming the folder
        contents = tuple(sorted((path.name, hashlib.sha256(path.read_bytes()).hexdigest())
                                for path in folder.iterdir() if path.is_file()))
        # the folder's name is the setup's name when setup.yaml gives none
        key = (folder.resolve().name, contents)
        setup = self._loaded.get(key)
        if setup is None:
            setup = self._loaded[key] = load_setup(folder, self.registry)
        if setup.source == str(folder):
            return setup
        moved = replace(setup, source=str(folder))
        self._base[id(moved)] = setup
        self._keep.append(moved)  # ids stay unique while the session lives
        return moved
