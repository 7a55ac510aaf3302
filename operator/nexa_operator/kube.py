"""The only module that talks to the Kubernetes API: a small async client over aiohttp.

Credentials come from the usual places (``KUBECONFIG`` / ``~/.kube/config``, or the
in-cluster service account) through kopf's loaders; requests
go straight to the REST API as JSON dicts, which keeps the operator fast and small.
"""

from __future__ import annotations

import base64
import json as _json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from nexa.contracts.nexajob import GROUP, NEXAENDPOINT_PLURAL, NEXAJOB_PLURAL, VERSION


class KubeError(Exception):
    """The API refused a request; ``status`` and ``reason`` say how."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Conflict(KubeError):
    """409 Conflict: the object changed since it was read (or already exists)."""


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate to it."""

    host: str
    headers: dict[str, str]
    verify: ssl.SSLContext | bool


def load_connection(kubeconfig: str | None = None) -> Connection:
    """Credentials from ``kubeconfig`` (or ``$KUBECONFIG`` / ``~/.kube/config``), else the in-cluster service account.

    Uses kopf's own loaders, so the operator never imports the large ``kubernetes`` package.
    """
    import kopf

    settings = kopf.OperatorSettings()
    info = None
    if not kubeconfig:
        info = kopf.login_with_service_account(settings=settings)
    if info is None:
        previous = os.environ.get("KUBECONFIG")
        if kubeconfig:
            os.environ["KUBECONFIG"] = kubeconfig
        try:
            info = kopf.login_with_kubeconfig(settings=settings)
        finally:
            if kubeconfig:
                if previous is None:
                    del os.environ["KUBECONFIG"]
                else:
                    os.environ["KUBECONFIG"] = previous
    if info is None:
        raise KubeError(0, "NoCredentials", "no kubeconfig and no in-cluster service account found")
    return connection_from_info(info)


def _data_file(data: bytes | str, suffix: str) -> str:
    handle = tempfile.NamedTemporaryFile(prefix="nexa-kube-", suffix=suffix, delete=False)  # noqa: SIM115
    with handle:
        handle.write(data if isinstance(data, bytes) else data.encode())
    return handle.name


def connection_from_info(info: Any) -> Connection:
    """A ``Connection`` from kopf's ``ConnectionInfo``."""
    headers = {"Accept": "application/json"}
    if info.token:
        headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
    elif info.username and info.password:
        raw = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
        headers["Authorization"] = f"Basic {raw}"
    verify: ssl.SSLContext | bool = not info.insecure
    if not info.insecure:
        context = ssl.create_default_context(cafile=info.ca_path)
        if info.ca_data:
            data = info.ca_data
            context.load_verify_locations(cadata=data.decode() if isinstance(data, bytes) else data)
        cert = info.certificate_path or (
            _data_file(info.certificate_data, ".crt") if info.certificate_data else None
        )
        key = info.private_key_path or (
            _data_file(info.private_key_data, ".key") if info.private_key_data else None
        )
        if cert and key:
            context.load_cert_chain(cert, key)
        verify = context
    return Connection(host=str(info.server).rstrip("/"), headers=headers, verify=verify)


# --- paths ---------------------------------------------------------------------------------


def nexajob_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{NEXAJOB_PLURAL}"
    return f"{base}/{name}" if name else base


def nexaendpoint_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{NEXAENDPOINT_PLURAL}"
    return f"{base}/{name}" if name else base


_RESOURCES = {
    ("batch/v1", "Job"): "/apis/batch/v1/namespaces/{ns}/jobs",
    ("v1", "Pod"): "/api/v1/namespaces/{ns}/pods",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("v1", "Event"): "/api/v1/namespaces/{ns}/events",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
    ): "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
    (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    ): "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices",
    (f"{GROUP}/{VERSION}", "NexaJob"): "/apis/" + f"{GROUP}/{VERSION}" + "/namespaces/{ns}/" + NEXAJOB_PLURAL,
    (f"{GROUP}/{VERSION}", "NexaEndpoint"): "/apis/"
    + f"{GROUP}/{VERSION}"
    + "/namespaces/{ns}/"
    + NEXAENDPOINT_PLURAL,
}


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    """The namespaced collection URL of a kind the operator manages."""
    return _RESOURCES[(api_version, kind)].format(ns=namespace)


