"""Local repositories (`reporun serve` accepts paths): a path that is no directory, no git
repository or one with no commits is refused at submission, 422 naming `repo`, on both the
API and the seed's /add; a real repository is queued and runs. The worker clones from a local
source only for a job that was allowed one at submission."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from reporun.config import Settings
from reporun.jobs import JobSpec, resolve_limits
from reporun.store import Store
from reporun.wiring import job_rules
from tests.harness.git import GitServer, run_git
from tests.integration.conftest import Api, WorkerFactory

PROBLEM = "application/problem+json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The embedded server's policy: local paths allowed."""
    return settings.model_copy(update={"allow_local_repos": True})


def committed(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True)
    run_git("init", "-q", "-b", "main", cwd=path)
    for name, text in (files or {"main.py": "print('local job ran')\n"}).items():
        (path / name).write_text(text)
    run_git("add", "-A", cwd=path)
    run_git("commit", "-q", "-m", "first", cwd=path)
    return path


def unusable(tmp_path: Path) -> list[tuple[str, str]]:
    """(path, what the detail must say) for every kind of unusable local path."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("not a repository\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    run_git("init", "-q", cwd=empty)
    inside = committed(tmp_path / "outer") / "sub"
    inside.mkdir()
    return [
        (str(tmp_path / "does-not-exist"), "no such directory"),
        (str(plain / "a.txt"), "is not a directory"),
        (str(plain), "is not a git repository"),
        ("/etc", "is not a git repository"),
        (str(empty), "has no commits yet"),
        (str(inside), f"is not a git repository; it is inside {tmp_path / 'outer'}"),
    ]


async def test_unusable_local_paths_are_422_naming_repo(api: Api, tmp_path: Path) -> None:
    admin = api.headers("root", "admin")
    for path, says in unusable(tmp_path):
        for repo in (path, f"file://{path}"):
            response = await api.client.post("/v1/jobs", json={"repo": repo}, headers=admin)
            assert response.status_code == 422, (repo, response.text)
            assert response.headers["content-type"].startswith(PROBLEM)
            body = response.json()
            assert body["field"] == "repo" and says in body["detail"], (repo, body)
            assert body["detail"].startswith(f"repo {path}"), body
            assert body["errors"] == [{"field": "repo", "message": body["detail"]}]
        legacy = await api.client.get(f"/add?url={quote(path)}", headers=admin)
        assert legacy.status_code == 422 and legacy.json()["field"] == "repo", legacy.text
        assert says in legacy.json()["detail"]
    listed = await api.client.get("/v1/jobs", headers=admin)
    assert listed.json()["items"] == []  # nothing refused was queued


async def test_a_branch_without_commits_needs_a_ref(
    api: Api, tmp_path: Path, start_worker: WorkerFactory
) -> None:
    repo = committed(tmp_path / "orphan")
    run_git("checkout", "-q", "--orphan", "unborn", cwd=repo)
    admin = api.headers("root", "admin")
    response = await api.client.post("/v1/jobs", json={"repo": str(repo)}, headers=admin)
    assert response.status_code == 422, response.text
    assert "current branch has no commits yet" in response.json()["detail"]
    start_worker()
    job = await api.wait((await api.submit("root", "admin", repo=str(repo), ref="main"))["id"])
    assert job["status"] == "succeeded", job


async def test_a_local_repository_runs(
    api: Api, tmp_path: Path, start_worker: WorkerFactory
) -> None:
    repo = committed(tmp_path / "work")
    start_worker()
    job = await api.wait((await api.submit("root", "admin", repo=str(repo)))["id"])
    assert job["status"] == "succeeded", job
    assert b"local job ran" in await api.log(job["id"])


async def test_a_loopback_host_is_cloned_only_for_a_job_allowed_local_sources(
    api: Api, settings: Settings, store: Store, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """As if the host had resolved elsewhere at submission: the worker decides by the job's
    flag, not by its own policy, and a job without it never reaches the git daemon."""
    (tmp_path / "git-base").mkdir()
    (tmp_path / "git-work").mkdir()
    with GitServer(tmp_path / "git-base", tmp_path / "git-work", log=tmp_path / "git.log") as git:
        files = {"run.sh": "#!/bin/sh\necho cloned\n"}
        refused_repo, allowed_repo = git.make_repo(files), git.make_repo(files)
        start_worker(trusted_hosts=[])  # serve's worker: local sources allowed, none trusted
        spec = JobSpec(repo=refused_repo, limits=resolve_limits({}, job_rules(settings)))
        refused = await store.create_job(spec, "mallory")
        allowed = await store.create_job(
            spec.model_copy(update={"repo": allowed_repo, "local_sources": True}), "root"
        )
        refused_end = await api.wait(str(refused.id))
        allowed_end = await api.wait(str(allowed.id))
        requested = git.requests()
    assert refused_end["status"] == "failed", refused_end
    assert refused_end["reason"] == (
        "repo host '127.0.0.1' resolves to a non-public address (127.0.0.1); "
        "the operator must list it in REPORUN_TRUSTED_HOSTS"
    )
    assert allowed_end["status"] == "succeeded", allowed_end
    assert requested == ["/" + allowed_repo.rsplit("/", 1)[1]]
