"""``POST /v1/<type>`` for every job type, plus the SPEC's bare paths (``POST /audit`` …)."""

# No `from __future__ import annotations` here: the handlers are built in a loop and
# FastAPI must see each one's real body class, not the string name of a loop variable.

from typing import Annotated

from fastapi import APIRouter, Header, Response
from starlette.concurrency import run_in_threadpool

from nexa.contracts import JOB_SPECS, Job, JobOptions, JobType
from nexa.contracts.billing import CostEstimate
from nexa.contracts.pipelines import RESERVED_LABEL_PREFIX
from nexa_gateway.deps import CurrentPrincipal, StateDep
from nexa_gateway.errors import ApiError
from nexa_gateway.services import budgets
from nexa_gateway.services.defaults import with_platform_defaults
from nexa_gateway.services.grants import tenant_access
from nexa_gateway.state import AppState

router = APIRouter(tags=["jobs"])
spec_router = APIRouter(tags=["spec"])

IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="A repeat request with the same key returns the first job instead of creating another.",
    ),
]


def _check_budget(
    state: AppState, tenant_id: str, job_type: JobType, spec: JobOptions, idempotency_key: str | None
) -> CostEstimate:
    # Reads only: on SQLite a read session takes no write lock, so submissions never queue here.
    with state.db.read() as session:
        return budgets.check(
            session,
            state.store,
            state.settings.prices(),
            tenant_id,
            job_type,
            spec,
            idempotency_key,
            state.catalog,
            tenant_access(session, state.settings, state.store, tenant_id, state.catalog),
        )


def _make_handler(job_type: JobType, spec_cls: type[JobOptions]):  # type: ignore[no-untyped-def]
    async def handler(
        body: spec_cls,  # type: ignore[valid-type]
        principal: CurrentPrincipal,
        state: StateDep,
        idempotency_key: IdempotencyHeader = None,
    ) -> Response:
        reserved = [k for k in body.labels if k.startswith(RESERVED_LABEL_PREFIX)]  # type: ignore[attr-defined]
        if reserved:
            # The platform's own (a pipeline step's job names its pipeline there): never a caller's.
            raise ApiError(
                422,
                "reserved_label",
                f"labels starting with {RESERVED_LABEL_PREFIX} are set by Nexa: {', '.join(reserved)}",
                field="labels",
            )
        spec = with_platform_defaults(body, state.settings)
        estimate = await run_in_threadpool(
            _check_budget, state, principal.tenant_id, job_type, spec, idempotency_key
        )
        job, created = await state.backend.submit(
            principal.tenant_id, job_type, spec, idempotency_key, estimate=estimate
        )
        # Serialized once here; the declared response_model documents the same shape.
        return Response(
            job.model_dump_json().encode(),
            status_code=201 if created else 200,
            media_type="application/json",
            headers={"Location": f"/v1/jobs/{job.job_id}"},
        )

    handler.__doc__ = f"Submit a {job_type.value} job ({spec_cls.__name__})."
    return handler


for _type, _cls in JOB_SPECS.items():
    router.add_api_route(
        f"/v1/{_type.value}",
        _make_handler(_type, _cls),
        methods=["POST"],
        response_model=Job,
        status_code=201,
        name=f"submit_{_type.value}",
        summary=f"Submit a {_type.value} job",
        responses={
            200: {"model": Job, "description": "An idempotent repeat: the job the first request created."}
        },
    )
    spec_router.add_api_route(
        f"/{_type.value}",
        _make_handler(_type, _cls),
        methods=["POST"],
        response_model=Job,
        status_code=201,
        name=f"spec_submit_{_type.value}",
        summary=f"Submit a {_type.value} job (SPEC path)",
        responses={
            200: {"model": Job, "description": "An idempotent repeat: the job the first request created."}
        },
    )
