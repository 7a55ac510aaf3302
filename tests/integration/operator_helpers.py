"""Helpers for tests that run ``python -m nexa_operator`` against the test control plane.

The operator runs as a real process with a short resync interval; the tests read
and write the cluster with the ``kubernetes`` client, and play the parts nothing
runs here: the kubelet is KWOK, and where a test needs Kueue or KServe it does
their writes itself (unsuspending a Job, setting an InferenceService's status).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from nexa.contracts.nexajob import GROUP, NEXAENDPOINT_PLURAL, NEXAJOB_PLURAL, VERSION
from nexa_engines.run_one import result_record, write_result_record
from tests.fixtures.k8s import K8sCluster

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
RESYNC_SECONDS = 2
CPU_IMAGE = "nexa/engine-cpu:test"
CUDA_IMAGE = "nexa/engine-cuda:test"
SERVING_IMAGE = "nexa/serve:test"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """``python -m nexa_operator`` for one namespace, restartable and killable.

    ``env`` adds or overrides ``NEXA_OPERATOR_*`` settings (a Kueue queue, say).
    """

    def __init__(
        self,
        cluster: K8sCluster,
        namespace: str,
        artifacts: Path,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.artifacts = artifacts
        self.log_dir = log_dir
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.cluster.kubeconfig),
            NEXA_ARTIFACT_ROOT=str(self.artifacts),
            NEXA_OPERATOR_RESYNC_SECONDS=str(RESYNC_SECONDS),
            NEXA_OPERATOR_RETRY_BASE_SECONDS="1",
            NEXA_OPERATOR_PROGRESS_SECONDS="1",
            NEXA_OPERATOR_METRICS_PORT="0",
            NEXA_OPERATOR_CPU_IMAGE=CPU_IMAGE,
            NEXA_OPERATOR_CUDA_IMAGE=CUDA_IMAGE,
            NEXA_OPERATOR_SERVING_IMAGE=SERVING_IMAGE,
        )
        env.pop("NEXA_S3_ENDPOINT", None)
        env.update(self.extra_env)
        log = open(self.log_dir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nexa_operator",
                "--namespace",
                self.namespace,
                "--health-port",
                str(free_port()),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.log_dir.glob("operator-*.log"))
        )


def start_operator(
    cluster: K8sCluster, namespace: str, root: Path, env: Mapping[str, str] | None = None
) -> OperatorProcess:
    """An operator for ``namespace`` with its artifacts and logs under ``root``, already started."""
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    proc = OperatorProcess(cluster, namespace, root / "artifacts", root, env)
    proc.start()
    return proc


def crd_established(api: Any, name: str) -> bool:
    from kubernetes import client

    crd: Any = client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def install_crds(cluster: K8sCluster) -> None:
    """Apply crds/ and wait until the API server serves both kinds."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    with cluster.api_client() as api:
        for crd in (f"{NEXAJOB_PLURAL}.{GROUP}", f"{NEXAENDPOINT_PLURAL}.{GROUP}"):
            wait_for(f"CRD {crd} to be established", partial(crd_established, api, crd), 60)


def read_or_none(read: Callable[[], Any]) -> Any:
    """What ``read`` returns, or None when it answers 404."""
    from kubernetes.client.exceptions import ApiException

    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def not_found(read: Callable[[], Any]) -> bool:
    """True when ``read`` answers 404."""
    return read_or_none(read) is None


# --- Nexa custom resources ----------------------------------------------------------------


def create_custom(api: Any, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    from kubernetes import client

    custom: Any = client.CustomObjectsApi(api)
    created: dict[str, Any] = custom.create_namespaced_custom_object(
        GROUP, VERSION, obj["metadata"]["namespace"], plural, obj
    )
    return created


def get_custom(api: Any, plural: str, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    custom: Any = client.CustomObjectsApi(api)
    found: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    return found


def patch_custom(api: Any, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
    from kubernetes import client

    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, patch
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The status condition of ``type_`` on a custom object, if set."""
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def nexajob_phase(api: Any, namespace: str, name: str) -> str | None:
    return (get_custom(api, NEXAJOB_PLURAL, namespace, name).get("status") or {}).get("phase")


def terminal(api: Any, namespace: str, name: str, timeout: float = 90.0) -> dict[str, Any]:
    """The NexaJob once it is Completed, Failed or Cancelled (its status in the failure otherwise)."""

    def check() -> dict[str, Any] | None:
        obj = get_custom(api, NEXAJOB_PLURAL, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") in ("Completed", "Failed", "Cancelled") else None

    try:
        result: dict[str, Any] = wait_for(f"NexaJob {name} to finish", check, timeout)
    except AssertionError as exc:
        status = get_custom(api, NEXAJOB_PLURAL, namespace, name).get("status")
        raise AssertionError(f"{exc}; status: {status}") from None
    return result


def write_result(
    operator: OperatorProcess, obj: dict[str, Any], attempt: int, result: dict[str, Any]
) -> None:
    """What run_one does on success, done here because KWOK runs no container."""
    job_id = obj["metadata"]["name"].replace("-", "_", 1)
    env = {"NEXA_ARTIFACT_ROOT": str(operator.artifacts)}
    write_result_record(env, job_id, attempt, result_record(job_id, attempt, result, [], {}))


# --- what the operator makes --------------------------------------------------------------


def jobs_of(api: Any, namespace: str, nexajob: str) -> list[Any]:
    """The Kubernetes Jobs of every attempt of a NexaJob, by name."""
    from kubernetes import client

    items = (
        client.BatchV1Api(api)
        .list_namespaced_job(namespace, label_selector=f"nexa.run/nexajob={nexajob}")
        .items
    )
    return sorted(items, key=lambda j: j.metadata.name)


def pods_with(api: Any, namespace: str, selector: str) -> list[Any]:
    from kubernetes import client

    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)
