"""The dashboard's server side in-process (real SQLite; sessions also on PostgreSQL): sign-in
codes that work once, sessions that end, cookies' flags, the CSRF check, the session cookie
reading a job's log and events and nobody else's, and the sign-in links of the API."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from reporun.store import Store
from reporun.store.sessions import Redeemed
from tests.integration.conftest import Api

REPO = "https://example.org/octo/hello.git"


async def test_a_code_signs_in_once_and_a_session_ends_when_closed(any_store: Store) -> None:
    sessions = any_store.sessions
    code = await sessions.new_code("alice", frozenset({"user"}), ttl=60, token_id="t1")
    assert await sessions.peek(code) == "alice"  # a look uses nothing
    results = await asyncio.gather(*(sessions.redeem(code) for _ in range(5)))
    assert (
        sorted(results, key=lambda r: r is None)
        == [Redeemed("alice", frozenset({"user"}), "t1")] + [None] * 4
    )
    assert await sessions.peek(code) is None
    assert await sessions.redeem("never-issued") is None

    expired = await sessions.new_code("alice", frozenset({"user"}), ttl=-1)
    assert await sessions.redeem(expired) is None

    opened = await sessions.open("alice", frozenset({"user", "admin"}), ttl=60, id_token="t")
    found = await sessions.get(opened.secret)
    assert found is not None and found.roles == {"user", "admin"} and found.id_token == "t"
    assert found.csrf == opened.session.csrf and len(found.csrf) >= 32
    await sessions.close(opened.secret)
    assert await sessions.get(opened.secret) is None
    stale = await sessions.open("alice", frozenset({"user"}), ttl=-1)
    assert await sessions.get(stale.secret) is None


async def test_the_database_keeps_no_secret_of_a_session_or_a_code(store: Store) -> None:
    opened = await store.sessions.open("alice", frozenset({"user"}), ttl=60)
    code = await store.sessions.new_code("alice", frozenset({"user"}), ttl=60)
    async with store.engine.connect() as conn:
        rows = [
            str(tuple(row))
            for table in ("web_sessions", "signin_codes")
            for row in await conn.exec_driver_sql(f"SELECT * FROM {table}")
        ]
    assert rows and not any(opened.secret in r or code in r for r in rows)


async def open_link(api: Api, url: str) -> httpx.Response:
    """A sign-in link opened as a browser does: its page (which uses nothing), then its
    form's POST."""
    page = await api.client.get(url, follow_redirects=False)
    if page.status_code != 200:
        return page
    assert 'action="/signin/code"' in page.text and "set-cookie" not in page.headers
    base = url.split("/signin", 1)[0]
    code = url.split("code=", 1)[1]
    return await api.client.post(
        f"{base}/signin/code", data={"code": code, "next": "/jobs"}, follow_redirects=False
    )


async def signed_in(api: Api, name: str = "alice", role: str = "user") -> dict[str, str]:
    """A session's Cookie header for `name`, by the sign-in link the API hands out (the
    client keeps no cookie: each call sends the one it is given)."""
    answer = await api.client.post("/v1/signin-links", headers=api.headers(name, role))
    assert answer.status_code == 200, answer.text
    link = answer.json()
    assert link["expires_in"] == 12 * 3600
    assert link["url"].startswith("http://reporun.test/signin?code=")
    opened = await open_link(api, link["url"])
    assert opened.status_code == 303 and opened.headers["location"] == "/jobs"
    again = await open_link(api, link["url"])
    assert again.status_code == 401 and "used already" in again.text
    secret = opened.cookies["reporun_session"]
    api.client.cookies.clear()
    return {"Cookie": f"reporun_session={secret}"}


