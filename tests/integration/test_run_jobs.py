"""A repository run as a job, end to end: real git over git://, real bubblewrap."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from datetime import datetime

import pytest

from reporun.config import MiB
from reporun.worker.process import cut_marker
from tests.conftest import processes_with
from tests.harness.git import GitServer
from tests.integration.conftest import Api, WorkerFactory


async def test_run_sh_success_keeps_its_output(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho hello from the job\n"})
    start_worker()
    job = await api.wait((await api.submit(repo=repo))["id"])
    assert job["status"] == "succeeded", job
    assert job["exit_code"] == 0
    assert job["command"] == "./run.sh"
    assert len(job["commit"]) == 40
    assert job["wait_seconds"] is not None and job["run_seconds"] is not None
    assert b"hello from the job" in await api.log(job["id"])


async def test_a_jobs_phases_add_up_to_its_time_and_split_the_sandbox_from_the_run(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 0.3\necho done\n"})
    start_worker()
    job = await api.wait((await api.submit(repo=repo))["id"])
    assert job["status"] == "succeeded", job
    phases = job["phases"]
    assert list(phases) == ["wait", "fetch", "checkout", "setup", "sandbox_start", "run", "report"]
    assert phases["setup"] is None  # it has none
    assert all(phases[p] is not None and phases[p] >= 0 for p in phases if p != "setup")
    # The sandbox's start is told apart from the command's run: the sleep is the run's.
    assert 0 < phases["sandbox_start"] < 0.3 <= phases["run"] < 5
    created, finished = (datetime.fromisoformat(job[k]) for k in ("created_at", "finished_at"))
    total = (finished - created).total_seconds()
    assert sum(v for v in phases.values() if v is not None) == pytest.approx(total, abs=0.005)


async def test_exit_code_3_is_failed(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho about to fail\nexit 3\n"})
    start_worker()
    job = await api.wait((await api.submit(repo=repo))["id"])
    assert (job["status"], job["exit_code"], job["reason"]) == ("failed", 3, "exit code 3")


async def test_reporun_toml_command_is_honoured(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo(
        {
            "reporun.toml": 'command = "sh build.sh"\n',
            "build.sh": "echo built by toml\n",
            "run.sh": "#!/bin/sh\necho wrong entry point\n",
        }
    )
    start_worker()
    job = await api.wait((await api.submit(repo=repo))["id"])
    assert job["status"] == "succeeded", job
    assert job["command"] == "sh build.sh"
    log = await api.log(job["id"])
    assert b"built by toml" in log and b"wrong entry point" not in log


async def test_entry_points_in_order(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    makefile = git_server.make_repo(
        {"Makefile": "all:\n\t@echo from make\n", "main.py": "print('py')\n"}
    )
    python = git_server.make_repo({"main.py": "print('from python')\n"})
    start_worker()
    made = await api.wait((await api.submit(repo=makefile))["id"])
    ran = await api.wait((await api.submit(repo=python))["id"])
    assert (made["status"], made["command"]) == ("succeeded", "make")
    assert (ran["status"], ran["command"]) == ("succeeded", "python3 main.py")
    assert b"from python" in await api.log(ran["id"])


async def test_no_entry_point(api: Api, git_server: GitServer, start_worker: WorkerFactory) -> None:
    repo = git_server.make_repo({"README.md": "nothing to run\n"})
    start_worker()
    job = await api.wait((await api.submit(repo=repo))["id"])
    assert (job["status"], job["reason"]) == ("failed", "no entry point")


async def test_run_sh_not_executable_is_named(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho hi\n"}, executable=())
    start_worker()
    job = await api.wait((await api.submit(repo=repo))["id"])
    assert job["status"] == "failed", job
    assert job["reason"].startswith("no entry point: run.sh exists but is not executable"), job


async def test_missing_repository_fails_naming_the_clone(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    start_worker()
    job = await api.wait((await api.submit(repo=git_server.url("does-not-exist")))["id"])
    assert job["status"] == "failed"
    assert "clone" in job["reason"] and "does-not-exist" in job["reason"], job["reason"]
    assert job["attempts"] == 1  # a job's own fault is never retried


async def test_ref_picks_branch_tag_or_commit(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho first\n"}, name="refs-repo")
    start_worker()
    first = (await api.wait((await api.submit(repo=repo))["id"]))["commit"]
    second = git_server.push("refs-repo", {"run.sh": "#!/bin/sh\necho second\n"})
    newest = await api.wait((await api.submit(repo=repo))["id"])
    pinned = await api.wait((await api.submit(repo=repo, ref=first))["id"])
    missing = await api.wait((await api.submit(repo=repo, ref="no-such-branch"))["id"])
    assert newest["commit"] == second and b"second" in await api.log(newest["id"])
    assert pinned["commit"] == first and b"first" in await api.log(pinned["id"])
    assert missing["status"] == "failed" and "no-such-branch" in missing["reason"]


async def test_mirror_cache_fetches_instead_of_cloning_again(
    api: Api, git_server: GitServer, start_worker: WorkerFactory, settings
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho one\n"}, name="cached")
    worker = start_worker()
    first = await api.wait((await api.submit(repo=repo))["id"])
    mirrors = sorted(p for p in settings.mirrors_dir.iterdir() if p.suffix == ".git")
    assert len(mirrors) == 1
    marker = mirrors[0] / "reporun-test-marker"
    marker.write_text("still the same mirror")
    git_server.push("cached", {"run.sh": "#!/bin/sh\necho two\n"})
    second = await api.wait((await api.submit(repo=repo))["id"])
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")
    assert marker.exists(), "the mirror was cloned again"
    assert first["commit"] != second["commit"] and b"two" in await api.log(second["id"])
    assert worker.work_dir.exists() and not any(worker.work_dir.iterdir()), "workspace left behind"


async def test_timeout_kills_every_process_of_the_job(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    marker = f"{secrets.randbelow(10**6) + 1000}"
    script = (
        "#!/bin/sh\n"
        f"setsid sleep 1{marker} &\n"
        f"nohup sleep 2{marker} >/dev/null 2>&1 &\n"
        f"(trap '' TERM HUP; exec sleep 3{marker}) &\n"
        "sleep 1000\n"
    )
    repo = git_server.make_repo({"run.sh": script})
    start_worker()
    started = time.monotonic()
    job = await api.wait((await api.submit(repo=repo, timeout=2))["id"], timeout=30)
    elapsed = time.monotonic() - started
    assert job["status"] == "timed_out", job
    assert job["reason"] == "timed out after 2 s"
    assert elapsed < 6, f"took {elapsed:.1f} s"
    await asyncio.sleep(0.2)
    assert processes_with(marker) == []


async def test_cancel_a_queued_job_never_runs_it(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho should never run\n"})
    job = await api.submit(repo=repo)
    response = await api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers())
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    start_worker()
    after = await api.submit(repo=repo)  # a later job runs: the worker is live
    await api.wait(after["id"])
    cancelled = await api.job(job["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["started_at"] is None and cancelled["attempts"] == 0
    assert await api.log(job["id"]) == b""


async def test_cancel_a_running_job_kills_it(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    marker = f"{secrets.randbelow(10**6) + 1000}"
    repo = git_server.make_repo(
        {"run.sh": f"#!/bin/sh\necho started\nsetsid sleep 4{marker} &\nsleep 5{marker}\n"}
    )
    start_worker()
    job = await api.submit(repo=repo)
    await api.wait(job["id"], {"running"})
    while processes_with(marker) == []:
        await asyncio.sleep(0.05)
    response = await api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers())
    assert response.status_code == 202
    ended = await api.wait(job["id"], timeout=10)
    assert ended["status"] == "cancelled", ended
    await asyncio.sleep(0.2)
    assert processes_with(marker) == []
    again = await api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.headers())
    assert again.status_code == 202  # cancelling twice is fine


async def test_fifty_megabytes_of_output_is_capped(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo(
        {"run.sh": "#!/bin/sh\nhead -c 52428800 /dev/zero | tr '\\0' 'x'\necho\necho done\n"}
    )
    start_worker()
    job = await api.wait((await api.submit(repo=repo))["id"], timeout=90)
    assert job["status"] == "succeeded", job
    assert job["log_truncated"] is True
    marker = b"\n" + cut_marker(1 * MiB)  # the output has no newline where it was cut
    assert job["log_bytes"] == 1 * MiB + len(marker)
    log = await api.log(job["id"])
    assert log == b"x" * MiB + marker
    healthy = git_server.make_repo({"run.sh": "#!/bin/sh\necho still fine\n"})
    after = await api.wait((await api.submit(repo=healthy))["id"])
    assert after["status"] == "succeeded"


async def test_follow_streams_the_log_until_the_end(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo(
        {"run.sh": "#!/bin/sh\nfor i in 1 2 3; do echo line $i; sleep 0.3; done\n"}
    )
    start_worker()
    job = await api.submit(repo=repo)
    body = b""
    async with api.client.stream(
        "GET", f"/v1/jobs/{job['id']}/logs", params={"follow": "true"}, headers=api.headers()
    ) as response:
        assert response.headers["content-type"].startswith("text/plain")
        async for chunk in response.aiter_bytes():
            body += chunk
    assert body == b"line 1\nline 2\nline 3\n"
    assert (await api.job(job["id"]))["status"] == "succeeded"


async def test_the_job_environment_is_only_what_it_asked_for(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo({"run.sh": '#!/bin/sh\necho "GREETING=$GREETING"\n'})
    start_worker()
    job = await api.wait((await api.submit(repo=repo, env={"GREETING": "hola"}))["id"])
    assert b"GREETING=hola" in await api.log(job["id"])
    assert os.environ.get("GREETING") is None


async def test_a_repository_larger_than_the_disk_limit_never_lands(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho hi\n", "big.txt": "x" * (3 * MiB)})
    worker = start_worker()
    job = await api.wait((await api.submit(repo=repo, limits={"disk": 2 * MiB}))["id"])
    assert job["status"] == "failed" and "disk limit" in job["reason"], job
    assert not any(worker.work_dir.iterdir())


HUNDRED_THOUSAND_LINES = "".join(f"{i}\n" for i in range(1, 100_001)).encode()


async def test_a_cut_log_ends_with_a_marker_written_when_the_cap_is_hit(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    # The job prints 100,000 lines, then runs on: the marker must come while it still runs.
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nseq 100000\nsleep 4\necho never seen\n"})
    start_worker()
    job = await api.submit(repo=repo, limits={"log": 4000})
    kept = HUNDRED_THOUSAND_LINES[:4000]
    assert not kept.endswith(b"\n"), "the test means to cut mid-line"
    expected = kept + b"\n" + cut_marker(4000)
    assert expected.endswith(
        b"\n[reporun: log cut at 3.9 KiB (the job's log limit); "
        b"the rest of its output was dropped, the job went on]\n"
    )
    # The plain text, read while the job runs (the ASGI transport buffers a followed stream).
    await api.wait(job["id"], {"running"})
    while not (log := await api.log(job["id"])).endswith(cut_marker(4000)):
        status = (await api.job(job["id"]))["status"]
        assert status == "running", f"{status} with no marker; the log ends {log[-80:]!r}"
        await asyncio.sleep(0.05)
    assert log == expected
    assert (await api.job(job["id"]))["status"] == "running", "the marker came after the job"
    followed = b""
    async with api.client.stream(
        "GET", f"/v1/jobs/{job['id']}/logs", params={"follow": "true"}, headers=api.headers()
    ) as response:
        async for chunk in response.aiter_bytes():
            followed += chunk
    assert followed == expected
    ended = await api.job(job["id"])
    assert (ended["status"], ended["log_truncated"]) == ("succeeded", True)
    assert ended["log_bytes"] == len(expected)
    assert await api.log(job["id"]) == expected


async def test_a_log_under_its_limit_has_no_marker(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nseq 1000\nprintf 'no newline'\n"})
    start_worker()
    job = await api.wait((await api.submit(repo=repo, limits={"log": 4000}))["id"])
    expected = "".join(f"{i}\n" for i in range(1, 1001)).encode() + b"no newline"
    assert len(expected) < 4000
    assert (job["status"], job["log_truncated"]) == ("succeeded", False)
    assert await api.log(job["id"]) == expected


async def test_an_open_job_on_a_worker_that_does_not_offer_open_fails_saying_so(
    api: Api,
    store,
    git_server: GitServer,
    start_worker: WorkerFactory,  # type: ignore[no-untyped-def]
) -> None:
    """A job allowed `open` by the API (a server that offers it) meets a worker without
    REPORUN_NETWORK_OPEN: it fails with the reason, neither run without its network nor
    handed from worker to worker."""
    from reporun.jobs import JobSpec, Limits
    from reporun.worker.execute import NOT_OPEN

    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho never\n"})
    limits = Limits(
        timeout=30, memory=256 * MiB, processes=32, log=MiB, disk=64 * MiB, network="open"
    )
    spec = JobSpec(repo=repo, limits=limits, network_open=True)
    created = await store.create_job(spec, "root")
    start_worker()
    job = await api.wait(str(created.id))
    assert (job["status"], job["reason"], job["attempts"]) == ("failed", NOT_OPEN, 1), job
    assert b"never" not in await api.log(job["id"])
