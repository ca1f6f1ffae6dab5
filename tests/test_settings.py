"""Settings are checked when they are built: each bad one is a `SettingsError` saying what
was found and what would do, never a ValueError or TypeError from deep inside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import DatabaseSettings, Kartoteka, KartotekaError, Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("values", "expected"), [
    ({"sqlite_synchronous": "OFF"}, "sqlite_synchronous is 'OFF': it must be FULL"),
    ({"busy_timeout_ms": -1}, "busy_timeout_ms is -1: it must be a whole number, at least 0"),
    ({"busy_timeout_ms": "10s"}, "busy_timeout_ms is '10s'"),
    ({"pool_size": 0}, "pool_size is 0: it must be a whole number, at least 1"),
    ({"url": None}, "the database URL must be text"),
])
def test_bad_database_settings(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        DatabaseSettings(**values)


def test_normal_synchronous_is_taken_in_any_case() -> None:
    assert DatabaseSettings(sqlite_synchronous="normal").sqlite_synchronous == "normal"


@pytest.mark.parametrize("value", [0, -5, True, "1MB"])
def test_a_bad_body_cap(value: Any) -> None:
    with pytest.raises(SettingsError, match=r"max_body_bytes is .*: it must be a whole number"):
        Settings(max_body_bytes=value)


def test_an_unknown_setting_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"unknown setting.*'max_body'.*max_body_bytes"):
        Kartoteka.open(ROOT / "schemas", f"sqlite:///{tmp_path}/x.db", max_body=10)
    assert not list(tmp_path.iterdir())


def test_settings_errors_are_in_the_one_tree() -> None:
    assert issubclass(SettingsError, KartotekaError)
    assert not issubclass(SettingsError, ValueError)