async def test_the_session_cookie_is_httponly_lax_and_secure_off_loopback(api: Api) -> None:
    for base, secure in (("http://127.0.0.1:8000", False), ("http://reporun.test", True)):
        answer = await api.client.post(f"{base}/v1/signin-links", headers=api.headers())
        code = answer.json()["url"].split("code=")[1]
        opened = await open_link(api, f"{base}/signin?code={code}")
        assert opened.status_code == 303, (base, opened.text)
        header = opened.headers["set-cookie"]
        assert re.match(r"reporun_session=[\w-]{40,};", header), header
        assert "HttpOnly" in header and "SameSite=lax" in header
        assert ("Secure" in header) is secure, header


async def test_pages_send_the_signed_out_to_sign_in_and_back(api: Api) -> None:
    answer = await api.client.get("/jobs/new?repo=x", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Fjobs%2Fnew%3Frepo%3Dx"
    for unsafe in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "jobs"):
        page = await api.client.get("/signin", params={"next": unsafe})
        assert 'name="next" value="/jobs"' in page.text, unsafe
    page = await api.client.get("/signin", params={"next": "/jobs?status=failed"})
    assert 'name="next" value="/jobs?status=failed"' in page.text
    headers = page.headers
    assert (
        headers["x-frame-options"] == "DENY"
        and "frame-ancestors 'none'" in headers["content-security-policy"]
    )
    assert "script-src 'self'" in headers["content-security-policy"]


async def test_every_state_changing_form_needs_the_sessions_csrf_token(api: Api) -> None:
    cookies = await signed_in(api)
    form = await api.client.get("/jobs/new", headers=cookies)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    job = await api.submit("alice", repo=REPO)
    for path in ("/jobs/new", f"/jobs/{job['id']}/cancel", f"/jobs/{job['id']}/rerun"):
        for sent in ({}, {"csrf": "guessed"}):
            answer = await api.client.post(path, data={"repo": REPO, **sent}, headers=cookies)
            assert answer.status_code == 403, (path, sent)
            assert "CSRF" in answer.text and "text/html" in answer.headers["content-type"]
    assert (await api.job(job["id"]))["status"] == "queued"
    # Another site's form, with the right token even: its Origin gives it away.
    evil = {"Origin": "https://evil.example"}
    answer = await api.client.post(
        "/signout", data={"csrf": csrf.group(1)}, headers={**cookies, **evil}
    )
    assert answer.status_code == 403
    # This site's own, with the token: it goes through.
    answer = await api.client.post(
        f"/jobs/{job['id']}/cancel", data={"csrf": csrf.group(1)}, headers=cookies
    )
    assert answer.status_code == 303
    assert (await api.job(job["id"]))["status"] == "cancelled"
    signed_out = await api.client.post("/signout", data={"csrf": csrf.group(1)}, headers=cookies)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/signin?signed_out=true"
    gone = await api.client.get("/jobs", headers=cookies, follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/signin")


async def test_the_session_reads_its_own_jobs_log_and_events_only(api: Api) -> None:
    alice, bob = await signed_in(api, "alice"), await signed_in(api, "bob")
    job = await api.submit("alice", repo=REPO)
    await api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers("alice"))
    for path in (f"/v1/jobs/{job['id']}/logs", f"/v1/jobs/{job['id']}/events"):
        mine = await api.client.get(path, headers=alice)
        assert mine.status_code == 200, (path, mine.text)
        theirs = await api.client.get(path, headers=bob)
        assert theirs.status_code == 404, path
        assert theirs.headers["content-type"] == "application/problem+json"
        nobody = await api.client.get(path)
        assert nobody.status_code == 401, path
    events = await api.client.get(f"/v1/jobs/{job['id']}/events", headers=alice)
    assert "event: end" in events.text
    # Everything else of the API still takes a token, never the cookie.
    listed = await api.client.get("/v1/jobs", headers=alice)
    assert listed.status_code == 401


