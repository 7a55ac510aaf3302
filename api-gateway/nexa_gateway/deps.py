"""Typed FastAPI dependencies: the app state, a database session, and who is calling."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from nexa.attempttokens import AttemptClaim, InvalidAttemptToken, looks_like_token, verify
from nexa.contracts.keys import Role
from nexa_gateway.db import NodeToken, Worker
from nexa_gateway.errors import ApiError, unauthorized
from nexa_gateway.services.keys import WORKER_TOKEN_PREFIX, Principal
from nexa_gateway.services.nodes import NODE_TOKEN_PREFIX, token_owner
from nexa_gateway.services.queue import worker_for_token
from nexa_gateway.state import AppState


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.nexa
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    """A session per request; handlers commit explicitly before answering, errors roll back."""
    with state.db.sessions() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


async def current_principal(request: Request, state: StateDep) -> Principal:
    """The caller's API key and tenant; worker tokens and unknown keys get the same 401."""
    token = _bearer(request)
    if token is None or token.startswith(WORKER_TOKEN_PREFIX):
        raise unauthorized()
    # Async with an in-memory fast path: most requests never leave the event loop here.
    hit, principal = state.keys.cached(token)
    if not hit:
        principal = await run_in_threadpool(state.keys.resolve, state.db, token)
    if principal is None:
        raise unauthorized()
    wait = state.limiter.acquire(principal.key_id)
    if wait > 0:
        state.metrics.rate_limited.inc()
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {state.settings.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": state.limiter.retry_after_header(wait)},
        )
    if state.keys.touch_due(principal.key_id):
        await run_in_threadpool(state.keys.touch, state.db, principal.key_id)
    request.state.principal = principal  # the audit log names who acted
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def current_worker(request: Request, state: StateDep) -> Worker:
    """The calling worker; user API keys are refused here."""
    token = _bearer(request)
    if token is None or not token.startswith(WORKER_TOKEN_PREFIX):
        raise unauthorized()
    with state.db.session() as session:
        worker = worker_for_token(session, token)
    if worker is None:
        raise unauthorized()
    request.state.worker = worker  # the audit log names who acted
    return worker


CurrentWorker = Annotated[Worker, Depends(current_worker)]


def store_caller(request: Request, state: StateDep) -> Worker | AttemptClaim:
    """A store call's caller: a registered worker, or an engine pod with its attempt token."""
    token = _bearer(request)
    if token is not None and looks_like_token(token):
        secret = state.settings.attempt_token_secret
        if not secret:
            raise unauthorized()
        try:
            return verify(secret.encode(), token)
        except InvalidAttemptToken:
            raise unauthorized() from None
    return current_worker(request, state)


StoreCaller = Annotated[Worker | AttemptClaim, Depends(store_caller)]


def require_worker_secret(request: Request, state: StateDep) -> NodeToken | None:
    """Registration needs the gateway's worker secret (a platform worker, None) or a live node token
    (a tenant's node: the token says whose). Never a user key or a worker token."""
    expected = state.settings.worker_secret
    token = _bearer(request)
    if token is None:
        raise unauthorized()
    if token.startswith(NODE_TOKEN_PREFIX):
        with state.db.session() as session:
            owner = token_owner(session, token)
            if owner is not None:
                session.expunge(owner)
        if owner is None:
            raise unauthorized()
        request.state.registrar = ("node_token", owner.id, owner.tenant_id)  # for the audit log
        return owner
    if not expected or not secrets.compare_digest(token.encode(), expected.encode()):
        raise unauthorized()
    request.state.registrar = ("worker_secret", "platform", None)
    return None


WorkerSecret = Annotated[NodeToken | None, Depends(require_worker_secret)]


def require_role(role: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets only keys of ``role`` or higher through (403 ``forbidden`` otherwise)."""

    def check(principal: CurrentPrincipal) -> Principal:
        if not principal.role.at_least(role):
            raise ApiError(
                403,
                "forbidden",
                f"this needs a key with role {role.value}; this key is a {principal.role.value}",
            )
        return principal

    return check


TenantAdmin = Annotated[Principal, Depends(require_role(Role.admin))]
PlatformAdmin = Annotated[Principal, Depends(require_role(Role.platform_admin))]
