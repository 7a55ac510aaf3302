"""The SDK's request, retry, error, pagination, wait and log-resume logic, over httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

import nexa.async_client
import nexa.client
from nexa import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncNexaClient,
    AuditSpec,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    JobCancelledError,
    JobFailedError,
    JobState,
    NexaClient,
    NexaError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ValidationError,
    WaitTimeoutError,
    __version__,
)
from nexa._core import parse_retry_after

JOB_ID = "job_" + "a" * 26
BASE = "http://nexa.test"
Handler = Callable[[httpx.Request], httpx.Response]


def job_json(job_id: str = JOB_ID, status: str = "pending", **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "job_type": "audit",
        "status": status,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:01Z",
        **extra,
    }


def error_json(kind: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "field": field}}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's sleeps instead of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr(nexa.client, "_sleep", recorded.append)

    async def fake_async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(nexa.async_client, "_sleep", fake_async_sleep)
    return recorded


def make_client(handler: Handler, **kwargs: Any) -> NexaClient:
    return NexaClient("nexa_testkey", BASE, transport=httpx.MockTransport(handler), **kwargs)


class Script:
    """A MockTransport handler answering from a list, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


# ---- requests


def test_submit_sends_auth_user_agent_body_and_generated_idempotency_key() -> None:
    script = Script(httpx.Response(201, json=job_json()))
    job = make_client(script).audit("ds_x", near_dup_threshold=0.9, labels={"team": "a"})
    request = script.requests[0]
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/v1/audit")
    assert request.headers["authorization"] == "Bearer nexa_testkey"
    assert request.headers["user-agent"] == f"nexa-python/{__version__}"
    assert request.headers["idempotency-key"].startswith("nexa-py-")
    assert json.loads(request.content) == {
        "dataset_uri": "ds_x",
        "near_dup_threshold": 0.9,
        "labels": {"team": "a"},
    }
    assert job["job_id"] == JOB_ID and job.job_id == JOB_ID and job.status is JobState.pending


def test_submit_with_a_model_sends_only_what_was_set_and_the_given_key() -> None:
    script = Script(httpx.Response(201, json=job_json()))
    make_client(script).submit("audit", AuditSpec(dataset_uri="ds_y", ngram=3), idempotency_key="k-1")
    assert json.loads(script.requests[0].content) == {"dataset_uri": "ds_y", "ngram": 3}
    assert script.requests[0].headers["idempotency-key"] == "k-1"


def test_two_different_idempotency_keys_are_refused_before_sending() -> None:
    script = Script()
    with pytest.raises(ValueError, match="two different idempotency keys"):
        make_client(script).submit("audit", {"dataset_uri": "x", "idempotency_key": "a"}, idempotency_key="b")
    assert script.requests == []


def test_ids_cannot_escape_their_path_segment() -> None:
    script = Script(httpx.Response(404, json=error_json("not_found", "no such job")))
    with pytest.raises(NotFoundError):
        make_client(script).status("../keys")
    assert script.requests[0].url.raw_path == b"/v1/jobs/..%2Fkeys"


# ---- error mapping


@pytest.mark.parametrize(
    ("status", "cls", "kind"),
    [
        (400, BadRequestError, "bad_request"),
        (401, AuthenticationError, "unauthorized"),
        (403, PermissionDeniedError, "forbidden"),
        (404, NotFoundError, "not_found"),
        (409, ConflictError, "conflict"),
        (422, ValidationError, "dataset_not_found"),
        (413, APIStatusError, "payload_too_large"),
        (500, InternalServerError, "internal_error"),
    ],
)
def test_error_status_maps_to_exception(status: int, cls: type[APIStatusError], kind: str) -> None:
    body = error_json(kind, "it went wrong", field="dataset_uri")
    script = Script(httpx.Response(status, json=body, headers={"X-Request-ID": "req-9"}))
    with pytest.raises(cls) as info:
        make_client(script, max_retries=0).status(JOB_ID)
    error = info.value
    assert type(error) is cls
    assert (error.status_code, error.error_type, error.message, error.field) == (
        status,
        kind,
        "it went wrong",
        "dataset_uri",
    )
    assert error.body == body and error.request_id == "req-9"
    assert str(error) == f"{status} {kind}: it went wrong (request id req-9)"


