"""`kartoteka serve` runs on uvloop and httptools (dependencies): checked in a real server
process by the native modules it loaded, and by what it says when it starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.run import served_by
from tests.test_reliability import Server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/<pid>/maps")


def test_the_server_runs_on_uvloop_and_httptools(tmp_path: Path) -> None:
    server = Server(f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "server.log")
    server.start()
    try:
        assert server.process is not None
        assert served_by(server.process.pid) == {"loop": "uvloop", "http": "httptools"}
    finally:
        server.stop()
    assert "Event loop uvloop, HTTP parser httptools." in server.log.read_text()
