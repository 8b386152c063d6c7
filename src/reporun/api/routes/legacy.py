"""The seed's calls, unchanged for its curl users: /add, /all, /status, /healthcheck."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from reporun.api.deps import CurrentUser, ServicesDep
from reporun.api.problems import responses
from reporun.api.routes.jobs import LOCAL_REFUSED, UNUSABLE, owner_filter
from reporun.api.schemas import Documented, LegacyJob
from reporun.jobs import Job, JobStatus
from reporun.urlpolicy import MAX_URL_LENGTH

router = APIRouter(tags=["legacy"])

LEGACY_STATUS = {
    JobStatus.QUEUED: "Queued",
    JobStatus.RUNNING: "Running",
    JobStatus.SUCCEEDED: "Finished",
}
ALL_LIMIT = 1000


def legacy_view(job: Job) -> dict[str, str]:
    return {
        "usuario": job.owner,
        "key": str(job.id),
        "status": LEGACY_STATUS.get(job.status, "Failed"),
    }


@router.get(
    "/add",
    response_class=PlainTextResponse,
    summary="Submit a job (seed)",
    responses=responses(
        400,
        422,
        429,
        why={400: "The URL policy refuses the repository.", 403: LOCAL_REFUSED, 422: UNUSABLE},
    ),
)
async def add(
    url: Annotated[
        str,
        Query(max_length=4096),
        # pydantic refuses past 4096 characters (422), the URL policy past 2048 or empty (400).
        Documented(minLength=1, maxLength=MAX_URL_LENGTH),
    ],
    user: CurrentUser,
    services: ServicesDep,
) -> PlainTextResponse:
    job = await services.submissions.submit(user.name, admin=user.is_admin, repo=url)
    return PlainTextResponse(f"Job added: {job.id}\n")


@router.get(
    "/all",
    response_model=list[LegacyJob],
    summary="The caller's jobs, newest first (seed; admins see all)",
    responses=responses(),
)
async def all_jobs(user: CurrentUser, services: ServicesDep) -> list[dict[str, str]]:
    page = await services.store.list_jobs(owner=owner_filter(user), limit=ALL_LIMIT)
    return [legacy_view(job) for job in page.items]


@router.get(
    "/status",
    response_model=list[LegacyJob],
    summary="One job's status (seed)",
    responses=responses(404, 422),
)
async def status(key: uuid.UUID, user: CurrentUser, services: ServicesDep) -> list[dict[str, str]]:
    job = await services.store.get_job(key, owner=owner_filter(user))
    return [legacy_view(job)]


@router.get("/healthcheck", response_class=PlainTextResponse, summary="Liveness (seed)")
async def healthcheck() -> str:
    return "OK"
