"""Stopping a serving process from anywhere that can write the artifact store.

A serving process may run on any worker machine; the gateway cannot signal it.
Both can reach the artifact store, so undeploy is a record there: the gateway
commits a *stop request* artifact whose id is derived from the deployment id,
the serving process checks for it every few seconds (one ``exists`` call: a
stat locally, a HEAD on S3), shuts down, and commits a *stopped* record the
same way. Derived ids mean no listing, no shared database and no open port on
the worker; a request written while the server is briefly unreachable still
takes effect, and a repeat undeploy is a no-op (artifacts are idempotent).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from nexa import ids
from nexa_store.base import ArtifactError, ArtifactStore

DEPLOYMENT_FILE = "deployment.json"


def derived_id(deployment_id: str, tag: str) -> str:
    """A deterministic deployment-kind id for ``tag`` ("stop" or "stopped") of ``deployment_id``."""
    return ids.derived_id("dp", f"{tag}:{deployment_id}")


def _write_record(store: ArtifactStore, artifact_id: str, payload: dict[str, Any]) -> None:
    with store.begin("deployment", artifact_id) as writer:
        (writer.path / DEPLOYMENT_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
        writer.commit(config={"record": payload["record"], "deployment_id": payload["deployment_id"]})


def request_stop(store: ArtifactStore, deployment_id: str, *, requested_by: str) -> bool:
    """Ask the serving process of ``deployment_id`` to stop; False when a stop was already requested."""
    marker = derived_id(deployment_id, "stop")
    if store.exists(marker):
        return False
    payload = {
        "record": "stop_request",
        "deployment_id": deployment_id,
        "requested_by": requested_by,
        "requested_at": datetime.now(UTC).isoformat(),
    }
    try:
        _write_record(store, marker, payload)
    except ArtifactError:
        # Another undeploy committed the same marker first: the stop is requested either way.
        if not store.exists(marker):
            raise
    return True


def stop_requested(store: ArtifactStore, deployment_id: str) -> bool:
    """True once someone asked ``deployment_id`` to stop."""
    return store.exists(derived_id(deployment_id, "stop"))


def mark_stopped(store: ArtifactStore, deployment_id: str, *, reason: str) -> None:
    """Record that the serving process of ``deployment_id`` has exited."""
    marker = derived_id(deployment_id, "stopped")
    if store.exists(marker):
        return
    payload = {
        "record": "stopped",
        "deployment_id": deployment_id,
        "reason": reason,
        "stopped_at": datetime.now(UTC).isoformat(),
    }
    _write_record(store, marker, payload)


def is_stopped(store: ArtifactStore, deployment_id: str) -> bool:
    """True once the serving process recorded its exit."""
    return store.exists(derived_id(deployment_id, "stopped"))


def deployment_status(store: ArtifactStore, deployment_id: str) -> str:
    """``running``, ``stopping`` (stop requested, not yet confirmed) or ``stopped``."""
    if is_stopped(store, deployment_id):
        return "stopped"
    if stop_requested(store, deployment_id):
        return "stopping"
    return "running"


def stopped_at(store: ArtifactStore, deployment_id: str) -> datetime | None:
    """When the serving process of ``deployment_id`` recorded its exit; None while it has not."""
    marker = derived_id(deployment_id, "stopped")
    if not store.exists(marker):
        return None
    try:
        when = json.loads(store.read_file(marker, DEPLOYMENT_FILE)).get("stopped_at")
        return datetime.fromisoformat(str(when))
    except (ArtifactError, ValueError, AttributeError):
        return None
