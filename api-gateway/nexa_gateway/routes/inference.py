"""The inference proxy: every running deployment under the gateway's own URL.

``/v1/inference/{deployment_id}/...`` forwards to the deployment's serving process
(OpenAI routes, OIP v2, health), streaming both ways, so clients need one public
address (the gateway's ingress and TLS) rather than a port on a worker. The
serving process still decides who may call it: the caller's ``Authorization``
travels through unchanged and is checked there (the tenant's API key or the
endpoint key); the proxy adds no credentials of its own.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from nexa_gateway.deps import SessionDep, StateDep
from nexa_gateway.errors import ApiError
from nexa_gateway.services import deployments as svc

router = APIRouter(prefix="/v1/inference", tags=["inference"])

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones httpx sets itself.
_NOT_FORWARDED = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip
_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)


def _forwarded(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in _NOT_FORWARDED]


async def _close(response: httpx.Response, client: httpx.AsyncClient) -> None:
    await response.aclose()
    await client.aclose()


@router.api_route(
    "/{deployment_id}/{path:path}",
    methods=["GET", "POST"],
    name="inference_proxy",
    summary="Call a deployment's server (OpenAI, OIP v2) through the gateway",
    responses={404: {"description": "No running deployment of that id."}},
)
async def inference_proxy(
    deployment_id: Annotated[str, Path(min_length=1, max_length=64)],
    path: Annotated[
        str, Path(max_length=2048, description="The serving process's own path, e.g. v1/models.")
    ],
    request: Request,
    session: SessionDep,
    state: StateDep,
) -> StreamingResponse:
    """Forward the request to the deployment's serving process and stream its answer back."""
    root = await run_in_threadpool(svc.serving_root, session, state.store, deployment_id)
    await run_in_threadpool(session.commit)
    # A client per call: nothing is shared across event loops, and the stream owns its connection.
    client = httpx.AsyncClient(timeout=_TIMEOUT)
    upstream = client.build_request(
        request.method,
        f"{root}/{path}",
        params=list(request.query_params.multi_items()),
        headers=_forwarded(list(request.headers.items())),
        content=await request.body(),
    )
    try:
        response = await client.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise ApiError(
            502, "deployment_unreachable", f"deployment {deployment_id} did not answer: {exc}"
        ) from exc
    return StreamingResponse(
        response.aiter_raw(),
        status_code=response.status_code,
        headers=dict(_forwarded(list(response.headers.items()))),
        background=BackgroundTask(_close, response, client),
    )
