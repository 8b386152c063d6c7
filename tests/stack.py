"""deploy/compose.yaml brought up for real: Debian's docker-compose 1.29 on podman's socket, the
reporun image of this tree, and local stand-ins for the official images no registry gives here.

The stand-ins (tests/stand_ins/) are reached only through the compose file's image variables,
so the file under test is the one we ship, unedited:
- `POSTGRES_IMAGE`: PostgreSQL 15 from Debian's packages, with the official image's variables,
  data directory and `pg_isready`;
- `KAFKA_IMAGE`: Tansu (a Kafka-protocol broker) advertising what KAFKA_ADVERTISED_LISTENERS
  says, with a `kafka-topics.sh --list` for the seed's healthcheck;
- `KEYCLOAK_IMAGE`: the tests' OIDC provider importing deploy/keycloak/realm-reporun.json (its
  clients, secrets, users and placeholders) at Keycloak's paths and ports.
Each is tagged with a hash of what goes into it, so an unchanged tree builds nothing.

Podman runs healthchecks from systemd timers, and these machines have no systemd: the
`HealthDriver` does what the timers would, running each container's healthcheck through podman's
API every few seconds. Without it, `depends_on: service_healthy` would wait forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.kafka import tansu_binary
from tests.oidc_provider import SERVER_DIR, ensure_node_modules
from tests.podman import BASE_IMAGE, ROOT, Compose, Podman, _file_lock

STAND_INS = Path(__file__).resolve().parent / "stand_ins"
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
MAKE_ENV = ROOT / "deploy" / "make-env.sh"
HEALTH_INTERVAL = 2.0
PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"


def _digest(paths: list[Path], *extra: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<dir>")
    for value in extra:
        digest.update(value.encode() + b"\0")
    return digest.hexdigest()[:16]


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def _build(podman: Podman, name: str, context: Path, base: str, digest: str) -> str:
    tag = f"localhost/reporun-standin-{name}:{digest}"
    if podman.image_exists(tag):
        return tag
    with _file_lock(f"reporun-standin-{name}.lock"):
        if not podman.image_exists(tag):
            build = ["build", "--pull=never", "--build-arg", f"BASE={base}", "-t", tag]
            podman.cli(*build, str(context), timeout=600)
    return tag


def build_stand_ins(podman: Podman) -> dict[str, str]:
    """The image variables for compose.yaml: the stand-ins and the reporun image."""
    base_id = podman.cli("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()
    images = {"REPORUN_IMAGE": podman.image}
    postgres = STAND_INS / "postgres"
    images["POSTGRES_IMAGE"] = _build(
        podman, "postgres", postgres, BASE_IMAGE, _digest(_files(postgres), base_id)
    )
    with tempfile.TemporaryDirectory(prefix="reporun-standin-") as scratch:
        # Kafka: Tansu on the reporun image (its Python has aiokafka, for kafka-topics.sh).
        kafka = Path(scratch) / "kafka"
        shutil.copytree(STAND_INS / "kafka", kafka)
        shutil.copy(tansu_binary(), kafka / "tansu")
        images["KAFKA_IMAGE"] = _build(
            podman, "kafka", kafka, podman.image, _digest(_files(kafka), podman.image)
        )
        # Keycloak: the OIDC provider of the tests with the host's Node.js (same Debian).
        ensure_node_modules()
        keycloak = Path(scratch) / "keycloak"
        shutil.copytree(STAND_INS / "keycloak", keycloak)
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is required for the Keycloak stand-in (Debian: nodejs)")
        shutil.copy(Path(node).resolve(), keycloak / "node")
        shutil.copytree(SERVER_DIR, keycloak / "oidc", symlinks=False)
        inputs = [p for p in _files(keycloak) if "node_modules" not in p.parts]
        lock = SERVER_DIR / "package-lock.json"
        images["KEYCLOAK_IMAGE"] = _build(
            podman, "keycloak", keycloak, BASE_IMAGE, _digest(inputs, base_id, lock.read_text())
        )
    return images


class HealthDriver:
    """Runs the healthchecks of a compose project's running containers every `interval`
    seconds through podman's API (`GET /libpod/containers/ID/healthcheck`), as podman's
    systemd timers would on a host with systemd."""

    def __init__(self, podman: Podman, project: str, interval: float = HEALTH_INTERVAL) -> None:
        self.podman = podman
        self.project = project
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-driver", daemon=True)

    def __enter__(self) -> HealthDriver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        transport = httpx.HTTPTransport(uds=str(self.podman.socket))
        with httpx.Client(transport=transport, base_url="http://podman/v4.0.0", timeout=60) as http:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):  # the next round tries again
                    filters = json.dumps({"label": [f"{PROJECT}={self.project}"]})
                    listed = http.get("/libpod/containers/json", params={"filters": filters})
                    for container in listed.json() or []:
                        if container.get("State") == "running":  # 409 without a healthcheck
                            http.get(f"/libpod/containers/{container['Id']}/healthcheck")
                self._stop.wait(self.interval)


class Stack:
    """One compose project of deploy/compose.yaml with the test's env file."""

    def __init__(self, podman: Podman, env_file: Path, project: Compose) -> None:
        self.podman = podman
        self.env_file = env_file
        self.project = project
        self.closing: list[Callable[[], None]] = []  # what the test opened, closed at the end
        self.settings = dict(
            line.split("=", 1)
            for line in env_file.read_text().splitlines()
            if line and not line.startswith("#")
        )

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.settings['REPORUN_HTTP_PORT']}"

    @property
    def issuer(self) -> str:
        return f"{self.settings['KEYCLOAK_URL']}/realms/reporun"

    def containers(self, service: str | None = None, *, running: bool = False) -> list[Any]:
        listed = self.project.containers(service)
        return [c for c in listed if not running or c["State"] == "running"]

    def container_of(self, service: str) -> str:
        [container] = self.containers(service)
        return str(container["Id"])

    def health(self) -> dict[str, str]:
        """Each container's name and health as podman tells it."""
        states = {}
        for container in self.containers():
            inspected = self.podman.cli(
                "inspect", container["Id"], "--format", "{{.State.Health.Status}}", check=False
            )
            states[container["Names"][0]] = inspected.stdout.strip() or container["State"]
        return states

    def logs(self, tail: int = 40) -> str:
        result = self.project.run("logs", "--no-color", "--tail", str(tail), check=False)
        return (result.stdout + result.stderr)[-12000:]

    def token(self, *, service: bool = False) -> str:
        """An access token from the identity provider's published port: the demo user's
        (password grant, the CLI's client) or the service account's (client credentials)."""
        url = f"{self.issuer}/protocol/openid-connect/token"
        if service:
            form = {"grant_type": "client_credentials"}
            auth: tuple[str, str] | None = (
                "reporun-service",
                self.settings["REPORUN_SERVICE_SECRET"],
            )
        else:
            form = {
                "grant_type": "password",
                "client_id": "reporun-cli",
                "username": "user",
                "password": self.settings["REPORUN_USER_PASSWORD"],
            }
            auth = None
        response = httpx.post(url, data=form, auth=auth, timeout=10)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


@contextlib.contextmanager
def stack(podman: Podman, directory: Path, settings: dict[str, str]) -> Iterator[Stack]:
    """deploy/make-env.sh's env file (fresh secrets) plus `settings`; the project taken down
    with its volumes at the end."""
    env_file = directory / "stack.env"
    subprocess.run(
        [str(MAKE_ENV), settings["KEYCLOAK_URL"], str(env_file)], check=True, capture_output=True
    )
    with env_file.open("a") as out:
        for name, value in settings.items():
            if name != "KEYCLOAK_URL":
                out.write(f"{name}={value}\n")
    project = podman.compose(COMPOSE_FILE, env_file=env_file)
    deployed = Stack(podman, env_file, project)
    try:
        with HealthDriver(podman, project.project):
            yield deployed
    finally:
        for close in deployed.closing:
            close()
        project.run("down", "--remove-orphans", "--volumes", "-t", "5", check=False)


def wait_for(what: str, check: Any, timeout: float, explain: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{explain() if explain else ''}")
        time.sleep(0.5)
