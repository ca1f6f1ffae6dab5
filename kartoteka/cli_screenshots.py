"""`kartoteka screenshots SETUP --out DIR`: the web app's list, card, board and funnel as
PNG files, on a wide screen (1280×800) and a phone's (390 px wide).

    kartoteka screenshots schemas --db sqlite:///kartoteka.db --out shots/
    kartoteka screenshots examples/printing --db sqlite:///print.db --out shots/ --language fa

The app is served over the database on a free loopback port for the run, and Debian's
Chromium (`apt-get install chromium`) is driven by Playwright (`pip install playwright`,
part of the test extra). The entity shown is the first with a pipeline (or `--entity`);
its card is that of the first record its list shows. The app is served as on loopback
without a sign-in, so point it at a database without users (a copy, or a demo one).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import click

from kartoteka.cli import DB_OPTION, SETUP_ARG, _guarded, _open, main

SIZES = {"wide": (1280, 800), "phone": (390, 844)}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@main.command("screenshots")
@SETUP_ARG
@DB_OPTION
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The folder the PNG files are written to (made if missing).")
@click.option("--entity", default=None, help="The entity shown (default: the first with a "
                                             "pipeline, else the first).")
@click.option("--language", default=None, help="One of the setup's languages (default: its first).")
@click.option("--chromium", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/usr/bin/chromium"), show_default=True)
@click.pass_context
def screenshots(ctx: click.Context, setup: Path, db_url: str, out: Path, entity: str | None,
                language: str | None, chromium: Path) -> None:
    """Write the web app's list, card, board and funnel as PNG files into OUT."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise click.ClickException("screenshots need Playwright: pip install playwright "
                                   "(it drives Debian's Chromium: apt-get install chromium)") from None
    if not chromium.exists():
        raise click.ClickException(f"{chromium} is missing: apt-get install chromium")

    def run() -> None:
        kt = _open(setup, db_url)
        try:
            _run(kt, out, entity, language, chromium, sync_playwright)
        finally:
            kt.close()
    _guarded(ctx, run)


def _run(kt: Any, out: Path, entity: str | None, language: str | None, chromium: Path,
         sync_playwright: Any) -> None:
    kt.verify_database()
    names = list(kt.setup.entities)
    chosen = entity or next((n for n in names if kt.setup.entities[n].pipeline), names[0])
    if chosen not in kt.setup.entities:
        raise click.ClickException(f"no entity {chosen!r}; the setup has: {', '.join(names)}")
    lang = language or kt.setup.languages[0]
    if lang not in kt.setup.languages:
        raise click.ClickException(f"no language {lang!r}; the setup has: "
                                   f"{', '.join(kt.setup.languages)}")
    out.mkdir(parents=True, exist_ok=True)
    with _served(kt) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            for size, (width, height) in SIZES.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                for written in _shoot(page, base, chosen, lang, kt, out, size):
                    click.echo(written)
                page.close()
        finally:
            browser.close()


def _shoot(page: Any, base: str, entity: str, lang: str, kt: Any, out: Path,
           size: str) -> list[Path]:
    pages = {"list": f"/app/{entity}"}
    first = page.goto(f"{base}/app/{entity}?lang={lang}")
    assert first is not None
    link = page.locator("table.list tbody td a").first
    if link.count():
        pages["card"] = str(link.get_attribute("href"))
    if kt.setup.entities[entity].pipeline:
        pages["board"] = f"/app/{entity}/board"
        pages["funnel"] = f"/app/{entity}/funnel"
    written = []
    for name, path in pages.items():
        page.goto(f"{base}{path}")
        target = out / f"{entity}-{name}-{size}.png"
        page.screenshot(path=str(target))
        written.append(target)
    return written


class _served:
    """The app over `kt` on a free loopback port, served by uvicorn in a thread."""

    def __init__(self, kt: Any):
        import uvicorn

        from api.app import create_app

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(kt), host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise click.ClickException("the app could not be served for the screenshots")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
