"""The rendered chart against a real API server, and every example NexaJob run to the end by the operator.

Server-side dry-run applies every object of every value set into a namespace that
enforces the "restricted" Pod Security Standard (and warns on it, so pod templates
are checked too); zero warnings allowed. ServiceMonitors, PodMonitors and the
PrometheusRule are left out: the test control plane has no Prometheus Operator CRDs
(the rules themselves are checked by promtool, tests/unit/test_alert_rules.py). The cluster-mode value
set's RBAC and admission policy are applied for real, and exercised as the gateway's
ServiceAccount, in tests/integration/test_gateway_kubernetes.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from nexa.contracts.nexajob import GROUP, NEXAJOB_PLURAL, VERSION, nexajob_job_id
from tests.fixtures.helm import CHART, REPO_ROOT, VALUE_SETS, example_manifests, render
from tests.fixtures.k8s import KWOK_RUN_DURATION_ANNOTATION, K8sCluster

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

run_one = pytest.importorskip("nexa_engines.run_one")

TERMINAL = ("Completed", "Failed", "Cancelled")
PROMETHEUS_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
PSS_LABELS = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn", "audit")]


@pytest.fixture(scope="module")
def cluster(k8s_cluster: K8sCluster) -> K8sCluster:
    k8s_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for crd in ("nexajobs.nexa.run", "nexaendpoints.nexa.run"):
        k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    return k8s_cluster


@pytest.fixture(scope="module")
def restricted_namespace(cluster: K8sCluster) -> str:
    namespace = cluster.create_namespace()
    cluster.kubectl("label", "namespace", namespace, "--overwrite", *PSS_LABELS)
    return namespace


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_object_is_accepted_by_server_side_dry_run_without_warnings(
    cluster: K8sCluster, restricted_namespace: str, value_set: str, tmp_path: Path
) -> None:
    # Namespaced RBAC must point at namespaces that exist: use the test namespace.
    sets = [f"operator.watchNamespaces={{{restricted_namespace}}}"] if value_set == "kueue" else []
    objects = [
        o
        for o in render(VALUE_SETS[value_set], sets, namespace=restricted_namespace)
        if o["kind"] not in PROMETHEUS_KINDS
    ]
    # Cluster-scoped names are shared by every value set; CRDs are installed above.
    objects = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    result = cluster.kubectl("apply", "--dry-run=server", "-f", str(manifest), check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects), result.stdout


def test_the_namespace_really_enforces_restricted(cluster: K8sCluster, restricted_namespace: str) -> None:
    """The check above means something: a root pod is refused in that namespace."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-pod", "namespace": restricted_namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "securityContext": {"runAsUser": 0}}]},
    }
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0 and "violates PodSecurity" in result.stderr, result.stderr


# ---------------------------------------------------------------- examples run by the operator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def examples_namespace(cluster: K8sCluster) -> str:
    return cluster.create_namespace()


@pytest.fixture(scope="module")
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("example-artifacts")


@pytest.fixture(scope="module")
def operator_process(
    cluster: K8sCluster,
    examples_namespace: str,
    artifact_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[subprocess.Popen[bytes]]:
    log_path = tmp_path_factory.mktemp("operator-log") / "operator.log"
    env = dict(os.environ)
    env.pop("NEXA_S3_ENDPOINT", None)
    env.update(
        KUBECONFIG=str(cluster.kubeconfig),
        NEXA_ARTIFACT_ROOT=str(artifact_root),
        NEXA_OPERATOR_RESYNC_SECONDS="1",
        NEXA_OPERATOR_RETRY_BASE_SECONDS="1",
        NEXA_OPERATOR_METRICS_PORT="0",
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nexa_operator",
                "--namespace",
                examples_namespace,
                "--health-port",
                str(_free_port()),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.returncode not in (0, -15):
        print(log_path.read_text(errors="replace")[-4000:])


def _wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.parametrize("file_name", sorted(example_manifests()))
def test_example_nexajob_runs_to_completion(
    cluster: K8sCluster,
    examples_namespace: str,
    artifact_root: Path,
    operator_process: subprocess.Popen[bytes],
    file_name: str,
) -> None:
    manifest = example_manifests()[file_name]
    manifest["metadata"]["namespace"] = examples_namespace
    # KWOK runs no container: keep the pod "running" long enough to leave the engine's result first.
    manifest["metadata"]["annotations"] = {
        "nexa.run/pod-annotations": json.dumps({KWOK_RUN_DURATION_ANNOTATION: "4s"})
    }
    name = manifest["metadata"]["name"]
    with cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        created = cast(
            dict[str, Any],
            custom.create_namespaced_custom_object(
                GROUP, VERSION, examples_namespace, NEXAJOB_PLURAL, manifest
            ),
        )
        job_id = nexajob_job_id(name, created["metadata"]["uid"])
        result = {"example": file_name}
        run_one.write_result_record(
            {"NEXA_ARTIFACT_ROOT": str(artifact_root)},
            job_id,
            1,
            run_one.result_record(job_id, 1, result, [], {}),
        )

        def finished() -> dict[str, Any] | None:
            obj = cast(
                dict[str, Any],
                custom.get_namespaced_custom_object(GROUP, VERSION, examples_namespace, NEXAJOB_PLURAL, name),
            )
            return obj if (obj.get("status") or {}).get("phase") in TERMINAL else None

        done = _wait_for(f"{file_name} to reach a terminal phase", finished, 90)
    assert operator_process.poll() is None, "the operator exited"
    assert done["status"]["phase"] == "Completed", done["status"]
