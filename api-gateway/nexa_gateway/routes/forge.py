"""The Forge overview's HTTP paths (``/api/...``), served by the same handlers as their ``/v1`` forms.

Forge clients and scripts written against ``/api/auth/api-keys``,
``/api/jobs/{job_type}`` and ``/api/workers/*`` work unchanged: each path here
is the ``/v1`` route's own handler under another name, so bodies, answers,
errors and auth are identical by construction. Nexa's answers to bad
credentials stay 401 (Forge wrote 403); ``docs/api.md`` lists the deviations.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from nexa.contracts import JOB_SPECS, ApiKeyCreated, ApiKeyInfo, ClaimedJob, Job, JobList, WorkerRegistered
from nexa_gateway.routes import jobs, keys, submit, workers

router = APIRouter(prefix="/api", tags=["forge"])

router.add_api_route(
    "/auth/api-keys",
    keys.create_key,
    methods=["POST"],
    response_model=ApiKeyCreated,
    status_code=201,
    name="forge_create_key",
    summary="Create an API key (Forge path of POST /v1/keys)",
)
router.add_api_route(
    "/auth/api-keys",
    keys.list_keys,
    methods=["GET"],
    response_model=list[ApiKeyInfo],
    name="forge_list_keys",
    summary="List the tenant's API keys (Forge path of GET /v1/keys)",
)
router.add_api_route(
    "/auth/api-keys/{key_id}",
    keys.revoke_key,
    methods=["DELETE"],
    response_model=ApiKeyInfo,
    name="forge_revoke_key",
    summary="Revoke an API key (Forge path of DELETE /v1/keys/{key_id})",
)

for _type, _cls in JOB_SPECS.items():
    router.add_api_route(
        f"/jobs/{_type.value}",
        submit.make_handler(_type, _cls),
        methods=["POST"],
        response_model=Job,
        status_code=201,
        name=f"forge_submit_{_type.value}",
        summary=f"Submit a {_type.value} job (Forge path of POST /v1/{_type.value})",
        responses={
            200: {"model": Job, "description": "An idempotent repeat: the job the first request created."}
        },
    )

router.add_api_route(
    "/jobs/",
    jobs.list_jobs,
    methods=["GET"],
    response_model=JobList,
    name="forge_list_jobs",
    summary="List jobs (Forge path of GET /v1/jobs)",
)
router.add_api_route(
    "/jobs/{job_id}",
    jobs.get_job,
    methods=["GET"],
    response_model=Job,
    name="forge_get_job",
    summary="A job's status (Forge path of GET /v1/jobs/{job_id})",
)

router.add_api_route(
    "/workers/register",
    workers.register,
    methods=["POST"],
    response_model=WorkerRegistered,
    status_code=201,
    name="forge_worker_register",
    summary="Register a worker (Forge path of POST /v1/workers/register)",
)
router.add_api_route(
    "/workers/heartbeat",
    workers.worker_heartbeat,
    methods=["POST"],
    status_code=204,
    response_class=Response,
    name="forge_worker_heartbeat",
    summary="Worker heartbeat (Forge path of POST /v1/workers/heartbeat)",
)
router.add_api_route(
    "/workers/next_job",
    workers.claim,
    methods=["POST"],
    response_model=ClaimedJob,
    name="forge_worker_next_job",
    summary="Claim the next job (Forge path of POST /v1/workers/claim)",
    responses={204: {"description": "No job fits this worker now."}},
)
