"""The dashboard in a real headless Chromium, on `reporun serve` with two workers and real
repositories over git://: signing in by the printed link, submitting from the form, a job's
log live (with what came before the page opened, across a cut connection), cancel, re-run,
who may see what, ANSI colours, a 16 MiB log, every form's bad input, and every page's
screenshots (desktop and phone, in .artifacts/screenshots/) and axe-core's verdict."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.harness.browser import DESKTOP, PHONE, axe_violations, chromium, offline_context
from tests.harness.git import GitServer
from tests.harness.processes import Processes, require_tool
from tests.harness.proxy import CutProxy
from tests.harness.server import Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / ".artifacts" / "screenshots"
WAIT_MS = 30_000

# 100 lines at once, then 100 more, one every 30 ms.
HUNDRED_THEN_MORE = (
    "#!/bin/sh\n"
    'i=1; while [ $i -le 100 ]; do echo "line $i"; i=$((i+1)); done\n'
    "sleep 1\n"
    'while [ $i -le 200 ]; do echo "line $i"; i=$((i+1)); sleep 0.03; done\n'
)
ALL_LINES = "".join(f"line {i}\n" for i in range(1, 201))
FIRST_LINES = "".join(f"line {i}\n" for i in range(1, 101))
STEPS = '#!/bin/sh\nfor i in 1 2 3 4 5 6; do echo "step $i"; sleep 0.5; done\n'
SLEEPS = "#!/bin/sh\necho started\nsleep 120\n"
QUICK = "#!/bin/sh\necho hello from the repository\n"
COLOURS = (
    "#!/bin/sh\n"
    "printf '\\033[31mred alert\\033[0m plain \\033[1;32mbold green\\033[0m "
    "\\033[38;5;208morange\\033[0m\\n'\n"
)
# 16 MiB less a little of 99-character lines, then one more line: the log's last words.
HUGE = (
    "#!/bin/sh\n"
    "yes \"$(printf '%098d' 0)\" | head -c 16776000\n"
    "echo\n"
    "echo the last line of a huge log\n"
)
HUGE_LIMIT = 16 * 1024 * 1024


class Dashboard:
    """`reporun serve` and a browser shared by this file's tests (each test its own browser
    context, so its own cookies), with tokens and sign-in links for any user."""

    def __init__(self, server: Server, browser: Browser, git: GitServer) -> None:
        self.server = server
        self.url = server.url
        self.browser = browser
        self.git = git
        self.admin = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=30,
            trust_env=False,
        )
        self.tokens: dict[str, str] = {"admin": server.token}
        self.roles: dict[str, str] = {"admin": "admin"}
        self.contexts: list[BrowserContext] = []
        self.blocked: list[str] = []

    def token(self, name: str, role: str = "user") -> str:
        if name not in self.tokens:
            self.tokens[name] = self.server.mint(name, role)
            self.roles[name] = role
        assert self.roles[name] == role, f"{name} is a {self.roles[name]}"
        return self.tokens[name]

    def link(self, name: str, role: str = "user", origin: str | None = None) -> str:
        """A one-time sign-in link for `name` (POST /v1/signin-links with their token)."""
        headers = {"Authorization": f"Bearer {self.token(name, role)}"}
        answer = self.admin.post("/v1/signin-links", headers=headers)
        assert answer.status_code == 200, answer.text
        url = str(answer.json()["url"])
        assert url.startswith(self.url + "/signin?code="), url
        return url.replace(self.url, origin or self.url, 1)

    def context(self, origin: str | None = None, **options: Any) -> BrowserContext:
        context, blocked = offline_context(self.browser, origin or self.url, **options)
        context.set_default_timeout(WAIT_MS)
        self.contexts.append(context)
        self.blocked = blocked
        return context

    def signed_in(
        self, name: str, role: str = "user", origin: str | None = None, **options: Any
    ) -> Page:
        """A page of a new context, signed in as `name` by a link, on the jobs page."""
        page = self.context(origin, **options).new_page()
        page.goto(self.link(name, role, origin))
        page.get_by_role("button", name=f"Sign in as {name}").click()
        page.wait_for_url(f"{origin or self.url}/jobs")
        return page

    def submit(self, script: str, as_user: str = "admin", **fields: Any) -> str:
        repo = self.git.make_repo({"run.sh": script})
        headers = {
            "Authorization": f"Bearer {self.token(as_user, self.roles.get(as_user, 'user'))}"
        }
        answer = self.admin.post("/v1/jobs", json={"repo": repo, **fields}, headers=headers)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.admin.get(f"/v1/jobs/{job_id}").json())

    def wait(self, job_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in statuses:
            assert time.monotonic() < deadline, f"{job_id} stayed {job['status']}"
            time.sleep(0.05)
        return job

    def close(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Exception):
                context.close()
        self.admin.close()


@pytest.fixture(scope="module")
def dashboard(
    tmp_path_factory: pytest.TempPathFactory, git_server: GitServer
) -> Iterator[Dashboard]:
    require_tool("bwrap", "the job sandbox")
    tmp = tmp_path_factory.mktemp("dashboard")
    processes = Processes()
    try:
        # The tests' git server is on loopback, which only admins may use unless trusted.
        server = Server(processes, tmp / "data", REPORUN_TRUSTED_HOSTS="127.0.0.1")
        server.serve(tmp / "serve.log")
        with chromium() as browser:
            shared = Dashboard(server, browser, git_server)
            try:
                yield shared
            finally:
                shared.close()
    finally:
        processes.close()


def log_text(page: Page) -> str:
    """What the log panel shows now, once the text that arrived is on the page."""
    page.evaluate("() => window.reporunLog && window.reporunLog.flush()")
    return str(page.locator("#log").text_content() or "")


def wait_for_log(page: Page, needle: str) -> None:
    page.wait_for_function(
        "needle => (document.getElementById('log').textContent || '').includes(needle)",
        arg=needle,
        timeout=WAIT_MS,
    )


def badge(page: Page) -> str:
    return str(page.locator("h1 .badge").inner_text()).strip()


def wait_for_status(page: Page, status: str) -> None:
    page.locator("h1 .badge", has_text=re.compile(f"^{status}$")).wait_for(timeout=WAIT_MS)


def test_the_printed_link_signs_in_once_then_a_job_from_the_form_runs_live(
    dashboard: Dashboard,
) -> None:
    banner = (dashboard.server.data_dir.parent / "serve.log").read_text()
    link = re.search(r"^dashboard: (\S+)$", banner, re.M)
    assert link is not None, banner
    page = dashboard.context().new_page()
    page.goto(link.group(1))
    # It asks first: a link alone (another site's, say) signs nobody in.
    assert page.context.cookies() == []
    page.get_by_role("button", name="Sign in as admin").click()
    page.wait_for_url(f"{dashboard.url}/jobs")
    assert page.locator(".who .name").inner_text().startswith("admin")
    cookie = next(c for c in page.context.cookies() if c["name"] == "reporun_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # loopback: plain HTTP is all there is

    # The form, as a person fills it in.
    repo = dashboard.git.make_repo({"run.sh": STEPS})
    page.get_by_role("link", name="New job").first.click()
    page.get_by_label("Repository").fill(repo)
    page.get_by_label("Timeout").fill("60")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    wait_for_log(page, "step 2")
    shown = log_text(page)
    assert badge(page) == "running" and "step 6" not in shown, shown
    wait_for_status(page, "succeeded")
    wait_for_log(page, "step 6")
    assert log_text(page) == "".join(f"step {i}\n" for i in range(1, 7))
    assert page.locator("[data-field=exit_code]").inner_text() == "0"
    assert page.locator("#log-state").inner_text() == "ended"
    assert dashboard.job(job_id)["status"] == "succeeded"

    # A bad URL: the API's own message, beside the field, and what was typed kept.
    page.goto(f"{dashboard.url}/jobs/new")
    page.get_by_label("Repository").fill("ftp://example.org/project.git")
    with page.expect_response(f"{dashboard.url}/jobs/new") as answer:
        page.get_by_role("button", name="Submit").click()
    assert answer.value.status == 400  # as the API answers it
    error = page.locator("#repo-error")
    assert "scheme" in error.inner_text(), error.inner_text()
    assert page.get_by_label("Repository").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Repository").input_value() == "ftp://example.org/project.git"

    # The link worked once.
    again = dashboard.context().new_page()
    again.goto(link.group(1))
    assert "used already" in again.locator(".problem").inner_text()
    assert dashboard.blocked == []


def test_a_page_opened_late_shows_the_first_hundred_lines_and_a_cut_loses_nothing(
    dashboard: Dashboard,
) -> None:
    proxy = CutProxy(dashboard.server.port)
    try:
        page = dashboard.signed_in("lena", origin=proxy.url)
        streams: list[str] = []
        page.on("request", lambda r: streams.append(r.url) if "/events" in r.url else None)
        job_id = dashboard.submit(HUNDRED_THEN_MORE, as_user="lena")
        deadline = time.monotonic() + 60
        while dashboard.job(job_id)["log_bytes"] < len(FIRST_LINES):
            assert time.monotonic() < deadline, "the first 100 lines never came"
            time.sleep(0.05)
        page.goto(f"{proxy.url}/jobs/{job_id}")
        wait_for_log(page, "line 100\n")
        assert log_text(page).startswith(FIRST_LINES)
        wait_for_log(page, "line 120\n")
        assert badge(page) == "running"
        assert proxy.cut() >= 1
        wait_for_status(page, "succeeded")
        wait_for_log(page, "line 200\n")
        assert log_text(page) == ALL_LINES
        assert page.locator("#log-state").inner_text() == "ended"
        assert len(streams) >= 2, streams  # the stream was opened again after the cut
    finally:
        proxy.close()


def test_cancel_asks_first_then_kills_the_running_job(dashboard: Dashboard) -> None:
    page = dashboard.signed_in("carl")
    assert "No jobs" in page.locator("#jobs").inner_text()
    job_id = dashboard.submit(SLEEPS, as_user="carl")
    # The jobs page shows it by itself (it refreshes while it may change).
    page.locator(f'#jobs a[href="/jobs/{job_id}"]').wait_for(timeout=15_000)
    page.goto(f"{dashboard.url}/jobs/{job_id}")
    wait_for_log(page, "started")
    page.get_by_role("link", name="Cancel…").click()
    assert page.url == f"{dashboard.url}/jobs/{job_id}/cancel"
    assert dashboard.job(job_id)["status"] == "running"  # asking changed nothing
    page.get_by_role("button", name="Yes, cancel the job").click()
    page.wait_for_url(f"{dashboard.url}/jobs/{job_id}")
    wait_for_status(page, "cancelled")
    assert dashboard.wait(job_id, "cancelled")["finished_at"]
    assert page.get_by_role("button", name="Re-run").is_visible()


def test_rerun_makes_a_new_job_of_the_same_commit_and_the_pages_link_both_ways(
    dashboard: Dashboard,
) -> None:
    page = dashboard.signed_in("rita")
    first = dashboard.submit(QUICK, as_user="rita", command="sh run.sh", timeout=30)
    done = dashboard.wait(first, "succeeded")
    page.goto(f"{dashboard.url}/jobs/{first}")
    page.get_by_role("button", name="Re-run").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    second = page.url.rsplit("/", 1)[1]
    assert second != first
    again = dashboard.job(second)
    assert again["rerun_of"] == first and again["owner"] == "rita"
    assert (again["ref"], again["command"]) == (done["commit"], "sh run.sh")
    assert again["limits"]["timeout"] == 30
    original = page.locator(".notice", has_text="A re-run of")
    assert original.get_by_role("link").get_attribute("href") == f"/jobs/{first}"
    wait_for_status(page, "succeeded")
    assert dashboard.job(second)["commit"] == done["commit"]
    page.goto(f"{dashboard.url}/jobs/{first}")
    link = page.locator(".notice", has_text="Re-run as").get_by_role("link")
    assert link.get_attribute("href") == f"/jobs/{second}"


def test_a_user_sees_and_acts_on_only_their_own_jobs_and_an_admin_on_all(
    dashboard: Dashboard,
) -> None:
    bobs = dashboard.submit(SLEEPS, as_user="bob")
    alice = dashboard.signed_in("alice")
    alices = dashboard.submit(QUICK, as_user="alice")
    dashboard.wait(bobs, "running")

    alice.goto(f"{dashboard.url}/jobs")
    listed = alice.locator("#jobs").inner_text()
    assert alices[:8] in listed and bobs[:8] not in listed
    assert alice.get_by_label("Owner").count() == 0  # no owner filter for a user
    answer = alice.goto(f"{dashboard.url}/jobs/{bobs}")
    assert answer is not None and answer.status == 404
    assert "no job" in alice.locator(".problem").inner_text().lower()
    for path in (f"/v1/jobs/{bobs}/events", f"/v1/jobs/{bobs}/logs", f"/jobs/{bobs}/cancel"):
        assert alice.request.get(dashboard.url + path).status == 404, path
    # Her own form's CSRF token, sent to cancel and re-run his job: still not found.
    alice.goto(f"{dashboard.url}/jobs/new")
    csrf = alice.locator("input[name=csrf]").first.input_value()
    for action in ("cancel", "rerun"):
        refused = alice.request.post(
            f"{dashboard.url}/jobs/{bobs}/{action}", form={"csrf": csrf}, max_redirects=0
        )
        assert refused.status == 404, (action, refused.status)

    # Bob himself, forged: a POST without the token, and a page of another port (the same site
    # to the browser, so his cookie goes along) whose form posts itself to cancel his job.
    bob = dashboard.signed_in("bob")
    forged = bob.request.post(f"{dashboard.url}/jobs/{bobs}/cancel", form={}, max_redirects=0)
    assert forged.status == 403
    assert "csrf" in forged.text().lower()
    evil = f"http://127.0.0.1:{dashboard.server.port + 1}"
    bob.context.route(
        f"{evil}/**",
        lambda route: route.fulfill(
            content_type="text/html",
            body=f'<form method="post" action="{dashboard.url}/jobs/{bobs}/cancel">'
            '<input name="csrf" value="guessed"></form>'
            "<script>document.forms[0].submit()</script>",
        ),
    )
    with bob.expect_response(f"{dashboard.url}/jobs/{bobs}/cancel") as posted:
        bob.goto(f"{evil}/prize")
    assert posted.value.status == 403
    assert dashboard.job(bobs)["status"] == "running"

    # An admin sees it, and cancels it.
    admin = dashboard.signed_in("root", "admin")
    listed = admin.locator("#jobs").inner_text()
    assert bobs[:8] in listed and alices[:8] in listed
    admin.goto(f"{dashboard.url}/jobs?owner=bob")
    assert alices[:8] not in admin.locator("#jobs").inner_text()
    admin.goto(f"{dashboard.url}/jobs/{bobs}/cancel")
    admin.get_by_role("button", name="Yes, cancel the job").click()
    wait_for_status(admin, "cancelled")
    assert dashboard.wait(bobs, "cancelled")["status"] == "cancelled"


def test_ansi_colours_render_as_colours(dashboard: Dashboard) -> None:
    page = dashboard.signed_in("iris")
    job_id = dashboard.submit(COLOURS, as_user="iris")
    dashboard.wait(job_id, "succeeded")
    page.goto(f"{dashboard.url}/jobs/{job_id}")
    wait_for_log(page, "orange")
    assert log_text(page) == "red alert plain bold green orange\n"  # no escape codes shown

    def style(text: str) -> dict[str, str]:
        span = page.locator("#log span span", has_text=re.compile(f"^{text}$"))
        return dict(
            span.evaluate(
                "el => { const s = getComputedStyle(el);"
                " return {color: s.color, weight: s.fontWeight}; }"
            )
        )

    plain = page.locator("#log").evaluate("el => getComputedStyle(el).color")
    red, green, orange = style("red alert"), style("bold green"), style("orange")
    assert red["color"] == "rgb(255, 123, 114)" != plain
    assert green["color"] == "rgb(86, 211, 100)" and int(green["weight"]) >= 700
    assert orange["color"] == "rgb(255, 135, 0)"  # xterm-256 colour 208


def test_a_16_mib_log_shows_its_tail_at_once_and_the_raw_log_has_all(
    dashboard: Dashboard,
) -> None:
    page = dashboard.signed_in("hugo")
    job_id = dashboard.submit(HUGE, as_user="hugo", limits={"log": HUGE_LIMIT})
    done = dashboard.wait(job_id, "succeeded", timeout=120)
    assert done["log_bytes"] > 16_000_000 and not done["log_truncated"]
    page.goto(f"{dashboard.url}/jobs/{job_id}")
    wait_for_log(page, "the last line of a huge log")
    assert page.locator("#log-cut").is_visible()
    shown = log_text(page)
    assert len(shown) <= 300 * 1024, len(shown)
    # The tab answers at once: a click lands and the page scrolls.
    assert page.evaluate("() => document.readyState") == "complete"
    page.locator("#log").click()
    page.mouse.wheel(0, -2000)
    raw = page.request.get(f"{dashboard.url}/v1/jobs/{job_id}/logs")
    assert raw.status == 200 and len(raw.body()) == done["log_bytes"]
    assert raw.body().endswith(b"the last line of a huge log\n")


def test_every_form_answers_bad_input_with_a_message_never_a_500(dashboard: Dashboard) -> None:
    page = dashboard.signed_in("bea")
    bad_fields = {
        "Repository": ("not a url", "#repo-error"),
        "Ref": ("-x --upload-pack=evil", "#ref-error"),
        "Timeout": ("soon", "#timeout-error"),
        "Memory": ("9" * 30, "#limits-memory-error"),
        "Processes": ("-1", "#limits-processes-error"),
        "Environment": ("NO_EQUALS_SIGN", "#env-error"),
    }
    for label, (value, error) in bad_fields.items():
        page.goto(f"{dashboard.url}/jobs/new")
        page.get_by_label("Repository").fill(dashboard.git.make_repo({"run.sh": QUICK}))
        page.get_by_label(label, exact=True).fill(value)
        with page.expect_response(f"{dashboard.url}/jobs/new") as answer:
            page.get_by_role("button", name="Submit").click()
        assert answer.value.status in (400, 422), (label, answer.value.status)
        assert page.locator(error).inner_text().strip(), label
        assert page.locator("#form-errors").is_visible()

    # The sign-in form: a wrong token is refused with words, on the page.
    stranger = dashboard.context().new_page()
    stranger.goto(f"{dashboard.url}/signin")
    stranger.get_by_label(re.compile("paste a token", re.I)).fill("not-a-token")
    with stranger.expect_response(f"{dashboard.url}/signin/token") as answer:
        stranger.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    assert stranger.locator(".problem").inner_text().strip()

    # Filters, addresses and posts no form would send.
    csrf = page.locator("input[name=csrf]").first.input_value()
    probes = [
        ("GET", "/jobs?status=lost", None),
        ("GET", "/jobs?cursor=%00%ff", None),
        ("GET", "/jobs?repo=" + "x" * 5000, None),
        ("GET", "/jobs/not-a-job", None),
        ("GET", f"/jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}", None),
        ("POST", "/jobs/new", {"csrf": csrf, "repo": "x" * 100_000}),
        ("POST", "/jobs/new", {"csrf": csrf, "env": "A=1\n" * 5000}),
        ("POST", "/jobs/new", {"csrf": csrf, "limits.log": "1e9999"}),
        ("POST", "/jobs/not-a-job/cancel", {"csrf": csrf}),
        ("POST", "/signin/token", {"token": "\x00" * 10}),
        ("GET", "/signin?code=" + "x" * 500, None),
        ("GET", "/signin/callback?code=abc&state=def", None),
    ]
    for method, path, form in probes:
        if method == "GET":
            answer = page.request.get(dashboard.url + path, max_redirects=0)
        else:
            answer = page.request.post(dashboard.url + path, form=form, max_redirects=0)
        assert 300 <= answer.status < 500, (method, path[:80], answer.status)
        if answer.status >= 400:
            assert "text/html" in answer.headers["content-type"], (
                path[:80],
                answer.status,
                answer.text()[:300],
            )
    garbage = page.request.post(
        f"{dashboard.url}/jobs/new",
        data=b'{"repo": 1}',
        headers={"Content-Type": "application/json"},
        max_redirects=0,
    )
    assert 400 <= garbage.status < 500, garbage.status


PAGES = ("signin", "signin-link", "jobs", "jobs-filtered", "new", "new-errors")
PAGES += ("job-running", "job-done", "cancel", "workers", "not-found")


def test_every_page_at_desktop_and_phone_width_passes_axe(dashboard: Dashboard) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # It must still be running at the last page of the phone pass, however slow the machine.
    running = dashboard.submit(HUNDRED_THEN_MORE.replace("sleep 1", "sleep 500"), as_user="ada")
    done = dashboard.submit(COLOURS, as_user="ada")
    dashboard.wait(done, "succeeded")
    dashboard.wait(running, "running")
    found: dict[str, list[str]] = {}
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = dashboard.signed_in("root", "admin", viewport=viewport, bypass_csp=True)
        signed_out = dashboard.context(viewport=viewport, bypass_csp=True).new_page()
        for name in PAGES:
            shown = page
            if name == "signin":
                shown = signed_out
                shown.goto(f"{dashboard.url}/signin")
            elif name == "signin-link":
                shown = signed_out
                shown.goto(dashboard.link("root", "admin"))
            elif name == "jobs":
                shown.goto(f"{dashboard.url}/jobs")
            elif name == "jobs-filtered":
                shown.goto(f"{dashboard.url}/jobs?status=succeeded&owner=ada")
            elif name == "new":
                shown.goto(f"{dashboard.url}/jobs/new")
            elif name == "new-errors":
                shown.goto(f"{dashboard.url}/jobs/new")
                shown.get_by_label("Repository").fill("ftp://example.org/x")
                shown.get_by_label("Timeout").fill("forever")
                shown.get_by_role("button", name="Submit").click()
                shown.locator("#form-errors").wait_for()
            elif name == "job-running":
                shown.goto(f"{dashboard.url}/jobs/{running}")
                wait_for_log(shown, "line 100\n")
            elif name == "job-done":
                shown.goto(f"{dashboard.url}/jobs/{done}")
                wait_for_log(shown, "orange")
            elif name == "cancel":
                shown.goto(f"{dashboard.url}/jobs/{running}/cancel")
            elif name == "workers":
                shown.goto(f"{dashboard.url}/workers")
                shown.locator("svg.chart").first.wait_for()
                tables = shown.locator("table")
                assert tables.nth(0).locator("tbody tr").count() == 2  # serve's two workers
                assert running[:8] in tables.nth(0).inner_text()  # one of them is busy with it
                assert tables.nth(1).locator("tbody tr").count() >= 1  # the pool's decisions
            elif name == "not-found":
                shown.goto(f"{dashboard.url}/jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}")
            shown.screenshot(path=str(SCREENSHOTS / f"{name}-{size}.png"), full_page=True)
            width = shown.evaluate("() => document.documentElement.scrollWidth")
            if width > viewport["width"]:
                found.setdefault(f"{name}-{size}", []).append(f"scrolls sideways: {width}px")
            # axe reads the page's DOM, the same at either width: once a page is enough.
            problems = axe_violations(shown) if size == "desktop" else []
            if problems:
                found.setdefault(f"{name}-{size}", []).extend(problems)
    dashboard.admin.post(f"/v1/jobs/{running}/cancel")
    assert found == {}, found