def watch_path(api_version: str, kind: str, namespace: str | None) -> str:
    """The collection URL in one namespace, or across all of them when ``namespace`` is None."""
    if namespace is None:
        return _RESOURCES[(api_version, kind)].replace("/namespaces/{ns}", "")
    return collection_path(api_version, kind, namespace)


def object_path(obj: dict[str, Any]) -> str:
    """The URL of one object from its apiVersion, kind, namespace and name."""
    meta = obj["metadata"]
    return f"{collection_path(obj['apiVersion'], obj['kind'], meta['namespace'])}/{meta['name']}"


# A list of objects; an alias because ``KubeClient.list`` shadows the builtin in the class body.
Objects = list[dict[str, Any]]


class KubeClient:
    """Async JSON access to the API server: get, list, create, patch, delete (aiohttp, as kopf uses)."""

    def __init__(self, connection: Connection, *, timeout: float = 30.0, max_connections: int = 64) -> None:
        self.connection = connection
        self._timeout = timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: it must belong to the running event loop
            self._session = aiohttp.ClientSession(
                base_url=self.connection.host,
                headers=self.connection.headers,
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self.connection.verify),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """The status and decoded JSON body; KubeError for 4xx/5xx other than 404."""
        headers = {"Content-Type": content_type} if json is not None else None
        data = _json.dumps(json) if json is not None else None
        async with self._http().request(method, path, data=data, params=params, headers=headers) as response:
            text = await response.text()
            status = response.status
            reason = response.reason or ""
        try:
            body = _json.loads(text) if text else None
        except ValueError:
            body = None
        if status >= 400 and status != 404:
            info = body if isinstance(body, dict) else {"reason": reason, "message": text[:500]}
            error_type = Conflict if status == 409 else KubeError
            raise error_type(status, str(info.get("reason", "")), str(info.get("message", "")))
        return status, body

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when it does not exist."""
        status, body = await self._call("GET", path)
        return None if status == 404 else dict(body)

    async def list(self, path: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        """Every object of a collection (following continue tokens)."""
        items, _ = await self.list_with_version(path, label_selector=label_selector)
        return items

    async def list_with_version(self, path: str, *, label_selector: str | None = None) -> tuple[Objects, str]:
        """Every object of a collection and the resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            status, data = await self._call("GET", path, params=params)
            if status == 404:
                return items, ""
            items.extend(data.get("items") or [])
            meta = data.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion") or "")
            params["continue"] = token

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The events of one watch request, as ``(type, object)``, until the server ends it."""
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        # The server closes the stream after timeoutSeconds; the client waits a little longer.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        async with self._http().get(path, params=params, timeout=timeout) as response:
            if response.status >= 400:
                text = await response.text()
                if response.status == 410:
                    yield "ERROR", {"code": 410, "reason": "Expired", "message": text[:500]}
                    return
                raise KubeError(response.status, response.reason or "", text[:500])
            # One JSON event per line; lines can exceed aiohttp's default 64 KiB line limit.
            pending = b""
            async for chunk in response.content.iter_any():
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line.strip():
                        event = _json.loads(line)
                        yield event["type"], event["object"]

    async def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """Create ``obj``; ``(object, True)`` when made now, ``(None, False)`` when it already existed."""
        path = collection_path(obj["apiVersion"], obj["kind"], obj["metadata"]["namespace"])
        try:
            status, data = await self._call("POST", path, json=obj)
        except Conflict as exc:
            if exc.reason == "AlreadyExists":
                return None, False
            raise
        if status == 404:
            raise KubeError(
                404, "NotFound", f"cannot create {obj['kind']}: {path} not found (CRD or namespace missing)"
            )
        return dict(data), True

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a JSON merge patch; None when the object is gone. A resourceVersion in it makes it conditional."""
        status, data = await self._call(
            "PATCH", path, json=patch, content_type="application/merge-patch+json"
        )
        return None if status == 404 else dict(data)

    async def delete(self, path: str, *, propagation: str = "Background") -> bool:
        """Delete an object (its dependents per ``propagation``); False when it was already gone."""
        status, _ = await self._call(
            "DELETE",
            path,
            json={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
        )
        return bool(status != 404)

    async def api_exists(self, group_version_path: str) -> bool:
        """Whether an API group/version is served (e.g. KServe's)."""
        status, _ = await self._call("GET", group_version_path)
        return status == 200
