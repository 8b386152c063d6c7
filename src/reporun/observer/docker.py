"""`DockerScaler`: the containers of a Compose service are the workers, scaled through the
Docker Engine API (Docker's socket, or podman's Docker-compatible one).

Scaling out starts a stopped container of the service, else creates one more from an existing
container's configuration, named and labelled as Compose names its replicas, so `docker compose
ps` and `down` see it. Scaling in sends the container SIGUSR1: its worker finishes its job and
exits, and the container is removed (the last one is kept, stopped, as the template of the next).
The Docker API is plain HTTP; httpx speaks it over the unix socket, asynchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from reporun.errors import ConfigError, ReporunError
from reporun.observer.scalers import Member
from reporun.retry import compute_backoff

logger = logging.getLogger("reporun.observer")

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
# Configuration a new replica takes from its template, as `docker inspect` shows it.
CONFIG_KEYS = (
    "Image",
    "Cmd",
    "Entrypoint",
    "Env",
    "Labels",
    "User",
    "WorkingDir",
    "StopSignal",
    "StopTimeout",
    "Tty",
    "OpenStdin",
    "Healthcheck",  # a replica is checked as the service's own containers are
)
# Host configuration a new replica shares with its template.
HOST_CONFIG_KEYS = (
    "Binds",
    "Mounts",
    "NetworkMode",
    "RestartPolicy",
    "SecurityOpt",
    "CapAdd",
    "CapDrop",
    "Init",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "CpuShares",
    "PidsLimit",
    "Ulimits",
    "Tmpfs",
    "ReadonlyRootfs",
    "ExtraHosts",
    "Dns",
    "LogConfig",
    "ShmSize",
    # Isolation the operator chose: a runtime (gVisor, Kata), user namespaces, devices...
    "Runtime",
    "UsernsMode",
    "CgroupnsMode",
    "Devices",
    "GroupAdd",
    "Sysctls",
)
API_TIMEOUT = 30.0
# A container whose process ended: podman says "stopped" until its cleanup ran, then "exited".
ENDED = ("exited", "stopped")


class DockerError(ReporunError):
    """The Docker API refused a call."""


def docker_transport(docker_host: str) -> tuple[httpx.AsyncHTTPTransport, str]:
    """A transport and base URL for DOCKER_HOST (`unix:///path.sock` or `tcp://host:port`)."""
    url = urlsplit(docker_host)
    if url.scheme == "unix":
        return httpx.AsyncHTTPTransport(uds=url.path), "http://docker"
    if url.scheme in ("tcp", "http"):
        return httpx.AsyncHTTPTransport(), f"http://{url.netloc}"
    raise ConfigError(f"DOCKER_HOST must be unix:///path or tcp://host:port, not {docker_host!r}")


class DockerScaler:
    name = "docker"
    advisory = False

    def __init__(
        self,
        *,
        project: str | None,
        service: str,
        docker_host: str,
        security_opt: Sequence[str] = (),
    ) -> None:
        transport, base = docker_transport(docker_host)
        self.http = httpx.AsyncClient(transport=transport, base_url=base, timeout=API_TIMEOUT)
        self.project = project
        self.service = service
        self.security_opt = list(security_opt)
        self._retiring: set[str] = set()
        self._hostnames: dict[str, str] = {}  # container id -> the host name its worker reports
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._failures = 0
        self._hold_until = 0.0

    # -- the Docker API -------------------------------------------------------------------------
    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DockerError(f"the Docker API is not answering: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise DockerError(f"{method} {path}: {response.status_code} {message}".strip())
        if response.status_code == 204 or not response.content:
            return None
        if not response.headers.get("content-type", "").startswith("application/json"):
            return response.text  # /_ping says OK
        return response.json()

    async def _containers(self, *, running: bool) -> list[dict[str, Any]]:
        project = await self._project()
        filters = {"label": [f"{PROJECT}={project}", f"{SERVICE}={self.service}"]}
        if running:
            filters["status"] = ["running"]
        found: list[dict[str, Any]] = await self._call(
            "GET", "/containers/json", params={"all": "1", "filters": json.dumps(filters)}
        )
        return found

    async def _project(self) -> str:
        """The Compose project: configured, else the one this observer's container is in."""
        if self.project is None:
            import socket

            with contextlib.suppress(DockerError):
                own = await self._call("GET", f"/containers/{socket.gethostname()}/json")
                self.project = (own.get("Config", {}).get("Labels") or {}).get(PROJECT)
            if self.project is None:
                raise ConfigError(
                    "REPORUN_SCALER=docker needs REPORUN_DOCKER_PROJECT (the Compose project)"
                )
        return self.project

    async def _inspect(self, handle: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("GET", f"/containers/{handle}/json")
        return found

    # -- Scaler ---------------------------------------------------------------------------------
    async def prepare(self) -> None:
        try:
            await self._call("GET", "/_ping")
        except DockerError as exc:
            raise ConfigError(f"DOCKER_HOST: {exc.message}") from None
        containers = await self._containers(running=False)
        if not containers:
            raise ConfigError(
                f"no container of the service {self.service!r} in the Compose project "
                f"{self.project!r}: bring the service up once (docker compose up -d)"
            )
        await self._check_template(await self._inspect(containers[0]["Id"]))

    async def _check_template(self, template: dict[str, Any]) -> None:
        """Refuse to copy a worker container that would be unsafe, or would not stay down."""
        host = template.get("HostConfig") or {}
        restart = (host.get("RestartPolicy") or {}).get("Name") or "no"
        if restart in ("always", "unless-stopped"):
            raise ConfigError(
                f"the {self.service!r} service restarts {restart}: a retired worker exits 0 "
                "and must stay down; give it restart: on-failure"
            )
        if host.get("Privileged"):
            raise ConfigError(f"the {self.service!r} containers must not be privileged")
        user = template["Config"].get("User") or ""
        if not user:
            image = await self._call("GET", f"/images/{template['Config']['Image']}/json")
            user = (image.get("Config") or {}).get("User") or ""
        if user.split(":")[0] in ("", "0", "root"):
            raise ConfigError(
                f"the {self.service!r} containers run as root: with /proc unmasked for the "
                "sandbox, root could write host sysctls; run them as an unprivileged user"
            )

    async def members(self) -> list[Member]:
        members = []
        listed = await self._containers(running=True)
        ids = {c["Id"] for c in listed}
        self._hostnames = {k: v for k, v in self._hostnames.items() if k in ids}
        for container in listed:
            handle = container["Id"]
            if handle in self._retiring:
                continue
            if handle not in self._hostnames:
                details = await self._inspect(handle)
                self._hostnames[handle] = details.get("Config", {}).get("Hostname") or handle[:12]
            members.append(Member(handle, self._hostnames[handle]))
        return members

    def retiring_count(self) -> int:
        return len(self._retiring)

    async def add(self, count: int) -> int:
        if time.monotonic() < self._hold_until:
            return 0
        started = 0
        crashed = False
        async with self._lock:  # no removal deletes what is being started
            for container in await self._containers(running=False):
                if started == count:
                    break
                handle = container["Id"]
                if container.get("State") not in (*ENDED, "created"):
                    continue
                details = await self._inspect(handle)
                if container.get("State") in ENDED and details["State"].get("ExitCode"):
                    crashed = True  # a worker that failed: a fresh replica, after a while
                    await self._call("DELETE", f"/containers/{handle}", params={"force": "1"})
                    continue
                await self._call("POST", f"/containers/{handle}/start")
                self._retiring.discard(handle)
                logger.info(
                    "worker container started again",
                    extra={"action": "spawn", "container": handle[:12]},
                )
                started += 1
            if crashed:
                self._failures += 1
                self._hold_until = time.monotonic() + compute_backoff(
                    self._failures, base=1.0, cap=30.0
                )
                return started
            self._failures = 0
            while started < count:
                await self._create_replica()
                started += 1
        return started

    async def _create_replica(self) -> None:
        containers = await self._containers(running=False)
        if not containers:
            raise DockerError(
                f"no container of the service {self.service!r} in the project "
                f"{await self._project()!r} to copy: start it once with compose"
            )
        template = await self._inspect(containers[0]["Id"])
        await self._check_template(template)
        numbers = [int((c.get("Labels") or {}).get(NUMBER, 0) or 0) for c in containers]
        number = max(numbers, default=0) + 1
        config = {k: template["Config"][k] for k in CONFIG_KEYS if k in template["Config"]}
        config["Labels"] = {**(config.get("Labels") or {}), NUMBER: str(number)}
        # The template's own HOSTNAME would make the new worker report the wrong host.
        config["Env"] = [e for e in config.get("Env") or [] if not e.startswith("HOSTNAME=")]
        if not isinstance(config.get("StopSignal"), str):  # podman shows it as a number
            config.pop("StopSignal", None)
        config["HostConfig"] = _host_config(template.get("HostConfig") or {}, self.security_opt)
        # Created on one network and connected to the others: Docker before 25 (API 1.44)
        # refuses a container created on several at once.
        endpoints = list(_endpoints(template, self.service).items())
        config["NetworkingConfig"] = {"EndpointsConfig": dict(endpoints[:1])}
        name = f"{await self._project()}_{self.service}_{number}"
        created = await self._call("POST", "/containers/create", params={"name": name}, json=config)
        try:
            for network, endpoint in endpoints[1:]:
                body = {"Container": created["Id"], "EndpointConfig": endpoint}
                await self._call("POST", f"/networks/{network}/connect", json=body)
            await self._call("POST", f"/containers/{created['Id']}/start")
        except DockerError:
            with contextlib.suppress(DockerError):
                await self._call("DELETE", f"/containers/{created['Id']}", params={"force": "1"})
            raise
        logger.info(
            "worker container created",
            extra={"action": "spawn", "container": created["Id"][:12], "container_name": name},
        )

    async def retire(self, handles: Sequence[str]) -> None:
        for handle in handles:
            try:
                await self._call("POST", f"/containers/{handle}/kill", params={"signal": "SIGUSR1"})
            except DockerError as exc:  # gone already, or exited: nothing to retire
                logger.warning(
                    "cannot retire a worker container",
                    extra={"action": "retire", "container": handle[:12], "reason": exc.message},
                )
                continue
            self._retiring.add(handle)
            logger.info(
                "retiring a worker container", extra={"action": "retire", "container": handle[:12]}
            )
            task = asyncio.create_task(self._remove_when_done(handle))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _remove_when_done(self, handle: str) -> None:
        try:
            result = await self._call("POST", f"/containers/{handle}/wait", timeout=None)
            code = (result or {}).get("StatusCode")
            async with self._lock:  # two removals at once must not both see the other
                containers = await self._containers(running=False)
                mine = [c for c in containers if c["Id"] == handle and c.get("State") in ENDED]
                others = [c for c in containers if c["Id"] != handle]
                if mine and others:  # the last one stays, stopped, as the template of the next
                    await self._call("DELETE", f"/containers/{handle}")
            logger.info(
                "worker container retired",
                extra={"action": "retired", "container": handle[:12], "code": code},
            )
        except ReporunError:
            logger.warning("could not remove a retired container", exc_info=True)
        finally:
            self._retiring.discard(handle)

    async def close(self) -> None:
        """Leave the containers running (the next observer takes them over); wait a little
        for retirements under way, then stop watching them."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()


def _host_config(template: dict[str, Any], security_opt: Sequence[str]) -> dict[str, Any]:
    """The template's host configuration as `docker inspect` shows it, the keys a worker's
    replica shares (not its published ports), in the form `create` takes, with the security
    options the sandbox needs (inspect does not show them all: podman drops
    `systempaths=unconfined`)."""
    config = {k: template[k] for k in HOST_CONFIG_KEYS if template.get(k) not in (None, "")}
    # podman shows ulimits by their rlimit names (RLIMIT_NOFILE) and takes them as nofile.
    config["Ulimits"] = [
        {**limit, "Name": str(limit["Name"]).lower().removeprefix("rlimit_")}
        for limit in config.get("Ulimits") or []
    ]
    options = list(config.get("SecurityOpt") or [])
    present = {opt.split("=", 1)[0].split(":", 1)[0] for opt in options}
    # Only what the template lacks: a seccomp profile of its own stays.
    options += [opt for opt in security_opt if opt.split("=", 1)[0] not in present]
    config["SecurityOpt"] = options
    return config


def _endpoints(template: dict[str, Any], service: str) -> dict[str, Any]:
    networks = (template.get("NetworkSettings") or {}).get("Networks") or {}
    return {name: {"Aliases": [service]} for name in networks}
