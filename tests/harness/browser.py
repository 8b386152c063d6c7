"""A headless Chromium for tests that use the web pages as a person does: Debian's `chromium`
driven by playwright (never `playwright install`, which downloads a browser of its own), with
every request that is not to the server under test blocked, as on a machine with no network."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tests.harness.processes import require_tool

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking")


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium, closed at the end; a missing one fails (HarnessError)."""
    path = require_tool("chromium", "the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def offline_page(browser: Browser, origin: str) -> tuple[Page, list[str]]:
    """A page that may reach `origin` only; the list fills with every URL it was refused."""
    page = browser.new_page()
    blocked: list[str] = []

    def only_origin(route: Route) -> None:
        url = route.request.url
        if url == origin or url.startswith(origin.rstrip("/") + "/"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort("internetdisconnected")

    page.route("**/*", only_origin)
    return page, blocked
