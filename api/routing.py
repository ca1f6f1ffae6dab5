"""Finding a request's route among a few hundred without asking each of them.

Starlette finds a request's route by asking every route in turn whether it matches, and a
setup's API has a few hundred routes (every entity's list, record, links, board, funnel,
bulk, import, export... the API's own calls and the web app's pages): a POST to the
hundredth route paid a hundred path patterns and FastAPI's bookkeeping of each before its
handler ran — a tenth of a create's CPU on the event loop.

`index_routes(router)` puts an index in front of the router's own search. Each route's
path begins with a literal head (all before its first parameter: `/api/sale/` of
`/api/sale/{id}`), and its pattern matches only paths that start with that head. A
request's candidates are the routes whose heads its path starts with, in the router's
order: they are all the routes whose heads are heads of the longest head the path starts
with, found by one dictionary lookup per head length. The router's own search
(FastAPI's, with its bookkeeping) then runs over the candidates only, in a copy of the
router made once per head; so the first route that matches is the one the full search
finds first, and a path matched by a route for another method is answered 405 as
before. When no candidate matches, the full router answers as it always did (a redirect
to the path with or without its trailing slash, or 404). A route whose head cannot be
known (no `path_format`) is a candidate for every path.

`lean(route)`: a route of FastAPI whose endpoint takes the request alone and returns a
Response (every route the API generates) is answered the way Starlette answers its own
routes: the endpoint called with the request, its response sent. FastAPI's handler would
find nothing to do for it — no parameter to read, no dependency, no body to validate, no
response to serialize — but it still builds a response and two exit stacks and walks its
dependency solver, about a tenth of a create's time on the event loop. The route stays
FastAPI's (its path, methods, OpenAPI operation and matching), and errors still reach the
app's exception handlers.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.responses import Response
from starlette.routing import BaseRoute, Router, request_response
from starlette.types import Receive, Scope, Send


def index_routes(router: Router) -> None:
    """Find `router`'s routes through a `RouteIndex` (see the module); a router whose own
    middleware wraps its search is left as it is."""
    search = router.app
    if router.middleware_stack != search:
        return
    index: RouteIndex | None = None

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal index
        if scope["type"] != "http":
            await search(scope, receive, send)
            return
        if index is None or index.count != len(router.routes):  # routes added: again
            index = RouteIndex(router)
        narrowed = index.narrowed(get_route_path(scope))
        if narrowed is None:
            await search(scope, receive, send)
            return
        scope.setdefault("router", router)
        await narrowed.app(scope, receive, send)

    router.middleware_stack = dispatch


def head_of(route: BaseRoute) -> str:
    """The literal text every path the route matches starts with ("" when unknown)."""
    path_format = getattr(route, "path_format", None)
    return path_format.split("{", 1)[0] if isinstance(path_format, str) else ""


class RouteIndex:
    """A router's routes by their heads, each head with its copy of the router that
    searches only the routes a path starting with that head can match (made when a path
    first needs it: a test's app serves a few paths of its hundreds)."""

    def __init__(self, router: Router):
        self.router = router
        self.routes: Sequence[BaseRoute] = list(router.routes)
        self.count = len(self.routes)
        self.heads = [head_of(route) for route in self.routes]
        self.known = frozenset(self.heads)
        self.lengths = sorted({len(head) for head in self.known}, reverse=True)
        self.by_head: dict[str, Router] = {}

    def narrowed(self, path: str) -> Any:
        """The router searching the candidates of `path` (None: it starts with no head)."""
        for length in self.lengths:
            if length <= len(path) and (head := path[:length]) in self.known:
                found = self.by_head.get(head)
                if found is None:
                    found = self.by_head[head] = self._narrowed(head)
                return found
        return None

    def _narrowed(self, head: str) -> Router:
        narrowed = copy.copy(self.router)
        narrowed.routes = [route for route, own in zip(self.routes, self.heads, strict=True)
                           if head.startswith(own)]
        # no match among them: the whole router answers (a redirect, a 404)
        narrowed.redirect_slashes = False
        narrowed.default = self.router.app
        return narrowed


def lean(route: BaseRoute) -> BaseRoute:
    """`route`, answered as Starlette answers its routes when FastAPI would do nothing more
    (see the module): an APIRoute whose async endpoint takes only the request and is
    declared to return a Response."""
    if isinstance(route, APIRoute) and _request_only(route):
        route.app = request_response(route.endpoint)
    return route


def _request_only(route: APIRoute) -> bool:
    needs = route.dependant
    if not needs.request_param_name or needs.path_params or needs.query_params \
            or needs.header_params or needs.cookie_params or needs.body_params \
            or needs.dependencies or route.dependencies:
        return False
    try:
        returns = typing.get_type_hints(route.endpoint).get("return")
    except (NameError, TypeError):
        return False
    return isinstance(returns, type) and issubclass(returns, Response)
