"""The dashboard's pages: jobs, a job (live log, cancel, re-run), submit, and (admins) workers
and scaling. A user sees and acts on their own jobs only, an admin on all: the same owner
filter and the same services as the API's routes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from reporun.api.auth import Principal
from reporun.api.deps import Services, ServicesDep
from reporun.api.problems import status_of
from reporun.api.routes.jobs import owner_filter
from reporun.api.schemas import WorkerOut
from reporun.errors import Forbidden, IllegalTransition, InvalidInput, ReporunError
from reporun.jobs import Job, JobStatus
from reporun.store.sessions import WebSession
from reporun.web import charts
from reporun.web.forms import JobForm, read_form
from reporun.web.render import HtmlRoute, page
from reporun.web.session import (
    CSRF_FIELD,
    SignInNeeded,
    check_csrf,
    here,
    principal_of,
    session_of,
)

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

PAGE_SIZE = 50
# A job's page shows at most this much of the end of its log (the rest is a raw download).
LOG_TAIL = 256 * 1024


@dataclass(frozen=True, slots=True)
class Visitor:
    user: Principal
    session: WebSession

    def context(self, **more: Any) -> dict[str, Any]:
        return {"user": self.user, "csrf": self.session.csrf, **more}


async def visitor(request: Request, services: ServicesDep) -> Visitor:
    session = await session_of(request, services.store)
    if session is None:
        raise SignInNeeded(here(request))
    user = principal_of(session)
    request.state.web_user = user  # for an error page's header (and its sign-out form)
    request.state.web_csrf = session.csrf
    if not user.roles & {"user", "admin"}:
        raise Forbidden("this page needs the role user or admin")
    return Visitor(user, session)


Signed = Annotated[Visitor, Depends(visitor)]


async def csrf_form(request: Request, who: Signed) -> dict[str, str]:
    """A state-changing form's fields, once its CSRF token is checked."""
    fields = await read_form(request)
    check_csrf(who.session, fields.get(CSRF_FIELD))
    return fields


Form = Annotated[dict[str, str], Depends(csrf_form)]


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/jobs", status_code=303)


