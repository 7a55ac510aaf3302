"""The cluster backend: jobs are NexaJob resources in the tenant's namespace, run by the operator.

Everything above ``JobBackend`` is unchanged: the same routes, bodies and errors
as standalone mode. A job id ``job_<26>`` is the NexaJob ``job-<26>``; a submission
with an idempotency key gets a name derived from (tenant, key), so two racing
repeats create one NexaJob and the second sees ``AlreadyExists``. Logs are the
attempts' pod logs, one SSE event per line, numbered across attempts so
``Last-Event-ID`` resumes where the client stopped.

Engine pods read S3 credentials from a Secret in their own namespace; when
``kube_s3_secret`` is set, the gateway copies that Secret from its namespace into
each tenant namespace it ensures, and rewrites the copy (rotated credentials reach
a namespace the next time a job is submitted there after ``_ENSURE_SECONDS``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from nexa.contracts import (
    TERMINAL_STATES,
    ContainerSpec,
    ErrorCode,
    Job,
    JobError,
    JobEvent,
    JobOptions,
    JobState,
    JobType,
)
from nexa.contracts.billing import CostEstimate
from nexa.contracts.nexajob import (
    GROUP,
    LABEL_ATTEMPT,
    LABEL_IDEMPOTENCY,
    LABEL_JOB_TYPE,
    LABEL_MANAGED_BY,
    LABEL_NEXAJOB,
    NEXAJOB_PLURAL,
    PHASE_STATES,
    TERMINAL_PHASES,
    VERSION,
    job_id_of,
    nexajob_object,
    nexajob_payload,
    resource_name,
    tenant_namespace,
)
from nexa.ids import derived_id, is_id, new_id
from nexa_gateway.db import JobEstimate
from nexa_gateway.errors import ApiError, conflict, not_found
from nexa_gateway.services.artifacts import check_job_inputs
from nexa_gateway.services.grants import tenant_access
from nexa_gateway.services.jobs import spec_hash
from nexa_gateway.services.logstream import format_event
from nexa_gateway.state import AppState

SPEC_HASH_ANNOTATION = "nexa.run/spec-hash"
IDEMPOTENCY_ANNOTATION = "nexa.run/idempotency-key"
COPIED_FROM_ANNOTATION = "nexa.run/copied-from"
MANAGER = "nexa-gateway"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# An ensured namespace is trusted this long; re-ensuring then carries rotated S3 credentials over.
_ENSURE_SECONDS = 300.0
_KEEPALIVE_SECONDS = 15.0


def own_namespace(explicit: str | None) -> str | None:
    """The gateway's namespace: the configured one, else the pod's service-account namespace."""
    if explicit:
        return explicit
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def idempotent_job_id(tenant_id: str, key: str) -> str:
    """The job id a (tenant, idempotency key) pair always maps to."""
    return derived_id("job", tenant_id, key)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def job_from_nexajob(obj: dict[str, Any]) -> Job:
    """The API's ``Job`` for a NexaJob resource (a cancel that was asked for reads as cancelled)."""
    meta = obj["metadata"]
    spec = obj["spec"]
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    state = JobState(PHASE_STATES.get(phase, "pending"))
    if spec.get("cancel") and phase not in TERMINAL_PHASES:
        state = JobState.cancelled
    created = _time(meta.get("creationTimestamp")) or datetime.now(UTC)
    conditions = sorted(
        status.get("conditions") or [],
        key=lambda c: (str(c.get("lastTransitionTime") or ""), c.get("type", "")),
    )
    events = [
        JobEvent(
            seq=i + 1,
            at=_time(cond.get("lastTransitionTime")) or created,
            kind=str(cond.get("reason") or cond.get("type")),
            message=str(cond.get("message") or ""),
            attempt=int(status.get("attempts") or 0),
        )
        for i, cond in enumerate(c for c in conditions if c.get("status") == "True")
    ]
    times = [created, *(e.at for e in events)]
    finished = _time(status.get("completionTime"))
    if finished:
        times.append(finished)
    error = status.get("error")
    job_type, payload = nexajob_payload(spec)
    return Job(
        job_id=job_id_of(meta["name"]),
        job_type=job_type,
        user_id=spec.get("tenant"),
        status=state,
        created_at=created,
        updated_at=max(times),
        started_at=_time(status.get("startTime")),
        finished_at=finished,
        result=status.get("result"),
        logs_uri=f"/v1/jobs/{job_id_of(meta['name'])}/logs",
        artifacts_uri=status.get("artifactsUri"),
        error=JobError(**error) if isinstance(error, dict) else None,
        progress=float(status.get("progress") or 0.0),
        progress_message=status.get("progressMessage"),
        attempts=int(status.get("attempts") or 0),
        max_retries=int(payload.get("max_retries", 2)),
        priority=int(payload.get("priority", 0)),
        labels=dict(payload.get("labels") or {}),
        metadata=dict(payload.get("metadata") or {}),
        spec=payload,
        events=events,
    )


