"""The NexaPipeline handlers: read the pipeline and its NexaJobs, decide (``pipelines``), write.

Event-driven: every event of a NexaPipeline (its spec, an approve or cancel annotation)
and every event of a NexaJob labelled ``nexa.run/pipeline`` (a step's job moving on)
reconciles the pipeline. The controller's per-object coalescing runs one reconcile per
pipeline at a time, and an unfinished pipeline is looked at again every resync interval
(``NEXA_OPERATOR_RESYNC_SECONDS``), so a missed event only delays it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from nexa.contracts.nexajob import GROUP, NEXAJOB_PLURAL, VERSION
from nexa.contracts.nexapipeline import LABEL_PIPELINE, MAX_NAME, NEXAPIPELINE_PLURAL
from nexa_operator.controller import CONFLICT_RETRIES, Controller
from nexa_operator.kube import Conflict, KubeError, nexajob_path
from nexa_operator.pipelines import decide_pipeline, is_finished
from nexa_operator.reconcile import status_patch

log = logging.getLogger("nexa.operator.pipelines")


def nexapipeline_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{NEXAPIPELINE_PLURAL}/{name}"


async def reconcile_pipeline(controller: Controller, namespace: str, name: str) -> None:
    """Reconcile one NexaPipeline (safe to call any number of times, from any trigger)."""

    async def work() -> float | None:
        return await _reconcile(controller, namespace, name)

    # The controller's coalescing (one at a time per object, retries and requeues on API errors).
    await controller._serialised(("nexapipeline", namespace, name), work)


async def _reconcile(controller: Controller, namespace: str, name: str) -> float | None:
    kube = controller.kube
    path = nexapipeline_path(namespace, name)
    refused: dict[str, str] = {}
    for _ in range(CONFLICT_RETRIES):
        pipeline = await kube.get(path)
        if pipeline is None or pipeline["metadata"].get("deletionTimestamp") or is_finished(pipeline):
            return None  # gone (its NexaJobs go with it, by owner reference), or done for good
        children: list[dict[str, Any]] = []
        if len(name) <= MAX_NAME:  # a longer name is no label value; the decision fails the pipeline
            children = await kube.list(nexajob_path(namespace), label_selector=f"{LABEL_PIPELINE}={name}")
        plan = decide_pipeline(pipeline, children, datetime.now(UTC), refused)
        try:
            for child in plan.create:
                await kube.create(child)  # (None, False) when it exists already: made by an earlier round
        except KubeError as exc:
            if exc.status != 422:
                raise
            # Invalid for the NexaJob CRD (a CEL rule the contract does not hold): fail the step.
            refused[child["metadata"]["name"]] = exc.message[:500]
            continue
        for job in plan.cancel:
            await kube.merge_patch(nexajob_path(namespace, job), {"spec": {"cancel": True}})
        if plan.status is not None:
            try:
                # Conditional on what we decided from: a concurrent change is a 409, and we decide again.
                await kube.merge_patch(
                    path + "/status",
                    {
                        "metadata": {"resourceVersion": pipeline["metadata"]["resourceVersion"]},
                        "status": status_patch(pipeline.get("status") or {}, plan.status),
                    },
                )
            except Conflict as exc:
                log.info(
                    "NexaPipeline %s/%s changed while reconciling (%s); again", namespace, name, exc.reason
                )
                continue
        for type_, reason, message in plan.events:
            await controller._event(pipeline, type_, reason, message)
        return None if plan.finished else controller.config.resync_seconds
    return 1.0


@kopf.on.event(GROUP, VERSION, NEXAPIPELINE_PLURAL)
async def nexapipeline_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    if event["type"] != "DELETED" and namespace:
        await reconcile_pipeline(memo["controller"], namespace, name)


@kopf.on.event(GROUP, VERSION, NEXAJOB_PLURAL, labels={LABEL_PIPELINE: kopf.PRESENT})
async def pipeline_step_changed(
    event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any
) -> None:
    if namespace:
        await reconcile_pipeline(memo["controller"], namespace, labels[LABEL_PIPELINE])
