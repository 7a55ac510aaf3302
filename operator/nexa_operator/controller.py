"""Reconcile loops: read the cluster, decide with the pure state machine, write the plan.

One reconcile per object at a time (a per-object lock); a trigger that arrives
while one runs marks the object dirty and the running reconcile goes round once
more, so bursts of watch events coalesce instead of queueing.

kopf delivers the custom resources' events; the Jobs, Pods and Deployments the
operator makes come from one informer per collection (``start_background``), and
one resync loop re-reconciles every unfinished object each ``resync_seconds``, so a
missed event never strands a NexaJob.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nexa.contracts import JobType
from nexa.contracts.nexajob import (
    LABEL_ATTEMPT,
    LABEL_ENDPOINT,
    LABEL_MANAGED_BY,
    LABEL_NEXAJOB,
    NexaEndpointStatus,
    nexajob_job_id,
    percent,
)
from nexa_operator import builders
from nexa_operator import conditions as c
from nexa_operator.config import OperatorConfig
from nexa_operator.informer import Informer
from nexa_operator.kube import (
    Conflict,
    KubeClient,
    KubeError,
    collection_path,
    nexaendpoint_path,
    nexajob_path,
    watch_path,
)
from nexa_operator.metrics import OperatorMetrics
from nexa_operator.reconcile import Plan, decide, is_terminal, status_patch
from nexa_operator.results import ResultReader

log = logging.getLogger("nexa.operator")

KSERVE_API = "/apis/serving.kserve.io/v1beta1"
CONFLICT_RETRIES = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


def slim(obj: dict[str, Any], *, spec_fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``obj`` as the caches keep it: no ``metadata.managedFields`` (often most of an
    object's size, never read here) and, with ``spec_fields``, only those spec fields
    (a Job's pod template is kilobytes that no decision reads)."""
    meta = obj.get("metadata") or {}
    out = dict(obj)
    if "managedFields" in meta:
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    if spec_fields is not None and "spec" in obj:
        out["spec"] = {k: v for k, v in obj["spec"].items() if k in spec_fields}
    return out


# What reconciles read of the children: a Job's suspend flag, and nothing of a pod's spec.
JOB_SPEC_FIELDS = ("suspend",)
POD_SPEC_FIELDS: tuple[str, ...] = ()


def _older(obj: dict[str, Any], cached: dict[str, Any] | None) -> bool:
    """Whether ``obj`` is an older version of ``cached``.

    The watch can deliver the event of our own status write after the write's response
    already updated the cache; taking that event would make the next reconcile decide
    from a stale object and lose a round trip to a 409. resourceVersions are etcd
    revisions in every API server; anything not numeric is never taken for older.
    """
    if cached is None or cached["metadata"].get("uid") != obj["metadata"].get("uid"):
        return False
    new, old = obj["metadata"].get("resourceVersion", ""), cached["metadata"].get("resourceVersion", "")
    return new.isdigit() and old.isdigit() and int(new) < int(old)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dirty: bool = False


