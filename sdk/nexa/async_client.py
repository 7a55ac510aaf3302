"""``AsyncNexaClient``: the asyncio/trio client. It sends the calls ``_core`` describes; nothing more."""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from nexa import config
from nexa import deployments as _deployments
from nexa._core import (
    Call,
    ClientCore,
    LogFollower,
    Paginator,
    PipelineEventFollower,
    PipelineWaitState,
    WaitState,
    job_options,
    local_dataset_files,
    local_model_dirs,
    model_archive,
    with_uploaded,
)
from nexa.contracts.artifacts import (
    ArtifactDependents,
    ArtifactInfo,
    ArtifactKind,
    Dataset,
    Deletion,
    Deployment,
    UploadedModel,
)
from nexa.contracts.auditlog import AuditLogPage
from nexa.contracts.billing import BillingSummary, CostEstimate, JobCost, PriceBook, TenantBudget
from nexa.contracts.common import JobOptions
from nexa.contracts.jobs import Job, JobEvent, JobState, JobType
from nexa.contracts.keys import ApiKeyCreated, ApiKeyInfo, Role
from nexa.contracts.lineage import DEFAULT_LINEAGE_DEPTH, Lineage, LineageDirection
from nexa.contracts.mesh import LeaderboardRow, NodeCredits, VerificationStatus
from nexa.contracts.pipelines import Pipeline, PipelineEvent, PipelineList, PipelineSpec, PipelineState
from nexa.contracts.webhooks import WebhookDelivery, WebhookEndpoint, WebhookEndpointCreated, WebhookEventType
from nexa.contracts.workers import WorkerInfo
from nexa.handles import AsyncJobHandle, LogLine
from nexa.pipelinefile import pipeline_request

__all__ = ["AsyncNexaClient"]

T = TypeVar("T")


async def _sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


def _now() -> float:
    return time.monotonic()


