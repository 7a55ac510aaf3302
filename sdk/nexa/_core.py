"""The part of the client that does no I/O: shared by ``NexaClient`` and ``AsyncNexaClient``.

Every API operation is described here as a ``Call``: method, path, query,
body, headers, whether it is safe to retry, and how to parse the answer. The
sync and async clients only send calls, sleep, and read streams; everything
else (URLs, auth, idempotency keys, error mapping, the retry policy, log stream
resumption, wait decisions) lives here once, so the two clients cannot drift.
"""

from __future__ import annotations

import codecs
import json
import math
import random
import tarfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Generic, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_jsonable_python

from nexa.config import NO_API_KEY_MESSAGE, config_path
from nexa.contracts.artifacts import (
    MODEL_UPLOAD_REFUSED_SUFFIXES,
    ArtifactDependents,
    ArtifactInfo,
    ArtifactList,
    Dataset,
    DatasetList,
    Deletion,
    UploadedModel,
)
from nexa.contracts.auditlog import AuditLogPage
from nexa.contracts.billing import BillingSummary, CostEstimate, JobCost, PriceBook, TenantBudget
from nexa.contracts.common import JobOptions
from nexa.contracts.jobs import Job, JobEvent, JobList, JobState, JobType, spec_for
from nexa.contracts.keys import ApiKeyCreate, ApiKeyCreated, ApiKeyInfo, ErrorBody, Role
from nexa.contracts.lineage import Lineage, LineageDirection
from nexa.contracts.mesh import Leaderboard, NodeCredits, VerificationStatus
from nexa.contracts.pipelines import (
    Pipeline,
    PipelineEvent,
    PipelineEventKind,
    PipelineList,
    PipelineSpec,
    PipelineState,
)
from nexa.contracts.refs import job_references
from nexa.contracts.webhooks import (
    WebhookCreate,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookEndpoint,
    WebhookEndpointCreated,
    WebhookEventType,
)
from nexa.contracts.workers import WorkerInfo, WorkerList
from nexa.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigError,
    JobCancelledError,
    JobFailedError,
    NexaError,
    PipelineWaitTimeoutError,
    RateLimitError,
    WaitTimeoutError,
    error_class_for,
)
from nexa.handles import BaseJobHandle, LogLine
from nexa.sse import SSEParser

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
ItemT = TypeVar("ItemT")
ItemT_co = TypeVar("ItemT_co", covariant=True)


DISTRIBUTION = "nexa-forge"  # what pip installs; the import name stays `nexa`


def _package_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0.1.0"


__version__ = _package_version()
USER_AGENT = f"nexa-python/{__version__}"

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})

_JOB_EVENTS = TypeAdapter(list[JobEvent])
_KEY_INFOS = TypeAdapter(list[ApiKeyInfo])
_WEBHOOKS = TypeAdapter(list[WebhookEndpoint])


# ---------------------------------------------------------------- calls


@dataclass(frozen=True)
class Call(Generic[T_co]):
    """One API operation, ready to send: what to ask and how to read the answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T_co]
    params: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    files: Mapping[str, tuple[str, IO[bytes], str]] | None = None
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retryable: bool = False
    auth: bool = True


def _model_parser(model: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    def parse(response: httpx.Response) -> Any:
        try:
            return model.model_validate_json(response.content)
        except PydanticValidationError as exc:
            raise _unexpected_body(response, exc) from exc

    return parse


def _adapter_parser(adapter: TypeAdapter[T]) -> Callable[[httpx.Response], T]:
    def parse(response: httpx.Response) -> T:
        try:
            return adapter.validate_json(response.content)
        except PydanticValidationError as exc:
            raise _unexpected_body(response, exc) from exc

    return parse


def _parse_json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError as exc:
        raise _unexpected_body(response, exc) from exc
    if not isinstance(value, dict):
        raise _unexpected_body(response, TypeError("expected a JSON object"))
    return value


def _parse_bytes(response: httpx.Response) -> bytes:
    return response.content


def _parse_nothing(response: httpx.Response) -> None:
    return None


def _unexpected_body(response: httpx.Response, exc: Exception) -> NexaError:
    # A 2xx body we cannot read means a proxy or a mismatched gateway version answered.
    where = f"{response.request.method} {response.request.url.path}"
    return NexaError(f"unexpected answer to {where} (HTTP {response.status_code}): {exc}")


def _segment(value: str) -> str:
    """Quote one path segment so an id can never reach another route."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty id string, got {value!r}")
    return quote(value, safe="")


def _enum_value(value: Enum | str) -> str:
    return value.value if isinstance(value, Enum) else str(value)


def _jsonable(value: Any) -> Any:
    """Pydantic models (dumped without their unset defaults), enums, paths and dates as JSON data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return to_jsonable_python(value)


def new_idempotency_key() -> str:
    """A fresh idempotency key for one logical submission."""
    return f"nexa-py-{uuid.uuid4().hex}"


def _idempotency_key(given: str | None, body: Mapping[str, Any]) -> str:
    """The key a submission carries: the one given, else the body's own, else a fresh one."""
    in_body = body.get("idempotency_key")
    if given is not None and in_body is not None and in_body != given:
        raise ValueError(f"two different idempotency keys given: {given!r} and spec {in_body!r}")
    return str(given or in_body or new_idempotency_key())


