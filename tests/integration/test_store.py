"""The schema and the store's repository functions on a real database file."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from reporun.config import Settings
from reporun.errors import InvalidInput, NotFound
from reporun.jobs import JobSpec, JobStatus, Limits
from reporun.store import Store
from reporun.store.migrate import SCHEMA_HEAD, is_current, migration_heads, upgrade
from reporun.store.tables import jobs, metadata
from tests.harness.postgres import Postgres

LIMITS = Limits(timeout=60, memory=1 << 30, processes=64, log=1 << 20, disk=1 << 30)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, settings: Settings) -> Iterator[str]:
    if request.param == "sqlite":
        yield settings.db_url
        return
    postgres = request.getfixturevalue("postgres")
    name = postgres.create_database(migrated=False)
    yield postgres.url(name)
    postgres.drop_database(name)


def test_the_schema_head_the_code_checks_is_the_newest_migration() -> None:
    assert migration_heads() == {SCHEMA_HEAD}


async def test_upgrading_from_empty_gives_the_schema_the_code_expects(empty_db_url: str) -> None:
    store = Store.open(empty_db_url)
    try:
        assert not await is_current(store.engine)
        await upgrade(store.engine)
        assert await is_current(store.engine)
        await upgrade(store.engine)  # idempotent

        def diff(connection: Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with store.engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await store.close()


async def test_migrations_started_at_once_run_one_after_the_other(postgres: Postgres) -> None:
    """Three upgrades at once on an empty PostgreSQL database (an init container in each API
    replica): the advisory lock lets one migrate while the others wait, then find it current."""
    name = postgres.create_database(migrated=False)
    stores = [Store.open(postgres.url(name)) for _ in range(3)]
    try:
        await asyncio.gather(*(upgrade(store.engine) for store in stores))
        assert all([await is_current(store.engine) for store in stores])
    finally:
        for store in stores:
            await store.close()
        postgres.drop_database(name)


async def queued_before(store: Store, owner: str, repo: str) -> uuid.UUID:
    """A queued job as a schema older than this one stores it: only the columns every
    version has."""
    job_id = uuid.uuid4()
    names = ("id", "owner", "repo", "env", "limits", "status", "fair_tag", "created_at")
    table = sa.table("jobs", *(sa.column(name, jobs.c[name].type) for name in names))
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.insert(table).values(
                id=job_id,
                owner=owner,
                repo=repo,
                env={},
                limits=LIMITS.model_dump(),
                status="queued",
                fair_tag=0,
                created_at=datetime.now(UTC),
            )
        )
    return job_id


async def test_a_job_queued_before_local_sources_is_not_allowed_them(empty_db_url: str) -> None:
    """Upgraded from 0007 with a job in the queue: the worker checks it with no local source."""
    store = Store.open(empty_db_url)
    try:
        await upgrade(store.engine, "0007")
        job_id = await queued_before(store, "root", "/home/root/project")
        await upgrade(store.engine)
        assert (await store.get_job(job_id)).local_sources is False
        spec = JobSpec(repo="/home/root/project", limits=LIMITS, local_sources=True)
        assert (await store.create_job(spec, "root")).local_sources is True
    finally:
        await store.close()


async def test_jobs_round_trip_with_aware_utc_times(any_store: Store) -> None:
    job = await any_store.create_job(
        JobSpec(repo="https://example.org/x.git", ref="v1", env={"A": "b"}, limits=LIMITS), "alice"
    )
    again = await any_store.get_job(job.id)
    assert again == job
    assert (
        again.created_at.utcoffset() is not None
        and again.created_at.utcoffset().total_seconds() == 0
    )
    assert again.status is JobStatus.QUEUED and again.env == {"A": "b"} and again.limits == LIMITS
    with pytest.raises(NotFound):
        await any_store.get_job(job.id, owner="bob")
    with pytest.raises(NotFound):
        await any_store.get_job(uuid.uuid4())


@pytest.mark.parametrize("cursor", ["!!", "aGVsbG8", "MjAyNi0wMS0wMXxub3QtYS11dWlk", "fA"])
async def test_foreign_cursors_are_refused(any_store: Store, cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await any_store.list_jobs(owner=None, cursor=cursor)
    assert caught.value.field == "cursor"


async def test_log_chunks_know_where_they_begin(any_store: Store) -> None:
    """Each chunk's byte offset, what a stream resumes from; and every followed log's new
    chunks in one read."""
    spec = JobSpec(repo="https://example.org/x.git", limits=LIMITS)
    job, other = [await any_store.create_job(spec, "a") for _ in range(2)]
    for seq, data in enumerate((b"one ", b"", b"two ", b"three")):
        await any_store.logs.append(job.id, seq, data)
    await any_store.logs.append(other.id, 0, b"elsewhere")
    chunks = await any_store.logs.read_from(job.id, 0, 0)
    assert [(c.seq, c.offset, c.data) for c in chunks] == [
        (0, 0, b"one "),
        (2, 4, b"two "),
        (3, 8, b"three"),
    ]
    # From inside a chunk: that chunk on; from its end: the next; past the end: nothing.
    assert [c.seq for c in await any_store.logs.read_from(job.id, 5, 0)] == [2, 3]
    assert [c.seq for c in await any_store.logs.read_from(job.id, 8, 0)] == [3]
    assert await any_store.logs.read_from(job.id, 13, 0) == []
    after = await any_store.logs.read_after({job.id: (0, 2), other.id: (0, -1)})
    assert [(c.seq, c.data) for c in after[job.id]] == [(3, b"three")]
    assert [c.end for c in after[other.id]] == [9]
    assert await any_store.logs.read_after({}) == {}


async def test_logs_stored_before_offsets_are_given_theirs(empty_db_url: str) -> None:
    store = Store.open(empty_db_url)
    try:
        await upgrade(store.engine, "0013")
        job_id = await queued_before(store, "a", "https://example.org/x.git")
        old = sa.table(
            "job_logs",
            sa.column("job_id", sa.Uuid),
            sa.column("seq", sa.Integer),
            sa.column("data", sa.LargeBinary),
        )
        async with store.engine.begin() as conn:
            for seq, data in enumerate((b"ab", b"cde", b"\xff\x00f")):
                await conn.execute(sa.insert(old).values(job_id=job_id, seq=seq, data=data))
        await upgrade(store.engine)
        assert (await store.get_job(job_id)).log_epoch == 0
        chunks = await store.logs.read_from(job_id, 0, 0)
        assert [(c.offset, c.end) for c in chunks] == [(0, 2), (2, 5), (5, 8)]
    finally:
        await store.close()


async def test_logs_append_in_order_and_reset(any_store: Store) -> None:
    job = await any_store.create_job(JobSpec(repo="https://example.org/x.git", limits=LIMITS), "a")
    await any_store.logs.append(job.id, 0, b"one ")
    await any_store.logs.append(job.id, 1, b"two", truncated=True)
    assert b"".join(d for _, d in await any_store.logs.read(job.id)) == b"one two"
    assert [s for s, _ in await any_store.logs.read(job.id, after=0)] == [1]
    shown = await any_store.get_job(job.id)
    assert (shown.log_bytes, shown.log_truncated) == (7, True)
    # A run that does not hold the job (another worker's, an earlier attempt) resets nothing.
    assert not await any_store.logs.reset(job.id, worker="w-lost", attempt=1)
    assert (await any_store.get_job(job.id)).log_bytes == 7
    assert await any_store.logs.reset(job.id)
    assert await any_store.logs.read(job.id) == []
    assert (await any_store.get_job(job.id)).log_bytes == 0


async def test_workers_heartbeat_and_prune(any_store: Store) -> None:
    await any_store.worker_heartbeat("w1", host="h", pid=1, state="idle", current_job=None)
    await any_store.worker_heartbeat("w1", host="h", pid=1, state="busy", current_job=None)
    workers = await any_store.list_workers(alive_within=60)
    assert [(w.id, w.state) for w in workers] == [("w1", "busy")]
    assert await any_store.prune_workers(older_than=3600) == 0
    assert await any_store.prune_workers(older_than=-1) == 1


async def test_concurrent_submissions_of_one_owner_get_distinct_fair_tags(any_store: Store) -> None:
    import asyncio

    spec = JobSpec(repo="https://example.org/x.git", limits=LIMITS)
    await asyncio.gather(*(any_store.create_job(spec, "burst") for _ in range(30)))
    async with any_store.engine.connect() as conn:
        tags = (await conn.execute(sa.select(jobs.c.fair_tag))).scalars().all()
    assert sorted(tags) == list(range(30))


async def test_a_worker_that_lost_the_job_writes_no_log(any_store: Store) -> None:
    from reporun.queue import QueueConfig
    from reporun.queue.sql import SqlQueue

    queue = SqlQueue(any_store, QueueConfig(lease_seconds=30, max_attempts=3, poll_interval=0.05))
    job = await any_store.create_job(JobSpec(repo="https://example.org/x.git", limits=LIMITS), "a")
    claimed = await queue.claim("w1")
    assert claimed is not None
    assert await any_store.logs.append(job.id, 0, b"mine", worker="w1", attempt=1)
    await queue.release(claimed, "w1", "test")
    assert not await any_store.logs.append(job.id, 1, b"stale", worker="w1", attempt=1)
    assert [d for _, d in await any_store.logs.read(job.id)] == [b"mine"]


async def test_pages_walk_every_job_once_even_with_equal_times(any_store: Store) -> None:
    from datetime import UTC, datetime

    same = datetime(2026, 1, 1, tzinfo=UTC)
    spec = JobSpec(repo="https://example.org/x.git", limits=LIMITS)
    made = [await any_store.create_job(spec, "a", now=same) for _ in range(5)]
    made += [await any_store.create_job(spec, "a") for _ in range(4)]
    await any_store.create_job(spec, "b")
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await any_store.list_jobs(owner="a", limit=2, cursor=cursor)
        seen += [job.id for job in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(job.id for job in made) and len(seen) == len(set(seen))


async def test_the_pending_quota_holds_under_concurrent_submissions(any_store: Store) -> None:
    import asyncio

    from reporun.errors import QuotaExceeded
    from reporun.store import Quota

    spec = JobSpec(repo="https://example.org/x.git", limits=LIMITS)
    results = await asyncio.gather(
        *(any_store.create_job(spec, "greedy", quota=Quota(pending=3)) for _ in range(12)),
        return_exceptions=True,
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(accepted) == 3 and len(refused) == 9
    assert refused[0].retry_after > 0
    page = await any_store.list_jobs(owner="greedy", limit=50)
    assert len(page.items) == 3  # nothing over the quota was queued
    await any_store.create_job(spec, "someone-else", quota=Quota(pending=3))


async def test_the_rate_limit_counts_a_sliding_minute(any_store: Store) -> None:
    from reporun.errors import QuotaExceeded
    from reporun.store import Quota

    spec = JobSpec(repo="https://example.org/x.git", limits=LIMITS)
    for _ in range(4):
        await any_store.create_job(spec, "fast", quota=Quota(per_minute=4))
    with pytest.raises(QuotaExceeded) as caught:
        await any_store.create_job(spec, "fast", quota=Quota(per_minute=4))
    assert 50 <= caught.value.retry_after <= 60
    assert "a minute" in caught.value.message
