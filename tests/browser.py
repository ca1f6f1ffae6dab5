"""A real browser and a real server for the web app's tests (tests/test_web_browser.py).

The browser is Debian's Chromium (`apt-get install chromium`) driven by Playwright; the
tests never run `playwright install` (no network). One browser per session; each test gets
its own page, and its own server: uvicorn in a thread, on a free loopback port, serving
the app over the test's database.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from api import create_app
from engine import Kartoteka

CHROMIUM = Path("/usr/bin/chromium")
#: no GPU, no sandbox (containers), and nothing that reaches out to the network
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MISSING = (f"{CHROMIUM} is missing: the web app's browser tests need Debian's Chromium — "
           "apt-get install chromium (as root); CI installs it (.ci/run)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(kt: Kartoteka) -> Iterator[str]:
    """The app over `kt`, served by uvicorn in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(kt), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
