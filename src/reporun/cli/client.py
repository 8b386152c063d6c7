"""The HTTP client the CLI uses (async, on reporun.cli.http)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from reporun.cli import http
from reporun.cli.settings import ClientSettings
from reporun.errors import ClientError
from reporun.paths import find_admin_token


class ApiError(ClientError):
    """The server answered with an error status (4xx or 5xx); `status` is that code and the
    message its problem detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


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

    async def _request(self, method: str, path: str, **kwargs: Any) -> http.Response:
        try:
            response = await self.http.request(method, path, **kwargs)
        except http.TransportError as exc:
            raise ClientError(f"cannot reach {self.http.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response))
        return response

    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict((await self._request("POST", "/v1/jobs", json=body)).json())

    async def job(self, job_id: str) -> dict[str, Any]:
        return dict((await self._request("GET", f"/v1/jobs/{job_id}")).json())

    async def jobs(self, *, status: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return dict((await self._request("GET", "/v1/jobs", params=params)).json())

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return dict((await self._request("POST", f"/v1/jobs/{job_id}/cancel")).json())

    async def workers(self) -> dict[str, Any]:
        return dict((await self._request("GET", "/v1/workers")).json())

    async def scaling(self, *, limit: int) -> dict[str, Any]:
        return dict((await self._request("GET", "/v1/scaling", params={"limit": limit})).json())

    async def logs(self, job_id: str, *, follow: bool) -> AsyncIterator[bytes]:
        params = {"follow": "true"} if follow else {}
        try:
            async with self.http.stream(
                "GET", f"/v1/jobs/{job_id}/logs", params=params, timeout=None
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise ApiError(response.status_code, _detail(response))
                async for chunk in response.aiter_bytes():
                    yield chunk
        except http.TransportError as exc:
            raise ClientError(f"cannot reach {self.http.base_url}: {exc}") from None


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