def test_validation_error_lists_every_problem() -> None:
    body = {
        "error": {
            "type": "validation_error",
            "message": "dataset_uri: Field required",
            "field": "dataset_uri",
            "errors": [{"field": "dataset_uri", "message": "Field required"}],
        }
    }
    with pytest.raises(ValidationError) as info:
        make_client(Script(httpx.Response(422, json=body))).audit("")
    assert info.value.field == "dataset_uri"
    assert info.value.errors == [{"field": "dataset_uri", "message": "Field required"}]


def test_non_json_error_body_still_gives_a_readable_error() -> None:
    script = Script(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(InternalServerError) as info:
        make_client(script, max_retries=0).status(JOB_ID)
    assert info.value.error_type == "server_error"
    assert "Bad Gateway" in info.value.message


def test_unreadable_success_body_is_a_nexa_error() -> None:
    with pytest.raises(NexaError, match="unexpected answer to GET /v1/jobs"):
        make_client(Script(httpx.Response(200, json={"nope": 1}))).status(JOB_ID)


# ---- retries


def test_get_is_retried_on_503_with_backoff(sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(503, json=error_json("unavailable", "db down")),
        httpx.Response(502),
        httpx.Response(200, json=job_json(status="running")),
    )
    assert make_client(script).status(JOB_ID).status is JobState.running
    assert len(script.requests) == 3
    assert len(sleeps) == 2 and 0 < sleeps[0] <= 0.5 and 0 < sleeps[1] <= 1.0


def test_retry_after_is_honoured_on_429(sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(429, json=error_json("rate_limited", "slow down"), headers={"Retry-After": "3"}),
        httpx.Response(200, json=job_json()),
    )
    make_client(script).status(JOB_ID)
    assert sleeps == [3.0]


def test_retries_are_bounded_then_the_last_error_is_raised(sleeps: list[float]) -> None:
    script = Script(*[httpx.Response(503, json=error_json("unavailable", "still down"))] * 3)
    with pytest.raises(InternalServerError, match="still down"):
        make_client(script, max_retries=2).status(JOB_ID)
    assert len(script.requests) == 3 and len(sleeps) == 2


def test_retry_after_beyond_the_cap_raises_with_retry_after(sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(429, json=error_json("rate_limited", "later"), headers={"Retry-After": "3600"})
    )
    with pytest.raises(RateLimitError) as info:
        make_client(script).status(JOB_ID)
    assert info.value.retry_after == 3600.0 and sleeps == []


def test_submit_retries_reuse_one_idempotency_key(sleeps: list[float]) -> None:
    script = Script(
        httpx.ConnectError("refused"),
        httpx.Response(504),
        httpx.Response(201, json=job_json()),
    )
    make_client(script).train("ds_x", "tiny-gpt", epochs=2)
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1
    assert {r.content for r in script.requests} == {script.requests[0].content}


def test_post_without_idempotency_key_is_never_retried(sleeps: list[float]) -> None:
    script = Script(httpx.Response(503, json=error_json("unavailable", "busy")))
    with pytest.raises(InternalServerError):
        make_client(script).create_key("ci")
    assert len(script.requests) == 1 and sleeps == []


def test_client_errors_are_not_retried(sleeps: list[float]) -> None:
    script = Script(httpx.Response(404, json=error_json("not_found", "no such job")))
    with pytest.raises(NotFoundError):
        make_client(script).status(JOB_ID)
    assert len(script.requests) == 1 and sleeps == []


def test_unreachable_gateway_gives_connection_error_after_retries(sleeps: list[float]) -> None:
    script = Script(*[httpx.ConnectError("connection refused")] * 3)
    with pytest.raises(APIConnectionError, match="nexa up") as info:
        make_client(script).status(JOB_ID)
    assert not isinstance(info.value, APITimeoutError)
    assert len(script.requests) == 3


def test_timeout_gives_api_timeout_error(sleeps: list[float]) -> None:
    script = Script(httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError):
        make_client(script, max_retries=0).status(JOB_ID)


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# ---- pagination


def page(ids: list[str], cursor: str | None) -> httpx.Response:
    return httpx.Response(200, json={"items": [job_json(i) for i in ids], "next_cursor": cursor})


def test_list_jobs_follows_cursors_with_filters() -> None:
    ids = [f"job_{c * 26}" for c in "bcdef"]
    script = Script(page(ids[:2], "c1"), page(ids[2:4], "c2"), page(ids[4:], None))
    client = make_client(script)
    got = [
        j.job_id
        for j in client.list_jobs(type="audit", status=JobState.running, labels={"team": "a"}, page_size=2)
    ]
    assert got == ids
    first, second = script.requests[0].url.params, script.requests[1].url.params
    assert first.multi_items() == [
        ("limit", "2"),
        ("type", "audit"),
        ("status", "running"),
        ("label", "team=a"),
    ]
    assert second["cursor"] == "c1" and script.requests[2].url.params["cursor"] == "c2"


def test_list_jobs_limit_stops_fetching() -> None:
    ids = [f"job_{c * 26}" for c in "bcdef"]
    script = Script(page(ids[:2], "c1"), page(ids[2:3], "c2"))
    got = list(make_client(script).list_jobs(limit=3, page_size=2))
    assert [j.job_id for j in got] == ids[:3]
    assert [r.url.params["limit"] for r in script.requests] == ["2", "1"]


def test_list_is_lazy() -> None:
    script = Script(page(["job_" + "b" * 26], "c1"))
    iterator = make_client(script).list_jobs()
    assert script.requests == []
    next(iterator)
    assert len(script.requests) == 1


# ---- handles and waiting


def test_job_handle_reads_like_the_job() -> None:
    body = job_json(
        status="failed", error={"code": "engine_not_installed", "message": "no audit"}, attempts=1
    )
    handle = make_client(Script(httpx.Response(200, json=body))).status(JOB_ID)
    assert handle["status"] == "failed" and handle["error"]["code"] == "engine_not_installed"
    assert handle.done and handle.attempts == 1 and handle.created_at.year == 2025
    assert handle.to_dict() == handle.model.model_dump(mode="json")
    assert repr(handle) == f"<JobHandle {JOB_ID} audit failed error=engine_not_installed>"
    with pytest.raises(AttributeError):
        _ = handle.no_such_field


def test_refresh_and_cancel_update_the_handle() -> None:
    script = Script(
        httpx.Response(201, json=job_json()),
        httpx.Response(200, json=job_json(status="running", progress=0.5)),
        httpx.Response(200, json=job_json(status="cancelled")),
    )
    job = make_client(script).audit("ds_x")
    assert job.refresh() is job and job.status is JobState.running and repr(job).endswith("running 50%>")
    assert job.cancel().status is JobState.cancelled and job.done
    assert script.requests[2].url.path == f"/v1/jobs/{JOB_ID}/cancel"


def test_wait_reports_changes_and_returns_the_final_job(sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(200, json=job_json(status="pending")),
        httpx.Response(200, json=job_json(status="pending")),
        httpx.Response(200, json=job_json(status="running", progress=0.4)),
        httpx.Response(200, json=job_json(status="completed", progress=1.0, result={"score": 0.9})),
    )
    seen: list[tuple[str, float]] = []
    final = make_client(script).wait(
        JOB_ID, poll_interval=0.25, on_update=lambda j: seen.append((j.status.value, j.progress))
    )
    assert final.result == {"score": 0.9}
    assert seen == [("pending", 0.0), ("running", 0.4), ("completed", 1.0)]
    assert sleeps == [0.25, 0.25, 0.25]


@pytest.mark.parametrize(("status", "cls"), [("failed", JobFailedError), ("cancelled", JobCancelledError)])
def test_wait_raises_for_jobs_that_end_badly(status: str, cls: type[Exception], sleeps: list[float]) -> None:
    body = job_json(status=status, error={"code": "oom", "message": "killed"} if status == "failed" else None)
    client = make_client(Script(httpx.Response(200, json=body), httpx.Response(200, json=body)))
    with pytest.raises(cls) as info:
        client.wait(JOB_ID)
    assert info.value.job.job_id == JOB_ID  # type: ignore[attr-defined]
    if status == "failed":
        assert "oom: killed" in str(info.value)
    assert client.wait(JOB_ID, raise_on_failure=False).status.value == status


def test_wait_timeout_raises_with_the_last_state(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(nexa.client, "_now", lambda: clock[0])

    def advance(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(nexa.client, "_sleep", advance)
    client = make_client(lambda r: httpx.Response(200, json=job_json(status="running", progress=0.3)))
    with pytest.raises(WaitTimeoutError, match="still running after 2.5s") as info:
        client.wait(JOB_ID, timeout=2.5, poll_interval=1.0)
    assert info.value.job.progress == 0.3
    assert clock[0] == 102.5  # the last sleep is trimmed to the time left


# ---- logs


def log_event(seq: int, line: str) -> str:
    data = json.dumps({"seq": seq, "attempt": 1, "at": "2025-01-01T00:00:00Z", "line": line})
    return f"id: {seq}\nevent: log\ndata: {data}\n\n"


END = 'event: end\ndata: {"status": "completed"}\n\n'


class BrokenStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Sends some bytes, then the connection breaks (or, with error=None, closes early)."""

    def __init__(self, chunks: list[bytes], error: Exception | None) -> None:
        self.chunks = chunks
        self.error = error

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.error is not None:
            raise self.error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error


def sse(chunks: list[str], error: Exception | None = None) -> httpx.Response:
    stream = BrokenStream([c.encode() for c in chunks], error)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


def dropping_log_server() -> Script:
    """Lines 1..5: the first connection breaks mid-event 3, the second closes early after 4."""
    first = log_event(1, "one") + log_event(2, "two") + log_event(3, "thr")
    return Script(
        sse([first[:-20], first[-20:-5]], httpx.RemoteProtocolError("peer closed connection")),
        sse([log_event(3, "three"), log_event(4, "four")]),
        sse([log_event(4, "four"), log_event(5, "five"), END, log_event(6, "after end")]),
    )


def test_logs_resume_after_drops_without_gap_or_duplicate(sleeps: list[float]) -> None:
    server = dropping_log_server()
    lines = list(make_client(server).logs(JOB_ID))
    assert [(ln.seq, ln.line) for ln in lines] == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
        (4, "four"),
        (5, "five"),
    ]
    resume = [r.headers.get("last-event-id") for r in server.requests]
    assert resume == [None, "2", "4"]
    assert all(r.url.params["follow"] == "true" for r in server.requests)


def test_logs_start_after_last_event_id_and_follow_false_ends_at_close() -> None:
    server = Script(sse([log_event(8, "eight")]))
    lines = list(make_client(server).logs(JOB_ID, follow=False, last_event_id=7))
    assert [ln.line for ln in lines] == ["eight"]
    assert server.requests[0].headers["last-event-id"] == "7"
    assert server.requests[0].url.params["follow"] == "false"


def test_logs_give_up_when_the_stream_keeps_failing(sleeps: list[float]) -> None:
    server = Script(*[sse([], httpx.ReadError("reset")) for _ in range(10)])
    with pytest.raises(APIConnectionError, match="keeps closing"):
        list(make_client(server).logs(JOB_ID))
    assert 2 <= len(server.requests) < 10


def test_logs_of_an_unknown_job_raise_not_found() -> None:
    server = Script(httpx.Response(404, json=error_json("not_found", "no such job")))
    with pytest.raises(NotFoundError):
        list(make_client(server).logs(JOB_ID))


# ---- the async client shares all of it


def make_async(handler: Handler, **kwargs: Any) -> AsyncNexaClient:
    return AsyncNexaClient("nexa_testkey", BASE, transport=httpx.MockTransport(handler), **kwargs)


@pytest.mark.anyio
async def test_async_submit_retry_and_wait(sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(503),
        httpx.Response(201, json=job_json()),
        httpx.Response(200, json=job_json(status="completed", progress=1.0)),
    )
    async with make_async(script) as client:
        job = await client.audit("ds_x")
        assert job["job_id"] == JOB_ID
        final = await job.wait(poll_interval=0.1)
    assert final is job and job.status is JobState.completed
    assert script.requests[0].headers["idempotency-key"] == script.requests[1].headers["idempotency-key"]
    assert len(sleeps) == 1


@pytest.mark.anyio
async def test_async_errors_pagination_and_logs(sleeps: list[float]) -> None:
    ids = [f"job_{c * 26}" for c in "bcd"]
    pages = Script(page(ids[:2], "c1"), page(ids[2:], None))
    async with make_async(pages) as client:
        assert [j.job_id async for j in client.list_jobs(page_size=2)] == ids

    async with make_async(Script(httpx.Response(401, json=error_json("unauthorized", "bad key")))) as client:
        with pytest.raises(AuthenticationError):
            await client.status(JOB_ID)

    server = dropping_log_server()
    async with make_async(server) as client:
        lines = [ln.seq async for ln in client.logs(JOB_ID)]
    assert lines == [1, 2, 3, 4, 5]
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "2", "4"]
