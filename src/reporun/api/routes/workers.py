"""Admin views of the pool: the workers alive, and what the observer decided."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from reporun.api.auth import Principal
from reporun.api.deps import ServicesDep, admin_user
from reporun.api.problems import responses
from reporun.api.schemas import DecisionOut, ScalingOut, WorkerOut, WorkerPage

router = APIRouter(prefix="/v1", tags=["workers"])

AdminUser = Annotated[Principal, Depends(admin_user)]


@router.get(
    "/workers",
    response_model=WorkerPage,
    summary="Workers with a recent heartbeat",
    responses=responses(),
)
async def workers(_: AdminUser, services: ServicesDep) -> WorkerPage:
    store = services.store
    alive = services.config.worker_alive
    busy = await store.scaling.busy_workers()
    rows = await store.list_workers(alive_within=alive)
    return WorkerPage(items=[WorkerOut.of(row, running=busy.get(row.id)) for row in rows])


@router.get(
    "/scaling",
    response_model=ScalingOut,
    summary="The observer's recent decisions",
    responses=responses(422),
)
async def scaling(
    _: AdminUser, services: ServicesDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> ScalingOut:
    store = services.store
    decisions = await store.scaling.decisions(limit=limit)
    actual = len(await store.list_workers(alive_within=services.config.worker_alive))
    return ScalingOut(
        actual=actual,
        desired=decisions[0].desired if decisions else None,
        decisions=[DecisionOut.model_validate(d, from_attributes=True) for d in decisions],
    )
