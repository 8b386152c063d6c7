"""/v1/jobs: submit, list, show, logs (optionally followed), live events and cancel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from reporun.api.auth import Principal
from reporun.api.deps import CurrentUser, Reader, ServicesDep
from reporun.api.events import parse_event_id, stream
from reporun.api.problems import responses
from reporun.api.schemas import JobCreate, JobOut, JobPage
from reporun.errors import IllegalTransition
from reporun.jobs import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

FOLLOW_POLL = 0.2
REFUSED = (
    "The URL policy refuses the repository, or a ref, command, env or limit is refused; "
    "`field` names it."
)
UNUSABLE = (
    "The request does not match this document, names a runtime this server does not offer, "
    "or a local repository (`reporun serve`) is no directory, no git repository or has no "
    "commits; `errors` lists every invalid field."
)

LOCAL_REFUSED = (
    "The token lacks the role user or admin, or (`reporun serve`) a user's token names a local "
    "path, a file:// URL or a loopback host, which only admins may submit; `field` is `repo`."
)


def owner_filter(user: Principal) -> str | None:
    """Admins see every job; a user only their own."""
    return None if user.is_admin else user.name


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Submit a job",
    responses=responses(400, 413, 422, 429, why={400: REFUSED, 403: LOCAL_REFUSED, 422: UNUSABLE}),
)
async def submit(body: JobCreate, user: CurrentUser, services: ServicesDep) -> JobOut:
    job = await services.submissions.submit(user.name, admin=user.is_admin, **body.submission())
    return JobOut.of(job)


@router.get(
    "",
    response_model=JobPage,
    summary="List jobs, newest first",
    responses=responses(400, 422, why={400: "The cursor is not one this server gave out."}),
)
async def list_jobs(
    user: CurrentUser,
    services: ServicesDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    page = await services.store.list_jobs(
        owner=owner_filter(user), status=status, limit=limit, cursor=cursor
    )
    return JobPage(items=[JobOut.of(j) for j in page.items], next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobOut, summary="Show a job", responses=responses(404, 422))
async def show(job_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> JobOut:
    return JobOut.of(await services.store.get_job(job_id, owner=owner_filter(user)))


@router.get(
    "/{job_id}/logs",
    response_class=PlainTextResponse,
    summary="A job's log; ?follow=true streams it until the job ends",
    responses=responses(404, 422),
)
async def logs(
    job_id: uuid.UUID, user: Reader, services: ServicesDep, follow: bool = False
) -> StreamingResponse:
    store = services.store
    await store.get_job(job_id, owner=owner_filter(user))

    async def chunks() -> AsyncIterator[bytes]:
        last = -1
        while True:
            ended = (await store.get_job(job_id)).status.terminal
            for seq, data in await store.logs.read(job_id, after=last):
                last = seq
                yield data
            if not follow or ended:
                return
            await asyncio.sleep(FOLLOW_POLL)

    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8")


EVENTS = """Server-Sent Events (`text/event-stream`): `status` (the job, as `GET /v1/jobs/{id}`
shows it; first, then on each change), `log` (a JSON string: the log's next text, bytes that
are not UTF-8 as lone surrogates U+DC80-U+DCFF; the event's id is the byte offset the log has
reached), `reset` (a new attempt starts the log over), and `end` (the job ended and all of its
log was sent; the stream closes). A client that reconnects with `Last-Event-ID` resumes where
it was; `offset` starts at a byte offset, `tail` at that many bytes before the log's end. A
comment every 15 s keeps a quiet stream open through proxies. An id is `EPOCH-OFFSET`: a log
started over (a new run after one that wrote some) is a new epoch, and a stream resumed with an
id of an earlier one gets `reset` and the new log whole. A `Last-Event-ID` of an ended job whose
log was all sent is answered 204, so that a browser does not reconnect."""


# One event of the stream, as a client takes it.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["status", "log", "reset", "end"]},
        "data": {"type": "string", "description": "JSON: the job, a string of log, or attempts"},
        "id": {"type": "string", "description": "the byte offset the log has reached"},
        "retry": {"type": "integer"},
    },
    "required": ["event", "data"],
}


@router.get(
    "/{job_id}/events",
    summary="A job's status and log, live, as Server-Sent Events",
    description=EVENTS,
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}},
        **responses(404, 422),
    },
)
async def events(
    job_id: uuid.UUID,
    user: Reader,
    services: ServicesDep,
    request: Request,
    offset: Annotated[int | None, Query(ge=0, le=1 << 62)] = None,
    tail: Annotated[int | None, Query(ge=0, le=1 << 62)] = None,
    last_event_id: Annotated[str | None, Header(pattern=r"^([0-9]{1,9}-)?[0-9]{1,18}$")] = None,
) -> Response:
    job = await services.store.get_job(job_id, owner=owner_filter(user))
    if last_event_id is not None:
        start = parse_event_id(last_event_id)
        if job.status.terminal and start == (job.log_epoch, job.log_bytes):
            # All of it was sent: 204 tells a browser's EventSource not to come again.
            return Response(status_code=204)
    elif offset is not None:
        start = (job.log_epoch, offset)
    elif tail is not None:
        start = (job.log_epoch, max(0, job.log_bytes - tail))
    else:
        start = (job.log_epoch, 0)
    body = stream(
        services.store,
        request.app.state.log_hub,
        job,
        start,
        lambda shown: JobOut.of(shown).model_dump_json(),
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return EventStream(body, media_type="text/event-stream", headers=headers)


class EventStream(StreamingResponse):
    """A stream whose events are closed when the response ends, however it ends (a client
    gone leaves the generator at a `yield`, where nothing else would close it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            closing = getattr(self.body_iterator, "aclose", None)
            if closing is not None:
                await closing()


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobOut,
    summary="Cancel a job",
    responses=responses(404, 409, 422),
)
async def cancel(job_id: uuid.UUID, user: CurrentUser, services: ServicesDep) -> JobOut:
    job = await services.queue.cancel(job_id, owner=owner_filter(user))
    if job.status.terminal and job.status is not JobStatus.CANCELLED:
        raise IllegalTransition(f"the job already ended ({job.status.value})")
    return JobOut.of(job)


__all__ = ["UNUSABLE", "owner_filter", "router"]
