"""The runtimes this server offers a job."""

from __future__ import annotations

from fastapi import APIRouter

from reporun.api.deps import CurrentUser, ServicesDep
from reporun.api.problems import responses
from reporun.api.schemas import RuntimeList, RuntimeOut

router = APIRouter(prefix="/v1", tags=["runtimes"])


@router.get(
    "/runtimes",
    response_model=RuntimeList,
    summary="The runtimes a job may name (`host` at least)",
    responses=responses(),
)
async def runtimes(_: CurrentUser, services: ServicesDep) -> RuntimeList:
    catalog = services.submissions.config.rules.runtimes
    return RuntimeList(
        items=[
            RuntimeOut(name=name, image=catalog.get(name).image, default=name == catalog.default)
            for name in catalog.names()
        ]
    )