@router.get("/jobs")
async def jobs_page(
    request: Request,
    who: Signed,
    services: ServicesDep,
    status: Annotated[str | None, Query(max_length=32)] = None,
    repo: Annotated[str | None, Query(max_length=4096)] = None,
    owner: Annotated[str | None, Query(max_length=255)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    store = services.store
    state = _status(status)
    repo = repo.strip() if repo and repo.strip() else None
    owner = owner.strip() if owner and owner.strip() else None
    if not who.user.is_admin:
        owner = who.user.name  # a user's own jobs, whatever the link says
    listed = await store.list_jobs(
        owner=owner, status=state, repo=repo, limit=PAGE_SIZE, cursor=cursor or None
    )
    counts = await request.app.state.web.counts.of(store, owner=owner, repo=repo)
    filters = {"status": state.value if state else "", "repo": repo or "", "owner": owner or ""}
    unfinished = any(not j.status.terminal for j in listed.items)
    return page(
        request,
        "jobs.html",
        who.context(
            jobs=listed.items,
            next_cursor=listed.next_cursor,
            first_page=cursor is None,
            counts=counts,
            total=sum(counts.values()),
            filters=filters,
            statuses=list(JobStatus),
            refresh=unfinished or cursor is None,
        ),
    )


def _status(value: str | None) -> JobStatus | None:
    """The status filter; empty (the form's "any") is none."""
    if not value:
        return None
    try:
        return JobStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in JobStatus)
        raise InvalidInput(f"status must be one of {known}", field="status") from None


def _form_page(
    request: Request, who: Visitor, services: Services, form: JobForm, status: int
) -> Response:
    rules = services.submissions.config.rules
    return page(
        request,
        "new.html",
        who.context(
            form=form,
            runtimes=rules.runtimes.names(),
            networks=rules.open_network.modes()
            if rules.open_network.allows(who.user.name, admin=who.user.is_admin)
            else ["none", "registries"],
            rules=rules,
        ),
        status=status,
    )


@router.get("/jobs/new")
async def new_job(request: Request, who: Signed, services: ServicesDep) -> Response:
    form = JobForm.of(dict(request.query_params))
    return _form_page(request, who, services, form, 200)


@router.post("/jobs/new")
async def submit_job(
    request: Request, who: Signed, services: ServicesDep, fields: Form
) -> Response:
    form = JobForm.of(fields)
    body = form.request()
    status = 422
    if body is not None:
        try:
            job = await services.submissions.submit(
                who.user.name, admin=who.user.is_admin, **body.submission()
            )
        except ReporunError as exc:
            form.refuse(getattr(exc, "field", None), exc.message)
            status = status_of(exc)
        else:
            return RedirectResponse(f"/jobs/{job.id}", status_code=303)
    return _form_page(request, who, services, form, status)


async def _job(services: Services, who: Visitor, job_id: uuid.UUID) -> Job:
    job: Job = await services.store.get_job(job_id, owner=owner_filter(who.user))
    return job


@router.get("/jobs/{job_id}")
async def job_page(
    request: Request, job_id: uuid.UUID, who: Signed, services: ServicesDep
) -> Response:
    store = services.store
    job = await _job(services, who, job_id)
    original = None
    if job.rerun_of is not None:
        try:
            original = await store.get_job(job.rerun_of, owner=owner_filter(who.user))
        except ReporunError:
            original = None
    reruns = [
        r for r in await store.reruns_of(job.id) if who.user.is_admin or r.owner == who.user.name
    ]
    tail = min(job.log_bytes, LOG_TAIL) if job.log_bytes > LOG_TAIL else None
    return page(
        request,
        "job.html",
        who.context(
            job=job,
            original=original,
            reruns=reruns,
            events=f"/v1/jobs/{job.id}/events" + (f"?tail={LOG_TAIL}" if tail else ""),
            tail=tail,
        ),
    )


@router.get("/jobs/{job_id}/cancel")
async def confirm_cancel(
    request: Request, job_id: uuid.UUID, who: Signed, services: ServicesDep
) -> Response:
    job = await _job(services, who, job_id)
    if job.status.terminal:
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
    return page(request, "cancel.html", who.context(job=job))


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: uuid.UUID, who: Signed, services: ServicesDep, _: Form) -> Response:
    job = await services.queue.cancel(job_id, owner=owner_filter(who.user))
    if job.status.terminal and job.status is not JobStatus.CANCELLED:
        raise IllegalTransition(f"the job already ended ({job.status.value})")
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/jobs/{job_id}/rerun")
async def rerun_job(job_id: uuid.UUID, who: Signed, services: ServicesDep, _: Form) -> Response:
    """A new job on the same commit (the ref asked for, when the job never resolved one), with
    the same command, limits, environment, runtime, network and setup. It is its owner's, with
    its owner's rights: an admin re-running a user's job gives it no admin's (an open network
    from its reporun.toml, local sources)."""
    job = await _job(services, who, job_id)
    limits = job.limits
    own = job.owner == who.user.name
    new = await services.submissions.submit(
        job.owner,
        admin=who.user.is_admin and own,
        repo=job.repo,
        ref=job.commit or job.ref,
        command=job.command,
        timeout=limits.timeout if limits.timeout_set else None,
        env=job.env,
        limits={
            "memory": limits.memory,
            "processes": limits.processes,
            "log": limits.log,
            "disk": limits.disk,
        },
        runtime=job.runtime_requested,
        network=limits.network if limits.network_set else None,
        setup=job.setup,
        rerun_of=job.id,
    )
    return RedirectResponse(f"/jobs/{new.id}", status_code=303)


@router.get("/workers")
async def workers_page(request: Request, who: Signed, services: ServicesDep) -> Response:
    if not who.user.is_admin:
        raise Forbidden("the workers page is for admins")
    store = services.store
    alive = services.config.worker_alive
    busy = await store.scaling.busy_workers()
    workers = [
        WorkerOut.of(row, running=busy.get(row.id))
        for row in await store.list_workers(alive_within=alive)
    ]
    now = await store.now()
    waits, finished = await store.figures.recent(now - timedelta(hours=1))
    decisions = await store.scaling.decisions(limit=20)
    return page(
        request,
        "workers.html",
        who.context(
            workers=workers,
            wait_chart=charts.svg(
                "Queue wait p50 and p95, each minute of the last hour",
                "seconds",
                charts.wait_series(waits, now),
            ),
            finished_chart=charts.svg(
                "Jobs finished each minute of the last hour",
                "jobs a minute",
                [charts.finished_series(finished, now)],
            ),
            started=len(waits),
            finished=len(finished),
            decisions=decisions,
        ),
    )
