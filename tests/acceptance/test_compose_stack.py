"""The shipped deploy/compose.yaml, brought up whole on podman and used as its users would: the
seed's `curl` with a token from the identity provider, twenty jobs that make the observer scale
the workers out and back in, a worker killed mid-job, PostgreSQL restarted, and nothing left
behind. See tests/stack.py for the stand-ins and why the healthchecks are driven by the test."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.harness.git import GitServer
from tests.harness.ports import free_port
from tests.podman import BUILD_TIMEOUT, HOST_ADDRESS, Podman
from tests.stack import COMPOSE_FILE, Stack, build_stand_ins, stack, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT)]

MIN_WORKERS, MAX_WORKERS = 2, 4
REPORUN_SERVICES = {"api", "worker", "observer"}


def test_docker_compose_config_validates_the_file(tmp_path: Path) -> None:
    """The seed's tool accepts the file with an env file made by deploy/make-env.sh, and
    refuses to start anything without one (no default secret)."""
    env_file = tmp_path / "deploy.env"
    subprocess.run(
        [str(COMPOSE_FILE.parent / "make-env.sh"), "https://sso.example.org", str(env_file)],
        check=True,
    )
    assert env_file.stat().st_mode & 0o077 == 0
    (tmp_path / "empty.env").write_text("")
    base = ["docker-compose", "-f", str(COMPOSE_FILE)]
    checked = subprocess.run(
        [*base, "--env-file", str(env_file), "config"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "REPORUN_QUEUE: kafka" in checked.stdout
    refused = subprocess.run(
        [*base, "--env-file", str(tmp_path / "empty.env"), "config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert refused.returncode != 0 and "make-env.sh" in refused.stderr


def repo(git: GitServer, script: str) -> str:
    return git.make_repo({"run.sh": f"#!/bin/sh\n{script}\n"}).replace("0.0.0.0", HOST_ADDRESS)


def curl(*args: str) -> str:
    """The seed's client: curl, as its README calls it."""
    result = subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


class Client:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=stack.api, timeout=20)
        self.user = {"Authorization": f"Bearer {stack.token()}"}
        self.admin = {"Authorization": f"Bearer {stack.token(service=True)}"}

    def close(self) -> None:
        self.http.close()

    def submit(self, url: str) -> str:
        response = self.http.post("/v1/jobs", json={"repo": url}, headers=self.user)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, object]:
        response = self.http.get(f"/v1/jobs/{job_id}", headers=self.admin)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def ended(self, job_id: str, timeout: float = 120) -> dict[str, object]:
        return dict(
            wait_for(
                f"job {job_id} ends",
                lambda: (job := self.job(job_id))["status"] not in ("queued", "running") and job,
                timeout,
                self.stack.logs,
            )
        )

    def log(self, job_id: str) -> str:
        return self.http.get(f"/v1/jobs/{job_id}/logs", headers=self.admin).text

    def decisions(self) -> list[dict[str, object]]:
        response = self.http.get("/v1/scaling", params={"limit": 50}, headers=self.admin)
        assert response.status_code == 200, response.text
        return list(response.json()["decisions"])


