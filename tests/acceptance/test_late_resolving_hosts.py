"""A host name that resolves to loopback only when the worker looks it up (DNS rebinding, or a
name that starts resolving later): `reporun serve` takes it from a user token, since it
resolves to nothing at submission, and its worker refuses to clone it, however local sources
are allowed on this server; an admin's job on the same name runs."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.git import GitServer
from tests.harness.processes import Process, Processes, require_tool
from tests.harness.server import Server

# Runs the rest of the command line with `$0` bound over /etc/hosts, in a mount namespace of
# its own: only that process and its children see the name.
OWN_HOSTS = 'mount --bind "$0" /etc/hosts && exec "$@"'


@pytest.fixture
def git(tmp_path: Path) -> Iterator[GitServer]:
    """A git daemon on 127.0.0.1 that logs every request."""
    (tmp_path / "git-base").mkdir()
    (tmp_path / "git-work").mkdir()
    server = GitServer(tmp_path / "git-base", tmp_path / "git-work", log=tmp_path / "git.log")
    with server:
        yield server


def worker_seeing(name: str, server: Server, tmp_path: Path) -> Process:
    """`reporun worker` with the settings serve gives its own workers (local sources allowed,
    no trusted host), in a mount namespace whose /etc/hosts maps `name` to 127.0.0.1."""
    unshare = require_tool("unshare", "a worker with hosts of its own")
    require_tool("mount", "a worker with hosts of its own")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {name}\n")
    prefix = [unshare, "--mount", "--propagation", "private", "--", "sh", "-c", OWN_HOSTS]
    return server.start(
        tmp_path / "worker.log",
        "worker",
        prefix=[*prefix, str(hosts)],
        REPORUN_DATABASE_URL=f"sqlite:///{server.data_dir / 'reporun.db'}",
        REPORUN_ALLOW_LOCAL_REPOS="true",
        REPORUN_ALLOWED_SCHEMES="https,http,git,ssh",
        REPORUN_POLL_INTERVAL="0.05",
    )


def test_a_user_job_whose_host_turns_loopback_is_refused_by_the_worker(
    tmp_path: Path, processes: Processes, git: GitServer
) -> None:
    require_tool("bwrap", "the job sandbox")
    name = f"rebind-{secrets.token_hex(4)}.test"
    with pytest.raises(socket.gaierror):  # where the API looks it up, the name is nothing
        socket.getaddrinfo(name, None)
    server = Server(processes, tmp_path / "data").serve(tmp_path / "serve.log", "--workers", "0")
    worker = worker_seeing(name, server, tmp_path)
    repo = git.make_repo({"run.sh": "#!/bin/sh\necho cloned from the host\n"})
    path = "/" + repo.rsplit("/", 1)[1]
    named = repo.replace(f"git://{git.host}:", f"git://{name}:")
    user_token = server.mint("mallory", "user")
    user, admin = server.blocking_client(user_token), server.blocking_client()
    try:
        queued = user.submit(named)  # resolves to nothing at submission: not refused then
        ended = admin.wait(queued["id"], explain=worker.tail)
        assert ended["status"] == "failed", ended
        assert ended["reason"] == (
            f"repo host {name!r} resolves to a non-public address (127.0.0.1); "
            "the operator must list it in REPORUN_TRUSTED_HOSTS"
        )
        assert git.requests() == []  # the daemon never heard from the worker

        # The worker does reach the daemon by that name: for an admin's job it clones.
        ran = admin.wait(admin.submit(named)["id"], explain=worker.tail)
        assert ran["status"] == "succeeded", ran
        assert b"cloned from the host" in admin.log(ran["id"])
        assert git.requests() == [path]

        # A loopback host a user names outright is still refused at submission.
        refused = httpx.post(
            f"{server.url}/v1/jobs",
            json={"repo": repo},
            headers={"Authorization": f"Bearer {user_token}"},
            trust_env=False,
        )
        assert refused.status_code == 403 and refused.json()["field"] == "repo", refused.text
    finally:
        user.close()
        admin.close()
