"""A job's live events (`GET /v1/jobs/{id}/events`), as Server-Sent Events.

A stream sends the job as it is (`status`), then its log from the offset asked for (`log`),
then what changes: new chunks, a new status, `reset` when a new run starts the log over, and
`end` once the job has ended and all of its log is sent. Each event's id is `EPOCH-OFFSET`: the
job's log (each start over is a new epoch, Job.log_epoch) and the byte offset reached in it, so
a client that reconnects with `Last-Event-ID` resumes with no byte lost or doubled, or with a
`reset` and the new log whole. A comment every 15 s keeps proxies from closing a quiet stream.

No stream holds a database connection: one hub per API process reads, every quarter second,
the rows of every followed job, the new chunks of their logs (and the last chunk of a job
newly followed), a few queries whatever the number of followers, and hands each follower what
is new. A stream reads the store itself only at its start, after a status (the chunks written
before it), and when it fell behind or missed a chunk.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from reporun.jobs import Job
from reporun.store import Store
from reporun.store.logs import LogChunk

logger = logging.getLogger("reporun.api")

INTERVAL = 0.25
KEEPALIVE = 15.0
QUEUE_MAX = 256  # items a follower may have waiting before it reads for itself
TICK_TIMEOUT = 10.0
PAGE = 32  # chunks a stream reads of the store at once
RETRY_MS = 2000


@dataclass(eq=False)
class Follower:
    """One stream's view of the hub: what it has been handed."""

    queue: asyncio.Queue[LogChunk | Job] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    behind: bool = False  # the queue overflowed: read the log from the store

    def hand(self, item: LogChunk | Job) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.behind = True


@dataclass
class _Followed:
    followers: set[Follower] = field(default_factory=set)
    after: int | None = None  # the last chunk's seq the hub has handed on (None: not read yet)
    epoch: int = 0  # the job's log those chunks are of
    seen: tuple[object, ...] | None = None  # what of the job the followers last saw


class LogHub:
    def __init__(self, store: Store, interval: float = INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._jobs: dict[uuid.UUID, _Followed] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @contextlib.contextmanager
    def follow(self, job_id: uuid.UUID) -> Iterator[Follower]:
        follower = Follower()
        self._jobs.setdefault(job_id, _Followed()).followers.add(follower)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        try:
            yield follower
        finally:
            followed = self._jobs.get(job_id)
            if followed is not None:
                followed.followers.discard(follower)
                if not followed.followers:
                    del self._jobs[job_id]

    @property
    def followed(self) -> int:
        return sum(len(f.followers) for f in self._jobs.values())

    async def close(self) -> None:
        """Stop, letting a read under way end (cut off, it could leave a connection open)."""
        self._closing = True
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), TICK_TIMEOUT)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        failing = False
        while self._jobs and not self._closing:
            try:
                async with asyncio.timeout(TICK_TIMEOUT):
                    await self._tick()
                failing = False
            except Exception:  # the database away a moment: the followers wait, then go on
                if not failing:  # once, not four times a second
                    logger.warning("could not read the followed logs", exc_info=True)
                failing = True
            if self._jobs and not self._closing:
                await asyncio.sleep(self.interval)

    async def _tick(self) -> None:
        # The jobs first, then their logs: a job's last chunk is written before it ends, so a
        # follower that sees the end has been handed every chunk before it.
        jobs = await self.store.get_jobs(list(self._jobs))
        for job in jobs:
            followed = self._jobs.get(job.id)
            if followed is None:
                continue
            seen = (job.status, job.attempts, job.log_epoch, job.log_truncated, job.exit_code)
            if seen != followed.seen:
                if job.log_epoch != followed.epoch:  # the log was started over
                    followed.epoch, followed.after = job.log_epoch, -1
                followed.seen = seen
                for follower in followed.followers:
                    follower.hand(job)
        fresh = [job_id for job_id, f in self._jobs.items() if f.after is None]
        if fresh:
            for job_id, seq in (await self.store.logs.last_seqs(fresh)).items():
                if job_id in self._jobs:
                    self._jobs[job_id].after = seq
        after = {
            job_id: (f.epoch, f.after) for job_id, f in self._jobs.items() if f.after is not None
        }
        for job_id, chunks in (await self.store.logs.read_after(after)).items():
            followed = self._jobs.get(job_id)
            if followed is None or followed.epoch != chunks[-1].epoch:
                continue
            followed.after = chunks[-1].seq
            for chunk in chunks:
                for follower in followed.followers:
                    follower.hand(chunk)