class AsyncNexaClient:
    """Asynchronous client for the Nexa API; the same methods as ``NexaClient``, awaited.

    ``api_key`` and ``base_url`` default to ``NEXA_API_KEY`` / ``NEXA_BASE_URL``, then to
    the config written by ``nexa up``. Idempotent requests (and submissions, which always
    carry an idempotency key) are retried ``max_retries`` times on connection errors,
    429, 502, 503 and 504. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        resolved_url, resolved_key = config.resolve(api_key, base_url)
        self._core = ClientCore(
            base_url=resolved_url,
            api_key=resolved_key,
            timeout=timeout,
            max_retries=max_retries,
            headers=headers,
        )
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def api_key(self) -> str | None:
        return self._core.api_key

    def __repr__(self) -> str:
        return f"AsyncNexaClient(base_url={self.base_url!r})"

    # ---- lifecycle

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncNexaClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- sending

    async def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        """Send ``call`` with retries; a 2xx response, else the mapped NexaError."""
        retries = 0
        while True:
            request = self._core.build_request(call)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = self._core.retry.delay_after_error(call, exc, retries)
                if delay is None:
                    raise self._core.connection_error(request, exc) from exc
            else:
                if response.is_success:
                    return response
                delay = self._core.retry.delay_after_response(call, response, retries)
                if delay is None:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
                    raise self._core.status_error(response)
                await response.aclose()
            await _sleep(delay)
            retries += 1

    async def _call(self, call: Call[T]) -> T:
        return call.parse(await self._send(call))

    @asynccontextmanager
    async def _stream(self, call: Call[Any]) -> AsyncIterator[httpx.Response]:
        response = await self._send(call, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def _paginate(self, pager: Paginator[T]) -> AsyncIterator[T]:
        while (call := pager.next_call()) is not None:
            for item in pager.take(await self._call(call)):
                yield item

    def _handle(self, job: Job) -> AsyncJobHandle:
        return AsyncJobHandle(job, self)

    # ---- submitting jobs

    async def submit(
        self,
        job_type: JobType | str,
        spec: JobOptions | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> AsyncJobHandle:
        """Submit a job of ``job_type``; a repeat with the same idempotency key returns the first job.

        A dataset field naming a file on this machine (``./train.parquet``, ``~/data.csv``) is
        uploaded first and sent as its ``ds_…`` id; a model or teacher naming a model directory
        here (``./my-model``) is uploaded and sent as its ``ckpt_…`` id.
        """
        uploaded = {
            key: (await self.upload_dataset(path)).dataset_id
            for key, path in local_dataset_files(job_type, spec).items()
        }
        for key, path in local_model_dirs(job_type, spec).items():
            uploaded[key] = (await self.upload_model(path)).checkpoint_id
        if uploaded:
            spec = with_uploaded(spec, uploaded)
        return self._handle(await self._call(self._core.submit(job_type, spec, idempotency_key)))

    async def audit(self, dataset_uri: str, **options: Any) -> AsyncJobHandle:
        """Score a dataset's quality (``AuditSpec`` fields as keywords)."""
        return await self.submit(JobType.audit, job_options({"dataset_uri": dataset_uri}, options))

    async def distill(self, dataset_id: str, teacher: str | None = None, **options: Any) -> AsyncJobHandle:
        """Turn a prompt dataset into SFT data with a teacher (``DistillSpec`` fields as keywords).

        Without ``teacher`` the platform's default teacher is used (``NEXA_DEFAULT_TEACHER``).
        """
        return await self.submit(
            JobType.distill, job_options({"dataset_id": dataset_id, "teacher": teacher}, options)
        )

    async def generate(
        self, domain: str, num_samples: int = 100, *, teacher: str | None = None, **options: Any
    ) -> AsyncJobHandle:
        """Produce synthetic data for a domain (``GenerateSpec`` fields as keywords)."""
        base = {"domain": domain, "num_samples": num_samples, "teacher": teacher}
        return await self.submit(JobType.generate, job_options(base, options))

    async def train(
        self, dataset_id: str, model: str | None = None, epochs: int = 3, **options: Any
    ) -> AsyncJobHandle:
        """Fine-tune ``model`` on a dataset (``TrainSpec`` fields as keywords).

        ``model`` is a catalog name (``"Mistral-7B"``), a Hugging Face id, a path or a
        ``ckpt_…``; without it the platform's default model is used (``NEXA_DEFAULT_MODEL``).
        """
        base = {"dataset_id": dataset_id, "model": model, "epochs": epochs}
        return await self.submit(JobType.train, job_options(base, options))

    async def evaluate(self, checkpoint_id: str, **options: Any) -> AsyncJobHandle:
        """Evaluate a checkpoint (``EvaluateSpec`` fields as keywords)."""
        return await self.submit(JobType.evaluate, job_options({"checkpoint_id": checkpoint_id}, options))

    async def deploy(self, checkpoint_id: str, **options: Any) -> AsyncJobHandle:
        """Serve a checkpoint (``DeploySpec`` fields as keywords)."""
        return await self.submit(JobType.deploy, job_options({"checkpoint_id": checkpoint_id}, options))

    async def container(self, image: str, command: list[str] | None = None, **options: Any) -> AsyncJobHandle:
        """Run any image and command (``ContainerSpec`` fields as keywords)."""
        base: dict[str, Any] = {"image": image}
        if command is not None:
            base["command"] = command
        return await self.submit(JobType.container, job_options(base, options))

    # ---- following jobs

    async def status(self, job_id: str) -> AsyncJobHandle:
        """The job's current state, with its events."""
        return self._handle(await self._call(self._core.get_job(job_id)))

    get_job = status

    async def list_jobs(
        self,
        *,
        type: JobType | str | None = None,
        status: JobState | str | None = None,
        labels: dict[str, str] | None = None,
        limit: int | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[AsyncJobHandle]:
        """Jobs newest first, filtered; fetches further pages as you iterate, stops after ``limit``."""
        pager = self._core.jobs_pager(
            job_type=type, status=status, labels=labels, limit=limit, page_size=page_size
        )
        async for job in self._paginate(pager):
            yield self._handle(job)

    async def cancel(self, job_id: str) -> AsyncJobHandle:
        """Cancel a job; cancelling a cancelled job is a no-op, a finished one raises ConflictError."""
        return self._handle(await self._call(self._core.cancel_job(job_id)))

    async def delete_job(self, job_id: str, *, force: bool = False) -> Deletion:
        """Delete a finished job with its logs, events and output artifacts; its usage stays billed.

        Raises ``ConflictError`` while it is pending or running (``job_not_finished``), or while its
        outputs are needed (``artifact_in_use``; ``force=True`` deletes past artifacts made from them).
        """
        return await self._call(self._core.delete_job(job_id, force=force))

    async def events(self, job_id: str) -> list[JobEvent]:
        """The job's timeline: state changes, claims, retries, errors."""
        return await self._call(self._core.job_events(job_id))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_update: Callable[[AsyncJobHandle], None] | None = None,
        raise_on_failure: bool = True,
    ) -> AsyncJobHandle:
        """Poll until the job is terminal and return it.

        Raises JobFailedError / JobCancelledError (unless ``raise_on_failure`` is False) and
        WaitTimeoutError when ``timeout`` seconds pass first; ``on_update`` sees every change.
        """
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        state = WaitState(
            timeout=timeout,
            poll_interval=poll_interval,
            raise_on_failure=raise_on_failure,
            started=_now(),
        )
        while True:
            handle = await self.status(job_id)
            if on_update is not None and state.changed(handle.model):
                on_update(handle)
            delay = state.next_delay(handle, _now())
            if delay is None:
                return handle
            await _sleep(delay)

    async def logs(
        self, job_id: str, *, follow: bool = True, last_event_id: int | None = None
    ) -> AsyncIterator[LogLine]:
        """The job's log lines as they come; resumes after a dropped connection with no gap or repeat.

        With ``follow`` it ends when the job is terminal and every line was sent; without, after
        the lines stored so far. ``last_event_id`` starts after that line.
        """
        follower = LogFollower(self._core, job_id, follow=follow, last_event_id=last_event_id)
        while True:
            error: httpx.TransportError | None = None
            try:
                async with self._stream(follower.call()) as response:
                    async for chunk in response.aiter_bytes():
                        for line in follower.feed(chunk):
                            yield line
                        if follower.ended:
                            return
            except httpx.TransportError as exc:
                error = exc
            delay = follower.reconnect_delay(error)
            if delay is None:
                return
            await _sleep(delay)

    # ---- datasets and artifacts

    async def upload_dataset(self, path: str | Path, *, name: str | None = None) -> Dataset:
        """Upload a parquet, jsonl or csv file as a new dataset."""
        file_path = Path(path).expanduser()
        with file_path.open("rb") as handle:
            return await self._call(self._core.upload_dataset(handle, file_path.name, name))

    # ---- the node registry

    async def list_workers(self) -> list[WorkerInfo]:
        """The nodes you may see: your tenant's own (all of them with a platform admin key), with state."""
        return (await self._call(self._core.list_workers())).items

    async def get_worker(self, worker_id: str) -> WorkerInfo:
        """One node by id."""
        return await self._call(self._core.get_worker(worker_id))

    async def drain_worker(self, worker_id: str, *, reason: str = "") -> WorkerInfo:
        """Stop handing the node new jobs; what it runs finishes (``resume_worker`` undoes it)."""
        return await self._call(self._core.worker_action(worker_id, "drain", reason))

    async def resume_worker(self, worker_id: str) -> WorkerInfo:
        """Let a drained node claim jobs again."""
        return await self._call(self._core.worker_action(worker_id, "resume", ""))

    async def revoke_worker(self, worker_id: str, *, reason: str = "") -> WorkerInfo:
        """Cut the node off for good: refused everywhere, its attempts requeued, its key barred."""
        return await self._call(self._core.worker_action(worker_id, "revoke", reason))

    # ---- the mesh: verification, credits, reputation

    async def job_verification(self, job_id: str) -> VerificationStatus:
        """A verified (or spot-checked) job's replicas: the node, output digest and verdict of each."""
        return await self._call(self._core.job_verification(job_id))

    async def node_credits(self, worker_id: str, *, history: int = 50) -> NodeCredits:
        """A node's credits, reputation and latest credit entries (a node you may see)."""
        return await self._call(self._core.node_credits(worker_id, history))

    async def leaderboard(self, *, limit: int = 100) -> list[LeaderboardRow]:
        """Nodes by credits (others' nodes unnamed unless you may see them)."""
        return (await self._call(self._core.leaderboard(limit))).rows

    async def leaderboard_csv(self, *, limit: int = 1000) -> str:
        """The leaderboard as CSV."""
        return await self._call(self._core.leaderboard_csv(limit))

    # ---- billing

    async def billing_summary(
        self, *, start: datetime | None = None, end: datetime | None = None
    ) -> BillingSummary:
        """Your spend for a period (this month by default): total, by job type, by day, by job."""
        return await self._call(self._core.billing_summary(start, end))

    async def estimate(self, job_type: JobType | str, spec: JobOptions | Mapping[str, Any]) -> CostEstimate:
        """What the job would cost before it runs, unit by unit, with the basis of each (nothing is submitted)."""
        return await self._call(self._core.estimate(job_type, spec))

    async def budget(self) -> TenantBudget:
        """Your tenant's monthly budget (set by a platform admin), this month's spend and what is left."""
        return await self._call(self._core.budget())

    async def job_cost(self, job_id: str) -> JobCost:
        """A job's estimate at submission beside what it has been charged so far, unit by unit."""
        return await self._call(self._core.job_cost(job_id))

    async def price_book(self) -> PriceBook:
        """The prices usage is charged at, with every dated version."""
        return await self._call(self._core.price_book())

    async def upload_model(self, path: str | Path, *, name: str | None = None) -> UploadedModel:
        """Upload a model directory (config.json, safetensors weights, tokenizer) as a base checkpoint."""
        directory = Path(path).expanduser()
        with tempfile.TemporaryFile() as archive:
            await anyio.to_thread.run_sync(model_archive, directory, archive)
            archive.seek(0)
            return await self._call(
                self._core.upload_model(archive, f"{directory.name}.tar", name or directory.name)
            )

    def list_datasets(self, *, limit: int | None = None, page_size: int = 50) -> AsyncIterator[Dataset]:
        """Datasets, newest first; fetches further pages as you iterate, stops after ``limit``."""
        return self._paginate(self._core.datasets_pager(limit=limit, page_size=page_size))

    async def get_dataset(self, dataset_id: str) -> Dataset:
        """One dataset by id."""
        return await self._call(self._core.get_dataset(dataset_id))

    async def delete_dataset(self, dataset_id: str, *, force: bool = False) -> Deletion:
        """Delete a dataset; the rules of ``delete_artifact``."""
        return await self._call(self._core.delete_dataset(dataset_id, force=force))

    def list_artifacts(
        self, kind: ArtifactKind | None = None, *, limit: int | None = None, page_size: int = 50
    ) -> AsyncIterator[ArtifactInfo]:
        """Artifacts (optionally of one kind); fetches further pages as you iterate, stops after ``limit``."""
        return self._paginate(self._core.artifacts_pager(kind=kind, limit=limit, page_size=page_size))

    async def get_artifact(self, artifact_id: str) -> ArtifactInfo:
        """One artifact with its verified manifest."""
        return await self._call(self._core.get_artifact(artifact_id))

    async def artifact_dependents(self, artifact_id: str) -> ArtifactDependents:
        """What needs the artifact: artifacts made from it, unfinished jobs naming it, deployments serving it."""
        return await self._call(self._core.artifact_dependents(artifact_id))

    async def delete_artifact(self, artifact_id: str, *, force: bool = False) -> Deletion:
        """Delete an artifact and its files; its storage is not charged from the next hour on.

        Raises ``ConflictError`` (``artifact_in_use``, ``.errors`` naming each dependent) while anything
        needs it. ``force=True`` deletes past artifacts made from it, never past an unfinished job or a
        serving deployment.
        """
        return await self._call(self._core.delete_artifact(artifact_id, force=force))

    async def read_artifact_file(self, artifact_id: str, path: str) -> bytes:
        """The bytes of one file of an artifact, verified by the gateway against the manifest."""
        return await self._call(self._core.read_artifact_file(artifact_id, path))

    # ---- deployments

    def list_deployments(self, *, limit: int | None = None, page_size: int = 50) -> AsyncIterator[Deployment]:
        """Your deployments, newest first, each with its status (running, stopping, stopped)."""
        return self._paginate(_deployments.pager(limit=limit, page_size=page_size))

    async def get_deployment(self, deployment_id: str) -> Deployment:
        """One deployment: its URLs and whether its serving process still runs."""
        return await self._call(_deployments.get(deployment_id))

    async def undeploy(self, deployment_id: str) -> Deployment:
        """Stop serving ``deployment_id``; the process exits within seconds. Repeating it is harmless."""
        return await self._call(_deployments.undeploy(deployment_id))

    # ---- keys and health

    async def create_key(
        self, name: str = "default", *, expires_in_days: int | None = None, role: Role | str = Role.member
    ) -> ApiKeyCreated:
        """Create an API key for your tenant (``member`` or ``admin``; admin keys only); ``.key`` is shown once."""
        return await self._call(self._core.create_key(name, expires_in_days, Role(role)))

    async def list_keys(self) -> list[ApiKeyInfo]:
        """Your tenant's API keys (without secrets)."""
        return await self._call(self._core.list_keys())

    async def revoke_key(self, key_id: str) -> ApiKeyInfo:
        """Revoke an API key; it is refused from now on."""
        return await self._call(self._core.revoke_key(key_id))

    # ---- webhooks

    async def create_webhook(
        self,
        url: str,
        *,
        events: Sequence[WebhookEventType | str] = ("*",),
        description: str = "",
    ) -> WebhookEndpointCreated:
        """Subscribe ``url`` to job events (admin keys only); ``.secret`` signs every delivery and is shown once."""
        return await self._call(self._core.create_webhook(url, events, description))

    async def list_webhooks(self) -> list[WebhookEndpoint]:
        """Your tenant's webhook endpoints, each ``enabled`` or ``disabled`` with the reason."""
        return await self._call(self._core.list_webhooks())

    async def get_webhook(self, webhook_id: str) -> WebhookEndpoint:
        """One webhook endpoint."""
        return await self._call(self._core.get_webhook(webhook_id))

    async def delete_webhook(self, webhook_id: str) -> WebhookEndpoint:
        """Delete a webhook endpoint and its delivery log."""
        return await self._call(self._core.delete_webhook(webhook_id))

    async def enable_webhook(self, webhook_id: str) -> WebhookEndpoint:
        """Re-enable an endpoint that was disabled after repeated failures."""
        return await self._call(self._core.enable_webhook(webhook_id))

    async def webhook_deliveries(
        self, webhook_id: str, *, status: str | None = None, limit: int = 100
    ) -> list[WebhookDelivery]:
        """The endpoint's delivery log, newest first (``status``: pending, delivered or failed)."""
        return (await self._call(self._core.webhook_deliveries(webhook_id, status, limit))).items

    async def redeliver_webhook(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        """Send a delivery again now, with the same ``webhook-id`` (receivers can tell it is a repeat)."""
        return await self._call(self._core.redeliver_webhook(webhook_id, delivery_id))

    async def test_webhook(self, webhook_id: str) -> WebhookDelivery:
        """Queue a ``webhook.test`` event for the endpoint."""
        return await self._call(self._core.test_webhook(webhook_id))

    async def audit_log(
        self,
        *,
        before: int | None = None,
        limit: int = 100,
        action: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        tenant: str | None = None,
    ) -> AuditLogPage:
        """Your tenant's audit log, newest first (admin keys): who changed what, when, from where.
        Page back with ``before=page.next_before``; a platform admin may name another ``tenant``."""
        return await self._call(
            self._core.audit_log(
                before=before, limit=limit, action=action, actor=actor, since=since, tenant=tenant
            )
        )

    # ---- pipelines and lineage

    async def pipeline(
        self,
        spec: PipelineSpec | Mapping[str, Any] | str | Path,
        *,
        parameters: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Pipeline:
        """Submit a pipeline: a ``PipelineSpec``, a dict, or the path of a YAML or JSON pipeline file.

        ``parameters`` are set over the pipeline's own (each must be declared there). A file or a
        ``PipelineSpec`` is checked here first (``PipelineFileError`` names the field); a dict is
        the gateway's to check. A repeat with the same idempotency key returns the first pipeline.
        """
        body = pipeline_request(spec, parameters)
        return await self._call(self._core.create_pipeline(body, idempotency_key))

    async def get_pipeline(self, pipeline_id: str) -> Pipeline:
        """A pipeline's state, with every step's."""
        return await self._call(self._core.get_pipeline(pipeline_id))

    def list_pipelines(
        self,
        *,
        status: PipelineState | str | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[Pipeline]:
        """Pipelines newest first, filtered; fetches further pages as you iterate, stops after ``limit``."""
        pager = self._core.pipelines_pager(
            status=status, name=name, labels=labels, limit=limit, page_size=page_size
        )
        return self._paginate(pager)

    async def list_pipelines_page(
        self,
        *,
        status: PipelineState | str | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> PipelineList:
        """One page of pipelines; pass its ``next_cursor`` as ``cursor`` for the next."""
        return await self._call(
            self._core.list_pipelines_page(
                status=status, name=name, labels=labels, limit=limit, cursor=cursor
            )
        )

    async def cancel_pipeline(self, pipeline_id: str) -> Pipeline:
        """Cancel a pipeline: its running jobs are cancelled, its steps not started are skipped."""
        return await self._call(self._core.cancel_pipeline(pipeline_id))

    async def resume_pipeline(self, pipeline_id: str) -> Pipeline:
        """Run a failed or cancelled pipeline again from its steps not done; done steps are kept.

        Raises ``ConflictError`` (``pipeline_not_resumable``) for one in any other state.
        """
        return await self._call(self._core.resume_pipeline(pipeline_id))

    async def approve_step(self, pipeline_id: str, step: str) -> Pipeline:
        """Let a step held for approval start; ``ConflictError`` (``step_not_waiting``) otherwise."""
        return await self._call(self._core.approve_step(pipeline_id, step))

    async def pipeline_events(
        self, pipeline_id: str, *, follow: bool = True, after: int | None = None
    ) -> AsyncIterator[PipelineEvent]:
        """The pipeline's timeline as it happens; resumes after a dropped connection with no gap or repeat.

        With ``follow`` it ends once the pipeline is terminal; without, after the events so far.
        ``after`` starts after that event's ``seq``.
        """
        follower = PipelineEventFollower(self._core, pipeline_id, follow=follow, after=after)
        while True:
            error: httpx.TransportError | None = None
            try:
                async with self._stream(follower.call()) as response:
                    async for chunk in response.aiter_bytes():
                        for event in follower.feed(chunk):
                            yield event
                        if follower.ended:
                            return
            except httpx.TransportError as exc:
                error = exc
            delay = follower.reconnect_delay(error)
            if delay is None:
                return
            await _sleep(delay)

    async def wait_pipeline(
        self,
        pipeline_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        until_waiting: bool = True,
        on_update: Callable[[Pipeline], None] | None = None,
    ) -> Pipeline:
        """Poll until the pipeline is terminal and return it (a failed one too: read ``status``).

        With ``until_waiting`` it also returns a pipeline ``waiting``: only approvals are left, so
        nothing moves until someone calls ``approve_step``. ``on_update`` sees the pipeline after
        every poll. Raises ``PipelineWaitTimeoutError`` (a ``WaitTimeoutError``) when ``timeout``
        seconds pass first; the pipeline goes on.
        """
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        state = PipelineWaitState(
            timeout=timeout, poll_interval=poll_interval, until_waiting=until_waiting, started=_now()
        )
        while True:
            found = await self.get_pipeline(pipeline_id)
            if on_update is not None:
                on_update(found)
            delay = state.next_delay(found, _now())
            if delay is None:
                return found
            await _sleep(delay)

    async def lineage(
        self,
        artifact_id: str,
        *,
        direction: LineageDirection = "up",
        depth: int = DEFAULT_LINEAGE_DEPTH,
    ) -> Lineage:
        """What ``artifact_id`` was made from (``up``), what was made from it (``down``), or both,
        ``depth`` steps away at most (the gateway allows 50)."""
        return await self._call(self._core.lineage(artifact_id, direction, depth))

    async def health(self) -> dict[str, Any]:
        """The gateway's readiness report (``GET /readyz``); raises when it is not ready."""
        return await self._call(self._core.health())
