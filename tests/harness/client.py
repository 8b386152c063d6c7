"""A client for a reporun server's jobs API: submit, get, list, wait.

One implementation, async, because the benchmarks submit from many concurrent clients and the
integration tests talk to the app in-process (httpx's ASGI transport is async only). The
acceptance tests are synchronous: `BlockingClient` runs the same calls to their end on an
event loop of its own, so there is no second, synchronous copy of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from reporun.jobs import TERMINAL
from tests.harness import HarnessError

POLL = 0.05
T = TypeVar("T")
Headers = Mapping[str, str]


def _check(response: httpx.Response, expected: int) -> httpx.Response:
    if response.status_code != expected:
        request = response.request
        raise HarnessError(
            f"{request.method} {request.url.path} answered {response.status_code}: "
            f"{response.text[:500]}"
        )
    return response


class Client:
    """The jobs API over `http` (a real server's connection, or the app's ASGI transport).
    `headers` given to a call go with that call only (another user's token)."""

    def __init__(self, http: httpx.AsyncClient, *, poll: float = POLL) -> None:
        self.http = http
        self.poll = poll

    @classmethod
    def connect(
        cls, url: str, token: str | None = None, *, timeout: float = 30.0, poll: float = POLL
    ) -> Client:
        """A client of its own for the server at `url`; close it (`async with`) when done."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        http = httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=timeout,
            trust_env=False,  # loopback only: no proxy from the environment
        )
        return cls(http, poll=poll)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def submit(
        self, repo: str, *, headers: Headers | None = None, **fields: Any
    ) -> dict[str, Any]:
        """POST /v1/jobs (`fields`: command, ref, timeout, env ...); the queued job."""
        body = {"repo": repo, **fields}
        response = await self.http.post("/v1/jobs", json=body, headers=headers)
        return dict(_check(response, 202).json())

    async def job(self, job_id: str, *, headers: Headers | None = None) -> dict[str, Any]:
        response = await self.http.get(f"/v1/jobs/{job_id}", headers=headers)
        return dict(_check(response, 200).json())

    async def log(self, job_id: str, *, headers: Headers | None = None) -> bytes:
        response = await self.http.get(f"/v1/jobs/{job_id}/logs", headers=headers)
        return _check(response, 200).content

    async def jobs(self, *, headers: Headers | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every job the token may see (`params`: status ...), following the cursor."""
        query: dict[str, Any] = {"limit": 500, **params}
        items: list[dict[str, Any]] = []
        while True:
            response = await self.http.get("/v1/jobs", params=query, headers=headers)
            page = _check(response, 200).json()
            items += page["items"]
            if not page["next_cursor"]:
                return items
            query["cursor"] = page["next_cursor"]

    async def wait(
        self,
        job_id: str,
        statuses: Collection[str] = TERMINAL,
        *,
        timeout: float | None = 60,
        headers: Headers | None = None,
        explain: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is in one of `statuses` (default: any end). Past `timeout`
        (None: no deadline of its own), HarnessError, with what `explain` says."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.job(job_id, headers=headers)
            if job["status"] in statuses:
                return job
            if deadline is not None and time.monotonic() > deadline:
                more = f"\n{explain()}" if explain else ""
                raise HarnessError(f"job {job_id} still {job['status']} after {timeout} s{more}")
            await asyncio.sleep(self.poll)


class BlockingClient:
    """`Client` for synchronous callers: each call runs to its end on a private event loop.
    Close it when done."""

    def __init__(
        self, url: str, token: str | None = None, *, timeout: float = 30.0, poll: float = POLL
    ) -> None:
        # A loop of its own, never made the thread's current one: pytest-asyncio's stay as
        # they are.
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self.client = Client.connect(url, token, timeout=timeout, poll=poll)

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(call)

    def submit(self, repo: str, **fields: Any) -> dict[str, Any]:
        return self._run(self.client.submit(repo, **fields))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._run(self.client.job(job_id))

    def log(self, job_id: str) -> bytes:
        return self._run(self.client.log(job_id))

    def wait(
        self,
        job_id: str,
        statuses: Collection[str] = TERMINAL,
        *,
        timeout: float | None = 60,
        explain: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        return self._run(self.client.wait(job_id, statuses, timeout=timeout, explain=explain))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._run(self.client.http.get(path, **kwargs))

    def close(self) -> None:
        self._run(self.client.aclose())
        self._runner.close()
