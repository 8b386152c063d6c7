"""The CLI from any directory, and local tokens (create, list, revoke), as a user runs them:
`reporun serve` and the CLI as subprocesses, in an empty working directory, with a home of the
test's own."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import jwt

from tests.acceptance.conftest import ROOT
from tests.harness.git import GitServer
from tests.harness.ports import free_port
from tests.harness.processes import Processes, require_tool
from tests.harness.server import REPORUN, Server, cli_env, reporun

NOT_ISSUED = "the token is not one this server issued"


def user_env(tmp_path: Path) -> dict[str, str]:
    """The per-user dirs of a user of the test's own: HOME and its XDG dirs, all empty."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }


def run_in(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`reporun ARGS` run from `cwd`."""
    return reporun(*args, env=env, cwd=cwd)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_the_cli_finds_a_running_serve_and_its_tokens_from_any_directory(
    tmp_path: Path, processes: Processes, git_server: GitServer
) -> None:
    require_tool("bwrap", "the job sandbox")
    user = user_env(tmp_path)
    server = Server(processes, tmp_path / "data", **user).serve(tmp_path / "serve.log")
    # A client that knows only the server's URL: no token, no data dir, another directory.
    env = {k: v for k, v in server.env.items() if k != "REPORUN_DATA_DIR"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho from elsewhere\n"})

    ran = run_in(elsewhere, env, "submit", repo, "--wait")
    assert ran.returncode == 0, ran.stderr
    listed = run_in(elsewhere, env, "jobs", "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1, listed.stderr

    created = run_in(elsewhere, env, "token", "create", "ci", "--role", "user")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert created.stdout == token + "\n"  # the token alone: $(reporun token create ci) works
    claims = jwt.decode(token, options={"verify_signature": False})
    told = created.stderr
    assert f"token {claims['jti']}" in told and "role user" in told and "expires never" in told
    assert "REPORUN_TOKEN" in told and len(told.strip().splitlines()) == 2

    as_ci = {**env, "REPORUN_TOKEN": token}
    assert run_in(elsewhere, as_ci, "jobs", "--json").stdout.strip() == "[]"  # not the admin's
    local = run_in(elsewhere, as_ci, "submit", str(ROOT), "--command", "cat /etc/hostname")
    assert local.returncode == 2 and "only an admin token" in local.stderr, local.stderr
    assert len(local.stderr.strip().splitlines()) == 1

    table = run_in(elsewhere, env, "token", "list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "STATE"]
    mine = next(row for row in rows if row.startswith(claims["jti"]))
    assert mine.split()[1:3] == ["ci", "user"] and mine.split()[-1] == "active"
    assert any(row.split()[1:3] == ["admin", "admin"] for row in rows)  # serve's own

    revoked = run_in(elsewhere, env, "token", "revoke", claims["jti"][:8])
    assert revoked.returncode == 0 and claims["jti"] in revoked.stdout, revoked.stderr
    refused = run_in(elsewhere, as_ci, "jobs")  # at once: the very next request
    assert refused.returncode == 2 and "was revoked at" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    states = json.loads(run_in(elsewhere, env, "token", "list", "--json").stdout)
    assert {t["id"]: t["state"] for t in states}[claims["jti"]] == "revoked"
    again = run_in(elsewhere, env, "token", "revoke", claims["jti"])
    assert again.returncode == 0 and "already revoked" in again.stdout

    wrong = run_in(elsewhere, {**env, "REPORUN_TOKEN": "not-a-token"}, "jobs")
    assert wrong.returncode == 2 and NOT_ISSUED in wrong.stderr, wrong.stderr

    doctor = run_in(elsewhere, env, "doctor")
    assert "ok    database" in doctor.stdout, doctor.stdout + doctor.stderr

    assert files_under(elsewhere) == []  # nothing of reporun's in the working directory
    assert not Path(user["XDG_DATA_HOME"], "reporun").exists()  # the default dir was not used
    state = Path(user["XDG_STATE_HOME"], "reporun", "servers", f"{server.port}.json")
    assert json.loads(state.read_text())["data_dir"] == str(server.data_dir.resolve())
    assert server.process is not None
    assert server.process.stop(signal.SIGTERM) == 0
    assert not state.exists()  # a stopped server is forgotten


def test_doctor_in_an_empty_directory_creates_nothing(tmp_path: Path) -> None:
    require_tool("bwrap", "the job sandbox")
    user = user_env(tmp_path)
    env = {k: v for k, v in cli_env(tmp_path / "unused", free_port(), **user).items()}
    del env["REPORUN_DATA_DIR"]
    empty = tmp_path / "empty"
    empty.mkdir()

    result = run_in(empty, env, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    default = Path(user["XDG_DATA_HOME"], "reporun", "reporun.db")
    assert f"database: none yet at {default} (`reporun serve` creates it)" in result.stdout
    assert "reporun db upgrade" not in result.stdout
    assert files_under(empty) == [] and files_under(tmp_path / "home") == []
    assert list(tmp_path.rglob("*.db")) == []

    no_key = run_in(empty, env, "token", "create", "ci")
    assert no_key.returncode == 2 and "reporun serve" in no_key.stderr, no_key.stderr
    assert len(no_key.stderr.strip().splitlines()) == 1
    assert files_under(empty) == [] and files_under(tmp_path / "home") == []


def test_serve_with_the_default_data_dir_is_found_from_another_directory(
    tmp_path: Path, processes: Processes
) -> None:
    require_tool("bwrap", "the job sandbox")
    user = user_env(tmp_path)
    port = free_port()
    env = {k: v for k, v in cli_env(tmp_path / "unused", port, **user).items()}
    del env["REPORUN_DATA_DIR"]
    started_in, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    started_in.mkdir()
    elsewhere.mkdir()
    serving = processes.start(
        [
            "sh",
            "-c",
            f'cd "{started_in}" && exec "$@"',
            "sh",
            *REPORUN,
            "serve",
            "--port",
            str(port),
            "--workers",
            "0",
        ],
        env,
        tmp_path / "serve.log",
    )
    serving.wait_http(f"http://127.0.0.1:{port}/healthz", 60)
    data = Path(user["XDG_DATA_HOME"], "reporun")
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    assert files_under(started_in) == []  # the default data dir is not the working directory
    created = run_in(elsewhere, env, "token", "create", "ci", "--ttl", "3600")
    assert created.returncode == 0 and "expires 20" in created.stderr, created.stderr
    as_ci = {**env, "REPORUN_TOKEN": created.stdout.strip()}
    assert run_in(elsewhere, as_ci, "jobs", "--json").returncode == 0
    assert run_in(elsewhere, env, "jobs", "--json").returncode == 0  # the admin token
