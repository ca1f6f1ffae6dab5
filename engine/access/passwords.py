"""Passwords: the rules a new one must meet, and its argon2 hash (argon2-cffi's defaults,
RFC 9106's low-memory profile; a hash made with older parameters is remade at the next
sign-in). A password is compared as Unicode NFC, so the same word typed on two keyboards
(a composed or a decomposed "й") is one password. Never stored or logged as given."""

from __future__ import annotations

import unicodedata

from argon2 import Parameters, PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from engine.errors import ErrorDetail
from engine.types.fields import ValueProblem, check_text

MIN_LENGTH = 10
#: hashing is deliberately slow; a megabyte "password" would make it slower still
MAX_LENGTH = 1000

_hasher = PasswordHasher()
#: verified against when the e-mail names no one, so an unknown e-mail takes as long (made
#: at the first sign-in, not when the module loads: every command would pay for it)
_nobody: str | None = None


def use_parameters(parameters: Parameters) -> None:
    """Hash with other argon2 parameters from now on (hashes made before still verify, and
    are remade at their next sign-in). The tests use argon2-cffi's cheapest profile: the
    default takes ~0.3 s a hash by design, which hundreds of sign-ins cannot afford."""
    global _hasher, _nobody
    _hasher = PasswordHasher.from_parameters(parameters)
    _nobody = None


def normalized(password: str) -> bytes:
    """The bytes hashed: NFC, UTF-8 (a lone surrogate a client sent kept, never matching)."""
    return unicodedata.normalize("NFC", password).encode("utf-8", "surrogatepass")


def password_problems(password: object, email: str | None, key: str = "password") -> list[ErrorDetail]:
    """Why `password` may not be a user's: too short or long, the e-mail itself, not text."""
    if not isinstance(password, str):
        return [ErrorDetail(key, "is required, as text")]
    try:
        check_text(password)
    except ValueProblem as problem:
        return [ErrorDetail(key, str(problem))]
    text = unicodedata.normalize("NFC", password)
    if len(text) < MIN_LENGTH:
        return [ErrorDetail(key, f"must be at least {MIN_LENGTH} characters long "
                                 f"(it has {len(text)})")]
    if len(text) > MAX_LENGTH:
        return [ErrorDetail(key, f"must be at most {MAX_LENGTH} characters long")]
    if email is not None and text.strip().casefold() == email.strip().casefold():
        return [ErrorDetail(key, "must not be the e-mail address")]
    return []


def hash_password(password: str) -> str:
    return _hasher.hash(normalized(password))


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches the `stored` hash; with none stored, as slow as a match."""
    global _nobody
    if stored is None and _nobody is None:
        _nobody = _hasher.hash("not anyone's password")
    try:
        return _hasher.verify(stored or _nobody or "", normalized(password)) \
            and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)