def _event(kind: str, data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()


def parse_event_id(value: str) -> tuple[int, int]:
    """A `Last-Event-ID`: the job's log epoch and the offset reached in it (a bare offset:
    epoch 0)."""
    epoch, _, offset = value.rpartition("-")
    return int(epoch or 0), int(offset)


class _LogText:
    """A job's log `epoch` as the text of `log` events, from `offset` on: UTF-8 decoded across
    chunk boundaries; a byte that is not UTF-8 becomes a lone surrogate (U+DC80 to U+DCFF: a
    client in Python gets the bytes back with errors="surrogateescape", a browser shows
    U+FFFD)."""

    def __init__(self, epoch: int, offset: int) -> None:
        self.epoch = epoch
        self.offset = offset  # bytes of the log taken in
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

    @property
    def event_id(self) -> str:
        """Where the events sent so far stand (bytes held back not counted): epoch-offset."""
        return f"{self.epoch}-{self.offset - len(self.decoder.getstate()[0])}"

    def take(self, chunk: LogChunk) -> bytes | None:
        """The event for what of `chunk` is new; None if nothing is. A chunk of another epoch,
        or that begins past what was taken in (a gap: read the store), is left."""
        if chunk.epoch != self.epoch or chunk.end <= self.offset or chunk.offset > self.offset:
            return None
        data = chunk.data[self.offset - chunk.offset :]
        self.offset = chunk.end
        text = self.decoder.decode(data)
        return _event("log", json.dumps(text), self.event_id) if text else None

    def flush(self) -> bytes | None:
        """The event for bytes held back at the log's end (a cut UTF-8 sequence)."""
        text = self.decoder.decode(b"", final=True)
        return _event("log", json.dumps(text), self.event_id) if text else None

    def gap(self, chunk: LogChunk) -> bool:
        return chunk.epoch == self.epoch and chunk.offset > self.offset

    def restart(self, epoch: int) -> None:
        self.epoch, self.offset = epoch, 0
        self.decoder.reset()


async def stream(
    store: Store, hub: LogHub, job: Job, start: tuple[int, int], shown: Callable[[Job], str]
) -> AsyncIterator[bytes]:
    """The events of `job` from `start` (its log's epoch, and the offset in it) on; `shown`:
    a job as its JSON."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    epoch, offset = start
    text = _LogText(epoch, offset)
    with hub.follow(job.id) as follower:
        # Read again now that the hub hands this stream what changes: nothing is missed.
        job = await store.get_job(job.id)
        pending: list[LogChunk | Job] = [job]
        caught_up, ended, first = True, False, True
        while True:
            if not caught_up:  # what the store has from here on
                caught_up = True
                while True:  # a page at a time: a long log is never held whole
                    page = await store.logs.read_from(job.id, text.offset, text.epoch, limit=PAGE)
                    for chunk in page:
                        if (event := text.take(chunk)) is not None:
                            yield event
                    if len(page) < PAGE:
                        break
            if ended:
                break
            if follower.behind:  # what the hub handed is dropped: read the job and its log
                follower.behind = False
                while not follower.queue.empty():
                    follower.queue.get_nowait()
                pending = [await store.get_job(job.id)]
            if pending:
                item = pending.pop(0)
            else:
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        item = await follower.queue.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
            if isinstance(item, Job):
                if item.log_epoch != text.epoch:  # the log was started over
                    if not first or item.log_epoch < text.epoch or text.offset:
                        yield _event("reset", json.dumps({"attempts": item.attempts}))
                    text.restart(item.log_epoch)
                if first or item != job:
                    yield _event("status", shown(item), text.event_id)
                job, first = item, False
                # Its chunks written before this status are in the store: read them.
                caught_up, ended = False, item.status.terminal
            elif text.gap(item):
                caught_up = False
            elif (event := text.take(item)) is not None:
                yield event
    if (event := text.flush()) is not None:
        yield event
    yield _event("end", shown(job), text.event_id)
