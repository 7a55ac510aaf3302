"""The informer's list/watch protocol: relist on 410 Gone, report what vanished meanwhile.

The API server is scripted here (a pure protocol test); ``tests/integration`` runs
the informer inside the operator against a real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nexa_operator.informer import Informer
from nexa_operator.kube import KubeError


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version}}


class ScriptedApi:
    """Answers list and watch calls from scripts; a watch script ends with the stream."""

    def __init__(
        self,
        lists: list[tuple[list[dict[str, Any]], str]],
        watches: list[list[tuple[str, dict[str, Any]]] | Exception],
    ) -> None:
        self.lists = lists
        self.watches = watches
        self.watched_from: list[str] = []

    async def list_with_version(
        self, path: str, *, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        return self.lists.pop(0)

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watched_from.append(resource_version)
        if not self.watches:
            await asyncio.Event().wait()  # nothing more to say: hang like a quiet watch
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        for event in script:
            yield event


async def run_until(informer: Informer, seen: list[tuple[str, str]], count: int) -> None:
    task = asyncio.create_task(informer.run())
    for _ in range(500):
        if len(seen) >= count:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_gone_relists_and_reports_objects_deleted_while_not_watching() -> None:
    api = ScriptedApi(
        lists=[([obj("a", "1"), obj("b", "2")], "2"), ([obj("a", "5"), obj("c", "6")], "6")],
        watches=[
            [("MODIFIED", obj("a", "3")), ("BOOKMARK", obj("", "4"))],
            [("ERROR", {"code": 410, "reason": "Expired", "message": "too old"})],
        ],
    )
    seen: list[tuple[str, str]] = []
    informer = Informer(api, "/x", lambda t, o: seen.append((t, o["metadata"]["name"])))  # type: ignore[arg-type]
    asyncio.run(run_until(informer, seen, 6))
    assert seen == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        # after the 410: a changed, c is new, b vanished while the watch was down
        ("MODIFIED", "a"),
        ("ADDED", "c"),
        ("DELETED", "b"),
    ]
    # The second watch resumed from the bookmark, not from the list.
    assert api.watched_from[:2] == ["2", "4"]
    assert informer.synced.is_set()


def test_a_failing_watch_is_retried_and_a_bad_handler_does_not_stop_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("nexa_operator.informer.RETRY_FIRST_SECONDS", 0.01)
    api = ScriptedApi(
        lists=[([], "1")],
        watches=[
            KubeError(500, "InternalError", "etcd hiccup"),
            [("ADDED", obj("x", "2")), ("ADDED", obj("y", "3"))],
        ],
    )
    seen: list[str] = []

    def handler(event_type: str, o: dict[str, Any]) -> None:
        if o["metadata"]["name"] == "x":
            raise RuntimeError("bug in one handler")
        seen.append(o["metadata"]["name"])

    informer = Informer(api, "/x", handler)  # type: ignore[arg-type]
    asyncio.run(run_until(informer, seen, 1))
    assert seen == ["y"]
    assert api.watched_from[:2] == ["1", "1"]  # the failed watch resumed where it was