# ---------------------------------------------------------------- retries


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a request and how long to wait first."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    # A server asking for a longer pause than this gets an error the caller can see, not a silent hang.
    max_retry_after: float = 60.0
    jitter: Callable[[], float] = random.random

    def backoff(self, retries_done: int) -> float:
        """Exponential backoff with jitter: between half and all of ``base * 2**n``, capped."""
        ceiling = min(self.max_delay, self.base_delay * (2.0**retries_done))
        return ceiling / 2 + (ceiling / 2) * self.jitter()

    def delay_after_response(
        self, call: Call[Any], response: httpx.Response, retries_done: int
    ) -> float | None:
        """Seconds to wait before retrying after ``response``, or None to give up now."""
        if not call.retryable or retries_done >= self.max_retries:
            return None
        if response.status_code not in RETRY_STATUSES:
            return None
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return self.backoff(retries_done)

    def delay_after_error(
        self, call: Call[Any], error: httpx.TransportError, retries_done: int
    ) -> float | None:
        """Seconds to wait before retrying after a transport error, or None to give up now."""
        if not call.retryable or retries_done >= self.max_retries:
            return None
        if isinstance(error, httpx.NetworkError | httpx.TimeoutException | httpx.RemoteProtocolError):
            return self.backoff(retries_done)
        return None


# ---------------------------------------------------------------- the core


