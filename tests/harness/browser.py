"""A headless Chromium for tests that use the web pages as a person does: Debian's `chromium`
driven by playwright (never `playwright install`, which downloads a browser of its own), with
every request that is not to the server under test blocked, as on a machine with no network."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.harness.processes import require_tool

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

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


DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def offline_context(
    browser: Browser, origin: str | Sequence[str], **options: Any
) -> tuple[BrowserContext, list[str]]:
    """A browser context (cookies of its own) whose pages may reach `origin` (one or several)
    only; the list fills with every URL they were refused. `options` go to `new_context`
    (viewport...)."""
    context = browser.new_context(**options)
    blocked: list[str] = []
    origins = [origin] if isinstance(origin, str) else list(origin)

    def only_origin(route: Route) -> None:
        url = route.request.url
        if any(url == o or url.startswith(o.rstrip("/") + "/") for o in origins):
            route.continue_()
        else:
            blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_origin)
    return context, blocked


def offline_page(browser: Browser, origin: str) -> tuple[Page, list[str]]:
    """A page of its own context that may reach `origin` only (see `offline_context`)."""
    context, blocked = offline_context(browser, origin)
    return context.new_page(), blocked


AXE_DIR = Path(__file__).resolve().parents[1] / "browser"
SERIOUS = ("serious", "critical")


def axe_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations on `page` as it is now, one line each (its
    context needs `bypass_csp=True`: the pages allow no script but their own)."""
    from tests.oidc_provider import ensure_node_modules

    ensure_node_modules(AXE_DIR)
    page.add_script_tag(path=str(AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"))
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"
    )
    return [
        f"{v['impact']} {v['id']}: {v['help']} at {v['nodes']}"
        for v in found
        if v["impact"] in SERIOUS
    ]
