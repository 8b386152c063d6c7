"""The state machine and the submission checks, table-driven."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import UTC, datetime

import pytest

from reporun.config import Settings
from reporun.errors import IllegalTransition, InvalidInput
from reporun.jobs import (
    TERMINAL,
    GiB,
    Job,
    JobStatus,
    Limits,
    MiB,
    build_spec,
    check_env,
    check_ref,
    check_transition,
    resolve_limits,
    sources_of,
)
from reporun.queue.memory import MemoryQueue
from reporun.store import Quota
from reporun.submit import Submissions, SubmitConfig
from reporun.urlpolicy import UrlPolicy
from reporun.wiring import job_rules

S = JobStatus
LEGAL = {
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.CANCELLED),
    (S.RUNNING, S.QUEUED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.TIMED_OUT),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.ERROR),
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)))
def test_every_transition_is_legal_exactly_when_designed(source: S, target: S) -> None:
    if (source, target) in LEGAL:
        check_transition(source, target)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(source, target)


def test_terminal_states_have_no_way_out() -> None:
    assert {s for s in S if s.terminal} == TERMINAL
    assert all(sources_of(t) <= {S.QUEUED, S.RUNNING} for t in S)
    assert sources_of(S.QUEUED) == {S.RUNNING}


@pytest.fixture
def settings() -> Settings:
    return Settings(secret_key="x" * 40)


@pytest.mark.parametrize("ref", ["main", "v1.2.3", "feature/x-y", "a" * 40, "release_2024"])
def test_good_refs(ref: str) -> None:
    assert check_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "-f",
        "--upload-pack=x",
        "a..b",
        "/abs",
        "end/",
        "x.lock",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "@{-1}",
        "x" * 300,
    ],
)
def test_bad_refs(ref: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_ref(ref)
    assert caught.value.field == "ref"


def test_limits_default_lower_and_raise_to_the_maximum(settings: Settings) -> None:
    default = resolve_limits({}, job_rules(settings))
    assert (default.timeout, default.memory, default.processes, default.log, default.disk) == (
        600,
        1 * GiB,
        256,
        1 * MiB,
        1 * GiB,
    )
    assert default.network == "none" and not default.timeout_set and not default.network_set
    # A row stored before the modes: true shared the host's network; nothing does now.
    assert Limits.model_validate({**default.model_dump(), "network": True}).network == "registries"
    assert Limits.model_validate({**default.model_dump(), "network": False}).network == "none"
    chosen = resolve_limits({}, job_rules(settings), network="registries")
    assert (chosen.network, chosen.network_set) == ("registries", True)
    lowered = resolve_limits({"memory": 64 * MiB}, job_rules(settings), timeout=5)
    assert (lowered.memory, lowered.timeout, lowered.timeout_set) == (64 * MiB, 5, True)
    raised = resolve_limits({"processes": settings.processes_max}, job_rules(settings))
    assert raised.processes == settings.processes_max


@pytest.mark.parametrize(
    ("asked", "timeout", "field"),
    [
        ({"memory": 4 * GiB + 1}, None, "limits.memory"),
        ({"memory": 1}, None, "limits.memory"),
        ({"disk": "big"}, None, "limits.disk"),
        ({"processes": True}, None, "limits.processes"),
        ({}, 0, "timeout"),
        ({}, 10**6, "timeout"),
    ],
)
def test_limits_out_of_bounds(
    settings: Settings, asked: dict, timeout: int | None, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve_limits(asked, job_rules(settings), timeout=timeout)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "env",
    [
        {"1X": "a"},
        {"A-B": "a"},
        {"PATH": "/evil"},
        {"LD_PRELOAD": "x.so"},
        {"REPORUN_TOKEN": "x"},
        {"A": "nul\x00byte"},
        {f"V{i}": "x" for i in range(65)},
        {"BIG": "x" * (33 * 1024)},
    ],
)
def test_bad_env(settings: Settings, env: dict[str, str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_env(env, job_rules(settings))
    assert caught.value.field == "env"


def test_build_spec_checks_everything(settings: Settings) -> None:
    spec, url = build_spec(
        repo="https://example.org/a/b.git",
        ref="main",
        command="make test",
        timeout=30,
        env={"A": "1"},
        limits={"disk": 64 * MiB},
        rules=job_rules(settings),
    )
    assert (url.scheme, url.host) == ("https", "example.org")
    assert (spec.ref, spec.command, spec.env, spec.limits.timeout, spec.limits.disk) == (
        "main",
        "make test",
        {"A": "1"},
        30,
        64 * MiB,
    )
    with pytest.raises(InvalidInput, match="command"):
        build_spec(
            repo="https://example.org/a",
            ref=None,
            command=" ",
            timeout=None,
            env=None,
            limits=None,
            rules=job_rules(settings),
        )


def test_a_job_stored_before_the_local_sources_flag_is_not_allowed_them(
    settings: Settings,
) -> None:
    spec, _ = build_spec(
        repo="https://example.org/a",
        ref=None,
        command=None,
        timeout=None,
        env=None,
        limits=None,
        rules=job_rules(settings),
    )
    assert spec.local_sources is False
    old_row = {
        "id": uuid.uuid4(),
        "owner": "a",
        "repo": spec.repo,
        "ref": None,
        "commit": None,
        "command": None,
        "status": "queued",
        "exit_code": None,
        "reason": None,
        "attempts": 0,
        "worker": None,
        "created_at": datetime.now(UTC),
        "started_at": None,
        "finished_at": None,
        "log_bytes": 0,
        "log_truncated": False,
        "limits": spec.limits.model_dump(),
        "env": {},
    }
    assert Job.model_validate(old_row).local_sources is False


SERVE = UrlPolicy.of(["https", "git"], trusted_hosts=["git.example.org"], allow_local=True)
CLUSTER = dataclasses.replace(SERVE, allow_local=False)


@pytest.mark.parametrize(
    ("policy", "admin", "allowed"),
    [(SERVE, True, True), (SERVE, False, False), (CLUSTER, True, False), (CLUSTER, False, False)],
)
async def test_only_an_admins_job_on_a_local_server_may_use_local_sources(
    settings: Settings, policy: UrlPolicy, admin: bool, allowed: bool
) -> None:
    """The flag the worker checks at clone time. (A trusted host: no lookup, no I/O.)"""
    rules = dataclasses.replace(job_rules(settings), url_policy=policy)
    queue = MemoryQueue()
    submissions = Submissions(SubmitConfig(rules, Quota(), Quota()), queue)
    job = await submissions.submit("someone", admin=admin, repo="git://git.example.org/x.git")
    assert job.local_sources is allowed
    assert queue.jobs[job.id].local_sources is allowed


def _job(**fields: object) -> Job:
    base: dict[str, object] = {
        "id": uuid.uuid4(),
        "owner": "a",
        "repo": "https://example.org/x.git",
        "ref": None,
        "commit": None,
        "command": None,
        "status": "succeeded",
        "exit_code": 0,
        "reason": None,
        "attempts": 1,
        "worker": "w",
        "created_at": datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC),
        "started_at": datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC),
        "finished_at": datetime(2026, 1, 1, 12, 0, 4, tzinfo=UTC),
        "log_bytes": 0,
        "log_truncated": False,
        "limits": Limits(timeout=60, memory=1, processes=1, log=1024, disk=1),
    }
    return Job.model_validate({**base, **fields})


def test_phases_add_up_and_name_each_phase_reached() -> None:
    timed = {"fetch": 0.5, "checkout": 0.25, "sandbox_start": 0.25, "run": 1.5}
    phases = _job(phase_seconds=timed).phases
    assert phases == {
        "wait": 1.0,
        "fetch": 0.5,
        "checkout": 0.25,
        "setup": None,
        "sandbox_start": 0.25,
        "run": 1.5,
        "report": 0.5,
    }
    assert sum(v for v in phases.values() if v is not None) == 4.0  # created -> finished
    # Never started (cancelled while queued): no phase at all.
    never = _job(status="cancelled", started_at=None, exit_code=None)
    assert set(never.phases.values()) == {None}
    # Ended with no phase timed (its worker gave it up): the rest of the run is the report's.
    early = _job(status="failed", phase_seconds={})
    assert (early.phases["wait"], early.phases["fetch"], early.phases["report"]) == (1.0, None, 3.0)
