"""The web console: server-rendered pages at /console over the public API (docs/console.md).

Each page calls the public REST routes in-process with the signed-in user's API key
(``console.api.PublicApi``); the browser holds only a session cookie. Pages render with Jinja2
(autoescape on), forms carry a per-session CSRF token, and every answer carries a strict CSP.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from nexa.contracts.jobs import AuditSpec, JobState, JobType
from nexa_gateway.console import forms, sessions
from nexa_gateway.console.api import Answer, PublicApi
from nexa_gateway.state import AppState

_HERE = Path(__file__).resolve().parent.parent / "console"
STATIC_FILES = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# The job types the Submit page offers, each with its contract (the form) and its public route.
SUBMIT_FORMS: dict[str, tuple[type[AuditSpec], str]] = {"audit": (AuditSpec, "/v1/audit")}
TERMINAL = frozenset({"completed", "failed", "cancelled"})
LOG_POLL_SECONDS = 1.0

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,  # everywhere: labels, log lines, column names never become markup
    undefined=jinja2.StrictUndefined,
)


def _when(value: Any) -> str:
    """``2026-12-07T23:20:20.123+00:00`` → ``2026-12-07 23:20:20Z``."""
    text = str(value or "")
    return text[:19].replace("T", " ") + "Z" if len(text) >= 19 else text


templates.filters["when"] = _when
templates.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)


class ConsoleRoute(APIRoute):
    """Every console answer (pages, JSON, static files, redirects) carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            response = await handler(request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return secured


router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
JobId = Annotated[str, PathParam(min_length=1, max_length=64)]


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.nexa
    return state


async def _signed_in(request: Request) -> sessions.SignedIn | None:
    cookie = request.cookies.get(sessions.COOKIE)
    if not cookie:
        return None
    return await run_in_threadpool(sessions.lookup, _state(request).db, cookie)


def _api(request: Request, me: sessions.SignedIn) -> PublicApi:
    return PublicApi(request.app, me.api_key)


def _page(
    request: Request, template: str, me: sessions.SignedIn | None, status: int = 200, **context: Any
) -> HTMLResponse:
    html = templates.get_template(template).render(
        me=me, path=request.url.path, csrf=me.csrf_token if me else "", **context
    )
    return HTMLResponse(html, status_code=status)


def _to_signin(request: Request) -> Response:
    response = RedirectResponse("/console/signin", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


async def _csrf_ok(request: Request, me: sessions.SignedIn) -> bool:
    """The form's (or the X-CSRF-Token header's) token matches the session's."""
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    return sent is not None and hmac.compare_digest(sent.encode(), me.csrf_token.encode())


def _csrf_refused(request: Request, me: sessions.SignedIn | None) -> HTMLResponse:
    return _page(
        request,
        "error.html",
        me,
        status=403,
        title="Refused",
        message="The form's security token is missing or stale; reload the page and try again.",
    )


async def _api_failed(request: Request, me: sessions.SignedIn, answer: Answer, title: str) -> Response:
    """An API error as its own page; a key the API no longer accepts ends the session."""
    if answer.status == 401:
        await run_in_threadpool(sessions.end, _state(request).db, request.cookies.get(sessions.COOKIE))
        return _to_signin(request)
    return _page(request, "error.html", me, status=answer.status, title=title, message=answer.message)


# ---- sign-in


@router.get("/")
@router.get("/console")
async def console_home(request: Request) -> Response:
    """The console's front door: the jobs page, or the sign-in form."""
    me = await _signed_in(request)
    return RedirectResponse("/console/jobs" if me else "/console/signin", status_code=303)


@router.get("/console/signin")
async def signin_form(request: Request) -> Response:
    """The sign-in form (an API key)."""
    return _page(request, "signin.html", None, error=None)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.rstrip("/") == str(request.base_url).rstrip("/")


@router.post("/console/signin")
async def signin(request: Request) -> Response:
    """Check the key against the API and start a new session (a fresh id every time: no fixation)."""
    if not _same_origin(request):
        return _csrf_refused(request, None)
    form = await request.form()
    raw = form.get("api_key")
    key = raw.strip() if isinstance(raw, str) else ""
    if not key:
        return _page(request, "signin.html", None, status=400, error="Paste an API key (nexa_…).")
    async with PublicApi(request.app, key) as api:
        answer = await api.call("GET", "/v1/keys/self")
    if not answer.ok:
        return _page(request, "signin.html", None, status=answer.status, error=answer.message)
    db = _state(request).db
    old = request.cookies.get(sessions.COOKIE)
    if old:
        await run_in_threadpool(sessions.end, db, old)  # a cookie from before sign-in is never reused
    hours = _state(request).settings.console_session_hours
    session_id = await run_in_threadpool(sessions.create, db, key, answer.body["tenant_id"], hours)
    response = RedirectResponse("/console/jobs", status_code=303)
    response.set_cookie(
        sessions.COOKIE,
        session_id,
        max_age=int(hours * 3600),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/console/signout")
async def signout(request: Request) -> Response:
    """End the session (its row is deleted)."""
    me = await _signed_in(request)
    if me is None:
        return _to_signin(request)
    if not await _csrf_ok(request, me):
        return _csrf_refused(request, me)
    await run_in_threadpool(sessions.end, _state(request).db, request.cookies.get(sessions.COOKIE))
    return _to_signin(request)


# ---- jobs


def _job_filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    return {
        "type": q.get("type", ""),
        "status": q.get("status", ""),
        "label": q.get("label", ""),
    }


def _job_params(filters: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": 100}
    for name in ("type", "status", "label"):
        if filters[name]:
            params[name] = filters[name]
    return params


@router.get("/console/jobs")
async def jobs_page(request: Request) -> Response:
    """The tenant's jobs, newest first, with filters; console.js refreshes the rows."""
    me = await _signed_in(request)
    if me is None:
        return _to_signin(request)
    filters = _job_filters(request)
    async with _api(request, me) as api:
        answer = await api.call("GET", "/v1/jobs", params=_job_params(filters))
    if answer.status == 401:
        return await _api_failed(request, me, answer, "Jobs")
    jobs = answer.body["items"] if answer.ok else []
    return _page(
        request,
        "jobs.html",
        me,
        jobs=jobs,
        filters=filters,
        error=None if answer.ok else answer.message,
        job_types=[t.value for t in JobType],
        job_states=[s.value for s in JobState],
        query=urlencode({k: v for k, v in filters.items() if v}),
    )


@router.get("/console/api/jobs")
async def jobs_json(request: Request) -> Response:
    """The jobs list for console.js (the public GET /v1/jobs, answered as the API wrote it)."""
    me = await _signed_in(request)
    if me is None:
        return JSONResponse({"error": {"type": "unauthorized", "message": "signed out"}}, status_code=401)
    async with _api(request, me) as api:
        answer = await api.call("GET", "/v1/jobs", params=_job_params(_job_filters(request)))
    return JSONResponse(answer.body, status_code=answer.status)


@router.get("/console/api/jobs/{job_id}")
async def job_json(job_id: JobId, request: Request) -> Response:
    """One job for console.js (GET /v1/jobs/{id})."""
    me = await _signed_in(request)
    if me is None:
        return JSONResponse({"error": {"type": "unauthorized", "message": "signed out"}}, status_code=401)
    async with _api(request, me) as api:
        answer = await api.call("GET", f"/v1/jobs/{job_id}")
    return JSONResponse(answer.body, status_code=answer.status)


@router.get("/console/jobs/{job_id}")
async def job_page(job_id: JobId, request: Request) -> Response:
    """A job: status, events, spec, result, cost and live logs."""
    me = await _signed_in(request)
    if me is None:
        return _to_signin(request)
    async with _api(request, me) as api:
        answer = await api.call("GET", f"/v1/jobs/{job_id}")
        if not answer.ok:
            return await _api_failed(request, me, answer, "Job")
        cost = await api.call("GET", f"/v1/jobs/{job_id}/cost")
    return _page(
        request,
        "job.html",
        me,
        job=answer.body,
        cost=cost.body if cost.ok else None,
        cost_error=None if cost.ok else cost.message,
        terminal=answer.body["status"] in TERMINAL,
    )


@router.post("/console/jobs/{job_id}/cancel")
async def cancel_job(job_id: JobId, request: Request) -> Response:
    """Cancel a job (POST /v1/jobs/{id}/cancel), then back to its page."""
    me = await _signed_in(request)
    if me is None:
        return _to_signin(request)
    if not await _csrf_ok(request, me):
        return _csrf_refused(request, me)
    async with _api(request, me) as api:
        answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    if not answer.ok:
        return await _api_failed(request, me, answer, "Cancel")
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)


def _parse_sse(text: str) -> list[tuple[str, str, str]]:
    """(id, event, data) of each complete event in an SSE body."""
    events = []
    for block in text.split("\n\n"):
        ident = kind = ""
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if kind or data:
            events.append((ident, kind or "message", "\n".join(data)))
    return events


@router.get("/console/api/jobs/{job_id}/logs")
async def job_logs(job_id: JobId, request: Request) -> Response:
    """Server-Sent Events of the job's log lines for EventSource, resuming after Last-Event-ID.

    Read from the public GET /v1/jobs/{id}/logs (``follow=false``, a page at a time), since an
    in-process call answers only once its body is complete; ends with the API's ``end`` event."""
    me = await _signed_in(request)
    if me is None:
        return JSONResponse({"error": {"type": "unauthorized", "message": "signed out"}}, status_code=401)
    last = request.headers.get("last-event-id", "")

    async def stream() -> AsyncIterator[str]:
        nonlocal last
        yield "retry: 2000\n\n"
        async with _api(request, me) as api:
            while True:
                headers = {"Last-Event-ID": last} if last else None
                answer = await api.call(
                    "GET", f"/v1/jobs/{job_id}/logs", params={"follow": "false"}, headers=headers
                )
                if answer.status != 200:
                    yield f"event: failed\ndata: {json.dumps({'message': answer.message})}\n\n"
                    return
                ended = False
                for ident, kind, data in _parse_sse(answer.text):
                    if kind == "log":
                        last = ident
                        yield f"id: {ident}\nevent: log\ndata: {data}\n\n"
                    elif kind == "end":
                        ended = True
                        yield f"event: end\ndata: {data}\n\n"
                if ended or await request.is_disconnected():
                    return
                await asyncio.sleep(LOG_POLL_SECONDS)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


# ---- submit


@router.get("/console/submit")
async def submit_index(request: Request) -> Response:
    """The job types the console has a form for."""
    return RedirectResponse("/console/submit/audit", status_code=303)


async def _submit_page(
    request: Request,
    me: sessions.SignedIn,
    job_type: str,
    values: dict[str, str],
    error: str | None,
    status: int,
) -> Response:
    spec, _ = SUBMIT_FORMS[job_type]
    fields = forms.fields_from_schema(spec.model_json_schema())
    async with _api(request, me) as api:
        datasets = await api.call("GET", "/v1/datasets", params={"limit": 200})
    return _page(
        request,
        "submit.html",
        me,
        status=status,
        job_type=job_type,
        job_types=list(SUBMIT_FORMS),
        description=spec.__doc__ or "",
        fields=fields,
        values=values,
        datasets=datasets.body["items"] if datasets.ok else [],
        error=error,
    )


@router.get("/console/submit/{job_type}")
async def submit_form(job_type: str, request: Request) -> Response:
    """A job type's form, generated from its contract's JSON schema."""
    me = await _signed_in(request)
    if me is None:
        return _to_signin(request)
    if job_type not in SUBMIT_FORMS:
        return _page(
            request, "error.html", me, status=404, title="Submit", message=f"no form for {job_type!r}"
        )
    return await _submit_page(request, me, job_type, {}, None, 200)


@router.post("/console/submit/{job_type}")
async def submit(job_type: str, request: Request) -> Response:
    """Send the form to the job type's public route; to the new job's page, or the form with the API's error."""
    me = await _signed_in(request)
    if me is None:
        return _to_signin(request)
    if not await _csrf_ok(request, me):
        return _csrf_refused(request, me)
    if job_type not in SUBMIT_FORMS:
        return _page(
            request, "error.html", me, status=404, title="Submit", message=f"no form for {job_type!r}"
        )
    spec, route = SUBMIT_FORMS[job_type]
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    body = forms.body_from_form(forms.fields_from_schema(spec.model_json_schema()), values)
    async with _api(request, me) as api:
        answer = await api.call("POST", route, json=body)
    if answer.status == 401:
        return await _api_failed(request, me, answer, "Submit")
    if not answer.ok:
        return await _submit_page(request, me, job_type, values, answer.message, answer.status)
    return RedirectResponse(f"/console/jobs/{answer.body['job_id']}", status_code=303)


# ---- keys


async def _keys_page(
    request: Request, me: sessions.SignedIn, created: Any = None, error: str | None = None, status: int = 200
) -> Response:
    async with _api(request, me) as api:
        answer = await api.call("GET", "/v1/keys")
    if not answer.ok:
        return await _api_failed(request, me, answer, "Keys")
    return _page(request, "keys.html", me, status=status, keys=answer.body, created=created, error=error)


@router.get("/console/keys")
async def keys_page(request: Request) -> Response:
    """The tenant's keys, a form to make one, revoke buttons."""
    me = await _signed_in(request)
    if me is None:
        return _to_signin(request)
    return await _keys_page(request, me)


@router.post("/console/keys")
async def create_key(request: Request) -> Response:
    """POST /v1/keys; the page shows the secret this once (never in a URL or a redirect)."""
    me = await _signed_in(request)
    if me is None:
        return _to_signin(request)
    if not await _csrf_ok(request, me):
        return _csrf_refused(request, me)
    form = await request.form()
    body: dict[str, Any] = {"name": str(form.get("name") or ""), "role": str(form.get("role") or "member")}
    days = str(form.get("expires_in_days") or "").strip()
    if days:
        body["expires_in_days"] = int(days) if days.isdigit() else days
    async with _api(request, me) as api:
        answer = await api.call("POST", "/v1/keys", json=body)
    if not answer.ok:
        if answer.status == 401:
            return await _api_failed(request, me, answer, "Keys")
        return await _keys_page(request, me, error=answer.message, status=answer.status)
    return await _keys_page(request, me, created=answer.body, status=201)


@router.post("/console/keys/{key_id}/revoke")
async def revoke_key(
    key_id: Annotated[str, PathParam(min_length=1, max_length=64)], request: Request
) -> Response:
    """DELETE /v1/keys/{id}, then back to the list."""
    me = await _signed_in(request)
    if me is None:
        return _to_signin(request)
    if not await _csrf_ok(request, me):
        return _csrf_refused(request, me)
    async with _api(request, me) as api:
        answer = await api.call("DELETE", f"/v1/keys/{key_id}")
    if not answer.ok:
        if answer.status == 401:
            return await _api_failed(request, me, answer, "Keys")
        return await _keys_page(request, me, error=answer.message, status=answer.status)
    return RedirectResponse("/console/keys", status_code=303)


# ---- static files (a fixed list: no path from the URL reaches the file system)


@router.get("/console/static/{name}")
async def static_file(name: str) -> Response:
    """The console's own CSS and JavaScript."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body = await run_in_threadpool((_HERE / "static" / name).read_bytes)
    response = Response(body, media_type=media_type)
    response.headers["Cache-Control"] = "no-cache"
    return response
