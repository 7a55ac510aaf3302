"""NexaPipelines run by the operator process against the test control plane.

``examples/nexapipeline-lifecycle.yaml`` goes in through ``kubectl apply``; the operator
makes one NexaJob per step, and each NexaJob runs as a Kubernetes Job whose pod KWOK
keeps Running (the pipeline asks for a long ``kwok.nexa.run/run-duration`` on its
steps' pods). The test then plays the engine and the kubelet, as the NexaJob tests do:
it writes the attempt's result record with the engine's own code and reports the
engine container's exit code 0 on the pod. So every step ends exactly when the test
says, with the result it chose, and nothing waits on a clock.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexa.contracts.nexajob import GROUP, NEXAJOB_PLURAL, VERSION, nexajob_job_id, nexajob_payload
from nexa.contracts.nexapipeline import LABEL_PIPELINE, NEXAPIPELINE_PLURAL
from nexa_engines.run_one import result_record, write_result_record
from nexa_operator.builders import POD_ANNOTATIONS
from tests.fixtures.k8s import KWOK_RUN_DURATION_ANNOTATION, K8sCluster
from tests.integration.operator_helpers import (
    OperatorProcess,
    condition,
    crd_established,
    get_custom,
    read_or_none,
    start_operator,
    wait_for,
)

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

pytestmark = pytest.mark.timeout(300)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nexapipeline-lifecycle.yaml"
DS_CLEAN = "ds_" + "c" * 26
DS_HOLDOUT = "ds_" + "h" * 26
CKPT = "ckpt_" + "k" * 26


@pytest.fixture(scope="module")
def cluster(nexa_crds: K8sCluster) -> K8sCluster:
    with nexa_crds.api_client() as api:
        crd = f"{NEXAPIPELINE_PLURAL}.{GROUP}"
        wait_for(f"CRD {crd} to be established", partial(crd_established, api, crd), 60)
    return nexa_crds


@pytest.fixture(scope="module")
def namespace(cluster: K8sCluster) -> str:
    return cluster.create_namespace()


@pytest.fixture(scope="module")
def operator(
    cluster: K8sCluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    proc = start_operator(cluster, namespace, tmp_path_factory.mktemp("pipeline-operator"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(cluster: K8sCluster) -> Iterator[Any]:
    with cluster.api_client() as api_client:
        yield api_client


def example(name: str) -> dict[str, Any]:
    """The example, renamed, with its steps' pods kept Running until the test finishes them."""
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    doc["metadata"]["annotations"] = {POD_ANNOTATIONS: json.dumps({KWOK_RUN_DURATION_ANNOTATION: "1h"})}
    return doc


def apply(cluster: K8sCluster, namespace: str, doc: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def pipeline(api: Any, namespace: str, name: str) -> dict[str, Any]:
    return get_custom(api, NEXAPIPELINE_PLURAL, namespace, name)


def nexajob(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = read_or_none(lambda: get_custom(api, NEXAJOB_PLURAL, namespace, name))
    return found


def step_nexajobs(api: Any, namespace: str, pipeline_name: str) -> list[str]:
    items = (
        client.CustomObjectsApi(api)
        .list_namespaced_custom_object(
            GROUP, VERSION, namespace, NEXAJOB_PLURAL, label_selector=f"{LABEL_PIPELINE}={pipeline_name}"
        )
        .get("items", [])
    )
    return sorted(item["metadata"]["name"] for item in items)


def finish_step(
    api: Any, operator: OperatorProcess, namespace: str, name: str, result: dict[str, Any]
) -> dict[str, Any]:
    """Complete the step's NexaJob ``name`` with ``result``, as its engine and the kubelet would."""
    job = wait_for(f"NexaJob {name}", lambda: nexajob(api, namespace, name), 60)
    pod = wait_for(
        f"the running pod of {name}",
        lambda: [
            p
            for p in client.CoreV1Api(api)
            .list_namespaced_pod(namespace, label_selector=f"nexa.run/nexajob={name}")
            .items
            if p.status.phase == "Running"
        ],
        90,
    )[0]
    job_id = nexajob_job_id(name, job["metadata"]["uid"])
    record = result_record(job_id, 1, result, [], {})
    write_result_record({"NEXA_ARTIFACT_ROOT": str(operator.artifacts)}, job_id, 1, record)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # What the kubelet reports when the engine exits 0.
    client.CoreV1Api(api).patch_namespaced_pod_status(
        pod.metadata.name,
        namespace,
        {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "engine",
                        "image": pod.spec.containers[0].image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}},
                    }
                ],
            }
        },
    )
    return job


def phase_is(api: Any, namespace: str, name: str, *phases: str) -> dict[str, Any] | None:
    obj = pipeline(api, namespace, name)
    return obj if (obj.get("status") or {}).get("phase") in phases else None


def test_the_example_is_accepted_as_it_is(cluster: K8sCluster, namespace: str) -> None:
    # Server-side dry run: the CRD's schema (and strict field validation) takes the file unchanged.
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(EXAMPLE))