class ClientCore:
    """Configuration plus every decision the clients make; no I/O."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float,
        max_retries: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries=max_retries)
        self.headers = dict(headers or {})

    # ---- requests and answers

    def build_request(
        self, call: Call[Any], *, extra_headers: Mapping[str, str] | None = None
    ) -> httpx.Request:
        """The ``httpx.Request`` for ``call``; ConfigError when it needs a key and there is none."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        elif call.auth:
            raise ConfigError(NO_API_KEY_MESSAGE.format(path=config_path()))
        headers.update(call.headers)
        headers.update(extra_headers or {})
        return httpx.Request(
            call.method,
            self.base_url + call.path,
            params=tuple(call.params) or None,
            json=call.json,
            files=call.files,
            data=call.data,
            headers=headers,
            extensions={"timeout": httpx.Timeout(self.timeout).as_dict()},
        )

    def status_error(self, response: httpx.Response) -> APIStatusError:
        """The exception for a 4xx/5xx ``response`` (its body must have been read)."""
        status = response.status_code
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = response.text
        error_type, message, field_name, errors = _fallback_error_type(status), "", None, None
        if isinstance(body, dict):
            try:
                detail = ErrorBody.model_validate(body).error
            except PydanticValidationError:
                detail = None
            if detail is not None:
                error_type, message, field_name, errors = (
                    detail.type,
                    detail.message,
                    detail.field,
                    detail.errors,
                )
        if not message:
            message = (
                (body.strip()[:500] if isinstance(body, str) else "") or response.reason_phrase or "error"
            )
        kwargs: dict[str, Any] = {
            "status_code": status,
            "error_type": error_type,
            "field": field_name,
            "errors": errors,
            "body": body,
            "request_id": response.headers.get("x-request-id"),
        }
        cls = error_class_for(status)
        if cls is RateLimitError:
            return RateLimitError(
                message, retry_after=parse_retry_after(response.headers.get("retry-after")), **kwargs
            )
        return cls(message, **kwargs)

    def connection_error(self, request: httpx.Request, error: httpx.TransportError) -> APIConnectionError:
        """The exception for a transport failure that will not be retried (again)."""
        where = f"{request.method} {request.url}"
        if isinstance(error, httpx.TimeoutException):
            return APITimeoutError(
                f"timed out after {self.timeout}s talking to the gateway ({where}): {error}"
            )
        return APIConnectionError(
            f"cannot reach the Nexa gateway at {self.base_url} ({where}): {error or type(error).__name__}. "
            "Is it running? Start one with `nexa up` or set NEXA_BASE_URL."
        )

    # ---- jobs

    def submit(
        self, job_type: JobType | str, spec: JobOptions | Mapping[str, Any], idempotency_key: str | None
    ) -> Call[Job]:
        """Submit a job; the idempotency key (given or generated) makes every retry land on one job."""
        kind = JobType(_enum_value(job_type))
        body = _jsonable(spec)
        if not isinstance(body, dict):
            raise TypeError(f"spec must be a JobOptions model or a dict, not {type(spec).__name__}")
        return Call(
            "POST",
            f"/v1/{kind.value}",
            _model_parser(Job),
            json=body,
            headers={"Idempotency-Key": _idempotency_key(idempotency_key, body)},
            retryable=True,
        )

    def get_job(self, job_id: str) -> Call[Job]:
        return Call("GET", f"/v1/jobs/{_segment(job_id)}", _model_parser(Job), retryable=True)

    def list_jobs_page(
        self,
        *,
        job_type: JobType | str | None,
        status: JobState | str | None,
        labels: Mapping[str, str] | None,
        limit: int,
        cursor: str | None,
    ) -> Call[JobList]:
        params: list[tuple[str, str]] = [("limit", str(limit))]
        if job_type is not None:
            params.append(("type", _enum_value(job_type)))
        if status is not None:
            params.append(("status", _enum_value(status)))
        params.extend(("label", f"{k}={v}") for k, v in (labels or {}).items())
        if cursor:
            params.append(("cursor", cursor))
        return Call("GET", "/v1/jobs", _model_parser(JobList), params=params, retryable=True)

    def jobs_pager(
        self,
        *,
        job_type: JobType | str | None,
        status: JobState | str | None,
        labels: Mapping[str, str] | None,
        limit: int | None,
        page_size: int,
    ) -> Paginator[Job]:
        def page(size: int, cursor: str | None) -> Call[JobList]:
            return self.list_jobs_page(
                job_type=job_type, status=status, labels=labels, limit=size, cursor=cursor
            )

        return Paginator(page, limit=limit, page_size=page_size)

    def cancel_job(self, job_id: str) -> Call[Job]:
        # Cancelling is idempotent on the gateway (a cancelled job stays cancelled), so it may be retried.
        return Call("POST", f"/v1/jobs/{_segment(job_id)}/cancel", _model_parser(Job), retryable=True)

    def delete_job(self, job_id: str, *, force: bool) -> Call[Deletion]:
        return _deletion(f"/v1/jobs/{_segment(job_id)}", force)

    def job_events(self, job_id: str) -> Call[list[JobEvent]]:
        return Call(
            "GET", f"/v1/jobs/{_segment(job_id)}/events", _adapter_parser(_JOB_EVENTS), retryable=True
        )

    def job_logs(self, job_id: str, *, follow: bool, last_event_id: str | None) -> Call[None]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        return Call(
            "GET",
            f"/v1/jobs/{_segment(job_id)}/logs",
            _parse_nothing,
            params=[("follow", "true" if follow else "false")],
            headers=headers,
            retryable=True,
        )

    # ---- datasets and artifacts

    def upload_dataset(self, file: IO[bytes], filename: str, name: str | None) -> Call[Dataset]:
        return Call(
            "POST",
            "/v1/datasets",
            _model_parser(Dataset),
            files={"file": (filename, file, "application/octet-stream")},
            data={"name": name} if name else None,
        )

    def estimate(self, job_type: JobType | str, spec: JobOptions | Mapping[str, Any]) -> Call[CostEstimate]:
        kind = JobType(_enum_value(job_type))
        body = _jsonable(spec)
        if not isinstance(body, dict):
            raise TypeError(f"spec must be a JobOptions model or a dict, not {type(spec).__name__}")
        # Nothing is created: an estimate is safe to repeat.
        return Call(
            "POST", f"/v1/{kind.value}/estimate", _model_parser(CostEstimate), json=body, retryable=True
        )

    def billing_summary(self, start: datetime | None, end: datetime | None) -> Call[BillingSummary]:
        params = [(k, v.isoformat()) for k, v in (("start", start), ("end", end)) if v is not None]
        return Call(
            "GET", "/v1/billing/summary", _model_parser(BillingSummary), params=params, retryable=True
        )

    def list_workers(self) -> Call[WorkerList]:
        return Call("GET", "/v1/workers", _model_parser(WorkerList), retryable=True)

    def get_worker(self, worker_id: str) -> Call[WorkerInfo]:
        return Call("GET", f"/v1/workers/{_segment(worker_id)}", _model_parser(WorkerInfo), retryable=True)

    def worker_action(self, worker_id: str, action: str, reason: str) -> Call[WorkerInfo]:
        body = {"reason": reason} if action != "resume" else None
        # Idempotent on the server (draining a drained node, revoking a revoked one's refusal is 409).
        return Call(
            "POST",
            f"/v1/workers/{_segment(worker_id)}/{action}",
            _model_parser(WorkerInfo),
            json=body,
            retryable=action != "revoke",
        )

    def job_verification(self, job_id: str) -> Call[VerificationStatus]:
        return Call(
            "GET",
            f"/v1/jobs/{_segment(job_id)}/verification",
            _model_parser(VerificationStatus),
            retryable=True,
        )

    def node_credits(self, worker_id: str, history: int) -> Call[NodeCredits]:
        return Call(
            "GET",
            f"/v1/credits/{_segment(worker_id)}",
            _model_parser(NodeCredits),
            params=[("history", str(history))],
            retryable=True,
        )

    def leaderboard(self, limit: int) -> Call[Leaderboard]:
        return Call(
            "GET",
            "/v1/leaderboard",
            _model_parser(Leaderboard),
            params=[("limit", str(limit))],
            retryable=True,
        )

    def leaderboard_csv(self, limit: int) -> Call[str]:
        return Call(
            "GET",
            "/v1/leaderboard",
            lambda response: response.text,
            params=[("limit", str(limit)), ("format", "csv")],
            retryable=True,
        )

    def budget(self) -> Call[TenantBudget]:
        return Call("GET", "/v1/billing/budget", _model_parser(TenantBudget), retryable=True)

    def job_cost(self, job_id: str) -> Call[JobCost]:
        return Call("GET", f"/v1/jobs/{_segment(job_id)}/cost", _model_parser(JobCost), retryable=True)

    def price_book(self) -> Call[PriceBook]:
        return Call("GET", "/v1/billing/prices", _model_parser(PriceBook), retryable=True)

    def upload_model(self, archive: IO[bytes], filename: str, name: str | None) -> Call[UploadedModel]:
        return Call(
            "POST",
            "/v1/models",
            _model_parser(UploadedModel),
            files={"file": (filename, archive, "application/x-tar")},
            data={"name": name} if name else None,
        )

    def list_datasets_page(self, *, limit: int, cursor: str | None) -> Call[DatasetList]:
        params = [("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
        return Call("GET", "/v1/datasets", _model_parser(DatasetList), params=params, retryable=True)

    def datasets_pager(self, *, limit: int | None, page_size: int) -> Paginator[Dataset]:
        def page(size: int, cursor: str | None) -> Call[DatasetList]:
            return self.list_datasets_page(limit=size, cursor=cursor)

        return Paginator(page, limit=limit, page_size=page_size)

    def get_dataset(self, dataset_id: str) -> Call[Dataset]:
        return Call("GET", f"/v1/datasets/{_segment(dataset_id)}", _model_parser(Dataset), retryable=True)

    def delete_dataset(self, dataset_id: str, *, force: bool) -> Call[Deletion]:
        return _deletion(f"/v1/datasets/{_segment(dataset_id)}", force)

    def list_artifacts_page(self, *, kind: str | None, limit: int, cursor: str | None) -> Call[ArtifactList]:
        params = [("limit", str(limit))]
        if kind is not None:
            params.append(("kind", kind))
        if cursor:
            params.append(("cursor", cursor))
        return Call("GET", "/v1/artifacts", _model_parser(ArtifactList), params=params, retryable=True)

    def artifacts_pager(
        self, *, kind: str | None, limit: int | None, page_size: int
    ) -> Paginator[ArtifactInfo]:
        def page(size: int, cursor: str | None) -> Call[ArtifactList]:
            return self.list_artifacts_page(kind=kind, limit=size, cursor=cursor)

        return Paginator(page, limit=limit, page_size=page_size)

    def get_artifact(self, artifact_id: str) -> Call[ArtifactInfo]:
        return Call(
            "GET", f"/v1/artifacts/{_segment(artifact_id)}", _model_parser(ArtifactInfo), retryable=True
        )

    def artifact_dependents(self, artifact_id: str) -> Call[ArtifactDependents]:
        return Call(
            "GET",
            f"/v1/artifacts/{_segment(artifact_id)}/dependents",
            _model_parser(ArtifactDependents),
            retryable=True,
        )

    def delete_artifact(self, artifact_id: str, *, force: bool) -> Call[Deletion]:
        return _deletion(f"/v1/artifacts/{_segment(artifact_id)}", force)

    def read_artifact_file(self, artifact_id: str, path: str) -> Call[bytes]:
        relative = path.lstrip("/")
        if not relative or any(part in ("", ".", "..") for part in relative.split("/")):
            raise ValueError(f"not a file path inside an artifact: {path!r}")
        return Call(
            "GET",
            f"/v1/artifacts/{_segment(artifact_id)}/files/{quote(relative, safe='/')}",
            _parse_bytes,
            headers={"Accept": "*/*"},
            retryable=True,
        )

    # ---- keys and health

    def create_key(
        self, name: str, expires_in_days: int | None, role: Role = Role.member
    ) -> Call[ApiKeyCreated]:
        body = ApiKeyCreate(name=name, expires_in_days=expires_in_days, role=role).model_dump(mode="json")
        return Call("POST", "/v1/keys", _model_parser(ApiKeyCreated), json=body)

    def list_keys(self) -> Call[list[ApiKeyInfo]]:
        return Call("GET", "/v1/keys", _adapter_parser(_KEY_INFOS), retryable=True)

    def revoke_key(self, key_id: str) -> Call[ApiKeyInfo]:
        return Call("DELETE", f"/v1/keys/{_segment(key_id)}", _model_parser(ApiKeyInfo), retryable=True)

    def health(self) -> Call[dict[str, Any]]:
        return Call("GET", "/readyz", _parse_json_object, retryable=True, auth=False)

    # ---- webhooks

    def create_webhook(
        self, url: str, events: Sequence[WebhookEventType | str], description: str
    ) -> Call[WebhookEndpointCreated]:
        body = WebhookCreate(
            url=url, events=[WebhookEventType(e) for e in events], description=description
        ).model_dump(mode="json")
        return Call("POST", "/v1/webhooks", _model_parser(WebhookEndpointCreated), json=body)

    def list_webhooks(self) -> Call[list[WebhookEndpoint]]:
        return Call("GET", "/v1/webhooks", _adapter_parser(_WEBHOOKS), retryable=True)

    def get_webhook(self, webhook_id: str) -> Call[WebhookEndpoint]:
        return Call(
            "GET", f"/v1/webhooks/{_segment(webhook_id)}", _model_parser(WebhookEndpoint), retryable=True
        )

    def delete_webhook(self, webhook_id: str) -> Call[WebhookEndpoint]:
        return Call(
            "DELETE", f"/v1/webhooks/{_segment(webhook_id)}", _model_parser(WebhookEndpoint), retryable=True
        )

    def enable_webhook(self, webhook_id: str) -> Call[WebhookEndpoint]:
        path = f"/v1/webhooks/{_segment(webhook_id)}/enable"
        return Call("POST", path, _model_parser(WebhookEndpoint), retryable=True)

    def webhook_deliveries(
        self, webhook_id: str, status: str | None, limit: int
    ) -> Call[WebhookDeliveryList]:
        params = [("limit", str(limit))] + ([("status", status)] if status else [])
        path = f"/v1/webhooks/{_segment(webhook_id)}/deliveries"
        return Call("GET", path, _model_parser(WebhookDeliveryList), params=params, retryable=True)

    def redeliver_webhook(self, webhook_id: str, delivery_id: str) -> Call[WebhookDelivery]:
        path = f"/v1/webhooks/{_segment(webhook_id)}/deliveries/{_segment(delivery_id)}/redeliver"
        return Call("POST", path, _model_parser(WebhookDelivery))

    def test_webhook(self, webhook_id: str) -> Call[WebhookDelivery]:
        return Call("POST", f"/v1/webhooks/{_segment(webhook_id)}/test", _model_parser(WebhookDelivery))

    def audit_log(
        self,
        *,
        before: int | None,
        limit: int,
        action: str | None,
        actor: str | None,
        since: datetime | None,
        tenant: str | None,
    ) -> Call[AuditLogPage]:
        params = [("limit", str(limit))]
        for name, value in (("before", before), ("action", action), ("actor", actor), ("tenant", tenant)):
            if value is not None:
                params.append((name, str(value)))
        if since is not None:
            params.append(("since", since.isoformat()))
        return Call("GET", "/v1/audit-log", _model_parser(AuditLogPage), params=params, retryable=True)

    # ---- pipelines and lineage

    def create_pipeline(
        self, spec: PipelineSpec | Mapping[str, Any], idempotency_key: str | None
    ) -> Call[Pipeline]:
        """Submit a pipeline; like a job submission, every retry carries one idempotency key."""
        body = _jsonable(spec)
        if not isinstance(body, dict):
            raise TypeError(f"spec must be a PipelineSpec or a dict, not {type(spec).__name__}")
        return Call(
            "POST",
            "/v1/pipelines",
            _model_parser(Pipeline),
            json=body,
            headers={"Idempotency-Key": _idempotency_key(idempotency_key, body)},
            retryable=True,
        )

    def get_pipeline(self, pipeline_id: str) -> Call[Pipeline]:
        return Call("GET", f"/v1/pipelines/{_segment(pipeline_id)}", _model_parser(Pipeline), retryable=True)

    def list_pipelines_page(
        self,
        *,
        status: PipelineState | str | None,
        name: str | None,
        labels: Mapping[str, str] | None,
        limit: int,
        cursor: str | None,
    ) -> Call[PipelineList]:
        params: list[tuple[str, str]] = [("limit", str(limit))]
        if status is not None:
            params.append(("status", _enum_value(status)))
        if name is not None:
            params.append(("name", name))
        params.extend(("label", f"{k}={v}") for k, v in (labels or {}).items())
        if cursor:
            params.append(("cursor", cursor))
        return Call("GET", "/v1/pipelines", _model_parser(PipelineList), params=params, retryable=True)

    def pipelines_pager(
        self,
        *,
        status: PipelineState | str | None,
        name: str | None,
        labels: Mapping[str, str] | None,
        limit: int | None,
        page_size: int,
    ) -> Paginator[Pipeline]:
        def page(size: int, cursor: str | None) -> Call[PipelineList]:
            return self.list_pipelines_page(
                status=status, name=name, labels=labels, limit=size, cursor=cursor
            )

        return Paginator(page, limit=limit, page_size=page_size)

    def cancel_pipeline(self, pipeline_id: str) -> Call[Pipeline]:
        # Cancelling a cancelled pipeline leaves it cancelled: safe to retry.
        path = f"/v1/pipelines/{_segment(pipeline_id)}/cancel"
        return Call("POST", path, _model_parser(Pipeline), retryable=True)

    def resume_pipeline(self, pipeline_id: str) -> Call[Pipeline]:
        # Not retried: a repeat after a lost answer finds it running (409 pipeline_not_resumable).
        return Call("POST", f"/v1/pipelines/{_segment(pipeline_id)}/resume", _model_parser(Pipeline))

    def approve_step(self, pipeline_id: str, step: str) -> Call[Pipeline]:
        # Not retried: a repeat after a lost answer finds the step started (409 step_not_waiting).
        path = f"/v1/pipelines/{_segment(pipeline_id)}/steps/{_segment(step)}/approve"
        return Call("POST", path, _model_parser(Pipeline))

    def pipeline_events(self, pipeline_id: str, *, follow: bool, after: int | None) -> Call[None]:
        params = [("follow", "true" if follow else "false")]
        if after is not None:
            params.append(("after", str(after)))
        return Call(
            "GET",
            f"/v1/pipelines/{_segment(pipeline_id)}/events",
            _parse_nothing,
            params=params,
            headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
            retryable=True,
        )

    def lineage(self, artifact_id: str, direction: LineageDirection | str, depth: int) -> Call[Lineage]:
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be up, down or both, not {direction!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a whole number >= 0, not {depth!r}")
        return Call(
            "GET",
            f"/v1/artifacts/{_segment(artifact_id)}/lineage",
            _model_parser(Lineage),
            params=[("direction", direction), ("depth", str(depth))],
            retryable=True,
        )


def _deletion(path: str, force: bool) -> Call[Deletion]:
    # Retried on 503 (the gateway stored nothing) and lost connections; a retry after an answer that
    # was lost finds the object gone: 404.
    params = [("force", "true")] if force else []
    return Call("DELETE", path, _model_parser(Deletion), params=params, retryable=True)


def _fallback_error_type(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "validation_error",
        429: "rate_limited",
    }.get(status, "server_error" if status >= 500 else "http_error")


def job_options(base: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """A spec dict for a convenience method: its named arguments plus ``**options``.

    A named argument left at None is left out, so the server's default applies.
    """
    clash = sorted(set(base) & set(options))
    if clash:
        raise TypeError(f"argument given twice: {', '.join(clash)}")
    return {**options, **{k: v for k, v in base.items() if v is not None}}


# ---------------------------------------------------------------- pagination


class Page(Protocol[ItemT_co]):
    """What every list answer looks like: ``items`` and the cursor of the next page."""

    @property
    def items(self) -> Sequence[ItemT_co]: ...

    @property
    def next_cursor(self) -> str | None: ...


class Paginator(Generic[ItemT]):
    """Walks ``next_cursor`` page by page and stops after ``limit`` items (None: all of them)."""

    def __init__(
        self,
        page_call: Callable[[int, str | None], Call[Page[ItemT]]],
        *,
        limit: int | None,
        page_size: int,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        self._page_call = page_call
        self._limit = limit
        self._page_size = page_size
        self._cursor: str | None = None
        self._count = 0
        self._done = False

    def _wanted(self) -> int:
        if self._limit is None:
            return self._page_size
        return min(self._page_size, self._limit - self._count)

    def next_call(self) -> Call[Page[ItemT]] | None:
        """The request for the next page, or None when there is nothing more to fetch."""
        if self._done or self._wanted() <= 0:
            return None
        return self._page_call(self._wanted(), self._cursor)

    def take(self, page: Page[ItemT]) -> list[ItemT]:
        """The items of ``page`` to hand out, remembering where the next page starts."""
        items = list(page.items)[: self._wanted()]
        self._count += len(items)
        if page.next_cursor and page.items:
            self._cursor = page.next_cursor
        else:
            self._done = True
        return items


# ---------------------------------------------------------------- waiting


@dataclass
class WaitState:
    """Decides, poll after poll, what ``wait()`` reports, when it sleeps, and how it ends."""

    timeout: float | None
    poll_interval: float
    raise_on_failure: bool
    started: float
    last_seen: tuple[Any, ...] | None = None

    def changed(self, job: Job) -> bool:
        """True when ``job`` differs from the previous poll in a way a user would notice."""
        seen = (job.status, job.progress, job.progress_message, job.attempts, len(job.events))
        changed = seen != self.last_seen
        self.last_seen = seen
        return changed

    def next_delay(self, handle: BaseJobHandle, now: float) -> float | None:
        """Seconds to sleep before the next poll, or None when ``handle`` is the answer.

        Raises JobFailedError / JobCancelledError for a job that ended badly (when asked
        to) and WaitTimeoutError once the timeout has run out.
        """
        job = handle.model
        if job.status.terminal:
            if self.raise_on_failure and job.status is JobState.failed:
                raise JobFailedError(failure_message(job), job=handle)
            if self.raise_on_failure and job.status is JobState.cancelled:
                raise JobCancelledError(failure_message(job), job=handle)
            return None
        if self.timeout is None:
            return self.poll_interval
        left = self.timeout - (now - self.started)
        if left <= 0:
            raise WaitTimeoutError(
                f"job {job.job_id} still {job.status.value} after {self.timeout}s "
                f"(progress {job.progress:.0%}); it keeps running: wait again or cancel it",
                job=handle,
            )
        return min(self.poll_interval, left)


@dataclass
class PipelineWaitState:
    """Decides, poll after poll, when ``wait_pipeline()`` returns and how long it sleeps first."""

    timeout: float | None
    poll_interval: float
    until_waiting: bool
    started: float

    def next_delay(self, pipeline: Pipeline, now: float) -> float | None:
        """Seconds to sleep before the next poll, or None when ``pipeline`` is the answer: terminal, or
        ``waiting`` (only approvals left) when asked to stop there. Raises PipelineWaitTimeoutError
        once the timeout has run out."""
        if pipeline.status.terminal:
            return None
        if self.until_waiting and pipeline.status is PipelineState.waiting:
            return None
        if self.timeout is None:
            return self.poll_interval
        left = self.timeout - (now - self.started)
        if left <= 0:
            done = sum(1 for step in pipeline.steps if step.status.done)
            raise PipelineWaitTimeoutError(
                f"pipeline {pipeline.pipeline_id} still {pipeline.status.value} after {self.timeout}s "
                f"({done}/{len(pipeline.steps)} steps done); it keeps going: wait again or cancel it",
                pipeline=pipeline,
            )
        return min(self.poll_interval, left)


def failure_message(job: Job) -> str:
    """What a JobFailedError / JobCancelledError says."""
    if job.status is JobState.cancelled:
        return f"job {job.job_id} ({job.job_type.value}) was cancelled"
    reason = f"{job.error.code}: {job.error.message}" if job.error else "no reason recorded"
    return f"job {job.job_id} ({job.job_type.value}) failed after {job.attempts} attempt(s): {reason}"


# ---------------------------------------------------------------- following logs


class LogFollower:
    """State of one ``logs()`` iteration across reconnects: resume point, dedup, end, give-up.

    The clients loop: send ``call()``, pass every received chunk to ``feed()``,
    yield what it returns, stop when ``ended``; when the stream closes or breaks,
    ask ``reconnect_delay()`` whether and when to open it again.
    """

    def __init__(self, core: ClientCore, job_id: str, *, follow: bool, last_event_id: int | None) -> None:
        self.core = core
        self.job_id = job_id
        self.follow = follow
        self.last_seq: int | None = last_event_id
        self.ended = False
        self.end_status: str | None = None
        self._failures = 0
        self._got_bytes = False
        self._server_retry_ms: int | None = None
        self._new_stream()

    def _new_stream(self) -> None:
        self._parser = SSEParser()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._got_bytes = False

    def call(self) -> Call[None]:
        """The request that opens (or reopens) the stream at the right place."""
        self._new_stream()
        resume = None if self.last_seq is None else str(self.last_seq)
        return self.core.job_logs(self.job_id, follow=self.follow, last_event_id=resume)

    def feed(self, chunk: bytes) -> list[LogLine]:
        """New lines in ``chunk``, without any line already delivered."""
        if chunk:
            self._got_bytes = True
        lines: list[LogLine] = []
        for event in self._parser.feed(self._decoder.decode(chunk)):
            if event.event == "end":
                self.ended = True
                self.end_status = _end_status(event.data)
                break
            if event.event not in ("log", "message"):
                continue
            try:
                line = LogLine.model_validate_json(event.data)
            except PydanticValidationError as exc:
                raise NexaError(f"unreadable log event for job {self.job_id}: {exc}") from exc
            # The gateway resumes after Last-Event-ID; this guard also holds if a proxy replays.
            if self.last_seq is not None and line.seq <= self.last_seq:
                continue
            self.last_seq = line.seq
            self._failures = 0
            lines.append(line)
        if self._parser.retry is not None:
            self._server_retry_ms = self._parser.retry
        return lines

    def reconnect_delay(self, error: httpx.TransportError | None) -> float | None:
        """After the stream closed (cleanly, or with ``error``): seconds before reopening, or None to stop.

        Raises APIConnectionError once the stream keeps breaking without delivering anything.
        """
        if self.ended:
            return None
        if error is None and not self.follow:
            return None  # follow=False: a clean close means every stored line was sent
        if error is not None or not self._got_bytes:
            self._failures += 1
        if self._failures > max(self.core.retry.max_retries, 1) + 2:
            detail = f": {error}" if error else ""
            raise APIConnectionError(
                f"log stream for job {self.job_id} keeps closing after line {self.last_seq}{detail}"
            )
        if self._server_retry_ms is not None:
            return self._server_retry_ms / 1000
        return self.core.retry.backoff(max(self._failures - 1, 0)) if self._failures else 0.0


_PIPELINE_EVENT_KINDS = frozenset(kind.value for kind in PipelineEventKind)
_PIPELINE_END_KINDS = frozenset(
    {PipelineEventKind.completed, PipelineEventKind.failed, PipelineEventKind.cancelled}
)


class PipelineEventFollower:
    """State of one ``pipeline_events()`` iteration across reconnects: resume point, dedup, end.

    Used like ``LogFollower``. The gateway closes a followed stream once the pipeline is terminal,
    so a clean close after a terminal event (completed, failed, cancelled) ends the iteration; any
    other close is a dropped connection, reopened ``after`` the last event handed out.
    """

    def __init__(self, core: ClientCore, pipeline_id: str, *, follow: bool, after: int | None) -> None:
        self.core = core
        self.pipeline_id = pipeline_id
        self.follow = follow
        self.last_seq: int | None = after
        self.ended = False
        self._at_end = False  # the last event handed out ends the pipeline (until a `resumed`)
        self._failures = 0
        self._got_bytes = False
        self._server_retry_ms: int | None = None
        self._new_stream()

    def _new_stream(self) -> None:
        self._parser = SSEParser()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._got_bytes = False

    def call(self) -> Call[None]:
        """The request that opens (or reopens) the stream after the last event handed out."""
        self._new_stream()
        return self.core.pipeline_events(self.pipeline_id, follow=self.follow, after=self.last_seq)

    def feed(self, chunk: bytes) -> list[PipelineEvent]:
        """New events in ``chunk``, without any already delivered (or of a kind this SDK does not know)."""
        if chunk:
            self._got_bytes = True
        events: list[PipelineEvent] = []
        for raw in self._parser.feed(self._decoder.decode(chunk)):
            if raw.event == "end":
                self.ended = True
                break
            if raw.event != "message" and raw.event not in _PIPELINE_EVENT_KINDS:
                continue  # a kind added after this SDK: skipped, not an error
            try:
                event = PipelineEvent.model_validate_json(raw.data)
            except PydanticValidationError as exc:
                raise NexaError(f"unreadable event for pipeline {self.pipeline_id}: {exc}") from exc
            if self.last_seq is not None and event.seq <= self.last_seq:
                continue
            self.last_seq = event.seq
            self._failures = 0
            self._at_end = event.kind in _PIPELINE_END_KINDS
            events.append(event)
        if self._parser.retry is not None:
            self._server_retry_ms = self._parser.retry
        return events

    def reconnect_delay(self, error: httpx.TransportError | None) -> float | None:
        """After the stream closed (cleanly, or with ``error``): seconds before reopening, or None to stop.

        Raises APIConnectionError once the stream keeps breaking without delivering anything.
        """
        if self.ended:
            return None
        if error is None and (not self.follow or self._at_end):
            return None
        if error is not None or not self._got_bytes:
            self._failures += 1
        if self._failures > max(self.core.retry.max_retries, 1) + 2:
            detail = f": {error}" if error else ""
            raise APIConnectionError(
                f"event stream of pipeline {self.pipeline_id} keeps closing after event {self.last_seq}{detail}"
            )
        if self._server_retry_ms is not None:
            return self._server_retry_ms / 1000
        return self.core.retry.backoff(max(self._failures - 1, 0)) if self._failures else 0.0


def _end_status(data: str) -> str | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    status = value.get("status") if isinstance(value, dict) else None
    return status if isinstance(status, str) else None


def _is_local_file_reference(value: str) -> bool:
    """A path only this machine can read: relative (``./data.parquet``) or ``~/…``, naming a file here.

    The server never reads those (a relative path means nothing there), so the SDK uploads the
    file and sends its ``ds_…`` id instead. Absolute paths are the server's to judge (a local
    Nexa reads them where its tenant is granted the directory).
    """
    if not value or "://" in value or value.startswith(("ds_", "/")) or ":" in value.split("/")[0]:
        return False
    return Path(value).expanduser().is_file()


def _is_local_model_reference(value: str) -> bool:
    """A model directory only this machine has: relative (``./my-model``) or ``~/…``, with a config.json.

    Uploaded and sent as its ``ckpt_…`` id, so it is loaded as the local model it is and
    never looked up on the hub under the same name.
    """
    if not value or "://" in value or value.startswith("/") or ":" in value.split("/")[0]:
        return False
    return (Path(value).expanduser() / "config.json").is_file()


def _typed_request(
    job_type: JobType | str, spec: JobOptions | Mapping[str, Any]
) -> tuple[dict[str, Any], JobOptions] | None:
    """The request body and its typed spec; None when it does not validate (the server says why)."""
    body = _jsonable(spec)
    if not isinstance(body, dict):
        return None
    try:
        return body, spec_for(JobType(_enum_value(job_type)), body)
    except (ValueError, PydanticValidationError):
        return None


def local_model_dirs(job_type: JobType | str, spec: JobOptions | Mapping[str, Any]) -> dict[str, Path]:
    """The request's model and teacher fields that name a model directory on this machine, by body key."""
    parsed = _typed_request(job_type, spec)
    if parsed is None:
        return {}
    body, typed = parsed
    return {
        ref.field: Path(ref.value).expanduser()
        for ref in job_references(typed)
        if ref.kind in ("model", "teacher")
        and "." not in ref.field
        and body.get(ref.field) == ref.value
        and _is_local_model_reference(ref.value)
    }


def model_archive(directory: Path, out: IO[bytes]) -> list[str]:
    """Write ``directory`` as the tar ``POST /v1/models`` takes; the files it holds.

    Links are followed (a Hugging Face cache snapshot is links into its blobs); hidden
    entries are left out, and so are files the server refuses (pickled weights, code)
    when safetensors weights are there to load instead.
    """
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    has_safetensors = any(p.suffix == ".safetensors" for p in files)
    kept = [p for p in files if not (has_safetensors and p.suffix.lower() in MODEL_UPLOAD_REFUSED_SUFFIXES)]
    with tarfile.open(fileobj=out, mode="w", dereference=True) as tar:
        for path in kept:
            tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return [p.relative_to(directory).as_posix() for p in kept]


def local_dataset_files(job_type: JobType | str, spec: JobOptions | Mapping[str, Any]) -> dict[str, Path]:
    """The request's dataset fields that name a file on this machine, by body key: these get uploaded."""
    parsed = _typed_request(job_type, spec)
    if parsed is None:
        return {}
    body, typed = parsed
    found: dict[str, Path] = {}
    for ref in job_references(typed):
        if ref.kind != "dataset" or "." in ref.field or not _is_local_file_reference(ref.value):
            continue
        for key in (ref.field, "dataset_id", "dataset_uri"):
            if body.get(key) == ref.value:
                found[key] = Path(ref.value).expanduser()
                break
    return found


def with_uploaded(spec: JobOptions | Mapping[str, Any], uploaded: Mapping[str, str]) -> dict[str, Any]:
    """The request body with each uploaded file's field set to its new dataset id."""
    body = _jsonable(spec)
    assert isinstance(body, dict)
    return {**body, **uploaded}
