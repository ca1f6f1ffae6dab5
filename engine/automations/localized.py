"""Values in a notification's or e-mail's text as the recipient's language writes them
(engine/automations/templates.py fills the texts; this says how each value reads).

    money 1234567.5    ru: 1 234 567,50    en: 1,234,567.50    de: 1.234.567,50
                       fa: ۱٬۲۳۴٬۵۶۷٫۵۰    zh: 1,234,567.50
    date 2026-12-31    ru: 31.12.2026      en: 2026-12-31      fr: 31/12/2026   zh: 2026/12/31
    datetime           the date so, then HH:MM in the setup's time zone
    boolean            да / нет, yes / no, ...
    choice             the option's label in the language (its value without one)
    link               the linked record's title, as the recipient may read it (its id
                       when its entity has no title; nothing when they may not read it)

Dates, the decimal separator and yes/no are the export's (engine/records/export_locale.py):
one table of how a language writes values by hand. A text for people adds what an export
must not have: thousands grouped (as the web app's numbers read), and Persian digits for
`fa` — the web app writes numbers in the page's language with the browser's Intl, which
writes Persian digits for fa, so a notification reads as the card does. Money has no
currency sign: a setup does not say its currency. A language without a format of its own
(not in the table) gets ISO dates, a point and no grouping, and English yes/no.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any
from zoneinfo import ZoneInfo

from engine.records.export_locale import DEFAULT, LocaleFormat, locale_format
from engine.setup.spec import FieldSpec, LinkSpec, label_text
from engine.types.fields import DecimalType, IntegerType

NBSP = "\u00a0"
NNBSP = "\u202f"
#: how a language groups thousands (the Unicode CLDR's separators, as Intl writes them)
GROUPS: dict[str, str] = {
    "en": ",", "zh": ",", "ja": ",",
    "ru": NBSP, "uk": NBSP, "be": NBSP, "kk": NBSP, "pl": NBSP, "cs": NBSP,
    "fr": NNBSP,
    "de": ".", "tr": ".", "es": ".", "it": ".", "pt": ".",
    "fa": "٬",
}
#: languages whose texts use their own digits
PERSIAN_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
OWN_DIGITS = {"fa": PERSIAN_DIGITS}

#: (entity, ids) → {id: title} of those the reader may read
TitlesOf = Callable[[str, Iterable[int]], dict[int, str]]


class Localizer:
    """Values of one language and time zone; titles through `titles_of`, whose
    `has_title(entity)` says whether an entity has titles at all."""

    def __init__(self, language: str, zone: ZoneInfo, titles_of: TitlesOf,
                 has_title: Callable[[str], bool]):
        self.language = language
        primary = language.split("-")[0].lower()
        found = locale_format(language)
        self.format: LocaleFormat = locale_format("en") if found is DEFAULT else found
        self.decimal = found.decimal
        self.group = GROUPS.get(primary, "")
        self.digits = OWN_DIGITS.get(primary)
        self.zone = zone
        self.titles_of = titles_of
        self.has_title = has_title

    def value(self, spec: FieldSpec | LinkSpec | None, value: Any) -> Any:
        """`value` (as the API renders it) as a text in this language; what it cannot
        read (no spec, an unexpected shape) is returned as it is."""
        if value is None or value == "" or spec is None:
            return value
        if isinstance(spec, LinkSpec):
            return self._link(spec, value)
        kind = spec.type.moment_kind
        try:
            if isinstance(spec.type, (DecimalType, IntegerType)) and not isinstance(value, bool):
                return self._own(self.number(str(value)))
            if kind == "date":
                return self._own(self.format.format_date(dt.date.fromisoformat(str(value))))
            if kind == "datetime":
                moment = dt.datetime.fromisoformat(str(value)).astimezone(self.zone)
                return self._own(f"{self.format.format_date(moment)} {moment:%H:%M}")
        except ValueError:
            return value
        if isinstance(value, bool):
            return self.format.yes if value else self.format.no
        if spec.option_labels and isinstance(value, (str, list)):
            values = value if isinstance(value, list) else [value]
            return ", ".join(self._option(spec, str(v)) for v in values)
        return value

    def number(self, text: str) -> str:
        """`-1234567.50` grouped and with this language's separator."""
        sign = "-" if text.startswith("-") else ""
        whole, point, fraction = text.lstrip("+-").partition(".")
        if not whole.isdigit() or (fraction and not fraction.isdigit()):
            return text
        groups: list[str] = []
        while len(whole) > 3:
            whole, last = whole[:-3], whole[-3:]
            groups.insert(0, last)
        grouped = self.group.join([whole, *groups])
        return sign + grouped + (self.decimal + fraction if point else "")

    def _own(self, text: str) -> str:
        return text.translate(self.digits) if self.digits else text

    def _option(self, spec: FieldSpec, value: str) -> str:
        label = spec.option_labels.get(value)
        return label_text(label, self.language) if label else value

    def _link(self, spec: LinkSpec, value: Any) -> Any:
        if isinstance(value, dict):  # a polymorphic link: {"entity": ..., "id": ...}
            entity, ids = value.get("entity"), [value.get("id")]
        else:
            entity, ids = spec.target, (value if isinstance(value, list) else [value])
        wanted = [i for i in ids if isinstance(i, int)]
        if not isinstance(entity, str) or len(wanted) != len(ids):
            return value
        if not self.has_title(entity):
            return ", ".join(str(i) for i in wanted)
        titles = self.titles_of(entity, wanted)
        return ", ".join(titles[i] for i in wanted if i in titles)
