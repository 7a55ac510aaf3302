"""The kopf handlers: a few lines each, all work done by ``Controller``.

Level-triggered: every NexaJob event, every event of a Job or Pod the operator
made, and a timer all call the same idempotent reconcile, so a missed or
duplicated event changes nothing and no NexaJob waits longer than one timer
interval (``NEXA_OPERATOR_RESYNC_SECONDS``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from nexa.contracts.crd import (
    GROUP,
    LABEL_ENDPOINT,
    LABEL_MANAGED_BY,
    LABEL_NEXAJOB,
    NEXAENDPOINT_PLURAL,
    NEXAJOB_PLURAL,
    VERSION,
)
from nexa_operator.builders import MANAGER
from nexa_operator.config import OperatorConfig
from nexa_operator.controller import Controller
from nexa_operator.kube import KubeClient, load_connection

CONFIG = OperatorConfig.from_env()
FINALIZER = "nexa.run/cleanup"
log = logging.getLogger("nexa.operator")


class NoDiffBase(kopf.DiffBaseStorage):
    """Keep no last-handled configuration: no handler here reacts to diffs, so the patch is waste."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own loaders: importing the ``kubernetes`` package would cost ~50 MB of RSS.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    controller = Controller(KubeClient(load_connection()), CONFIG)
    port = os.environ.get("NEXA_OPERATOR_METRICS_PORT", "9090")
    if port and port != "0":
        controller.metrics.serve(int(port))
    memo["controller"] = controller


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo["controller"].kube.close()


@kopf.on.event(GROUP, VERSION, NEXAJOB_PLURAL)
async def nexajob_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    memo["controller"].remember_nexajob(event["type"], event["object"])
    if event["type"] != "DELETED":
        await memo["controller"].nexajob(namespace, name)


@kopf.timer(
    GROUP, VERSION, NEXAJOB_PLURAL, interval=CONFIG.resync_seconds, initial_delay=CONFIG.resync_seconds
)
async def nexajob_resync(namespace: str | None, name: str, status: kopf.Status, memo: Any, **_: Any) -> None:
    if status.get("phase") not in ("Completed", "Failed", "Cancelled"):
        await memo["controller"].nexajob(namespace, name)


@kopf.on.delete(GROUP, VERSION, NEXAJOB_PLURAL)
async def nexajob_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await memo["controller"].cleanup_nexajob(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGER, LABEL_NEXAJOB: kopf.PRESENT})
async def job_changed(
    event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any
) -> None:
    memo["controller"].remember_job(event["type"], event["object"])
    await memo["controller"].nexajob(namespace, labels[LABEL_NEXAJOB])


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGER, LABEL_NEXAJOB: kopf.PRESENT})
async def pod_changed(
    event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any
) -> None:
    memo["controller"].remember_pod(event["type"], event["object"])
    await memo["controller"].nexajob(namespace, labels[LABEL_NEXAJOB])


@kopf.on.event(GROUP, VERSION, NEXAENDPOINT_PLURAL)
async def endpoint_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    if event["type"] != "DELETED":
        await memo["controller"].endpoint(namespace, name)


@kopf.timer(
    GROUP, VERSION, NEXAENDPOINT_PLURAL, interval=CONFIG.resync_seconds, initial_delay=CONFIG.resync_seconds
)
async def endpoint_resync(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await memo["controller"].endpoint(namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGER, LABEL_ENDPOINT: kopf.PRESENT})
async def deployment_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    await memo["controller"].endpoint(namespace, labels[LABEL_ENDPOINT])