def test_the_stack_comes_up_runs_jobs_scales_and_recovers(
    podman: Podman, host_git: GitServer, tmp_path: Path
) -> None:
    images = build_stand_ins(podman)
    api_port, keycloak_port = free_port(), free_port()
    settings = {
        "KEYCLOAK_URL": f"http://127.0.0.1:{keycloak_port}",
        **images,
        "REPORUN_HTTP_PORT": str(api_port),
        "KEYCLOAK_HTTP_PORT": str(keycloak_port),
        "DOCKER_SOCKET": str(podman.socket),
        "REPORUN_ALLOWED_SCHEMES": "git",
        "REPORUN_TRUSTED_HOSTS": HOST_ADDRESS,
        "REPORUN_MIN_WORKERS": str(MIN_WORKERS),
        "REPORUN_MAX_WORKERS": str(MAX_WORKERS),
        "REPORUN_TARGET_WAIT": "1",
        "REPORUN_SCALE_IN_COOLDOWN": "5",
        "REPORUN_LEASE_SECONDS": "8",
        "REPORUN_LOG_FORMAT": "text",
    }
    with stack(podman, tmp_path, settings) as deployed:
        began = time.monotonic()
        deployed.project.up()
        wait_for(
            "every service healthy",
            lambda: all_healthy(healthy_services(deployed)),
            180,
            lambda: f"{deployed.health()}\n{deployed.logs()}",
        )
        healthy = time.monotonic() - began
        client = Client(deployed)
        deployed.closing.append(client.close)
        # Ready for users: the API checks a token against the identity provider.
        wait_for(
            "the API takes a token",
            lambda: client.http.get("/v1/jobs", headers=client.user).status_code == 200,
            60,
            deployed.logs,
        )
        print(f"the stack: healthy {healthy:.1f} s, ready {time.monotonic() - began:.1f} s")
        assert not published_ports(deployed, "db") and not published_ports(deployed, "kafka")

        # The seed's curl, with a token from the identity provider.
        token = deployed.token()
        hello = repo(host_git, "echo hello from the stack")
        added = curl("-H", f"Authorization: Bearer {token}", f"{deployed.api}/add?url={hello}")
        match = re.fullmatch(r"Job added: ([0-9a-f-]{36})\n", added)
        assert match, added
        job_id = match.group(1)
        finished = client.ended(job_id)
        assert finished["status"] == "succeeded", (finished, deployed.logs())
        status = json.loads(
            curl("-H", f"Authorization: Bearer {token}", f"{deployed.api}/status?key={job_id}")
        )
        assert status == [{"usuario": "user", "key": job_id, "status": "Finished"}]
        assert "hello from the stack" in client.log(job_id)

        # Twenty jobs: the observer grows the worker service, then retires the extra ones.
        slow = repo(host_git, "sleep 3; echo batch")
        batch = [client.submit(slow) for _ in range(20)]
        wait_for(
            "the worker service scaled out",
            lambda: len(deployed.containers("worker", running=True)) > MIN_WORKERS,
            60,
            deployed.logs,
        )
        assert all(client.ended(job)["status"] == "succeeded" for job in batch)
        wait_for(
            "the worker service scaled back in",
            lambda: len(deployed.containers("worker", running=True)) == MIN_WORKERS,
            90,
            deployed.logs,
        )
        decisions = client.decisions()
        directions = {(d["scaler"], d["direction"]) for d in decisions}
        assert {("docker", "out"), ("docker", "in")} <= directions, (decisions, deployed.logs())

        # A worker killed mid-job: the job runs again elsewhere, to its end, once.
        long = repo(host_git, "sleep 6; echo ran-to-the-end")
        victim_job = client.submit(long)
        running = wait_for(
            "the job runs",
            lambda: (job := client.job(victim_job))["status"] == "running" and job,
            60,
            deployed.logs,
        )
        victim = container_running(deployed, str(running["worker"]))
        podman.cli("kill", "--signal", "KILL", victim)
        ended = client.ended(victim_job)
        assert ended["status"] == "succeeded" and ended["attempts"] == 2, ended
        assert ended["worker"] != running["worker"]
        assert client.log(victim_job).count("ran-to-the-end") == 1

        # PostgreSQL restarted: everything reconnects by itself.
        podman.cli("restart", "--time", "5", deployed.container_of("db"))
        wait_for(
            "the API ready again",
            lambda: client.http.get("/readyz").status_code == 200,
            90,
            deployed.logs,
        )
        after = client.submit(hello)
        assert client.ended(after)["status"] == "succeeded", deployed.logs()

        project = deployed.project
    # Down with its volumes: nothing of the project is left.
    assert project.containers() == []
    assert project.networks() == [] and project.volumes() == []


def all_healthy(states: dict[str, str]) -> bool:
    services = {name.split("_")[-2] for name in states}
    wanted = REPORUN_SERVICES | {"db", "kafka", "keycloak", "keycloak-db"}
    return services == wanted and all(state == "healthy" for state in states.values())


def healthy_services(deployed: Stack) -> dict[str, str]:
    """The health of each service that has a healthcheck (all but the one-shot migrate)."""
    states = deployed.health()
    return {name: state for name, state in states.items() if "_migrate_" not in name}


def published_ports(deployed: Stack, service: str) -> list[object]:
    inspected = deployed.podman.cli(
        "inspect", deployed.container_of(service), "--format", "{{json .HostConfig.PortBindings}}"
    )
    bindings = json.loads(inspected.stdout or "null") or {}
    return [port for port, bound in bindings.items() if bound]


def container_running(deployed: Stack, worker_id: str) -> str:
    """The worker container whose worker has this id (it starts with the container's host
    name, the short container id)."""
    for container in deployed.containers("worker"):
        if worker_id.startswith(str(container["Id"])[:12]):
            return str(container["Id"])
    pytest.fail(f"no worker container runs {worker_id}: {deployed.containers('worker')}")
