"""The HTTP API: bad input gets a 4xx problem+json naming the field; auth and ownership."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.conftest import Api

# A job id no test creates (fixed, so parallel runs collect the same test names).
NO_SUCH_JOB = uuid.UUID("00000000-0000-4000-8000-000000000000")

PROBLEM = "application/problem+json"
REPO = "https://example.org/octo/hello.git"


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = dict(response.json())
    assert body["status"] == status and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"[]", 422, "body"),
        (b"{}", 422, "repo"),
        (b'{"repo": 42}', 422, "repo"),
        (b'{"repo": "file:///etc"}', 400, "repo"),
        (b'{"repo": "ext::sh -c touch% /tmp/pwned"}', 400, "repo"),
        (b'{"repo": "-uhttps://example.org/x.git"}', 400, "repo"),
        (b'{"repo": "--upload-pack=touch /tmp/x"}', 400, "repo"),
        (b'{"repo": "/etc"}', 400, "repo"),
        (b'{"repo": "http://example.org/x.git"}', 400, "repo"),
        (b'{"repo": "https://127.0.0.2/x.git"}', 400, "repo"),
        (b'{"repo": "https://169.254.169.254/latest"}', 400, "repo"),
        (b'{"repo": "https://10.1.2.3/x.git"}', 400, "repo"),
        (b'{"repo": "https://localhost/x.git"}', 400, "repo"),
        (b'{"repo": "https://[::1]/x.git"}', 400, "repo"),
        (b'{"repo": "https://user:pw@example.org/x.git"}', 400, "repo"),
        (b'{"repo": "https://example.org/x.git", "ref": "--force"}', 400, "ref"),
        (b'{"repo": "https://example.org/x.git", "ref": "a..b"}', 400, "ref"),
        (b'{"repo": "https://example.org/x.git", "command": ""}', 400, "command"),
        (b'{"repo": "https://example.org/x.git", "timeout": 0}', 400, "timeout"),
        (b'{"repo": "https://example.org/x.git", "timeout": 999999}', 400, "timeout"),
        (b'{"repo": "https://example.org/x.git", "timeout": "soon"}', 422, "timeout"),
        (b'{"repo": "https://example.org/x.git", "env": {"1BAD": "x"}}', 400, "env"),
        (b'{"repo": "https://example.org/x.git", "env": {"LD_PRELOAD": "x"}}', 400, "env"),
        (b'{"repo": "https://example.org/x.git", "env": {"A": 1}}', 422, "env.A"),
        (b'{"repo": "https://example.org/x.git", "env": {"A": "\\udc00"}}', 400, "env"),
        (b'{"repo": "https://example.org/x.git", "command": "echo \\ud800"}', 422, "command"),
        (b'{"repo": "https://example.org/\\udc00.git"}', 422, "repo"),
        (b'{"repo": "https://example.org/x.git", "limits": {"memory": 1}}', 400, "limits.memory"),
        (
            b'{"repo": "https://example.org/x.git", "limits": {"network": true}}',
            422,
            "limits.network",
        ),
        (b'{"repo": "https://example.org/x.git", "network": "wide"}', 422, "network"),
        (b'{"repo": "https://example.org/x.git", "network": "open"}', 422, "network"),
        (b'{"repo": "https://example.org/x.git", "limits": {"cpu": 2}}', 422, "limits.cpu"),
        (b'{"repo": "https://example.org/x.git", "surprise": 1}', 422, "surprise"),
    ],
)
async def test_bad_submissions_are_4xx_naming_the_field(
    api: Api, body: bytes, status: int, field: str
) -> None:
    response = await api.client.post(
        "/v1/jobs",
        content=body,
        headers={**api.headers(), "content-type": "application/json"},
    )
    assert_problem(response, status, field)


async def test_a_10_megabyte_body_is_refused(api: Api) -> None:
    big = b'{"repo": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    response = await api.client.post(
        "/v1/jobs", content=big, headers={**api.headers(), "content-type": "application/json"}
    )
    assert_problem(response, 413, "body")


async def test_a_chunked_body_over_the_limit_is_refused(api: Api) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(200):
            yield b"x" * 1024

    response = await api.client.post(
        "/v1/jobs", content=chunks(), headers={**api.headers(), "content-type": "application/json"}
    )
    assert_problem(response, 413, "body")


async def test_a_chunked_body_under_the_limit_works(api: Api) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"repo": '
        yield b'"https://example.org/x.git"}'

    response = await api.client.post(
        "/v1/jobs", content=chunks(), headers={**api.headers(), "content-type": "application/json"}
    )
    assert response.status_code == 202, response.text


async def test_a_huge_env_is_refused(api: Api) -> None:
    env = {f"V{i}": "x" * 1000 for i in range(60)}
    response = await api.client.post(
        "/v1/jobs", json={"repo": REPO, "env": env}, headers=api.headers()
    )
    assert_problem(response, 400, "env")


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        (f"/v1/jobs/{NO_SUCH_JOB}", 404, None),
        ("/v1/jobs/not-a-uuid", 422, "job_id"),
        (f"/v1/jobs/{NO_SUCH_JOB}/logs", 404, None),
        ("/v1/jobs/123/logs", 422, "job_id"),
        ("/v1/jobs?cursor=garbage!!", 400, "cursor"),
        (
            "/v1/jobs?cursor="
            + __import__("base64")
            .urlsafe_b64encode(f"9999-12-31T23:59:59-23:59|{NO_SUCH_JOB}".encode())
            .decode(),
            400,
            "cursor",
        ),
        ("/v1/jobs?cursor=" + "x" * 600, 422, "cursor"),
        ("/v1/jobs?status=sleeping", 422, "status"),
        ("/v1/jobs?limit=0", 422, "limit"),
        ("/v1/jobs?limit=many", 422, "limit"),
        ("/status?key=nope", 422, "key"),
        (f"/status?key={NO_SUCH_JOB}", 404, None),
        ("/status", 422, "key"),
        ("/add", 422, "url"),
        ("/add?url=file:///etc/passwd", 400, "repo"),
        ("/add?url=ext::sh", 400, "repo"),
        ("/no/such/route", 404, None),
    ],
)
async def test_bad_reads_are_4xx(api: Api, path: str, status: int, field: str | None) -> None:
    assert_problem(await api.client.get(path, headers=api.headers()), status, field)


@pytest.mark.parametrize(
    ("path", "status"),
    [(f"/v1/jobs/{NO_SUCH_JOB}/cancel", 404), ("/v1/jobs/zzz/cancel", 422)],
)
async def test_bad_cancels_are_4xx(api: Api, path: str, status: int) -> None:
    assert_problem(await api.client.post(path, headers=api.headers()), status)


async def test_wrong_method_is_405(api: Api) -> None:
    assert_problem(await api.client.delete("/v1/jobs", headers=api.headers()), 405)


@pytest.mark.parametrize(
    "path",
    ["/v1/jobs", f"/v1/jobs/{NO_SUCH_JOB}", "/all", "/status?key=x", "/add?url=x", "/metrics"],
)
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer garbage", "Basic YTpi", "Bearer a.b.c"])
async def test_no_or_bad_token_is_401(api: Api, path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    body = assert_problem(await api.client.get(path, headers=headers), 401)
    assert "token" in body["detail"].lower() or "bearer" in body["detail"].lower()


async def test_a_token_signed_by_another_key_is_401(api: Api) -> None:
    from reporun.api.auth import LocalAuth

    forged = LocalAuth("another-key-" + "x" * 40, api.auth.tokens).mint("alice", "admin")
    await api.auth.tokens.add(forged.record)  # recorded, but not signed with this key
    headers = {"Authorization": f"Bearer {forged.token}"}
    response = await api.client.get("/v1/jobs", headers=headers)
    assert assert_problem(response, 401)["detail"] == "the token is not one this server issued"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.x"])
async def test_a_wrong_token_says_so_without_jwt_jargon(api: Api, token: str) -> None:
    response = await api.client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert assert_problem(response, 401)["detail"] == "the token is not one this server issued"


async def test_a_revoked_token_is_refused_on_its_next_request(api: Api) -> None:
    issued = await api.auth.issue("dave", "user", ttl=3600)
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert (await api.client.get("/v1/jobs", headers=headers)).status_code == 200
    record, revoked = await api.auth.tokens.revoke(issued.record.id[:8])
    assert revoked and record.id == issued.record.id
    for path in ("/v1/jobs", "/all"):
        body = assert_problem(await api.client.get(path, headers=headers), 401)
        assert body["detail"].startswith(f"the token {record.id} was revoked at ")
    listed = {r.id: r.state(record.revoked_at) for r in await api.auth.tokens.list_tokens()}
    assert listed[record.id] == "revoked"


async def test_a_token_missing_from_the_records_is_refused(api: Api) -> None:
    unrecorded = api.auth.mint("erin", "admin")
    headers = {"Authorization": f"Bearer {unrecorded.token}"}
    body = assert_problem(await api.client.get("/v1/jobs", headers=headers), 401)
    assert "reporun token create" in body["detail"]


LOCAL_REPOS = [
    "/etc",
    "/home/someone/checkout",
    "file:///etc",
    "https://localhost/x.git",
    "git://[::1]/x.git",
    "http://127.0.0.2/x.git",
]


@pytest.mark.parametrize("repo", LOCAL_REPOS)
async def test_local_repositories_on_serve_are_for_admin_tokens_only(
    settings,  # type: ignore[no-untyped-def]
    store,
    repo: str,
) -> None:
    import httpx as _httpx

    from reporun.api.app import create_app
    from reporun.api.auth import LocalAuth
    from reporun.api.server import build_services
    from reporun.embedded import embedded_settings
    from reporun.submit import OPERATORS_ONLY

    served = embedded_settings(settings)  # what `reporun serve` runs with
    auth = LocalAuth(served.secret_key.get_secret_value(), store.tokens)
    app = create_app(build_services(served, store, auth))
    user = {"Authorization": f"Bearer {(await auth.issue('mallory', 'user')).token}"}
    admin = {"Authorization": f"Bearer {(await auth.issue('root', 'admin')).token}"}
    async with _httpx.AsyncClient(
        transport=_httpx.ASGITransport(app=app), base_url="http://t"
    ) as c:
        refused = await c.post("/v1/jobs", json={"repo": repo}, headers=user)
        # The same answer whether the path exists or not: a user learns nothing of what is there.
        assert assert_problem(refused, 403, "repo")["detail"] == OPERATORS_ONLY
        assert_problem(await c.get("/add", params={"url": repo}, headers=user), 403, "repo")
        assert (await c.get("/v1/jobs", headers=user)).json()["items"] == []
        # An admin's is checked further: queued, or refused as no repository (422).
        admitted = await c.post("/v1/jobs", json={"repo": repo}, headers=admin)
        assert admitted.status_code in (202, 422), admitted.text
        # A host the operator trusts, or a public one, is anyone's.
        trusted = await c.post("/v1/jobs", json={"repo": "git://127.0.0.1/x.git"}, headers=user)
        assert trusted.status_code == 202, trusted.text
    # What the worker checks at clone time: only the admin's job may reach a local source.
    assert "local_sources" not in trusted.json()
    assert (await store.get_job(uuid.UUID(trusted.json()["id"]))).local_sources is False
    if admitted.status_code == 202:
        assert (await store.get_job(uuid.UUID(admitted.json()["id"]))).local_sources is True


async def test_network_open_is_for_whom_the_operator_names(
    settings,  # type: ignore[no-untyped-def]
    store,
    api: Api,
) -> None:
    """`open` on a server that offers it to admins and to carol: theirs; anyone else's
    request is a 422 naming `network`, saying for whom it is. The job records whether it may
    have it (the worker checks a reporun.toml's `open` against that)."""
    import httpx as _httpx

    from reporun.api.app import create_app
    from reporun.api.auth import LocalAuth
    from reporun.api.server import build_services

    body = {"repo": REPO, "network": "open"}
    # The default server offers it to nobody, and says so; its OpenAPI leaves it out.
    refused = await api.client.post("/v1/jobs", json=body, headers=api.headers("root", "admin"))
    assert assert_problem(refused, 422, "network")["detail"] == (
        "network 'open' is not offered by this server (use registries)"
    )
    spec = (await api.client.get("/openapi.json")).json()
    modes = spec["components"]["schemas"]["JobCreate"]["properties"]["network"]["anyOf"][0]
    assert modes["enum"] == ["none", "registries"]

    offered = settings.model_copy(update={"network_open": ["admins", "carol"]})
    auth = LocalAuth(offered.secret_key.get_secret_value(), store.tokens)
    app = create_app(build_services(offered, store, auth))

    async def headers(name: str, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {(await auth.issue(name, role)).token}"}

    async with _httpx.AsyncClient(
        transport=_httpx.ASGITransport(app=app), base_url="http://t"
    ) as c:
        for name, role in (("root", "admin"), ("carol", "user")):
            admitted = await c.post("/v1/jobs", json=body, headers=await headers(name, role))
            assert admitted.status_code == 202, admitted.text
            assert admitted.json()["network"] == "open"
            assert "network_open" not in admitted.json()
            assert (await store.get_job(uuid.UUID(admitted.json()["id"]))).network_open is True
        alice = await headers("alice", "user")
        refused = await c.post("/v1/jobs", json=body, headers=alice)
        assert assert_problem(refused, 422, "network")["detail"] == (
            "network 'open' is only for admins and the users it names on this server "
            "(use registries)"
        )
        # What she may submit is marked as not allowed it, should her reporun.toml ask.
        plain = await c.post("/v1/jobs", json={"repo": REPO}, headers=alice)
        assert (await store.get_job(uuid.UUID(plain.json()["id"]))).network_open is False
        spec = (await c.get("/openapi.json")).json()
        modes = spec["components"]["schemas"]["JobCreate"]["properties"]["network"]["anyOf"][0]
        assert modes["enum"] == ["none", "registries", "open"]


async def test_health_needs_no_token(api: Api) -> None:
    assert (await api.client.get("/healthz")).status_code == 200
    assert (await api.client.get("/healthcheck")).status_code == 200
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "queue": "ok"}


async def test_users_see_their_own_jobs_and_admins_all(api: Api) -> None:
    alice = await api.submit("alice", repo=REPO)
    bob = await api.submit("bob", repo=REPO)
    own = (await api.client.get("/v1/jobs", headers=api.headers("alice"))).json()
    assert [j["id"] for j in own["items"]] == [alice["id"]]
    assert_problem(await api.client.get(f"/v1/jobs/{bob['id']}", headers=api.headers("alice")), 404)
    assert_problem(
        await api.client.get(f"/v1/jobs/{bob['id']}/logs", headers=api.headers("alice")), 404
    )
    assert_problem(
        await api.client.post(f"/v1/jobs/{bob['id']}/cancel", headers=api.headers("alice")), 404
    )
    assert (await api.job(bob["id"]))["status"] == "queued"  # alice's cancel did nothing
    every = (await api.client.get("/v1/jobs", headers=api.headers("root", "admin"))).json()
    assert {j["id"] for j in every["items"]} == {alice["id"], bob["id"]}
    shown = await api.client.get(f"/v1/jobs/{alice['id']}", headers=api.headers("root", "admin"))
    assert shown.status_code == 200 and shown.json()["owner"] == "alice"
    cancelled = await api.client.post(
        f"/v1/jobs/{bob['id']}/cancel", headers=api.headers("root", "admin")
    )
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"


async def test_metrics_are_for_admins(api: Api) -> None:
    assert_problem(await api.client.get("/metrics", headers=api.headers("alice")), 403)
    await api.submit(repo=REPO)
    response = await api.client.get("/metrics", headers=api.headers("root", "admin"))
    assert response.status_code == 200
    text = response.text
    assert 'reporun_jobs_pending{status="queued"} 1.0' in text
    assert "reporun_job_wait_seconds_bucket" in text and "reporun_job_run_seconds_count" in text
    assert 'reporun_jobs_finished_total{status="succeeded"} 0.0' in text


async def test_job_json_has_the_contract_fields(api: Api) -> None:
    job = await api.submit(repo=REPO, ref="main", command="make test", timeout=30, env={"A": "1"})
    for name in [
        "id",
        "owner",
        "repo",
        "ref",
        "commit",
        "command",
        "status",
        "exit_code",
        "reason",
        "attempts",
        "worker",
        "created_at",
        "started_at",
        "finished_at",
        "wait_seconds",
        "run_seconds",
        "log_bytes",
        "log_truncated",
    ]:
        assert name in job
    assert (job["status"], job["ref"], job["command"], job["owner"]) == (
        "queued",
        "main",
        "make test",
        "alice",
    )
    assert job["created_at"].endswith("Z") and job["limits"]["timeout"] == 30
    assert job["env"] == ["A"]  # names only: values are not shown back


async def test_cursor_pagination_walks_every_job_once(api: Api) -> None:
    ids = {(await api.submit(repo=REPO))["id"] for _ in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/jobs", params=params, headers=api.headers())).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and set(seen) == ids
    created = [(await api.job(i))["created_at"] for i in seen]
    assert created == sorted(created, reverse=True)


async def test_legacy_calls_keep_the_seed_shapes(api: Api) -> None:
    added = await api.client.get("/add", params={"url": REPO}, headers=api.headers("alice"))
    assert added.status_code == 200 and added.headers["content-type"].startswith("text/plain")
    assert added.text.startswith("Job added: ")
    key = added.text.split(": ")[1].strip()
    uuid.UUID(key)
    listed = (await api.client.get("/all", headers=api.headers("alice"))).json()
    assert listed == [{"usuario": "alice", "key": key, "status": "Queued"}]
    one = (
        await api.client.get("/status", params={"key": key}, headers=api.headers("alice"))
    ).json()
    assert one == [{"usuario": "alice", "key": key, "status": "Queued"}]
    assert (await api.client.get("/all", headers=api.headers("bob"))).json() == []
    admin_view = (await api.client.get("/all", headers=api.headers("root", "admin"))).json()
    assert key in {j["key"] for j in admin_view}


async def test_openapi_is_served(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert "/v1/jobs" in spec["paths"] and "/add" in spec["paths"]


async def test_quota_and_rate_limit_answer_429_with_retry_after(
    settings,
    store,  # type: ignore[no-untyped-def]
) -> None:
    import httpx as _httpx

    from reporun.api.app import create_app
    from reporun.api.auth import LocalAuth
    from reporun.api.server import build_services

    limited = settings.model_copy(update={"quota_pending": 2, "quota_per_minute": 0})
    auth = LocalAuth(limited.secret_key.get_secret_value(), store.tokens)
    app = create_app(build_services(limited, store, auth))
    user = {"Authorization": f"Bearer {(await auth.issue('carol', 'user')).token}"}
    admin = {"Authorization": f"Bearer {(await auth.issue('root', 'admin')).token}"}
    async with _httpx.AsyncClient(
        transport=_httpx.ASGITransport(app=app), base_url="http://t"
    ) as c:
        for _ in range(2):
            assert (await c.post("/v1/jobs", json={"repo": REPO}, headers=user)).status_code == 202
        refused = await c.post("/v1/jobs", json={"repo": REPO}, headers=user)
        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) > 0
        legacy = await c.get("/add", params={"url": REPO}, headers=user)
        assert_problem(legacy, 429)
        assert (await c.post("/v1/jobs", json={"repo": REPO}, headers=admin)).status_code == 202
        listed = (await c.get("/v1/jobs", headers=user)).json()["items"]
        assert len(listed) == 2