class Controller:
    """Everything the kopf handlers call; holds the client, config, metrics and per-object locks."""

    def __init__(
        self,
        kube: KubeClient,
        config: OperatorConfig,
        *,
        results: ResultReader | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.results = results or ResultReader()
        self.metrics = metrics or OperatorMetrics()
        self._slots: dict[tuple[str, str, str], _Slot] = {}
        self._timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self._kserve: bool | None = None
        # Informer-style caches fed by the watches: reconciles read these instead of the API.
        # A miss falls back to a GET; a stale entry costs a 409 on the status write and a re-read.
        self._nexajobs: dict[tuple[str, str], dict[str, Any]] = {}
        self._jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self._pods: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        self._endpoints: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Set once every informer has listed its collection; None when none run (unit tests).
        self._informers_synced: asyncio.Event | None = None

    # --- informers and resync ------------------------------------------------------------

    def start_background(self, namespaces: list[str] | None = None) -> None:
        """Start the informers of the operator's children and the resync loop.

        ``namespaces``: watch only these (one informer each); all namespaces when empty.
        """
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        made_for_jobs = f"{LABEL_MANAGED_BY}={builders.MANAGER},{LABEL_NEXAJOB}"
        made_for_endpoints = f"{LABEL_MANAGED_BY}={builders.MANAGER},{LABEL_ENDPOINT}"
        informers = []
        for namespace in scopes:
            informers += [
                Informer(
                    self.kube,
                    watch_path("batch/v1", "Job", namespace),
                    self._on_job,
                    label_selector=made_for_jobs,
                ),
                Informer(
                    self.kube, watch_path("v1", "Pod", namespace), self._on_pod, label_selector=made_for_jobs
                ),
                Informer(
                    self.kube,
                    watch_path("apps/v1", "Deployment", namespace),
                    self._on_deployment,
                    label_selector=made_for_endpoints,
                ),
            ]
        synced = self._informers_synced = asyncio.Event()

        async def all_synced() -> None:
            await asyncio.gather(*(informer.synced.wait() for informer in informers))
            synced.set()

        for informer in informers:
            self._spawn(informer.run())
        self._spawn(all_synced())
        self._spawn(self._resync_loop())

    async def stop_background(self) -> None:
        """Cancel the informers, the resync loop and any reconcile still running."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)  # a reference, or the loop may collect a running task
        task.add_done_callback(self._tasks.discard)

    def _on_job(self, event_type: str, obj: dict[str, Any]) -> None:
        self.remember_job(event_type, obj)
        self._reconcile_owner(obj)

    def _on_pod(self, event_type: str, obj: dict[str, Any]) -> None:
        self.remember_pod(event_type, obj)
        self._reconcile_owner(obj)

    def _reconcile_owner(self, obj: dict[str, Any]) -> None:
        owner = (obj["metadata"].get("labels") or {}).get(LABEL_NEXAJOB)
        if owner:
            self._spawn(self.nexajob(obj["metadata"]["namespace"], owner))

    def _on_deployment(self, event_type: str, obj: dict[str, Any]) -> None:
        owner = (obj["metadata"].get("labels") or {}).get(LABEL_ENDPOINT)
        if owner:
            self._spawn(self.endpoint(obj["metadata"]["namespace"], owner))

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            for (namespace, name), nexajob in list(self._nexajobs.items()):
                if not is_terminal(nexajob):
                    self._spawn(self.nexajob(namespace, name))
            for namespace, name in list(self._endpoints):
                self._spawn(self.endpoint(namespace, name))

    # --- caches --------------------------------------------------------------------------

    def remember_nexajob(self, event_type: str, obj: dict[str, Any]) -> None:
        """Keep the latest NexaJob a watch delivered (forget it when deleted)."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event_type == "DELETED":
            self._nexajobs.pop(key, None)
        elif not _older(obj, self._nexajobs.get(key)):
            self._nexajobs[key] = slim(obj)

    def remember_endpoint(self, event_type: str, obj: dict[str, Any]) -> None:
        """Track which NexaEndpoints exist, for the resync loop."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event_type == "DELETED":
            self._endpoints.discard(key)
        else:
            self._endpoints.add(key)

    def remember_job(self, event_type: str, obj: dict[str, Any]) -> None:
        """Keep the latest Job a watch delivered."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event_type == "DELETED":
            self._jobs.pop(key, None)
        else:
            self._jobs[key] = slim(obj, spec_fields=JOB_SPEC_FIELDS)

    def remember_pod(self, event_type: str, obj: dict[str, Any]) -> None:
        """Keep the latest state of each pod of each attempt."""
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        key = (meta["namespace"], labels.get(LABEL_NEXAJOB, ""), labels.get(LABEL_ATTEMPT, ""))
        pods = self._pods.setdefault(key, {})
        if event_type == "DELETED":
            pods.pop(meta["name"], None)
            if not pods:
                self._pods.pop(key, None)
        else:
            pods[meta["name"]] = slim(obj, spec_fields=POD_SPEC_FIELDS)

    def _forget(self, namespace: str, name: str) -> None:
        self._nexajobs.pop((namespace, name), None)
        self._forget_attempts(namespace, name)

    def _forget_attempts(self, namespace: str, name: str) -> None:
        for pod_key in [k for k in self._pods if k[0] == namespace and k[1] == name]:
            del self._pods[pod_key]
        for job_key in [k for k in self._jobs if k[0] == namespace and k[1].startswith(f"{name}-a")]:
            del self._jobs[job_key]

    # --- coalescing ----------------------------------------------------------------------

    async def _serialised(
        self, key: tuple[str, str, str], work: Callable[[], Awaitable[float | None]]
    ) -> None:
        slot = self._slots.setdefault(key, _Slot())
        if slot.lock.locked():
            slot.dirty = True
            return
        async with slot.lock:
            requeue: float | None = None
            while True:
                slot.dirty = False
                started = time.perf_counter()
                try:
                    requeue = await work()
                    self.metrics.reconciles.labels(key[0], "ok").inc()
                except (KubeError, OSError) as exc:
                    # The next event, requeue or timer tick tries again.
                    log.warning("reconcile %s %s/%s failed: %s", key[0], key[1], key[2], exc)
                    self.metrics.reconciles.labels(key[0], "error").inc()
                    requeue = max(1.0, self.config.retry_base_seconds / 2)
                finally:
                    self.metrics.duration.labels(key[0]).observe(time.perf_counter() - started)
                if not slot.dirty:
                    break
        if requeue is not None:
            self._requeue(key, requeue, work)
        else:
            self._slots.pop(key, None)

    def _requeue(
        self, key: tuple[str, str, str], delay: float, work: Callable[[], Awaitable[float | None]]
    ) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(key, None)
            loop.create_task(self._serialised(key, work))

        self._timers[key] = loop.call_later(max(0.05, delay), fire)

    # --- NexaJob ---------------------------------------------------------------------------

    async def nexajob(self, namespace: str, name: str) -> None:
        """Reconcile one NexaJob (safe to call any number of times, from any trigger)."""
        await self._serialised(("nexajob", namespace, name), lambda: self._reconcile_nexajob(namespace, name))

    async def _reconcile_nexajob(self, namespace: str, name: str) -> float | None:
        if self._informers_synced is not None:
            # Deciding before the caches are filled could take a live Job's pods for none.
            await self._informers_synced.wait()
        for _ in range(CONFLICT_RETRIES):
            nexajob = self._nexajobs.get((namespace, name))
            if nexajob is None:
                nexajob = await self.kube.get(nexajob_path(namespace, name))
                if nexajob is not None:
                    nexajob = self._nexajobs[(namespace, name)] = slim(nexajob)
            if nexajob is None or nexajob["metadata"].get("deletionTimestamp"):
                return None  # gone, or the finalizer's cleanup handles it
            uid = nexajob["metadata"]["uid"]
            if is_terminal(nexajob):
                self.metrics.observe_phase(uid, nexajob["status"]["phase"])
                self._observe_finished(nexajob)
                self._forget_attempts(namespace, name)
                return None
            job, pods, endpoint = await self._observe(nexajob)
            plan = decide(nexajob, job, pods, utcnow(), self.config, endpoint=endpoint)
            if plan.need_result:
                attempt = int((nexajob.get("status") or {}).get("attempts") or 0)
                job_id = nexajob_job_id(name, uid)
                lookup = await asyncio.to_thread(self.results.read, job_id, attempt)
                plan = decide(nexajob, job, pods, utcnow(), self.config, result=lookup, endpoint=endpoint)
            try:
                await self._execute(nexajob, job, plan)
            except Conflict as exc:
                log.info("NexaJob %s/%s changed while reconciling (%s); again", namespace, name, exc.reason)
                self._nexajobs.pop((namespace, name), None)
                continue
            phase = (plan.status or nexajob.get("status") or {}).get("phase")
            self.metrics.observe_phase(uid, phase)
            if phase in ("Completed", "Failed", "Cancelled"):
                self._observe_finished(self._nexajobs.get((namespace, name)) or nexajob)
                return None
            if phase == "Running" and nexajob["spec"].get("type") != JobType.deploy.value:
                await self._report_progress(namespace, name)
                wait = self.config.progress_seconds
                return wait if plan.requeue_after is None else min(plan.requeue_after, wait)
            return plan.requeue_after
        return 1.0

    async def _report_progress(self, namespace: str, name: str) -> None:
        """Copy a running attempt's latest progress record into the NexaJob's status."""
        nexajob = self._nexajobs.get((namespace, name))
        if nexajob is None:
            return
        status = nexajob.get("status") or {}
        attempt = int(status.get("attempts") or 0)
        job_id = nexajob_job_id(name, nexajob["metadata"]["uid"])
        reported = await asyncio.to_thread(self.results.read_progress, job_id, attempt)
        if reported is None:
            return
        fraction, message = reported
        if status.get("progress") == fraction and status.get("progressMessage") == message:
            return
        try:
            written = await self.kube.merge_patch(
                nexajob_path(namespace, name) + "/status",
                {
                    "metadata": {"resourceVersion": nexajob["metadata"]["resourceVersion"]},
                    "status": {
                        "progress": fraction,
                        "progressPercent": percent(fraction),
                        "progressMessage": message,
                    },
                },
            )
        except Conflict:
            return  # it changed meanwhile; the next round reads it again
        if written is not None:
            self._nexajobs[(namespace, name)] = slim(written)

    def _observe_finished(self, nexajob: dict[str, Any]) -> None:
        """Job duration and GPU time of a NexaJob in a terminal phase (counted once per uid)."""
        status = nexajob.get("status") or {}
        if not is_terminal(nexajob):
            return
        started, ended = status.get("startTime"), status.get("completionTime")
        seconds = 0.0
        if started and ended:
            seconds = (_parse_time(ended) - _parse_time(started)).total_seconds()
        resources = nexajob["spec"].get("resources") or {}
        self.metrics.observe_finished(
            nexajob["metadata"]["uid"],
            str(nexajob["spec"].get("type")),
            str(status["phase"]),
            seconds,
            int(resources.get("gpus") or 0),
            resources.get("gpu_type") or resources.get("gpuType"),
        )

    async def _observe(
        self, nexajob: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None]:
        meta = nexajob["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if nexajob["spec"].get("type") == JobType.deploy.value:
            endpoint = await self.kube.get(nexaendpoint_path(namespace, name))
            return None, [], endpoint
        attempt = int((nexajob.get("status") or {}).get("attempts") or 0)
        if attempt == 0:
            return None, [], None
        job_name = builders.job_name(name, attempt)
        job = self._jobs.get((namespace, job_name))
        if job is None:
            # Not seen on the watch yet: ask, so a Job that exists is never taken for a lost one.
            job = await self.kube.get(f"{collection_path('batch/v1', 'Job', namespace)}/{job_name}")
            if job is not None:
                job = self._jobs[(namespace, job_name)] = slim(job, spec_fields=JOB_SPEC_FIELDS)
        pods: list[dict[str, Any]] = []
        if job is not None:
            pods = list(self._pods.get((namespace, name, str(attempt)), {}).values())
        return job, pods, None

    async def _execute(self, nexajob: dict[str, Any], job: dict[str, Any] | None, plan: Plan) -> None:
        meta = nexajob["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        jobs = collection_path("batch/v1", "Job", namespace)
        if plan.create_job is not None:
            made, created = await self.kube.create(builders.build_job(nexajob, plan.create_job, self.config))
            if made is not None:
                self._jobs[(namespace, made["metadata"]["name"])] = slim(made, spec_fields=JOB_SPEC_FIELDS)
            if created:
                self.metrics.jobs_created.inc()
        if plan.create_endpoint:
            await self.kube.create(builders.endpoint_object(nexajob))
        if plan.delete_job is not None:
            await self.kube.delete(f"{jobs}/{plan.delete_job}", propagation="Background")
        if plan.suspend_job is not None and job is not None:
            await self.kube.merge_patch(
                f"{jobs}/{job['metadata']['name']}", {"spec": {"suspend": plan.suspend_job}}
            )
        if plan.status is not None:
            # Conditional on what we decided from: a concurrent change is a 409, and we decide again.
            written = await self.kube.merge_patch(
                nexajob_path(namespace, name) + "/status",
                {
                    "metadata": {"resourceVersion": meta["resourceVersion"]},
                    "status": status_patch(nexajob.get("status") or {}, plan.status),
                },
            )
            if written is not None:
                self._nexajobs[(namespace, name)] = slim(written)
        for type_, reason, message in plan.events:
            await self._event(nexajob, type_, reason, message)

    async def _event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = utcnow().isoformat().replace("+00:00", "Z")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": builders.MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": builders.MANAGER,
        }
        try:
            await self.kube.create(event)
        except KubeError as exc:  # an Event is best effort; the status already says it
            log.debug("could not post event %s on %s: %s", reason, meta["name"], exc)

    async def cleanup_nexajob(self, namespace: str, name: str) -> None:
        """On deletion: remove every attempt's Job and its pods (the finalizer waits for this)."""
        jobs = collection_path("batch/v1", "Job", namespace)
        for job in await self.kube.list(jobs, label_selector=f"{LABEL_NEXAJOB}={name}"):
            await self.kube.delete(f"{jobs}/{job['metadata']['name']}", propagation="Background")
        self._slots.pop(("nexajob", namespace, name), None)
        self._forget(namespace, name)
        timer = self._timers.pop(("nexajob", namespace, name), None)
        if timer is not None:
            timer.cancel()

    # --- NexaEndpoint ----------------------------------------------------------------------

    async def endpoint(self, namespace: str, name: str) -> None:
        """Reconcile one NexaEndpoint into a Deployment + Service (+ HPA) or an InferenceService."""
        await self._serialised(
            ("nexaendpoint", namespace, name), lambda: self._reconcile_endpoint(namespace, name)
        )

    async def _reconcile_endpoint(self, namespace: str, name: str) -> float | None:
        endpoint = await self.kube.get(nexaendpoint_path(namespace, name))
        if endpoint is None or endpoint["metadata"].get("deletionTimestamp"):
            return None
        if self._kserve is None:
            self._kserve = await self.kube.api_exists(KSERVE_API)
        status = NexaEndpointStatus.model_validate(endpoint.get("status") or {})
        before = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        desired = int(endpoint["spec"].get("replicas", 1))
        if self._kserve:
            isvc = builders.build_inference_service(endpoint, self.config)
            await self.kube.create(isvc)
            live = (
                await self.kube.get(f"{collection_path(isvc['apiVersion'], isvc['kind'], namespace)}/{name}")
                or {}
            )
            live_status = live.get("status") or {}
            ready = any(
                cond.get("type") == "Ready" and cond.get("status") == "True"
                for cond in live_status.get("conditions") or []
            )
            status.backend = "kserve"
            status.url = live_status.get("url")
            status.ready_replicas = desired if ready else 0
        else:
            deployment = builders.build_deployment(endpoint, self.config)
            await self.kube.create(deployment)
            await self.kube.create(builders.build_service(endpoint))
            hpa = builders.build_hpa(endpoint)
            if hpa is not None:
                await self.kube.create(hpa)
            path = f"{collection_path('apps/v1', 'Deployment', namespace)}/{name}"
            live = await self.kube.get(path) or {}
            if (live.get("spec") or {}).get("replicas") != desired and hpa is None:
                await self.kube.merge_patch(path, {"spec": {"replicas": desired}})
            ready_count = int((live.get("status") or {}).get("readyReplicas") or 0)
            ready = desired > 0 and ready_count >= desired
            status.backend = "deployment"
            status.url = builders.endpoint_url(endpoint)
            status.ready_replicas = ready_count
        status.replicas = desired
        status.phase = "Ready" if ready else "Pending"
        status.conditions = c.set_condition(
            status.conditions,
            c.ENDPOINT_READY,
            ready,
            c.R_ENDPOINT_READY if ready else c.R_ENDPOINT_PENDING,
            f"{status.ready_replicas}/{desired} replicas ready",
            utcnow(),
            endpoint["metadata"].get("generation"),
        )
        status.observed_generation = endpoint["metadata"].get("generation")
        after = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if after != before:
            await self.kube.merge_patch(nexaendpoint_path(namespace, name) + "/status", {"status": after})
            await self._notify_deploy_job(endpoint)
        return None if ready else 5.0

    async def _notify_deploy_job(self, endpoint: dict[str, Any]) -> None:
        owner = (endpoint["metadata"].get("labels") or {}).get(LABEL_NEXAJOB)
        if owner:
            asyncio.get_running_loop().create_task(self.nexajob(endpoint["metadata"]["namespace"], owner))
