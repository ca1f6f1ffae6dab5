"""Which multipart bodies the HTTP guard lets through: uploads to `POST /api/{e}/import`
only, and not from a foreign web page (a form can be sent cross-site with no CORS
preflight). Used by api/guard.py; the route itself is api/imports.py."""

from __future__ import annotations

MULTIPART = "multipart/form-data"


def is_upload_path(path: str) -> bool:
    """`/api/<entity>/import`: the one route that takes a multipart body."""
    parts = path.strip("/").split("/")
    return len(parts) == 3 and parts[0] == "api" and parts[2] == "import"


def is_multipart(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == MULTIPART


def upload_problem(origin: str | None, host: str | None,
                   allowed_origins: tuple[str, ...]) -> str | None:
    """None when a multipart upload to the import route may be taken: from no web page
    (no `Origin`: curl, scripts), or from this server's own origin or an allowed one; else
    why not. Elsewhere a multipart body is refused as any body that is not JSON."""
    if origin is None:
        return None
    own = origin.lower().rstrip("/").split("://", 1)[-1] == (host or "").lower()
    if own or origin.rstrip("/") in allowed_origins:
        return None
    return (f"an upload from the web page {origin} is refused: only this server's own pages "
            "and the configured CORS origins may upload files")
