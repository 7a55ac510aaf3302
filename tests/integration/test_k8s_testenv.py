"""The test control plane is a real Kubernetes: scheduling, Jobs, CRDs and kubectl all work."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tests.fixtures.k8s import (
    CPU_NODE,
    GPU_NODE,
    GPU_RESOURCE,
    GPU_TOLERATION,
    KWOK_OUTCOME_ANNOTATION,
    K8sCluster,
)

kubernetes = pytest.importorskip("kubernetes")
client = kubernetes.client

T = TypeVar("T")


@pytest.fixture
def testenv(k8s_cluster: K8sCluster) -> K8sCluster:
    """The local control plane with its KWOK nodes; tests of those nodes skip on a named cluster."""
    if not k8s_cluster.local:
        pytest.skip("checks the local testenv's fake KWOK nodes; NEXA_TEST_KUBECONFIG names another cluster")
    return k8s_cluster


_WAIT_S = 60.0


def _eventually(probe: Callable[[], T | None], what: str, timeout: float = _WAIT_S) -> T:
    """Poll ``probe`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def _gpu_job(name: str, gpus: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"nexa.run/tier": "gpu"},
                    "tolerations": [GPU_TOLERATION],
                    "containers": [
                        {
                            "name": "train",
                            "image": "nexa/engine:test",
                            "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def _job_condition(batch: Any, namespace: str, name: str, kind: str) -> Any | None:
    job = batch.read_namespaced_job_status(name, namespace)
    for condition in job.status.conditions or []:
        if condition.type == kind and condition.status == "True":
            return job
    return None


def _only_pod(core: Any, namespace: str, job: str) -> Any | None:
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    return pods[0] if len(pods) == 1 else None


def test_gpu_job_is_scheduled_on_the_gpu_node_and_completes(testenv: K8sCluster, k8s_namespace: str) -> None:
    with testenv.api_client() as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        batch.create_namespaced_job(k8s_namespace, _gpu_job("train-one-gpu", gpus=1))

        job = _eventually(
            lambda: _job_condition(batch, k8s_namespace, "train-one-gpu", "Complete"), "Job Complete"
        )
        assert job.status.succeeded == 1
        assert not job.status.failed

        pod = _eventually(lambda: _only_pod(core, k8s_namespace, "train-one-gpu"), "the Job's pod")
        assert pod.spec.node_name == GPU_NODE
        assert pod.status.phase == "Succeeded"
        [container] = pod.status.container_statuses
        assert container.state.terminated.exit_code == 0


def test_job_pod_marked_to_fail_fails_the_job(testenv: K8sCluster, k8s_namespace: str) -> None:
    with testenv.api_client() as api:
        batch = client.BatchV1Api(api)
        body = _gpu_job("train-crashes", gpus=1, annotations={KWOK_OUTCOME_ANNOTATION: "fail"})
        batch.create_namespaced_job(k8s_namespace, body)

        job = _eventually(
            lambda: _job_condition(batch, k8s_namespace, "train-crashes", "Failed"), "Job Failed"
        )
        assert job.status.failed == 1
        assert not job.status.succeeded


def test_job_asking_for_more_gpus_than_any_node_has_stays_unschedulable(
    testenv: K8sCluster, k8s_namespace: str
) -> None:
    with testenv.api_client() as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        batch.create_namespaced_job(k8s_namespace, _gpu_job("train-too-big", gpus=100))

        def unschedulable() -> Any | None:
            pod = _only_pod(core, k8s_namespace, "train-too-big")
            for condition in (pod.status.conditions or []) if pod else []:
                if condition.type == "PodScheduled" and condition.status == "False":
                    return condition
            return None

        condition = _eventually(unschedulable, "PodScheduled=False on the pod")
        assert condition.reason == "Unschedulable"
        assert f"Insufficient {GPU_RESOURCE}" in condition.message
        pod = _only_pod(core, k8s_namespace, "train-too-big")
        assert pod is not None
        assert pod.spec.node_name is None
        assert pod.status.phase == "Pending"
        assert not batch.read_namespaced_job_status("train-too-big", k8s_namespace).status.succeeded


def test_untolerated_pod_is_kept_off_the_gpu_node(testenv: K8sCluster, k8s_namespace: str) -> None:
    with testenv.api_client() as api:
        core = client.CoreV1Api(api)
        pod = {
            "metadata": {"name": "web"},
            "spec": {
                "containers": [{"name": "web", "image": "nginx", "resources": {"requests": {"cpu": "1"}}}]
            },
        }
        core.create_namespaced_pod(k8s_namespace, pod)

        def running() -> Any | None:
            current = core.read_namespaced_pod("web", k8s_namespace)
            return current if current.status.phase == "Running" else None

        assert _eventually(running, "the pod Running").spec.node_name == CPU_NODE


def test_crd_accepts_server_side_applied_objects(k8s_cluster: K8sCluster) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.nexa.run"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"trainingruns.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "trainingruns", "singular": "trainingrun", "kind": "TrainingRun"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["gpus"],
                                    "properties": {
                                        "gpus": {"type": "integer", "minimum": 1},
                                        "model": {"type": "string"},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    k8s_cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd))
    k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/trainingruns.{group}", "--timeout=30s")
    namespace = k8s_cluster.create_namespace()

    run = {
        "apiVersion": f"{group}/v1",
        "kind": "TrainingRun",
        "metadata": {"name": "llama-sft", "namespace": namespace},
        "spec": {"gpus": 4, "model": "llama-3-8b"},
    }
    with k8s_cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        custom.patch_namespaced_custom_object(
            group,
            "v1",
            namespace,
            "trainingruns",
            "llama-sft",
            run,
            field_manager="nexa-test",
            _content_type="application/apply-patch+yaml",
        )
        stored = custom.get_namespaced_custom_object(group, "v1", namespace, "trainingruns", "llama-sft")
    assert stored["spec"] == {"gpus": 4, "model": "llama-3-8b"}
    assert any(entry["manager"] == "nexa-test" for entry in stored["metadata"]["managedFields"])

    # The CRD's schema is enforced by the apiserver, not just stored.
    invalid = {**run, "metadata": {"name": "no-gpus", "namespace": namespace}, "spec": {"gpus": 0}}
    rejected = k8s_cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=json.dumps(invalid), check=False
    )
    assert rejected.returncode != 0
    assert "should be greater than or equal to 1" in rejected.stderr


def test_kubectl_lists_the_fake_nodes_ready_with_gpu_capacity(testenv: K8sCluster) -> None:
    listed = json.loads(testenv.kubectl("get", "nodes", "-o", "json").stdout)
    nodes = {node["metadata"]["name"]: node for node in listed["items"]}
    assert set(nodes) == {CPU_NODE, GPU_NODE}
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
    assert nodes[GPU_NODE]["status"]["allocatable"][GPU_RESOURCE] == "8"
    assert nodes[GPU_NODE]["metadata"]["labels"]["nvidia.com/gpu.product"] == "H100"
    assert GPU_RESOURCE not in nodes[CPU_NODE]["status"]["allocatable"]

    table = testenv.kubectl("get", "nodes", "--no-headers").stdout
    assert {line.split()[0] for line in table.splitlines()} == {CPU_NODE, GPU_NODE}