async def test_a_session_lasts_its_ttl(api: Api, store: Store) -> None:
    cookies = await signed_in(api)
    session = await store.sessions.get(cookies["Cookie"].split("=", 1)[1])
    assert session is not None
    left = session.expires_at - datetime.now(UTC)
    assert timedelta(hours=11, minutes=59) < left <= timedelta(hours=12)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"repo": "https://example.org/x.git"}'),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/x-www-form-urlencoded", b"repo=\xff\xfe"),
        ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % i for i in range(100))),
    ],
)
async def test_a_form_body_no_form_would_send_is_refused_with_a_page(
    api: Api, content_type: str, body: bytes
) -> None:
    cookies = await signed_in(api)
    answer = await api.client.post(
        "/jobs/new", content=body, headers={"Content-Type": content_type, **cookies}
    )
    assert 400 <= answer.status_code < 500
    assert "text/html" in answer.headers["content-type"]
    assert '<p class="problem" role="alert">' in answer.text


async def test_a_session_ends_when_the_token_it_came_from_is_revoked(
    api: Api, store: Store
) -> None:
    issued = api.auth.mint("carol", "user", ttl=3600)
    api.unrecorded.append(issued.record)
    headers = {"Authorization": f"Bearer {issued.token}"}
    link = (await api.client.post("/v1/signin-links", headers=headers)).json()
    assert 3590 <= link["expires_in"] <= 3600  # no longer than the token lasts
    unused = (await api.client.post("/v1/signin-links", headers=headers)).json()["url"]
    opened = await open_link(api, link["url"])
    cookie = {"Cookie": f"reporun_session={opened.cookies['reporun_session']}"}
    api.client.cookies.clear()
    assert (await api.client.get("/jobs", headers=cookie)).status_code == 200
    await store.tokens.revoke(issued.record.id)
    gone = await api.client.get("/jobs", headers=cookie, follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/signin")
    refused = await open_link(api, unused)  # a link it made before is no good either
    assert refused.status_code == 401


async def test_a_sign_in_link_is_used_only_from_this_sites_own_page(api: Api) -> None:
    answer = await api.client.post("/v1/signin-links", headers=api.headers())
    code = answer.json()["url"].split("code=")[1]
    for origin in ("https://evil.example", "null"):
        forged = await api.client.post(
            "/signin/code", data={"code": code}, headers={"Origin": origin}
        )
        assert forged.status_code == 403, origin
        assert "set-cookie" not in forged.headers
    ours = await api.client.post(
        "/signin/code",
        data={"code": code, "next": "//evil.example/"},
        headers={"Origin": "http://reporun.test"},
        follow_redirects=False,
    )
    assert ours.status_code == 303 and ours.headers["location"] == "/jobs"


async def test_an_admins_rerun_of_a_users_job_stays_the_users(api: Api) -> None:
    job = await api.submit("alice", repo=REPO, command="make test")
    admin = await signed_in(api, "root", "admin")
    page = await api.client.get(f"/jobs/{job['id']}", headers=admin)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    answer = await api.client.post(
        f"/jobs/{job['id']}/rerun", data={"csrf": csrf.group(1)}, headers=admin
    )
    assert answer.status_code == 303
    again = await api.job(answer.headers["location"].rsplit("/", 1)[1])
    assert again["owner"] == "alice" and again["rerun_of"] == job["id"]
    assert again["command"] == "make test"


async def test_the_jobs_pages_links_and_filters_answer(api: Api) -> None:
    for _ in range(3):
        await api.submit("alice", repo=REPO)
    cookies = await signed_in(api)
    first = await api.client.get("/jobs?status=&repo=", headers=cookies)
    assert first.status_code == 200 and "all <b>3</b>" in first.text
    for href in re.findall(r'href="(/jobs\?[^"]*)"', first.text):
        linked = await api.client.get(href.replace("&amp;", "&"), headers=cookies)
        assert linked.status_code == 200, href
    wrong = await api.client.get("/jobs?status=lost", headers=cookies)
    assert wrong.status_code == 400 and "status must be one of" in wrong.text
    # An error page still signs out (its form carries the session's token).
    missing = await api.client.get(f"/jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}", headers=cookies)
    assert missing.status_code == 404
    token = re.search(r'name="csrf" value="([^"]+)"', missing.text)
    assert token is not None and token.group(1) != "None"
