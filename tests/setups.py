"""Loaded setups shared by the tests of one session: parsing and checking the same YAML for
every test was a fifth of a database test's cost.

A setup is loaded once per folder name and file contents (not per path: `write_setup`
writes the same texts into each test's own tmp folder), and handed out with its `source`
set to the folder asked for. The specs are frozen, so sharing them is safe; every test
still builds its own `Kartoteka` (its own tables, validators and connection pool) from
them. A folder that does not load raises `SetupError` every time, as `load_setup` does.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from engine import FieldTypeRegistry, default_registry, load_setup
from engine.setup.spec import SetupSpec


class SetupCache:
    def __init__(self) -> None:
        #: the registry the cached setups were checked against (their field types are its)
        self.registry: FieldTypeRegistry = default_registry()
        self._loaded: dict[tuple[str, tuple[tuple[str, str], ...]], SetupSpec] = {}

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
        return setup if setup.source == str(folder) else replace(setup, source=str(folder))
