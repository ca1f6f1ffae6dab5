"""How long things last, as an operator writes it on `kartoteka serve`'s command line or
in its environment: `90m`, `8h`, `30d`, `1.5h` — a number and a unit (minutes, hours,
days). A bare number is refused rather than guessed: `8` could be hours or days.
"""

from __future__ import annotations

import re

import click

from engine.access.sessions import SessionSettings

#: a unit's hours
UNITS = {"m": 1 / 60, "h": 1.0, "d": 24.0}
#: ten years: a longer session is a typo, not a policy
LONGEST_HOURS = 3650 * 24
_FORM = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([mhd])")  # ASCII digits only


def hours_of(text: str) -> float:
    """The hours a duration stands for; ValueError saying how to write one."""
    found = _FORM.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError(f"{text!r} is not a duration: write a number and a unit, m (minutes), "
                         "h (hours) or d (days), e.g. 30m, 8h, 30d")
    hours = float(found.group(1)) * UNITS[found.group(2)]
    if not hours > 0:
        raise ValueError(f"{text!r} is not a duration: it must be longer than zero")
    if hours > LONGEST_HOURS:
        raise ValueError(f"{text!r} is longer than 3650d (ten years)")
    return hours


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """A click callback: an option's duration in hours (None when not given)."""
    if value is None:
        return None
    try:
        return hours_of(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def session_settings(idle_hours: float | None, max_hours: float | None) -> SessionSettings:
    """The sessions' settings from `--session-idle` and `--session-max` (either may be left
    out: the engine's default stays), refusing an idle length past the maximum one."""
    defaults = SessionSettings()
    absolute = defaults.absolute_days * 24 if max_hours is None else max_hours
    # a maximum shorter than the default idle length bounds the idle one too
    idle = min(defaults.idle_hours, absolute) if idle_hours is None else idle_hours
    if idle > absolute:
        raise click.BadParameter(
            f"a session idle for {_written(idle)} would already have ended at its maximum "
            f"length, {_written(absolute)}: give --session-idle a shorter length than "
            "--session-max", param_hint="'--session-idle'")
    return SessionSettings(idle_hours=idle, absolute_days=absolute / 24)


def session_lengths(settings: SessionSettings) -> str:
    """How the server says the lengths it applies."""
    return (f"{_written(settings.idle_hours)} without a request, or "
            f"{_written(settings.absolute_days * 24)} after signing in")


def _written(hours: float) -> str:
    if hours % 24 == 0:
        return f"{hours / 24:g}d"
    return f"{hours:g}h" if hours % 1 == 0 else f"{hours * 60:g}m"


__all__ = ["duration", "hours_of", "session_lengths", "session_settings"]
