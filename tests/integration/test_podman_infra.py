"""The container test infrastructure works: the reporun image builds and runs, docker-compose
scales a `worker` service through the podman socket, bubblewrap works inside a worker container
without --privileged, and a container reaches services of the host."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.harness.git import GitServer
from tests.podman import BUILD_TIMEOUT, HOST_ADDRESS, WORKER_SECURITY_OPT, Podman

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT)]


def _security_options(opts: tuple[str, ...]) -> list[str]:
    return [arg for opt in opts for arg in ("--security-opt", opt)]


def test_image_runs_reporun_as_an_unprivileged_user(podman: Podman) -> None:
    result = podman.run("--help")
    assert result.returncode == 0
    for command in ("api", "worker", "observer", "doctor"):
        assert command in result.stdout
    who = podman.run("-c", "id -u; id -un", options=["--entrypoint", "sh"]).stdout.split()
    assert who == ["10001", "reporun"]


@pytest.mark.parametrize("seccomp", ["unconfined", "profile"])
def test_sandbox_works_in_a_worker_container(podman: Podman, seccomp: str) -> None:
    """`reporun doctor` in the image, with the options a worker container gets (not
    --privileged): default seccomp plus sethostname, or seccomp unconfined."""
    options = list(WORKER_SECURITY_OPT)
    if seccomp == "profile":
        options = ["systempaths=unconfined", f"seccomp={podman.bwrap_seccomp_profile()}"]
    result = podman.run(
        "-c",
        "reporun db upgrade >/dev/null && reporun doctor",
        options=["--entrypoint", "sh", *_security_options(tuple(options))],
        check=False,
    )
    assert "ok    sandbox (bubblewrap)" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_doctor_says_what_a_container_without_the_options_lacks(podman: Podman) -> None:
    result = podman.run(
        "-c",
        "reporun db upgrade >/dev/null && reporun doctor",
        options=["--entrypoint", "sh"],
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  sandbox (bubblewrap)" in result.stdout
    assert "systempaths=unconfined" in result.stdout and "never --privileged" in result.stdout


def test_a_job_is_confined_in_a_worker_container(podman: Podman) -> None:
    """The project's own bubblewrap call inside the container: own hostname, uid, PID and
    network namespaces, read-only system."""
    script = textwrap.dedent(
        """
        import asyncio, json, pathlib, tempfile
        from reporun.jobs import Limits
        from reporun.worker.sandbox import Bubblewrap

        async def main():
            out = bytearray()
            async def keep(chunk):
                out.extend(chunk)
            with tempfile.TemporaryDirectory() as tmp:
                ws = pathlib.Path(tmp) / "ws"
                ws.mkdir()
                pathlib.Path(tmp).chmod(0o755)
                ws.chmod(0o755)
                (ws / "hello.txt").write_text("hi")
                result = await Bubblewrap().run(
                    workspace=ws,
                    command=(
                        'echo "host=$(hostname) pid=$$ procs=$(ls /proc | grep -c "^[0-9]")'
                        ' nets=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " ")'
                        ' file=$(cat hello.txt)"; touch /usr/x 2>/dev/null || echo ro-usr'
                    ),
                    env={},
                    limits=Limits(timeout=20, memory=256 << 20, processes=32, log=4096,
                                  disk=16 << 20),
                    on_output=keep,
                    stop=asyncio.Event(),
                )
            print(json.dumps({"exit": result.exit_code, "out": out.decode()}))

        asyncio.run(main())
        """
    )
    result = podman.run(
        "-c",
        script,
        options=["--entrypoint", "python3", *_security_options(WORKER_SECURITY_OPT)],
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["exit"] == 0, report
    assert "host=reporun pid=" in report["out"], report
    assert "nets=lo file=hi" in report["out"], report  # a network namespace of its own
    assert "ro-usr" in report["out"], report


def test_compose_scales_the_worker_service_and_comes_down(podman: Podman, tmp_path: Path) -> None:
    compose_file = tmp_path / "compose.yaml"
    lines = [
        "services:",
        "  worker:",
        f"    image: {podman.image}",
        '    entrypoint: ["sleep", "infinity"]',
        "    init: true",
        "    stop_grace_period: 5s",
        "    security_opt:",
        *(f"      - {opt}" for opt in WORKER_SECURITY_OPT),
    ]
    compose_file.write_text("\n".join(lines) + "\n")
    project = podman.compose(compose_file)
    project.up(scale={"worker": 2})
    ids = project.ps("worker")
    assert len(ids) == 2
    # A worker's id starts with its hostname: the container id's first 12 characters.
    hostnames = {podman.cli("exec", cid, "hostname").stdout.strip() for cid in ids}
    assert hostnames == {cid[:12] for cid in ids}
    labels = {c["Labels"]["com.docker.compose.service"] for c in project.containers("worker")}
    assert labels == {"worker"}

    project.scale("worker", 1)
    assert len(project.ps("worker")) == 1

    project.down()
    assert project.containers() == []


def test_a_container_reaches_services_on_the_host(
    podman: Podman, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A host service listening on 0.0.0.0 answers at host.containers.internal."""
    server = GitServer(
        tmp_path_factory.mktemp("git-base"), tmp_path_factory.mktemp("git-work"), host="0.0.0.0"
    )
    server.start()
    try:
        url = server.make_repo({"run.sh": "echo hi\n"}, name="reachable")
        url = url.replace("0.0.0.0", HOST_ADDRESS)
        result = podman.run("ls-remote", url, options=["--entrypoint", "git"])
        assert "refs/heads/main" in result.stdout
    finally:
        server.stop()
