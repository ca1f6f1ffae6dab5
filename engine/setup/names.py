"""Names: what an identifier may be, which names the server keeps, and "did you mean".

Field, link and reverse names are the consultant's: only the columns the server manages
are refused. Where a name meets the API's own words, the API gives way by rule instead:
a list control (`sort`, `total`...) is a filter in its operator form (`total[eq]=5`, see
engine/query.py), and a link named like a record route (`timeline`) is served under
`/api/{e}/{id}/links/`.

Every name that reaches SQL (entity, field, link) passes `IDENTIFIER` at load time, and
SQLAlchemy quotes it; no text from YAML or from a request is ever pasted into SQL.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_NAME = 40  # leaves room under PostgreSQL's 63-byte limit for derived names

#: Columns every record has, set only by the server.
SYSTEM_FIELDS = ("id", "created_at", "updated_at", "version")
#: Columns an entity may get from its declaration (`owner: true`, a pipeline).
MANAGED_FIELDS = ("owner", "stage")
SERVER_MANAGED = frozenset(SYSTEM_FIELDS + MANAGED_FIELDS)

#: The API's own paths under `/api/` (and the docs beside it): an entity cannot take one.
TOP_LEVEL_PATHS = ("api", "docs", "openapi", "schema", "users", "me", "automations",
                   "webhooks", "views",
                   # the web app's own paths beside its entities' (/app/static/…, /app/invite/…)
                   "static", "invite")
#: Paths the API serves under a record (`/api/{e}/{id}/timeline`). A link or way back of
#: the same name keeps its name everywhere else and is served at `/api/{e}/{id}/links/{name}`,
#: where every link and way back is always served.
RECORD_ROUTES = ("stage", "timeline", "comments", "activities", "links", "duplicates", "merge")
LINKS_ROUTE = "links"
INTERNAL_PREFIX = "kt_"


def identifier_problem(name: object) -> str | None:
    """Why `name` cannot be an identifier, or None when it can."""
    if not isinstance(name, str):
        return f"must be a name, got {type(name).__name__}"
    if not IDENTIFIER.match(name):
        return (
            f"{name!r} is not a plain identifier: use lower-case Latin letters, digits and "
            "underscores, starting with a letter (labels carry names in other scripts)"
        )
    if len(name) > MAX_NAME:
        return f"{name!r} is longer than {MAX_NAME} characters"
    if name.startswith(INTERNAL_PREFIX):
        return f"{name!r} starts with {INTERNAL_PREFIX!r}, which Kartoteka keeps for itself"
    if "__" in name:
        return f"{name!r} contains '__', which Kartoteka uses to join names"
    return None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`"; did you mean 'client'?"`-style hint, or an empty string."""
    matches = difflib.get_close_matches(str(word), sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean {matches[0]!r}?" if matches else ""


def pascal(name: str) -> str:
    """`purchase_order` → `PurchaseOrder` (schema names in OpenAPI)."""
    return "".join(part.capitalize() for part in name.split("_"))


def join_table_name(entity: str, link: str) -> str:
    return f"{entity}__{link}"


def link_column(link: str) -> str:
    return f"{link}_id"


def poly_entity_column(link: str) -> str:
    return f"{link}_entity"


def db_object_name(prefix: str, table: str, *columns: str) -> str:
    """An index or constraint name that fits PostgreSQL's 63-byte limit, deterministically."""
    name = "_".join((prefix, table, *columns))
    if len(name) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[:52]}_{digest}"
