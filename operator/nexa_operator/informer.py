"""List-then-watch of one collection, feeding a callback: the operator's informer.

kopf gives every watched object its own worker task and runs its cause detection on
every event; for the Jobs and Pods the operator makes (thousands, each with several
events) that machinery cost more CPU and memory than the reconciles themselves. One
informer per collection keeps only the latest object and hands each event to the
controller, which coalesces per NexaJob anyway.

The protocol is the API server's: LIST (paged) gives a resourceVersion, WATCH from it
with bookmarks; a 410 Gone (the version was compacted away) means LIST again, and
objects that vanished meanwhile are reported as DELETED so caches do not keep ghosts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nexa_operator.kube import KubeClient, KubeError

log = logging.getLogger("nexa.operator.informer")

Handler = Callable[[str, dict[str, Any]], None]

# Backoff after a failed list/watch, doubled per failure up to the cap.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


class Informer:
    """Keeps ``on_event(type, object)`` told of every change to a collection, for ever.

    ``path`` is a collection URL (cluster-wide like ``/apis/batch/v1/jobs`` or namespaced);
    ``label_selector`` narrows it to the objects the operator made.
    """

    def __init__(
        self,
        kube: KubeClient,
        path: str,
        on_event: Handler,
        *,
        label_selector: str | None = None,
        watch_timeout_seconds: int = 300,
    ) -> None:
        self.kube = kube
        self.path = path
        self.on_event = on_event
        self.label_selector = label_selector
        self.watch_timeout_seconds = watch_timeout_seconds
        self.synced = asyncio.Event()
        self._versions: dict[tuple[str, str], str] = {}

    async def run(self) -> None:
        """List and watch until cancelled; errors are logged and retried with backoff."""
        delay = RETRY_FIRST_SECONDS
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._relist()
                    self.synced.set()
                version = await self._watch(version)
                delay = RETRY_FIRST_SECONDS
            except Gone:
                version = None
            except asyncio.CancelledError:
                raise
            except (TimeoutError, KubeError, OSError, ValueError) as exc:
                log.warning("watch of %s failed (%s); again in %.1fs", self.path, exc, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_SECONDS, delay * 2)

    async def _relist(self) -> str:
        items, version = await self.kube.list_with_version(self.path, label_selector=self.label_selector)
        seen: dict[tuple[str, str], str] = {}
        for obj in items:
            key = _key(obj)
            seen[key] = obj["metadata"].get("resourceVersion", "")
            if self._versions.get(key) != seen[key]:
                self._deliver("ADDED" if key not in self._versions else "MODIFIED", obj)
        for key in self._versions.keys() - seen.keys():
            namespace, name = key
            self._deliver("DELETED", {"metadata": {"namespace": namespace, "name": name}})
        self._versions = seen
        return version

    async def _watch(self, version: str) -> str:
        """Follow one watch request to its end; returns the version to resume from."""
        async for event_type, obj in self.kube.watch(
            self.path,
            resource_version=version,
            label_selector=self.label_selector,
            timeout_seconds=self.watch_timeout_seconds,
        ):
            if event_type == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise KubeError(int(obj.get("code") or 0), str(obj.get("reason")), str(obj.get("message")))
            version = obj["metadata"].get("resourceVersion") or version
            if event_type == "BOOKMARK":
                continue
            key = _key(obj)
            if event_type == "DELETED":
                self._versions.pop(key, None)
            else:
                self._versions[key] = version
            self._deliver(event_type, obj)
        return version

    def _deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        try:
            self.on_event(event_type, obj)
        except Exception:  # one bad object must not stop the watch of all the others
            log.exception("handling %s of %s failed", event_type, _key(obj))
