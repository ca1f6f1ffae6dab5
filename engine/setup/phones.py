"""Phones as a country writes them: a setup's `region:` (an ISO 3166 code such as RU or IR)
says how a number written without its country code is read, so that `8 999 123-45-67` and
`+7 999 123-45-67` (Russia), or `0912 345 6789` and `+98 912 345 6789` (Iran), are one
number. Numbers are brought to E.164 (`+79991234567`) by `phonenumbers`, the Python port of
Google's libphonenumber, which knows every country's trunk prefixes and number lengths.

A number it cannot read as a possible number of any country keeps its digits, as without
a region; an extension (`x12`) is not part of the E.164 form.
"""

from __future__ import annotations

import unicodedata

import phonenumbers

from engine.setup.names import did_you_mean

#: the region codes a setup may name (every country libphonenumber knows)
REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)


def region_problem(value: object) -> str | None:
    """Why `value` is not a region a setup may name, or None."""
    if not isinstance(value, str) or value.upper() not in REGIONS:
        return f"{value!r} is not a country code phonenumbers knows"
    return None


def region_hint(value: object) -> str:
    guess = did_you_mean(str(value).upper(), sorted(REGIONS))
    return (guess + "; " if guess else "") + (
        "write the two-letter ISO 3166 code of the country whose numbers are written "
        "without +: region: RU (Russia), IR (Iran), CN (China), US")


def ascii_digits(text: str) -> str:
    """`text` with the digits of any script as 0-9 (Persian ۰۹۱۲ is 0912)."""
    return "".join(str(unicodedata.digit(c)) if c.isdigit() and unicodedata.digit(c, None)
                   is not None else c for c in text)


def e164(text: str, region: str) -> str | None:
    """`text` as an E.164 number read in `region`, or None when it is not a possible
    number there (nor, written with +, anywhere)."""
    try:
        number = phonenumbers.parse(ascii_digits(text), region.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
