"""The Forge overview's HTTP paths (``/api/...``), served by the same handlers as their ``/v1`` forms.

Forge clients and scripts written against ``/api/auth/api-keys``,
``/api/jobs/{job_type}`` and ``/api/workers/*`` work unchanged: each path here
is the ``/v1`` route's own handler under another name, so bodies, answers,
errors and auth are identical by construction. Nexa's answers to bad
credentials stay 401 (Forge wrote 403); ``docs/api.md`` lists the deviations.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from nexa.contracts import JOB_SPECS
from nexa_gateway.routes import billing, jobs, keys, registry, submit, workers

router = APIRouter(prefix="/api", tags=["forge"])

# (Forge path under /api, method, the /v1 route it is).
ALIASES: list[tuple[str, str, str]] = [
    ("/auth/api-keys", "POST", "/v1/keys"),
    ("/auth/api-keys", "GET", "/v1/keys"),
    ("/auth/api-keys/{key_id}", "DELETE", "/v1/keys/{key_id}"),
    *((f"/jobs/{t.value}", "POST", f"/v1/{t.value}") for t in JOB_SPECS),
    ("/jobs/", "GET", "/v1/jobs"),
    ("/jobs/{job_id}", "GET", "/v1/jobs/{job_id}"),
    ("/workers/register", "POST", "/v1/workers/register"),
    ("/workers/heartbeat", "POST", "/v1/workers/heartbeat"),
    ("/workers/next_job", "POST", "/v1/workers/claim"),
    ("/billing/summary", "GET", "/v1/billing/summary"),
    ("/workers/", "GET", "/v1/workers"),
]


def _v1_route(path: str, method: str) -> APIRoute:
    for source in (keys.router, submit.router, jobs.router, workers.router, billing.router, registry.router):
        for route in source.routes:
            if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
                return route
    raise LookupError(f"no /v1 route {method} {path} to alias")


for _path, _method, _v1 in ALIASES:
    _route = _v1_route(_v1, _method)
    router.add_api_route(
        _path,
        _route.endpoint,
        methods=[_method],
        response_model=_route.response_model,
        status_code=_route.status_code,
        response_class=_route.response_class,
        responses=_route.responses,
        name=f"forge_{_route.name}",
        summary=f"{_route.summary or _route.name} (Forge path of {_method} {_v1})",
        description=_route.description,
    )