def _encode_cursor(created: str, name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created, name]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, name = json.loads(raw)
        return str(created), str(name)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ApiError(400, "bad_request", "cursor is not one this API returned", field="cursor") from exc


class KubernetesJobBackend:
    """``JobBackend`` over NexaJob custom resources (cluster mode)."""

    def __init__(
        self,
        state: AppState,
        *,
        namespace_prefix: str = "nexa-",
        kubeconfig: str | None = None,
        create_namespaces: bool = True,
        api_client: Any = None,
        s3_secret: str | None = None,
        home_namespace: str | None = None,
    ) -> None:
        from kubernetes import client, config

        self.state = state
        self.prefix = namespace_prefix
        self.create_namespaces = create_namespaces
        # main.py builds the backend from the settings; the explicit arguments are for tests.
        self.s3_secret = s3_secret or state.settings.kube_s3_secret
        self.home_namespace = own_namespace(home_namespace or state.settings.kube_namespace)
        if self.s3_secret and not self.home_namespace:
            raise ValueError(
                "NEXA_KUBE_S3_SECRET is set but the gateway's own namespace is unknown: set NEXA_KUBE_NAMESPACE"
            )
        if api_client is None:
            if kubeconfig:
                api_client = config.new_client_from_config(config_file=kubeconfig)
            else:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
                api_client = client.ApiClient()
        self._api_client = api_client
        # Plain dicts in and out: the client's typed models add nothing here.
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.core: Any = client.CoreV1Api(api_client)
        self._namespaces: dict[str, float] = {}  # namespace -> monotonic time it was last ensured

    # --- helpers -------------------------------------------------------------------------

    def _api_error(self, exc: Exception, what: str) -> ApiError:
        status = getattr(exc, "status", None)
        return ApiError(
            503,
            "cluster_unavailable",
            f"the Kubernetes API refused to {what} ({status}: {getattr(exc, 'reason', exc)})",
        )

    def _namespace(self, tenant_id: str) -> str:
        return tenant_namespace(self.prefix, tenant_id)

    def _ensure_namespace(self, namespace: str) -> None:
        """Make the tenant namespace ready for jobs: created (if allowed) and holding the S3 Secret."""
        ensured = self._namespaces.get(namespace)
        if ensured is not None and time.monotonic() - ensured < _ENSURE_SECONDS:
            return
        if self.create_namespaces:
            self._create_namespace(namespace)
        if self.s3_secret and namespace != self.home_namespace:
            self._copy_s3_secret(namespace)
        self._namespaces[namespace] = time.monotonic()

    def _create_namespace(self, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.create_namespace(
                {"metadata": {"name": namespace, "labels": {LABEL_MANAGED_BY: MANAGER}}}
            )
        except ApiException as exc:
            if exc.status != 409:
                raise self._api_error(exc, f"create namespace {namespace}") from exc

    def _copy_s3_secret(self, namespace: str) -> None:
        """Create the S3 Secret's copy in ``namespace``, or overwrite the copy that is there.

        The copy is overwritten without reading it first: the gateway may create and update
        that one Secret name in tenant namespaces but never read it there, so it cannot mint
        and read back a service-account token through a Secret of the same name.
        """
        from kubernetes.client.exceptions import ApiException

        name, home = str(self.s3_secret), str(self.home_namespace)
        try:
            source = self.core.read_namespaced_secret(name, home)
        except ApiException as exc:
            raise self._api_error(exc, f"read Secret {home}/{name}") from exc
        body: dict[str, Any] = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {LABEL_MANAGED_BY: MANAGER},
                "annotations": {COPIED_FROM_ANNOTATION: f"{home}/{name}"},
            },
            "type": source.type or "Opaque",
            "data": dict(source.data or {}),
        }
        try:
            self.core.create_namespaced_secret(namespace, body)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise self._api_error(exc, f"copy Secret {name} into {namespace}") from exc
        try:
            self.core.replace_namespaced_secret(name, namespace, body)
        except ApiException as exc:
            # 409: another gateway replica rewrote it at the same moment, from the same source.
            if exc.status != 409:
                raise self._api_error(exc, f"update Secret {namespace}/{name}") from exc

    def _read(self, tenant_id: str, job_id: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        if not is_id(job_id, "job"):
            raise not_found("job", job_id)
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self._namespace(tenant_id), NEXAJOB_PLURAL, resource_name(job_id)
            )
        except ApiException as exc:
            if exc.status == 404:
                raise not_found("job", job_id) from exc
            raise self._api_error(exc, "read the job") from exc
        if obj["spec"].get("tenant") != tenant_id:
            raise not_found("job", job_id)
        return obj

    # --- JobBackend ------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the API client's connection pool."""
        await run_in_threadpool(self._api_client.close)

    async def submit(
        self,
        tenant_id: str,
        job_type: JobType,
        spec: JobOptions,
        idempotency_key: str | None,
        estimate: CostEstimate | None = None,
    ) -> tuple[Job, bool]:
        """Create a NexaJob (True) or return the one this idempotency key already made (False)."""
        job, created = await run_in_threadpool(self._submit, tenant_id, job_type, spec, idempotency_key)
        if created and estimate is not None:
            await run_in_threadpool(self._keep_estimate, tenant_id, job.job_id, estimate)
        return job, created

    def _keep_estimate(self, tenant_id: str, job_id: str, estimate: CostEstimate) -> None:
        with self.state.db.session() as session:
            session.merge(
                JobEstimate(job_id=job_id, tenant_id=tenant_id, estimate=estimate.model_dump(mode="json"))
            )

    async def get_json(self, tenant_id: str, job_id: str) -> bytes:
        """``get`` as JSON bytes."""
        job = await run_in_threadpool(self.get, tenant_id, job_id)
        return job.model_dump_json().encode()

    def _submit(
        self, tenant_id: str, job_type: JobType, spec: JobOptions, idempotency_key: str | None
    ) -> tuple[Job, bool]:
        from kubernetes.client.exceptions import ApiException

        key = idempotency_key or spec.idempotency_key
        if spec.verification is not None:
            # A cluster's nodes are the platform team's own; replicas and quorum are for the mesh's
            # untrusted pull workers (docs/mesh.md).
            raise ApiError(
                501,
                ErrorCode.not_supported,
                "verification (replicas and a quorum) runs on standalone mesh workers; this gateway "
                "runs jobs as NexaJobs on its Kubernetes cluster, whose nodes it trusts",
                field="verification",
            )
        if isinstance(spec, ContainerSpec) and spec.cluster_gaps():
            raise ApiError(
                501,
                ErrorCode.not_supported,
                "not supported in cluster mode: " + "; ".join(spec.cluster_gaps()),
            )
        with self.state.db.session() as session:
            access = tenant_access(
                session, self.state.settings, self.state.store, tenant_id, self.state.catalog
            )
            check_job_inputs(self.state.store, access, spec)
        namespace = self._namespace(tenant_id)
        self._ensure_namespace(namespace)
        job_id = idempotent_job_id(tenant_id, key) if key else new_id("job")
        body = nexajob_object(
            job_id=job_id, tenant_id=tenant_id, namespace=namespace, job_type=job_type, spec=spec
        )
        digest = spec_hash({"type": job_type.value, **spec.model_dump(mode="json")})
        body["metadata"]["annotations"] = {SPEC_HASH_ANNOTATION: digest}
        if key:
            body["metadata"]["annotations"][IDEMPOTENCY_ANNOTATION] = key
            body["metadata"]["labels"][LABEL_IDEMPOTENCY] = "true"
        try:
            created = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, NEXAJOB_PLURAL, body
            )
        except ApiException as exc:
            if exc.status == 409 and key:
                existing = self._read(tenant_id, job_id)
                if (existing["metadata"].get("annotations") or {}).get(SPEC_HASH_ANNOTATION) != digest:
                    raise conflict(
                        ErrorCode.idempotency_conflict,
                        "this Idempotency-Key was already used with a different request body",
                    ) from exc
                return job_from_nexajob(existing), False
            if exc.status == 422:
                raise ApiError(422, "validation_error", f"the cluster refused the job: {exc.body}") from exc
            raise self._api_error(exc, "create the job") from exc
        self.state.metrics.jobs_submitted.labels(job_type.value).inc()
        return job_from_nexajob(created), True

    def get(self, tenant_id: str, job_id: str) -> Job:
        """The job with its events; 404 when the tenant has no such job."""
        return job_from_nexajob(self._read(tenant_id, job_id))

    def list_jobs(
        self,
        tenant_id: str,
        *,
        job_type: JobType | None,
        status: JobState | None,
        labels: dict[str, str],
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Job], str | None]:
        """A page of the tenant's jobs, newest first, and the cursor of the next page."""
        from kubernetes.client.exceptions import ApiException

        selector = f"{LABEL_JOB_TYPE}={job_type.value}" if job_type else None
        try:
            found = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self._namespace(tenant_id), NEXAJOB_PLURAL, label_selector=selector
            )
        except ApiException as exc:
            if exc.status == 404:
                return [], None
            raise self._api_error(exc, "list jobs") from exc
        items = [o for o in found.get("items", []) if o["spec"].get("tenant") == tenant_id]
        items.sort(key=lambda o: (o["metadata"]["creationTimestamp"], o["metadata"]["name"]), reverse=True)
        if cursor:
            after = _decode_cursor(cursor)
            items = [o for o in items if (o["metadata"]["creationTimestamp"], o["metadata"]["name"]) < after]
        page: list[Job] = []
        last: dict[str, Any] | None = None
        for obj in items:
            job = job_from_nexajob(obj)
            if status is not None and job.status != status:
                continue
            if any(job.labels.get(k) != v for k, v in labels.items()):
                continue
            if len(page) == limit:
                assert last is not None
                return page, _encode_cursor(last["metadata"]["creationTimestamp"], last["metadata"]["name"])
            page.append(job)
            last = obj
        return page, None

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        """Ask the operator to cancel; idempotent; 409 for a completed or failed job."""
        from kubernetes.client.exceptions import ApiException

        job = self.get(tenant_id, job_id)
        if job.status is JobState.cancelled:
            return job
        if job.status in (JobState.completed, JobState.failed):
            raise conflict(
                ErrorCode.job_finished,
                f"job {job_id} already {job.status.value}; only pending or running jobs can be cancelled",
            )
        try:
            patched = self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self._namespace(tenant_id),
                NEXAJOB_PLURAL,
                resource_name(job_id),
                {"spec": {"cancel": True}},
            )
        except ApiException as exc:
            raise self._api_error(exc, "cancel the job") from exc
        after = job_from_nexajob(patched)
        if after.status is not JobState.cancelled:
            raise conflict(ErrorCode.job_finished, f"job {job_id} already {after.status.value}")
        self.state.metrics.jobs_finished.labels(job.job_type.value, "cancelled").inc()
        return after

    def events(self, tenant_id: str, job_id: str) -> list[JobEvent]:
        """The job's timeline (its conditions, oldest first)."""
        return self.get(tenant_id, job_id).events

    def log_stream(
        self, request: Request, tenant_id: str, job_id: str, *, after: int, follow: bool
    ) -> AsyncIterator[str]:
        """SSE of the attempts' pod log lines after sequence number ``after``."""
        self._read(tenant_id, job_id)
        return self._stream(request, tenant_id, job_id, after=after, follow=follow)

    def _snapshot(self, tenant_id: str, job_id: str) -> tuple[str, list[tuple[int, str]]]:
        """The job's state and every log line so far as (attempt, line), attempts in order."""
        from kubernetes.client.exceptions import ApiException

        obj = self._read(tenant_id, job_id)
        state = job_from_nexajob(obj).status.value
        namespace = self._namespace(tenant_id)
        pods = self.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_NEXAJOB}={resource_name(job_id)}"
        ).items
        pods.sort(
            key=lambda p: (
                int((p.metadata.labels or {}).get(LABEL_ATTEMPT, "0")),
                p.metadata.creation_timestamp,
            )
        )
        lines: list[tuple[int, str]] = []
        for pod in pods:
            attempt = int((pod.metadata.labels or {}).get(LABEL_ATTEMPT, "0"))
            if pod.status is None or pod.status.phase == "Pending":
                continue
            try:
                text = self.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="engine")
            except ApiException:
                continue  # no kubelet answered (node gone): nothing to show for this pod
            lines.extend((attempt, line) for line in str(text).splitlines())
        return state, lines

    async def _stream(
        self, request: Request, tenant_id: str, job_id: str, *, after: int, follow: bool
    ) -> AsyncIterator[str]:
        last = after
        last_sent = time.monotonic()
        yield "retry: 2000\n\n"
        while True:
            state, lines = await run_in_threadpool(self._snapshot, tenant_id, job_id)
            fresh = lines[last:]
            if fresh:
                now = datetime.now(UTC).isoformat()
                yield "".join(
                    format_event(last + i + 1, attempt, now, line) for i, (attempt, line) in enumerate(fresh)
                )
                last += len(fresh)
                last_sent = time.monotonic()
            if state in TERMINAL_STATES and not fresh:
                yield f"event: end\ndata: {json.dumps({'status': state})}\n\n"
                return
            if not follow or await request.is_disconnected():
                return
            if time.monotonic() - last_sent > _KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            # Pod logs have no change signal to wait on: poll them, at most once a second.
            await asyncio.sleep(min(1.0, self.state.settings.log_poll_seconds))