def test_the_lifecycle_example_runs_step_by_step_to_completed(
    cluster: K8sCluster, operator: OperatorProcess, api: Any, namespace: str
) -> None:
    doc = example("lifecycle")
    apply(cluster, namespace, doc)
    uid = pipeline(api, namespace, "lifecycle")["metadata"]["uid"]

    audit = wait_for("the audit step's NexaJob", lambda: nexajob(api, namespace, "lifecycle-audit-1"), 60)
    owner = audit["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "NexaPipeline",
        "lifecycle",
        uid,
        True,
    )
    assert audit["metadata"]["labels"]["nexa.run/step"] == "audit"
    _, payload = nexajob_payload(audit["spec"])
    assert payload["dataset_uri"] == doc["spec"]["parameters"]["dataset"]
    assert step_nexajobs(api, namespace, "lifecycle") == ["lifecycle-audit-1"]
    running = wait_for("the pipeline to run", lambda: phase_is(api, namespace, "lifecycle", "running"), 60)
    assert running["status"]["currentStep"] == "audit"

    finish_step(api, operator, namespace, "lifecycle-audit-1", {"dataset_id": DS_CLEAN, "quality_tier": "A"})
    train = wait_for("the train step's NexaJob", lambda: nexajob(api, namespace, "lifecycle-train-1"), 90)
    _, payload = nexajob_payload(train["spec"])
    assert payload["dataset_id"] == DS_CLEAN and payload["model"] == doc["spec"]["parameters"]["base_model"]

    finish_step(
        api,
        operator,
        namespace,
        "lifecycle-train-1",
        {"checkpoint_id": CKPT, "holdout_dataset_id": DS_HOLDOUT},
    )
    evaluate = wait_for(
        "the evaluate step's NexaJob", lambda: nexajob(api, namespace, "lifecycle-evaluate-1"), 90
    )
    _, payload = nexajob_payload(evaluate["spec"])
    assert payload["checkpoint_id"] == CKPT and payload["dataset_id"] == DS_HOLDOUT

    finish_step(
        api,
        operator,
        namespace,
        "lifecycle-evaluate-1",
        {"scores": {"perplexity": 8.0}, "base_scores": {"perplexity": 10.0}},
    )
    try:
        done = wait_for(
            "the pipeline to finish",
            lambda: phase_is(api, namespace, "lifecycle", "completed", "failed", "cancelled"),
            90,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{operator.logs()}") from None
    status = done["status"]
    assert status["phase"] == "completed", status
    assert [(s["name"], s["state"], s["tries"]) for s in status["steps"]] == [
        ("audit", "completed", 1),
        ("train", "completed", 1),
        ("evaluate", "completed", 1),
    ]
    assert status["steps"][2]["gate"]["passed"] is True
    assert condition(done, "Complete")["reason"] == "StepsCompleted"  # type: ignore[index]
    assert step_nexajobs(api, namespace, "lifecycle") == [
        "lifecycle-audit-1",
        "lifecycle-evaluate-1",
        "lifecycle-train-1",
    ]
    table = cluster.kubectl("get", "nexapipeline", "lifecycle", "-n", namespace).stdout
    assert table.split()[:4] == ["NAME", "STEP", "STATUS", "AGE"] and "completed" in table


def test_a_failed_gate_stops_the_pipeline_and_deleting_it_deletes_its_nexajobs(
    cluster: K8sCluster, operator: OperatorProcess, api: Any, namespace: str
) -> None:
    apply(cluster, namespace, example("gated"))
    finish_step(api, operator, namespace, "gated-audit-1", {"dataset_id": DS_CLEAN, "quality_tier": "C"})
    done = wait_for(
        "the pipeline to fail", lambda: phase_is(api, namespace, "gated", "completed", "failed"), 90
    )
    status = done["status"]
    assert status["phase"] == "failed", status
    assert status["error"]["code"] == "gate_failed" and status["error"]["step"] == "audit"
    assert "quality tier C vs at least B" in status["error"]["message"]
    assert [(s["name"], s["state"]) for s in status["steps"]] == [
        ("audit", "failed"),
        ("train", "skipped"),
        ("evaluate", "skipped"),
    ]
    assert condition(done, "Failed")["reason"] == "GateFailed"  # type: ignore[index]
    assert step_nexajobs(api, namespace, "gated") == ["gated-audit-1"]

    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, NEXAPIPELINE_PLURAL, "gated"
    )
    # The garbage collector deletes the NexaJobs it owned (the operator's finalizer lets them go).
    wait_for("the step's NexaJob to go", lambda: not step_nexajobs(api, namespace, "gated"), 90)


def test_a_held_step_runs_once_approved(
    cluster: K8sCluster, operator: OperatorProcess, api: Any, namespace: str
) -> None:
    doc = example("approved")
    held = copy.deepcopy(doc)
    held["spec"]["steps"][1]["approval"] = True
    apply(cluster, namespace, held)
    finish_step(api, operator, namespace, "approved-audit-1", {"dataset_id": DS_CLEAN, "quality_tier": "A"})
    waiting = wait_for("the approval hold", lambda: phase_is(api, namespace, "approved", "waiting"), 90)
    assert waiting["status"]["currentStep"] == "train"
    assert condition(waiting, "WaitingForApproval")["status"] == "True"  # type: ignore[index]
    assert nexajob(api, namespace, "approved-train-1") is None
    cluster.kubectl("annotate", "-n", namespace, "nexapipeline", "approved", "nexa.run/approve-train=true")
    train = wait_for("the approved step's NexaJob", lambda: nexajob(api, namespace, "approved-train-1"), 60)
    assert nexajob_payload(train["spec"])[1]["dataset_id"] == DS_CLEAN

    cluster.kubectl("annotate", "-n", namespace, "nexapipeline", "approved", "nexa.run/cancel=true")
    done = wait_for("the cancel", lambda: phase_is(api, namespace, "approved", "cancelled"), 60)
    assert [(s["name"], s["state"]) for s in done["status"]["steps"]] == [
        ("audit", "completed"),
        ("train", "cancelled"),
        ("evaluate", "skipped"),
    ]
    wait_for(
        "the running step's NexaJob to be cancelled",
        lambda: (
            ((nexajob(api, namespace, "approved-train-1") or {}).get("status") or {}).get("phase")
            == "Cancelled"
        ),
        60,
    )
