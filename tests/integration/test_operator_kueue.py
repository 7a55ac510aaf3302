"""The operator under Kueue: Jobs wait suspended in a queue, and only Kueue starts them.

No Kueue controller runs here, so the test does Kueue's part of the bargain: it
admits a Job by setting ``spec.suspend: false`` (and preempts one by setting it
back), exactly the writes Kueue's job integration makes. Everything else is the
real operator process against the real control plane with KWOK nodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nexa.contracts import AuditSpec, JobType
from nexa.contracts.common import Resources
from nexa.contracts.nexajob import NEXAJOB_PLURAL, nexajob_object
from nexa.ids import new_id
from tests.fixtures.k8s import CPU_NODE, KWOK_RUN_DURATION_ANNOTATION, K8sCluster
from tests.integration.operator_helpers import (
    RESYNC_SECONDS,
    OperatorProcess,
    condition,
    create_custom,
    get_custom,
    jobs_of,
    patch_custom,
    pods_with,
    start_operator,
    terminal,
    wait_for,
    write_result,
)

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

QUEUE = "nexa-test-queue"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
DS = "ds_" + "b" * 26

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def namespace(nexa_crds: K8sCluster) -> str:
    return nexa_crds.create_namespace()


@pytest.fixture(scope="module")
def operator(
    nexa_crds: K8sCluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    proc = start_operator(
        nexa_crds,
        namespace,
        tmp_path_factory.mktemp("operator-kueue"),
        {"NEXA_OPERATOR_KUEUE_QUEUE": QUEUE},
    )
    yield proc
    proc.stop()


def audit_nexajob(namespace: str, run_duration: str) -> dict[str, Any]:
    spec = AuditSpec(dataset_uri=DS, max_retries=0, resources=Resources(tier="cpu"))
    obj = nexajob_object(
        job_id=new_id("job"), tenant_id="tnt_test", namespace=namespace, job_type=JobType.audit, spec=spec
    )
    annotations = {KWOK_RUN_DURATION_ANNOTATION: run_duration}
    obj["metadata"]["annotations"] = {"nexa.run/pod-annotations": json.dumps(annotations)}
    return obj


def the_job(api: Any, namespace: str, name: str) -> Any:
    return wait_for("the attempt's Job", lambda: jobs_of(api, namespace, name), 120)[0]


def set_suspend(api: Any, namespace: str, job_name: str, suspend: bool) -> None:
    """What Kueue writes: false when it admits the Job's workload, true when it preempts it."""
    client.BatchV1Api(api).patch_namespaced_job(job_name, namespace, {"spec": {"suspend": suspend}})


def admitted(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    return condition(get_custom(api, NEXAJOB_PLURAL, namespace, name), "Admitted")


def waiting_for_admission(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    cond = admitted(api, namespace, name)
    return cond if cond and cond["status"] == "False" else None


def assert_still_queued(api: Any, namespace: str, name: str) -> None:
    """Across several resyncs the operator leaves the Job suspended and keeps saying why."""
    time.sleep(RESYNC_SECONDS * 4)
    job = the_job(api, namespace, name)
    assert job.spec.suspend is True
    assert pods_with(api, namespace, f"nexa.run/nexajob={name}") == []
    nexajob = get_custom(api, NEXAJOB_PLURAL, namespace, name)
    assert nexajob["status"]["phase"] == "Pending"
    assert condition(nexajob, "Admitted")["reason"] == "WaitingForAdmission"  # type: ignore[index]


def test_a_queued_job_waits_for_kueue_then_runs_to_completion(
    operator: OperatorProcess, kube_api: Any, namespace: str
) -> None:
    obj = audit_nexajob(namespace, "2s")
    name = obj["metadata"]["name"]
    write_result(operator, obj, 1, {"score": 0.8, "tier": "good"})
    create_custom(kube_api, NEXAJOB_PLURAL, obj)

    job = the_job(kube_api, namespace, name)
    assert job.spec.suspend is True
    assert job.metadata.labels[QUEUE_LABEL] == QUEUE
    # Kueue copies the pod template into its Workload: the queue label rides along on the pods.
    assert job.spec.template.metadata.labels[QUEUE_LABEL] == QUEUE
    cond = wait_for(
        "the NexaJob to report the wait", lambda: waiting_for_admission(kube_api, namespace, name)
    )
    assert cond["reason"] == "WaitingForAdmission"
    assert QUEUE in cond["message"] and job.metadata.name in cond["message"]
    assert_still_queued(kube_api, namespace, name)

    set_suspend(kube_api, namespace, job.metadata.name, False)
    pod = wait_for(
        "the admitted Job's pod to be bound",
        lambda: [p for p in pods_with(kube_api, namespace, f"nexa.run/nexajob={name}") if p.spec.node_name],
        30,
    )[0]
    assert pod.spec.node_name == CPU_NODE
    done = terminal(kube_api, namespace, name)
    assert done["status"]["phase"] == "Completed", done["status"]
    assert done["status"]["result"] == {"score": 0.8, "tier": "good"}
    assert done["status"]["attempts"] == 1
    assert condition(done, "Admitted")["reason"] == "AdmittedByKueue"  # type: ignore[index]


def test_a_preempted_job_queues_again_and_the_operator_leaves_it_suspended(
    operator: OperatorProcess, kube_api: Any, namespace: str
) -> None:
    obj = audit_nexajob(namespace, "1h")
    name = obj["metadata"]["name"]
    create_custom(kube_api, NEXAJOB_PLURAL, obj)
    job = the_job(kube_api, namespace, name)
    wait_for("the wait to be reported", lambda: waiting_for_admission(kube_api, namespace, name))

    set_suspend(kube_api, namespace, job.metadata.name, False)
    wait_for(
        "Running",
        lambda: get_custom(kube_api, NEXAJOB_PLURAL, namespace, name)["status"]["phase"] == "Running",
        60,
    )
    assert admitted(kube_api, namespace, name)["status"] == "True"  # type: ignore[index]

    # Preemption: Kueue suspends the Job, the Job controller removes its pod.
    set_suspend(kube_api, namespace, job.metadata.name, True)
    wait_for("the preempted NexaJob to queue again", lambda: waiting_for_admission(kube_api, namespace, name))
    wait_for("the pod to go", lambda: not pods_with(kube_api, namespace, f"nexa.run/nexajob={name}"), 60)
    assert_still_queued(kube_api, namespace, name)
    # The preempted attempt is the same attempt: no new Job was made for it.
    assert [j.metadata.name for j in jobs_of(kube_api, namespace, name)] == [job.metadata.name]

    patch_custom(kube_api, NEXAJOB_PLURAL, namespace, name, {"spec": {"cancel": True}})
    assert terminal(kube_api, namespace, name)["status"]["phase"] == "Cancelled"
