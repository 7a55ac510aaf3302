"""One JSON error shape for every failure: ``{"error": {"type", "message", "field", "errors"}}``."""

from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nexa.contracts import ErrorBody

log = logging.getLogger("nexa.gateway")

# Documented on every API route, so the OpenAPI schema describes the errors clients really get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed request (bad JSON, bad cursor, unreadable upload)."},
    401: {"model": ErrorBody, "description": "Missing, unknown, revoked or expired credentials."},
    402: {
        "model": ErrorBody,
        "description": "`budget_exceeded` (the job's estimate passes its cap or the monthly budget) or "
        "`payment_failed` (the tenant's last invoice is unpaid).",
    },
    403: {"model": ErrorBody, "description": "The key's role does not allow this (`forbidden`)."},
    404: {"model": ErrorBody, "description": "No such object for this tenant."},
    409: {
        "model": ErrorBody,
        "description": "Conflicts with the object's state (or a stale worker attempt).",
    },
    413: {"model": ErrorBody, "description": "Upload too large."},
    415: {"model": ErrorBody, "description": "Unsupported file type."},
    422: {"model": ErrorBody, "description": "Invalid field; `error.field` names it."},
    429: {"model": ErrorBody, "description": "Rate limited; retry after `Retry-After` seconds."},
    503: {
        "model": ErrorBody,
        "description": "The database, disk or artifact store is unavailable; nothing was stored. "
        "Retry after `Retry-After` seconds.",
    },
}


class ApiError(Exception):
    """An error a caller caused or must know about; becomes a JSON response."""

    def __init__(
        self,
        status_code: int,
        type_: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type_
        self.message = message
        self.field = field
        self.headers = headers


def not_found(what: str, ident: str) -> ApiError:
    # The same answer whether the id does not exist or belongs to another tenant.
    return ApiError(404, "not_found", f"{what} {ident!r} not found")


def unauthorized() -> ApiError:
    # One body for unknown, malformed, revoked and expired credentials: nothing to probe.
    return ApiError(
        401,
        "unauthorized",
        "missing or invalid credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )


def conflict(type_: str, message: str) -> ApiError:
    return ApiError(409, type_, message)


def error_body(
    type_: str, message: str, field: str | None = None, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "message": message}
    if field is not None:
        body["field"] = field
    if errors:
        body["errors"] = errors
    return {"error": body}


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


_STATUS_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to the JSON error shape; nothing escapes as HTML or a traceback."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.type, exc.message, exc.field), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            detail = next(p for p in problems if p.get("type") == "json_invalid")
            ctx = detail.get("ctx") or {}
            return JSONResponse(
                error_body("bad_request", f"malformed JSON body: {ctx.get('error', 'cannot parse')}", "body"),
                status_code=400,
            )
        errors = [
            {"field": _field_path(p.get("loc", ())), "message": str(p.get("msg", "invalid"))}
            for p in problems
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return JSONResponse(error_body("validation_error", message, first["field"], errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(exc.status_code, "error" if exc.status_code < 500 else "internal_error")
        message = exc.detail if isinstance(exc.detail, str) else type_.replace("_", " ")
        return JSONResponse(error_body(type_, message), status_code=exc.status_code, headers=exc.headers)

    async def _dependency_failed(request: Request, exc: Exception) -> JSONResponse:
        # Answered here, inside the app, so an outage is a clean 503 and not a logged crash.
        outage = outage_of(exc)
        if outage is None:
            raise exc
        log.warning("%s on %s %s: %s", outage.type, request.method, request.url.path, exc)
        return JSONResponse(error_body(outage.type, outage.message), status_code=503, headers=outage.headers)

    for kind in _outage_classes():
        app.add_exception_handler(kind, _dependency_failed)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        outage = outage_of(exc)
        if outage is not None:
            # Nothing lost and nothing wrong with the request: say so, and when to try again.
            log.warning("%s on %s %s: %s", outage.type, request.method, request.url.path, exc)
            return JSONResponse(
                error_body(outage.type, outage.message), status_code=503, headers=outage.headers
            )
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", "internal error (logged on the server)"), status_code=500
        )


OUTAGE_RETRY_AFTER_S = 5


def _outage_classes() -> tuple[type[Exception], ...]:
    from sqlalchemy import exc as sa

    from nexa_store.base import StoreUnavailable

    return (
        sa.OperationalError,
        sa.InterfaceError,
        sa.DisconnectionError,
        sa.TimeoutError,
        OSError,
        StoreUnavailable,
    )


def outage_of(exc: BaseException) -> ApiError | None:
    """A 503 for failures of what the gateway depends on (database, disk, store); None for real bugs.

    The message is generic on purpose: the exception's text can hold hosts, paths or
    connection strings, and goes to the server log only.
    """
    from sqlalchemy import exc as sa

    from nexa_store.base import StoreUnavailable

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the cause chain, e.g. a wrapped OSError
        seen.add(id(current))
        text = str(current).lower()
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return _outage("disk_full", "the server is out of disk space; nothing was stored, retry later")
        if isinstance(
            current, sa.OperationalError | sa.InterfaceError | sa.DisconnectionError | sa.TimeoutError
        ):
            if "disk is full" in text or "disk full" in text or "no space" in text:
                return _outage(
                    "disk_full", "the server is out of disk space; nothing was stored, retry later"
                )
            return _outage(
                "database_unavailable", "the database is unavailable; nothing was stored, retry later"
            )
        if isinstance(current, StoreUnavailable):
            return _outage("store_unavailable", "the artifact store is unavailable; retry later")
        current = current.__cause__ or current.__context__
    return None


def _outage(type_: str, message: str) -> ApiError:
    return ApiError(503, type_, message, headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)})
