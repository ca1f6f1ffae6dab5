"""Relative dates and times: `today`, `now - 2h`, `start_of_month - 1m`, `end_of_year`.

    moment  := anchor (sign number unit)*
    anchor  := today | now | start_of_week | end_of_week | start_of_month | end_of_month
             | start_of_quarter | end_of_quarter | start_of_year | end_of_year
    sign    := + | -          (a space between the anchor and a number reads as +: that is
                               what a `+` left unencoded in a URL's query arrives as)
    unit    := y (years) | m (months) | w (weeks) | d (days) | h (hours) | min (minutes)

A `Relative` is what a filter value or a default says; it means nothing until it meets a
clock and a time zone: `resolve(now, zone, kind)` gives a date (for a `date` field) or an
aware UTC datetime (for a `datetime` field). The anchor is taken in the setup's time zone
(weeks start on Monday); years, months, weeks and days move the calendar (a month from
31 January is 28 or 29 February; from an `end_of_…` anchor on a month's last day, the
last day of the month it lands in), hours and minutes move the clock. For a datetime,
`today` and `start_of_…` are midnight, `end_of_…` the period's last microsecond.

`Deferred` binds a `Relative` to a clock: called, it resolves against the clock's time of
that call, so a role condition parsed once still means "today" on every request.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

#: what the engine asks for the current moment: an aware datetime (tests inject their own)
Clock = Callable[[], dt.datetime]
UTC_ZONE = ZoneInfo("UTC")

ANCHORS = ("today", "now", "start_of_week", "end_of_week", "start_of_month", "end_of_month",
           "start_of_quarter", "end_of_quarter", "start_of_year", "end_of_year")
UNITS = ("y", "m", "w", "d", "h", "min")
#: offsets that move the clock, not the calendar: only for datetimes
CLOCK_UNITS = frozenset({"h", "min"})
MAX_OFFSET = 100_000
_ANCHOR = re.compile(r"^\s*([a-z_]+)")
_OFFSET = re.compile(r"\s*([+-]|\s)\s*([0-9]{1,6})\s*(min|[ymwdh])(?![a-z])")
GRAMMAR_HINT = ("write an anchor (" + ", ".join(ANCHORS) + ") with offsets such as "
                "today-30d, now+2h, start_of_month-1m (units: y, m, w, d, h, min)")


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class NotRelative(ValueError):
    """Text that starts like a relative moment but is not one; the message says why."""


@dataclass(frozen=True)
class Relative:
    """A moment relative to now: an anchor and calendar or clock offsets."""

    anchor: str
    offsets: tuple[tuple[int, str], ...] = ()

    def resolve(self, now: dt.datetime, zone: dt.tzinfo, kind: str) -> dt.date | dt.datetime:
        """The date (`kind` "date") or UTC datetime (`kind` "datetime") this means at `now`."""
        local = now.astimezone(zone)
        start, end = _period(self.anchor, local.date())
        keep_end = self.anchor.startswith("end_of")
        day = end if keep_end else start
        calendar_offsets = [(n, u) for n, u in self.offsets if u not in CLOCK_UNITS]
        clock_offsets = [(n, u) for n, u in self.offsets if u in CLOCK_UNITS]
        for number, unit in calendar_offsets:
            day = _shift(day, number, unit, keep_end)
        if kind == "date":
            return day
        if self.anchor == "now":
            wall = dt.datetime.combine(day, local.time().replace(tzinfo=None))
        elif keep_end:
            wall = dt.datetime.combine(day, dt.time.max)
        else:
            wall = dt.datetime.combine(day, dt.time.min)
        moment = wall.replace(tzinfo=zone).astimezone(dt.UTC)
        for number, unit in clock_offsets:
            moment += dt.timedelta(hours=number) if unit == "h" else dt.timedelta(minutes=number)
        return moment

    def __str__(self) -> str:
        return self.anchor + "".join(f"{'+' if n >= 0 else '-'}{abs(n)}{u}"
                                     for n, u in self.offsets)


def parse_relative(text: str, kind: str) -> Relative | None:
    """`text` as a relative moment for a `kind` ("date" or "datetime") field; None when it
    does not start with an anchor word (a plain date), `NotRelative` when it starts like
    one but is wrong."""
    match = _ANCHOR.match(text)
    if match is None or not text.strip()[:1].isalpha():
        return None
    anchor = match.group(1)
    if anchor not in ANCHORS:
        raise NotRelative(f"is not a date nor a relative date; {GRAMMAR_HINT}")
    if anchor == "now" and kind == "date":
        raise NotRelative("is not a date: a date has no time of day; use today, e.g. today-1d")
    offsets = []
    position = match.end()
    rest = text.rstrip()
    while position < len(rest):
        step = _OFFSET.match(rest, position)
        if step is None:
            raise NotRelative(f"cannot be read from {rest[position:].strip()!r} on; "
                              + GRAMMAR_HINT)
        sign, number, unit = step.groups()
        if unit in CLOCK_UNITS and kind == "date":
            raise NotRelative(f"moves a date by {unit}; a date moves by y, m, w or d, e.g. today+7d")
        amount = int(number)
        if amount > MAX_OFFSET:
            raise NotRelative(f"has an offset too large: {amount}{unit} (at most {MAX_OFFSET})")
        offsets.append((-amount if sign == "-" else amount, unit))
        position = step.end()
    relative = Relative(anchor, tuple(offsets))
    try:  # refused now rather than failing in a query: a moment far outside the calendar
        relative.resolve(system_clock(), UTC_ZONE, kind)
    except (OverflowError, ValueError):
        raise NotRelative("lands outside the years 1 to 9999") from None
    return relative


@dataclass(frozen=True)
class Deferred:
    """A relative moment bound to a clock and a zone: call it for its value now."""

    relative: Relative
    kind: str
    clock: Clock
    zone: dt.tzinfo

    def __call__(self) -> dt.date | dt.datetime:
        return self.relative.resolve(self.clock(), self.zone, self.kind)


def _period(anchor: str, today: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last day of the period an anchor names, around `today`."""
    if anchor in ("today", "now"):
        return today, today
    if anchor.endswith("_week"):
        monday = today - dt.timedelta(days=today.weekday())
        return monday, monday + dt.timedelta(days=6)
    if anchor.endswith("_month"):
        return today.replace(day=1), today.replace(day=_last_day(today.year, today.month))
    if anchor.endswith("_quarter"):
        first = 3 * ((today.month - 1) // 3) + 1
        return (dt.date(today.year, first, 1),
                dt.date(today.year, first + 2, _last_day(today.year, first + 2)))
    return dt.date(today.year, 1, 1), dt.date(today.year, 12, 31)


def _last_day(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _shift(day: dt.date, number: int, unit: str, keep_end: bool) -> dt.date:
    try:
        if unit == "d":
            return day + dt.timedelta(days=number)
        if unit == "w":
            return day + dt.timedelta(weeks=number)
        months = number * (12 if unit == "y" else 1)
        index = day.year * 12 + day.month - 1 + months
        year, month = divmod(index, 12)
        last = _last_day(year, month + 1)
        at_end = keep_end and day.day == _last_day(day.year, day.month)
        return dt.date(year, month + 1, last if at_end else min(day.day, last))
    except (OverflowError, ValueError):
        raise NotRelative("lands outside the years 1 to 9999") from None
