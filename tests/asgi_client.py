"""A quicker transport for Starlette's TestClient: the app answers a request within one
call into the client's event-loop thread.

Starlette's own transport streams each answer back across threads: eight calls into the
portal's thread per request (two events, a memory stream, a cancel scope, the app's task,
waiting for the start, each body chunk, the end), ~2 ms of every request of the test
suite where the app itself takes ~0.3–0.8 ms. Here the app runs to the end of its answer
in one call, its body gathered there: the same ASGI exchange (the request's body, then
`http.disconnect` once the answer is complete, as a server sends it), the same exceptions
raised when `raise_server_exceptions` is on. Not for answers that never end (none of the
app's do) nor WebSockets (handed to Starlette's transport).

Installed for the whole test session by tests/conftest.py (`install`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import anyio
import httpx2 as httpx
import starlette.testclient as testclient


class OneCallTransport(testclient._TestClientTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme in ("ws", "wss"):
            return super().handle_request(request)
        port = url.port or {"http": 80, "https": 443}[url.scheme]
        headers = [] if "host" in request.headers else [(b"host", url.netloc)]
        headers += [(key.lower().encode(), value.encode())
                    for key, value in request.headers.multi_items()]
        scope: dict[str, Any] = {
            "type": "http", "http_version": "1.1", "method": request.method,
            "path": unquote(url.path), "raw_path": url.raw_path.split(b"?", 1)[0],
            "root_path": self.root_path, "scheme": url.scheme,
            "query_string": url.query, "headers": headers, "client": self.client,
            "server": [url.raw_host.decode("ascii"), port],
            "extensions": {"http.response.debug": {}, "http.response.trailers": {}},
            "state": self.app_state.copy(),
        }
        body = request.read()
        app = self.app

        async def run() -> tuple[dict[str, Any] | None, list[bytes], BaseException | None]:
            start: dict[str, Any] | None = None
            chunks: list[bytes] = []
            complete = anyio.Event()
            asked = False

            async def receive() -> dict[str, Any]:
                nonlocal asked
                if not asked:
                    asked = True
                    return {"type": "http.request", "body": body}
                await complete.wait()  # a server says the client left only after the answer
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                nonlocal start
                if message["type"] == "http.response.start":
                    start = message
                elif message["type"] == "http.response.body":
                    chunks.append(bytes(message.get("body", b"")))
                    if not message.get("more_body", False):
                        complete.set()

            try:
                await app(scope, receive, send)
            except BaseException as error:  # handed to the caller, as Starlette does
                return start, chunks, error
            finally:
                complete.set()
            return start, chunks, None

        with self.portal_factory() as portal:
            start, chunks, error = portal.call(run)
        if error is not None and (self.raise_server_exceptions
                                  or not isinstance(error, Exception)):
            raise error  # (a 500 the app sent first is the answer when not raising)
        if start is None:
            if self.raise_server_exceptions:
                raise AssertionError("TestClient did not receive any response.")
            return httpx.Response(500, request=request)
        return httpx.Response(
            start["status"], request=request,
            headers=[(key.decode(), value.decode()) for key, value in start.get("headers", [])],
            content=b"" if request.method == "HEAD" else b"".join(chunks))


def install() -> None:
    """Every TestClient made from now on uses the one-call transport."""
    testclient._TestClientTransport = OneCallTransport  # type: ignore[misc]
