"""`/docs` in a real headless browser with no network: Swagger UI renders from the package's
own assets, and its "Authorize" button makes "Try it out" calls with the token."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.harness.browser import chromium, offline_page
from tests.harness.processes import Processes, require_tool
from tests.harness.server import Server

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, Request


def test_docs_render_offline_and_try_it_out_sends_the_token(
    tmp_path: Path, processes: Processes
) -> None:
    require_tool("bwrap", "the job sandbox")
    server = Server(processes, tmp_path / "data").serve(tmp_path / "serve.log", "--workers", "0")
    with chromium() as browser:
        page, blocked = offline_page(browser, server.url)
        page.goto(f"{server.url}/docs")
        page.locator(".opblock").first.wait_for(state="visible", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert {"/v1/jobs", "/v1/jobs/{job_id}/logs", "/healthz"} <= set(paths), paths
        authorize = page.locator("button.authorize").first
        assert authorize.is_visible()
        listing = page.locator("#operations-jobs-list_jobs_v1_jobs_get")
        listing.locator(".opblock-summary").click()
        listing.locator("button.try-out__btn").click()
        request, shown = execute(page, listing)
        assert ("authorization" not in request.headers, shown) == (True, "401")
        authorize.click()
        page.locator(".modal-ux input").fill(server.token)
        page.locator(".modal-ux button.authorize").click()
        page.locator(".modal-ux button.btn-done").click()
        request, shown = execute(page, listing)
        assert request.headers.get("authorization") == f"Bearer {server.token}"
        assert shown == "200", listing.inner_text()[:2000]
    assert blocked == [], f"the page tried to reach beyond the server: {blocked}"


def execute(page: Page, operation: Locator) -> tuple[Request, str]:
    """Click "Execute" on an operation in "Try it out": the request the page sent, and the
    status code the page then shows."""
    with page.expect_response(lambda r: "/v1/" in r.url) as answer:
        operation.locator("button.execute").click()
    status = str(answer.value.status)
    shown = operation.locator(".live-responses-table tbody .response-col_status").first
    shown.filter(has_text=status).wait_for(state="visible", timeout=10_000)
    return answer.value.request, shown.inner_text().strip()
