"""A job's live events (`GET /v1/jobs/{id}/events`), as Server-Sent Events.

A stream sends the job as it is (`status`), then its log from the offset asked for (`log`, each
event's id the byte offset the log has reached, so a client that reconnects with
`Last-Event-ID` resumes with no byte lost or doubled), then what changes: new chunks, a new
status, `reset` when a new attempt starts the log over, and `end` once the job has ended and
all of its log is sent. A comment every 15 s keeps proxies from closing a quiet stream.

No stream holds a database connection: one hub per API process reads, every quarter second,
the rows of every followed job and the new chunks of their logs, in two queries whatever the
number of followers, and hands each follower what is new. A follower that falls behind (or
misses a chunk) reads what it lacks itself, once.
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
    seen: tuple[object, ...] | None = None  # what of the job the followers last saw


class LogHub:
    def __init__(self, store: Store, interval: float = INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._jobs: dict[uuid.UUID, _Followed] = {}
        self._task: asyncio.Task[None] | None = None

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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while self._jobs:
            try:
                await self._tick()
            except Exception:  # the database away a moment: the followers wait, then go on
                logger.warning("could not read the followed logs", exc_info=True)
            await asyncio.sleep(self.interval)

    async def _tick(self) -> None:
        # The jobs first, then their logs: a job's last chunk is written before it ends, so a
        # follower that sees the end has been handed every chunk before it.
        jobs = await self.store.get_jobs(list(self._jobs))
        for job in jobs:
            followed = self._jobs.get(job.id)
            if followed is None:
                continue
            seen = (job.status, job.attempts, job.log_truncated, job.exit_code)
            if seen != followed.seen:
                if followed.seen is not None and job.attempts != followed.seen[1]:
                    followed.after = -1  # a new attempt wrote its log from the start
                followed.seen = seen
                for follower in followed.followers:
                    follower.hand(job)
        fresh = [job_id for job_id, f in self._jobs.items() if f.after is None]
        if fresh:
            for job_id, seq in (await self.store.logs.last_seqs(fresh)).items():
                if job_id in self._jobs:
                    self._jobs[job_id].after = seq
        after = {job_id: f.after for job_id, f in self._jobs.items() if f.after is not None}
        for job_id, chunks in (await self.store.logs.read_after(after)).items():
            followed = self._jobs.get(job_id)
            if followed is None:
                continue
            followed.after = chunks[-1].seq
            for chunk in chunks:
                for follower in followed.followers:
                    follower.hand(chunk)


def _event(kind: str, data: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()


class _LogText:
    """A log's bytes as the text of `log` events, from `offset` on: UTF-8 decoded across chunk
    boundaries; a byte that is not UTF-8 becomes a lone surrogate (U+DC80 to U+DCFF: a client
    in Python gets the bytes back with errors="surrogateescape", a browser shows U+FFFD)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset  # bytes of the log taken in
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

    @property
    def sent(self) -> int:
        """The offset the events sent so far stand for (bytes held back not counted)."""
        return self.offset - len(self.decoder.getstate()[0])

    def take(self, chunk: LogChunk) -> bytes | None:
        """The event for what of `chunk` is new; None if nothing is. A chunk that begins past
        what was taken in is left for the caller (a gap: read the store)."""
        if chunk.end <= self.offset or chunk.offset > self.offset:
            return None
        data = chunk.data[self.offset - chunk.offset :]
        self.offset = chunk.end
        text = self.decoder.decode(data)
        if not text:
            return None
        return _event("log", json.dumps(text), self.sent)

    def flush(self) -> bytes | None:
        """The event for bytes held back at the log's end (a cut UTF-8 sequence)."""
        text = self.decoder.decode(b"", final=True)
        return _event("log", json.dumps(text), self.sent) if text else None

    def gap(self, chunk: LogChunk) -> bool:
        return chunk.offset > self.offset

    def restart(self) -> None:
        self.offset = 0
        self.decoder.reset()


async def stream(
    store: Store, hub: LogHub, job: Job, offset: int, shown: Callable[[Job], str]
) -> AsyncIterator[bytes]:
    """The events of `job` from log offset `offset` on (`shown`: a job as its JSON)."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    text = _LogText(offset)
    with hub.follow(job.id) as follower:
        yield _event("status", shown(job), text.sent)
        attempts, ended = job.attempts, job.status.terminal
        pending: list[LogChunk | Job] = []
        caught_up = False
        while True:
            if not caught_up:  # what the store has from here on (at first, and after a gap)
                caught_up = True
                for chunk in await store.logs.read_from(job.id, text.offset):
                    if (event := text.take(chunk)) is not None:
                        yield event
            if ended:
                break
            if follower.behind:  # what the hub handed is dropped: read the job and its log
                follower.behind = False
                while not follower.queue.empty():
                    follower.queue.get_nowait()
                pending.append(await store.get_job(job.id))
                caught_up = False
                continue
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
                if item.attempts != attempts:  # a new attempt: its log starts over
                    attempts = item.attempts
                    text.restart()
                    yield _event("reset", json.dumps({"attempts": attempts}), 0)
                yield _event("status", shown(item), text.sent)
                if item.status.terminal:  # its last chunks were written before it ended
                    job, ended, caught_up = item, True, False
            elif text.gap(item):
                caught_up = False
            elif (event := text.take(item)) is not None:
                yield event
    if (event := text.flush()) is not None:
        yield event
    yield _event("end", shown(job), text.sent)
