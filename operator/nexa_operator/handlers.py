"""The kopf handlers: a few lines each, all work done by ``Controller``.

Level-triggered: every NexaJob or NexaEndpoint event (from kopf), every event of a
Job, Pod or Deployment the operator made (from the controller's informers), and
the controller's resync loop all call the same idempotent reconcile, so a missed or
duplicated event changes nothing and no NexaJob waits longer than one resync
interval (``NEXA_OPERATOR_RESYNC_SECONDS``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from nexa.contracts.nexajob import GROUP, NEXAENDPOINT_PLURAL, NEXAJOB_FINALIZER, NEXAJOB_PLURAL, VERSION

# Registers the NexaPipeline handlers; they share this module's controller (memo["controller"]).
from nexa_operator import pipeline_handlers  # noqa: F401
from nexa_operator.config import OperatorConfig
from nexa_operator.controller import Controller
from nexa_operator.kube import KubeClient, load_connection

CONFIG = OperatorConfig.from_env()
# The namespaces ``python -m nexa_operator --namespace`` restricts the operator to (all when empty).
NAMESPACES: list[str] = []
log = logging.getLogger("nexa.operator")


class NoDiffBase(kopf.DiffBaseStorage):
    """Keep no last-handled configuration: no handler here reacts to diffs, so the patch is waste
    (and so is the deep copy kopf makes of every object to build one)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

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
    settings.persistence.finalizer = NEXAJOB_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    controller = Controller(KubeClient(load_connection()), CONFIG)
    port = os.environ.get("NEXA_OPERATOR_METRICS_PORT", "9090")
    if port and port != "0":
        controller.metrics.serve(int(port))
    controller.start_background(NAMESPACES)
    memo["controller"] = controller


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo["controller"].stop_background()
    await memo["controller"].kube.close()


@kopf.on.event(GROUP, VERSION, NEXAJOB_PLURAL)
async def nexajob_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    memo["controller"].remember_nexajob(event["type"], event["object"])
    if event["type"] != "DELETED":
        await memo["controller"].nexajob(namespace, name)


@kopf.on.delete(GROUP, VERSION, NEXAJOB_PLURAL)
async def nexajob_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await memo["controller"].cleanup_nexajob(namespace, name)


@kopf.on.event(GROUP, VERSION, NEXAENDPOINT_PLURAL)
async def endpoint_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    memo["controller"].remember_endpoint(event["type"], event["object"])
    if event["type"] != "DELETED":
        await memo["controller"].endpoint(namespace, name)
