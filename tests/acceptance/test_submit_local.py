"""`reporun submit` of local directories and following a job, as a user runs them against
`reporun serve`: bad paths refused at once in one line, relative paths resolved, uncommitted
edits named, the job id first, stdout parseable with --json, Ctrl-C leaving the job running."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.harness.git import GitServer, run_git
from tests.harness.server import CLI_TIMEOUT, REPORUN, reporun


def committed(path: Path, files: dict[str, str], executable: tuple[str, ...] = ()) -> Path:
    path.mkdir(parents=True)
    run_git("init", "-q", "-b", "main", cwd=path)
    for name, text in files.items():
        (path / name).write_text(text)
        if name in executable:
            (path / name).chmod(0o755)
    run_git("add", "-A", cwd=path)
    run_git("commit", "-q", "-m", "first", cwd=path)
    return path


def reporun_in(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`reporun ARGS` run from `cwd`."""
    return reporun(*args, env=env, cwd=cwd)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.args, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", result.stdout
    return lines[0]


def jobs_of(served: dict[str, Any]) -> list[dict[str, Any]]:
    listed = reporun("jobs", "--json", "--all", env=served["env"])
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def test_bad_local_paths_are_refused_at_once(served: dict[str, Any], tmp_path: Path) -> None:
    env = served["env"]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("no repository here\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    run_git("init", "-q", cwd=empty)
    missing = tmp_path / "does-not-exist"

    assert (
        one_line(reporun("submit", str(missing), env=env))
        == f"reporun: {missing}: no such directory"
    )
    assert one_line(reporun_in(tmp_path, "submit", "nope", env=env)) == (
        "reporun: nope: no such directory"
    )
    assert one_line(reporun_in(tmp_path, "submit", "example.org/octo/hello", env=env)) == (
        "reporun: example.org/octo/hello: no such directory "
        "(a URL needs its scheme: https://example.org/octo/hello)"
    )
    assert one_line(reporun("submit", str(plain), env=env)) == (
        f"reporun: repo {plain} is not a git repository"
    )
    assert one_line(reporun("submit", "/etc", "--wait", env=env)) == (
        "reporun: repo /etc is not a git repository"
    )
    assert one_line(reporun_in(tmp_path, "submit", "empty", "--follow", env=env)) == (
        f"reporun: repo {empty} has no commits yet"
    )
    assert jobs_of(served) == []  # nothing was queued

    headers = {"Authorization": f"Bearer {served['token']}"}
    base = f"http://127.0.0.1:{served['port']}"
    for path in (missing, plain, Path("/etc"), empty):
        response = httpx.post(f"{base}/v1/jobs", json={"repo": str(path)}, headers=headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == "repo", response.text


def test_a_relative_path_is_resolved_and_uncommitted_edits_are_named(
    served: dict[str, Any], tmp_path: Path
) -> None:
    env = served["env"]
    repo = committed(tmp_path / "hello", {"run.sh": "#!/bin/sh\necho local hello\n"}, ("run.sh",))
    head = run_git("rev-parse", "--short=7", "HEAD", cwd=repo)

    clean = reporun_in(tmp_path, "submit", "hello", "--wait", "--json", env=env)
    assert clean.returncode == 0, clean.stderr
    job = json.loads(clean.stdout)
    assert (job["status"], job["repo"]) == ("succeeded", str(repo)), job
    assert "uncommitted" not in clean.stderr

    (repo / "run.sh").write_text("#!/bin/sh\necho edited, not committed\n")
    edited = reporun_in(tmp_path, "submit", "hello", "--wait", env=env)
    assert edited.returncode == 0, edited.stderr
    assert (
        f"reporun: hello has uncommitted changes; the job runs the last commit {head} (main)"
        in edited.stderr.splitlines()
    ), edited.stderr
    job_id = edited.stdout.split()[0]
    log = reporun("logs", job_id, env=env).stdout
    assert "local hello" in log and "edited" not in log

    run_git("checkout", "-q", "--", "run.sh", cwd=repo)
    (repo / "scratch.txt").write_text("untracked\n")
    shown = reporun_in(repo, "submit", ".", env=env)
    assert shown.returncode == 0 and "has uncommitted changes" in shown.stderr, shown.stderr
    run_git("config", "status.showUntrackedFiles", "no", cwd=repo)
    hidden = reporun_in(repo, "submit", ".", env=env)
    assert hidden.returncode == 0 and hidden.stderr == "", hidden.stderr


def test_follow_prints_the_id_first_and_json_stays_alone_on_stdout(
    served: dict[str, Any], tmp_path: Path
) -> None:
    env = served["env"]
    repo = committed(tmp_path / "loud", {"main.py": "print('line one')\nprint('line two')\n"})

    followed = reporun("submit", str(repo), "--follow", env=env)
    assert followed.returncode == 0, followed.stderr
    first, *_, last = followed.stderr.strip().splitlines()
    job_id = last.split()[0]
    uuid.UUID(job_id)
    assert first == f"reporun: job {job_id} submitted; following its log", followed.stderr
    assert last == f"{job_id} succeeded"
    assert "line one\nline two\n" in followed.stdout

    as_json = reporun("submit", str(repo), "--follow", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    job = json.loads(as_json.stdout)  # the job alone: the log went to stderr
    assert job["status"] == "succeeded"
    assert "line one\nline two\n" in as_json.stderr
    assert as_json.stderr.startswith(f"reporun: job {job['id']} submitted")

    failing = committed(tmp_path / "three", {"main.py": "raise SystemExit(3)\n"})
    failed = reporun("submit", str(failing), "--wait", env=env)
    assert failed.returncode == 1
    assert failed.stdout.strip().endswith(" failed (exit code 3)"), failed.stdout


def interrupt(argv: list[str], env: dict[str, str], tmp_path: Path, ready: str) -> tuple[int, str]:
    """Run `reporun ARGV`, SIGINT it (as Ctrl-C does) once its output says `ready`; its exit
    code and stderr."""
    out_path = tmp_path / f"stdout-{uuid.uuid4().hex[:6]}"
    err_path = out_path.with_name(out_path.name.replace("stdout", "stderr"))
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [*REPORUN, *argv], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while ready not in out_path.read_text() + err_path.read_text():
            assert process.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        time.sleep(0.3)  # inside the stream, not at its start
        process.send_signal(signal.SIGINT)
        code = process.wait(15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, err_path.read_text()


def test_ctrl_c_while_following_leaves_the_job_running(
    served: dict[str, Any], tmp_path: Path, git_server: GitServer
) -> None:
    env = served["env"]
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho started\nsleep 60\n"})

    code, err = interrupt(["submit", repo, "--follow"], env, tmp_path, "started\n")
    job_id = err.split()[2]
    uuid.UUID(job_id)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == (
        f"reporun: stopped following job {job_id}; it goes on: `reporun logs -f {job_id}` "
        f"follows it again, `reporun cancel {job_id}` cancels it"
    ), err
    assert "Traceback" not in err
    status = json.loads(reporun("status", job_id, "--json", env=env).stdout)
    assert status["status"] in ("queued", "running"), status

    code, err = interrupt(["logs", "-f", job_id], env, tmp_path, "started\n")
    assert code == 130, err
    assert err.strip().splitlines() == [
        f"reporun: stopped following job {job_id}; it goes on: `reporun logs -f {job_id}` "
        f"follows it again, `reporun cancel {job_id}` cancels it"
    ], err
    assert json.loads(reporun("status", job_id, "--json", env=env).stdout)["status"] in (
        "queued",
        "running",
    )
    assert reporun("cancel", job_id, env=env).returncode == 0
