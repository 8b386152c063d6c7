"""The HTTP client the CLI uses (async, on reporun.cli.http)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from reporun.cli import http
from reporun.cli.proxy import redact
from reporun.cli.settings import ClientSettings
from reporun.errors import ClientError, ConfigError
from reporun.paths import find_admin_token

# A followed log's connection is made again this many times in a row before the CLI gives up.
RECONNECTS = 5
# A followed log's stream silent this long is taken for lost (the server comments every 15 s).
QUIET = 45.0
LINE_END = re.compile(rb"\r\n|\r|\n")
EVENT_LINE_MAX = 1 << 20


class ApiError(ClientError):
    """The server answered with an error status (4xx or 5xx); `status` is that code and the
    message its problem detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class NotReporun(ConfigError):
    """The server URL names a server that does not answer as reporun does (exit 2: the URL is
    the user's to fix)."""


async def find_token(settings: ClientSettings) -> str | None:
    """REPORUN_TOKEN wins; then the token `reporun login` cached (refreshed when it ran out);
    then, for a loopback URL, the admin token `reporun serve` stored in its data dir (see
    `reporun.paths.find_admin_token`)."""
    if settings.token:
        return settings.token
    if settings.credentials_path.is_file():
        from reporun.cli.signin import CredentialCache, cached_token

        cache = CredentialCache(settings.credentials_path)
        cached = await cached_token(cache, settings.client_secret, settings.url)
        if cached is not None:
            return cached
    return find_admin_token(settings.url, settings.data_dir)


class ApiClient:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http.Client(base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The answer's JSON object."""
        try:
            response = await self.http.request(method, path, **kwargs)
        except http.TransportError as exc:
            raise self._lost(exc) from None
        self._check(response, path)
        try:
            body = response.json()
        except ValueError:
            body = None
            what = "not JSON"
        else:
            what = "not a JSON object"
        if not isinstance(body, dict):
            kind = response.headers.get("content-type", "").split(";")[0].strip()
            shown = f"{response.status_code} {response.reason_phrase}".strip()
            raise self._not_reporun(f"{shown}, {kind or 'no Content-Type'}, {what}")
        return body

    def _check(self, response: http.Response, path: str) -> None:
        """An error status as ApiError; a redirect named, never followed (it would carry the
        token to wherever it points)."""
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response))
        if response.status_code >= 300:
            location = response.headers.get("location", "").strip()
            if not location:
                raise self._not_reporun(f"{response.status_code} with no Location")
            target = urljoin(self.http.base_url + path, location)
            parts = urlsplit(target)
            if parts.scheme in ("http", "https") and parts.path.endswith(path):
                base = urlunsplit((parts.scheme, parts.netloc, parts.path[: -len(path)], "", ""))
                if base.rstrip("/") != self.http.base_url:
                    raise NotReporun(
                        f"{self.http.base_url} redirected to {redact(base.rstrip('/'))}; "
                        "set REPORUN_URL to it"
                    )
            raise self._not_reporun(f"it redirected to {redact(target)}")

    def _not_reporun(self, why: str) -> NotReporun:
        return NotReporun(f"{self.http.base_url} did not answer as a reporun server ({why})")

    def _lost(self, exc: http.TransportError) -> ClientError:
        if exc.answered:
            return ClientError(f"{self.http.base_url}: {exc}")
        return ClientError(f"cannot reach {self.http.base_url}: {exc}")

    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", "/v1/jobs", json=body)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/jobs/{job_id}")

    async def jobs(self, *, status: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return await self._request("GET", "/v1/jobs", params=params)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/v1/jobs/{job_id}/cancel")

    async def signin_link(self) -> dict[str, Any]:
        return await self._request("POST", "/v1/signin-links")

    async def workers(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/workers")

    async def scaling(self, *, limit: int) -> dict[str, Any]:
        return await self._request("GET", "/v1/scaling", params={"limit": limit})

    async def logs(self, job_id: str) -> AsyncIterator[bytes]:
        """The log as it is: the connection, the answer's head and each piece of the body
        within the client's timeout."""
        path = f"/v1/jobs/{job_id}/logs"
        try:
            async with self.http.stream("GET", path) as response:
                if response.status_code >= 400:
                    await response.aread()
                self._check(response, path)
                async for chunk in response.aiter_bytes():
                    yield chunk
        except http.TransportError as exc:
            raise self._lost(exc) from None

    async def follow(self, job_id: str) -> AsyncIterator[bytes | int]:
        """The log until the job ends, through its events: each piece of it as bytes, and the
        attempt's number when a new run starts it over. A connection that drops, ends early or
        meets a gateway's 502-504 is made again, resuming where the log was
        (`Last-Event-ID`), up to RECONNECTS times in a row without progress. Between two
        events at most QUIET seconds (the server's comments come every 15 s)."""
        path = f"/v1/jobs/{job_id}/events"
        offset: str | None = None
        losses = 0  # connections lost in a row, with nothing new on them
        connected = False
        while True:
            headers = {"Accept": "text/event-stream"}
            if offset is not None:
                headers["Last-Event-ID"] = offset
            lost: str
            try:
                async with self.http.stream(
                    "GET", path, timeout=QUIET, headers=headers
                ) as response:
                    if response.status_code == 204:  # all of it was sent already
                        return
                    if response.status_code >= 400:
                        await response.aread()
                    if connected and response.status_code in (502, 503, 504):
                        raise http.TransportError(f"{response.status_code} from the server")
                    self._check(response, path)
                    media = response.headers.get("content-type", "")
                    if not media.startswith("text/event-stream"):
                        raise self._not_reporun(f"{path} answered {media or 'no type'}")
                    connected = True
                    async for kind, event_id, data in _events(response.aiter_bytes()):
                        if event_id is not None and event_id != offset:
                            offset, losses = event_id, 0
                        if kind == "log":
                            yield json.loads(data).encode("utf-8", "surrogateescape")
                        elif kind == "reset":
                            yield int(json.loads(data)["attempts"])
                        elif kind == "end":
                            return
                lost = "the stream ended before the job"
            except http.TransportError as exc:
                if not connected:
                    raise self._lost(exc) from None
                lost = str(exc)
            losses += 1
            if losses > RECONNECTS:
                raise ClientError(f"lost the events of job {job_id}: {lost}")
            await asyncio.sleep(min(0.5 * 2**losses, 8.0))


async def _events(body: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str | None, str]]:
    """Server-Sent Events off a byte stream: each event's type, id (None: none given) and
    data (its lines joined)."""
    pending = b""
    kind: str = "message"
    event_id: str | None = None
    data: list[str] = []
    async for chunk in body:
        pending += chunk
        # Lines end in CRLF, LF or CR; a CR at the end may be the first half of a CRLF.
        held = b"\r" if pending.endswith(b"\r") else b""
        *lines, pending = LINE_END.split(pending[: len(pending) - len(held)])
        pending += held
        if len(pending) > EVENT_LINE_MAX:
            raise http.TransportError("an event's line is longer than 1 MiB", answered=True)
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if not line:
                if data:
                    yield kind, event_id, "\n".join(data)
                kind, event_id, data = "message", None, []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    kind = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event_id = value


def _detail(response: http.Response) -> str:
    try:
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        detail = None
    # The status stays on the ApiError (for the exit code); the user reads the problem's words.
    if isinstance(detail, str) and detail.strip():
        return detail.strip()
    return f"the server answered {response.status_code} {response.reason_phrase}".rstrip()
