"""`/docs`: Swagger UI served from this server, never from a CDN.

FastAPI's default page loads Swagger UI from a CDN at a floating major version, so what
`/docs` runs changes under the installation and needs the internet. Here the assets come
from the pinned `swagger-ui-bundle` package (a PyPI wheel carrying one Swagger UI release)
and are served under `/docs/assets/`; the page references nothing outside the server.
Like `/openapi.json`, these paths are outside `/api` and need no token.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.requests import Request
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"
_FILES = Path(swagger_ui_bundle.swagger_ui_path)


def install_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Serve the Swagger UI page at `/docs` and its assets at `/docs/assets/`.

    The app must be created with `docs_url=None` so FastAPI's CDN page is not registered."""
    app.mount(ASSETS, StaticFiles(directory=_FILES), name="docs-assets")

    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} — docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True})

    app.add_route("/docs", docs, methods=["GET"], include_in_schema=False)
