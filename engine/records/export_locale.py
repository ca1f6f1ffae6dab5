"""How a language writes values by hand, for an export's `values=locale` (engine/records/export.py).

    ru: 31.12.2026   1234,50   да / нет        de: 31.12.2026   1234,50   ja / nein
    fr: 31/12/2026   1234,50   oui / non       zh: 2026/12/31   1234.50   是 / 否
    en: 2026-12-31   1234.50   yes / no        (any other language: ISO and a point)

A small table rather than a locale library: an export must read back (by an import, by
Excel in that locale) exactly as written, so the forms are few and fixed — no digit
grouping (Excel in ru reads `1234,50` as a number, `1 234,50` as text), four-digit years
(year 1 is `01.01.0001`, not `1.1.1`), and the setup's time zone for times. English has
no one day order (12/31 or 31/12), so it keeps ISO dates. A language is found by its
primary subtag (`ru-RU` → `ru`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from engine.setup.spec import Label, label_text


@dataclass(frozen=True)
class LocaleFormat:
    #: a date, with `{day}`, `{month}`, `{year}` (zero-padded to 2, 2 and 4 digits)
    date: str
    #: the decimal separator
    decimal: str
    yes: str
    no: str

    def format_date(self, day: dt.date) -> str:
        return self.date.format(day=f"{day.day:02}", month=f"{day.month:02}",
                                year=f"{day.year:04}")

    def format_datetime(self, moment: dt.datetime) -> str:
        return f"{self.format_date(moment)} {moment:%H:%M:%S}"

    def format_decimal(self, text: str) -> str:
        """A decimal as the API renders it (`-1234.50`) with this locale's separator."""
        return text.replace(".", self.decimal)


ISO_DATE = "{year}-{month}-{day}"
DOTTED = "{day}.{month}.{year}"
SLASHED = "{day}/{month}/{year}"
YEAR_FIRST = "{year}/{month}/{day}"

DEFAULT = LocaleFormat(ISO_DATE, ".", "true", "false")

FORMATS: dict[str, LocaleFormat] = {
    "en": LocaleFormat(ISO_DATE, ".", "yes", "no"),
    "ru": LocaleFormat(DOTTED, ",", "да", "нет"),
    "uk": LocaleFormat(DOTTED, ",", "так", "ні"),
    "be": LocaleFormat(DOTTED, ",", "так", "не"),
    "kk": LocaleFormat(DOTTED, ",", "иә", "жоқ"),
    "de": LocaleFormat(DOTTED, ",", "ja", "nein"),
    "pl": LocaleFormat(DOTTED, ",", "tak", "nie"),
    "cs": LocaleFormat(DOTTED, ",", "ano", "ne"),
    "tr": LocaleFormat(DOTTED, ",", "evet", "hayır"),
    "fr": LocaleFormat(SLASHED, ",", "oui", "non"),
    "es": LocaleFormat(SLASHED, ",", "sí", "no"),
    "it": LocaleFormat(SLASHED, ",", "sì", "no"),
    "pt": LocaleFormat(SLASHED, ",", "sim", "não"),
    "fa": LocaleFormat(YEAR_FIRST, "٫", "بله", "خیر"),
    "zh": LocaleFormat(YEAR_FIRST, ".", "是", "否"),
    "ja": LocaleFormat(YEAR_FIRST, ".", "はい", "いいえ"),
}


def locale_format(language: str | None) -> LocaleFormat:
    """The format of `language` (by its primary subtag), else ISO dates and a point."""
    if not language:
        return DEFAULT
    return FORMATS.get(language.split("-")[0].lower(), DEFAULT)


#: the headers of the columns every record has (a field's header is its label)
SYSTEM_LABELS: dict[str, Label] = {
    "id": {"en": "ID", "ru": "ID", "fa": "شناسه", "zh": "编号"},
    "created_at": {"en": "Created", "ru": "Создано", "fa": "ایجاد", "zh": "创建时间"},
    "updated_at": {"en": "Updated", "ru": "Изменено", "fa": "به‌روزرسانی", "zh": "更新时间"},
    "version": {"en": "Version", "ru": "Версия", "fa": "نسخه", "zh": "版本"},
    "owner": {"en": "Owner", "ru": "Ответственный", "fa": "مسئول", "zh": "负责人"},
    "stage": {"en": "Stage", "ru": "Этап", "fa": "مرحله", "zh": "阶段"},
    #: after a link's label, in the header of its title column: "Client (title)"
    "title": {"en": "title", "ru": "название", "fa": "عنوان", "zh": "名称"},
}


def system_label(name: str, language: str | None) -> str:
    """A server-managed column's header in `language` (English where the table lacks it)."""
    label = SYSTEM_LABELS.get(name)
    if label is None:
        return name
    primary = (language or "en").split("-")[0].lower()
    return label.get(primary) or label_text(label, "en")
