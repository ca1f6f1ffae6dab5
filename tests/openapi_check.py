"""The official OpenAPI 3.1 meta-schema (the copy schemathesis ships) checked against a
published document by jsonschema-rs, a Rust validator: ~6 ms a document where the
pure-Python validator took ~2 s (the default setup's document is ~300 kB). Both reported the
same problems when this was written (an unknown response key, a parameter without `in`, a
missing `default`); tests/test_openapi_fuzz.py keeps a check that a broken document fails.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_31

_META = jsonschema_rs.Draft202012Validator(OPENAPI_31)


def openapi_problems(document: dict[str, Any]) -> list[str]:
    """What the meta-schema refuses in `document` ([]: a valid OpenAPI 3.1 document)."""
    return [f"{list(error.instance_path)}: {error.message}" for error in _META.iter_errors(document)]
