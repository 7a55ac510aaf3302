"""The operator as a process against a real control plane with KWOK nodes.

KWOK plays the kubelet: pods bound to its fake nodes go Running and, after the
``kwok.nexa.run/run-duration`` they ask for, end Succeeded (exit 0) or, with
``kwok.nexa.run/outcome: fail``, Failed (exit 1). No container really runs, so
where the engine would leave something the test does it itself, with the engine's
own code: the result record via ``run_one.write_result_record`` (exactly what
``python -m nexa_engines.run_one`` writes before it exits 0), and a fatal exit
by patching the pod's status as the kubelet reports an exit code of 3.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nexa.contracts import AuditSpec, JobType
from nexa.contracts.common import Resources
from nexa.contracts.nexajob import (
    EXIT_FATAL,
    GROUP,
    NEXAJOB_PLURAL,
    VERSION,
    nexajob_object,
    run_progress_key,
)
from nexa.ids import new_id
from nexa_engines.run_one import write_run_record
from tests.fixtures.k8s import KWOK_OUTCOME_ANNOTATION, KWOK_RUN_DURATION_ANNOTATION, K8sCluster
from tests.integration.operator_helpers import (
    RESYNC_SECONDS,
    OperatorProcess,
    condition,
    jobs_of,
    start_operator,
    terminal,
    wait_for,
    write_result,
)

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

DS = "ds_" + "a" * 26

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def crds_installed(nexa_crds: K8sCluster) -> K8sCluster:
    return nexa_crds


@pytest.fixture(scope="module")
def namespace(crds_installed: K8sCluster) -> str:
    return crds_installed.create_namespace()


@pytest.fixture(scope="module")
def operator(
    crds_installed: K8sCluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    proc = start_operator(crds_installed, namespace, tmp_path_factory.mktemp("operator"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(crds_installed: K8sCluster) -> Iterator[Any]:
    with crds_installed.api_client() as api_client:
        yield api_client


def make_nexajob(
    namespace: str,
    *,
    resources: Resources | None = None,
    max_retries: int = 0,
    pod_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec = AuditSpec(dataset_uri=DS, max_retries=max_retries, resources=resources or Resources())
    job_id = new_id("job")
    obj = nexajob_object(
        job_id=job_id, tenant_id="tnt_test", namespace=namespace, job_type=JobType.audit, spec=spec
    )
    if pod_annotations:
        obj["metadata"]["annotations"] = {"nexa.run/pod-annotations": json.dumps(pod_annotations)}
    return obj


def create(api: Any, obj: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, obj["metadata"]["namespace"], NEXAJOB_PLURAL, obj
    )
    return created


def get(api: Any, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, NEXAJOB_PLURAL, name
    )
    return found


def phase(api: Any, namespace: str, name: str) -> str | None:
    return (get(api, namespace, name).get("status") or {}).get("phase")


def pods_of(api: Any, namespace: str, name: str) -> list[Any]:
    return (
        client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"nexa.run/nexajob={name}").items
    )


def test_audit_on_a_gpu_node_completes_with_the_engines_result(
    operator: OperatorProcess, api: Any, namespace: str
) -> None:
    obj = make_nexajob(
        namespace,
        resources=Resources(gpus=2, gpu_type="H100", tier="gpu"),
        pod_annotations={KWOK_RUN_DURATION_ANNOTATION: "3s"},
    )
    name = obj["metadata"]["name"]
    write_result(operator, obj, 1, {"score": 0.93, "tier": "good", "rows": 2000})
    create(api, obj)
    job = wait_for("the attempt's Job", lambda: jobs_of(api, namespace, name), 120)[0]
    assert job.metadata.name == f"{name}-a1"
    assert job.metadata.owner_references[0].kind == "NexaJob"
    pod_spec = job.spec.template.spec
    engine = pod_spec.containers[0]
    assert engine.image == "nexa/engine-cuda:test"
    assert engine.resources.limits["nvidia.com/gpu"] == "2"
    assert pod_spec.node_selector == {"nexa.run/tier": "gpu", "nvidia.com/gpu.product": "H100"}
    assert job.spec.backoff_limit == 0 and job.spec.pod_replacement_policy == "Failed"
    assert job.spec.pod_failure_policy.rules[1].on_exit_codes.values == [EXIT_FATAL]
    pod = wait_for(
        "the pod to be bound", lambda: [p for p in pods_of(api, namespace, name) if p.spec.node_name], 30
    )[0]
    assert pod.spec.node_name == "kwok-gpu-0"
    wait_for("Running", lambda: phase(api, namespace, name) == "Running", 120)
    done = terminal(api, namespace, name)
    assert done["status"]["phase"] == "Completed", done["status"]
    assert done["status"]["result"] == {"score": 0.93, "tier": "good", "rows": 2000}
    assert done["status"]["attempts"] == 1 and done["status"]["progress"] == 1.0
    assert condition(done, "Complete")["reason"] == "Succeeded"  # type: ignore[index]
    # The Event is posted after the status it reports: wait for it rather than race it.
    wait_for(
        "the Succeeded event",
        lambda: (
            "Succeeded"
            in {
                e.reason
                for e in client.CoreV1Api(api)
                .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
                .items
            }
        ),
        30,
    )

    # R5: the Job of a finished NexaJob disappears (TTL, or by hand): never re-run.
    client.BatchV1Api(api).delete_namespaced_job(f"{name}-a1", namespace, propagation_policy="Background")
    wait_for("the Job to go", lambda: not jobs_of(api, namespace, name), 120)
    time.sleep(RESYNC_SECONDS * 3)
    assert jobs_of(api, namespace, name) == []
    after = get(api, namespace, name)
    assert after["status"]["phase"] == "Completed" and after["status"]["attempts"] == 1


def test_progress_of_a_running_attempt_reaches_the_status(
    operator: OperatorProcess, api: Any, namespace: str, crds_installed: K8sCluster
) -> None:
    obj = make_nexajob(namespace, pod_annotations={KWOK_RUN_DURATION_ANNOTATION: "1h"})
    name = obj["metadata"]["name"]
    create(api, obj)
    wait_for("Running", lambda: phase(api, namespace, name) == "Running", 60)
    # What run_one's reporter leaves in the artifact store while the engine works.
    job_id = name.replace("-", "_", 1)
    record = {"attempt": 1, "fraction": 0.42, "message": "scored 4200 of 10000 rows"}
    write_run_record(
        {"NEXA_ARTIFACT_ROOT": str(operator.artifacts)},
        run_progress_key(job_id, 1),
        json.dumps(record).encode(),
    )
    status = wait_for(
        "the progress in the status",
        lambda: (s := get(api, namespace, name)["status"]).get("progress") == 0.42 and s,
        30,
    )
    assert status["phase"] == "Running"
    assert status["progressMessage"] == "scored 4200 of 10000 rows"
    row = next(
        line
        for line in crds_installed.kubectl("get", "nexajobs", "-n", namespace).stdout.splitlines()
        if line.startswith(name)
    )
    assert row.split()[2:4] == ["Running", "42%"]  # PROGRESS is the percentage (status.progressPercent)
    wide = next(
        line
        for line in crds_installed.kubectl(
            "get", "nexajobs", "-n", namespace, "-o", "wide"
        ).stdout.splitlines()
        if line.startswith(name)
    )
    assert "scored 4200 of 10000 rows" in wide  # -o wide adds the progress message
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, NEXAJOB_PLURAL, name, {"spec": {"cancel": True}}
    )
    assert terminal(api, namespace, name)["status"]["phase"] == "Cancelled"


def test_gpu_job_no_node_can_hold_stays_pending_with_a_clear_condition(
    operator: OperatorProcess, api: Any, namespace: str
) -> None:
    obj = make_nexajob(namespace, resources=Resources(gpus=16, tier="gpu"))
    name = obj["metadata"]["name"]
    create(api, obj)

    def unschedulable() -> dict[str, Any] | None:
        cond = condition(get(api, namespace, name), "PodScheduled")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_for("an Unschedulable condition", unschedulable, 60)
    assert cond["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in cond["message"]
    assert phase(api, namespace, name) == "Pending"
    # Cancel it: the Job goes and the NexaJob ends Cancelled.
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, NEXAJOB_PLURAL, name, {"spec": {"cancel": True}}
    )
    assert terminal(api, namespace, name)["status"]["phase"] == "Cancelled"
    wait_for("the Job to be deleted", lambda: not jobs_of(api, namespace, name), 120)


def test_cancel_a_running_job(operator: OperatorProcess, api: Any, namespace: str) -> None:
    obj = make_nexajob(namespace, pod_annotations={KWOK_RUN_DURATION_ANNOTATION: "1h"})
    name = obj["metadata"]["name"]
    create(api, obj)
    wait_for("Running", lambda: phase(api, namespace, name) == "Running", 60)
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, NEXAJOB_PLURAL, name, {"spec": {"cancel": True}}
    )
    done = terminal(api, namespace, name)
    assert done["status"]["phase"] == "Cancelled"
    assert condition(done, "Cancelled")["reason"] == "CancelledByUser"  # type: ignore[index]
    wait_for("the pods to go", lambda: not pods_of(api, namespace, name), 60)
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, NEXAJOB_PLURAL, name, {"spec": {"cancel": False}}
        )
    assert "cannot be un-cancelled" in refused.value.body


def test_fatal_exit_code_fails_at_once(operator: OperatorProcess, api: Any, namespace: str) -> None:
    obj = make_nexajob(namespace, max_retries=3, pod_annotations={KWOK_RUN_DURATION_ANNOTATION: "1h"})
    name = obj["metadata"]["name"]
    create(api, obj)
    pod = wait_for(
        "a running pod",
        lambda: [p for p in pods_of(api, namespace, name) if p.status.phase == "Running"],
        60,
    )[0]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    message = json.dumps(
        {"attempt": 1, "error": {"code": "dataset_not_found", "message": "no dataset ds_aaa"}}
    )
    # What the kubelet reports when the engine exits with the fatal code.
    client.CoreV1Api(api).patch_namespaced_pod_status(
        pod.metadata.name,
        namespace,
        {
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "engine",
                        "image": pod.spec.containers[0].image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": EXIT_FATAL,
                                "reason": "Error",
                                "message": message,
                                "finishedAt": now,
                            }
                        },
                    }
                ],
            }
        },
    )
    done = terminal(api, namespace, name)
    assert done["status"]["phase"] == "Failed"
    assert condition(done, "Failed")["reason"] == "FatalExitCode"  # type: ignore[index]
    assert done["status"]["error"]["code"] == "dataset_not_found"
    assert done["status"]["attempts"] == 1
    time.sleep(RESYNC_SECONDS * 2)
    assert [j.metadata.name for j in jobs_of(api, namespace, name)] == [f"{name}-a1"]


def test_retryable_failures_use_every_attempt_then_fail(
    operator: OperatorProcess, api: Any, namespace: str
) -> None:
    obj = make_nexajob(namespace, max_retries=1, pod_annotations={KWOK_OUTCOME_ANNOTATION: "fail"})
    name = obj["metadata"]["name"]
    create(api, obj)
    done = terminal(api, namespace, name, timeout=120)
    assert done["status"]["phase"] == "Failed"
    assert condition(done, "Failed")["reason"] == "RetriesExhausted"  # type: ignore[index]
    assert done["status"]["attempts"] == 2
    assert [j.metadata.name for j in jobs_of(api, namespace, name)] == [f"{name}-a1", f"{name}-a2"]
    assert get(api, namespace, name)["metadata"]["finalizers"] == ["nexa.run/cleanup"]

    # Deleting the NexaJob: the finalizer removes every attempt's Job, then lets it go.
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, NEXAJOB_PLURAL, name
    )

    def gone() -> bool:
        try:
            get(api, namespace, name)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the NexaJob to be deleted", gone, 120)
    assert all(j.metadata.deletion_timestamp for j in jobs_of(api, namespace, name))


def test_kubectl_get_shows_the_columns_and_explain_the_descriptions(
    operator: OperatorProcess, crds_installed: K8sCluster, namespace: str, api: Any
) -> None:
    obj = make_nexajob(namespace)
    write_result(operator, obj, 1, {"ok": True})
    create(api, obj)
    terminal(api, namespace, obj["metadata"]["name"])
    table = crds_installed.kubectl("get", "nexajobs", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "TYPE", "STATUS", "PROGRESS", "AGE"]
    row = next(line for line in table.splitlines() if line.startswith(obj["metadata"]["name"]))
    assert row.split()[1:4] == ["audit", "Completed", "100%"]
    wide = crds_installed.kubectl("get", "nexajobs", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split() == [
        "NAME",
        "TYPE",
        "STATUS",
        "PROGRESS",
        "ATTEMPTS",
        "JOB",
        "MESSAGE",
        "AGE",
    ]
    assert obj["metadata"]["name"] in crds_installed.kubectl("get", "nexa", "-n", namespace).stdout
    assert obj["metadata"]["name"] in crds_installed.kubectl("get", "nj", "-n", namespace).stdout
    explain = crds_installed.kubectl("explain", "nexajob.spec.resources").stdout
    assert "Number of GPUs (nvidia.com/gpu)." in explain


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spec": {"type": "train"}}, "spec.type is immutable"),
        ({"spec": {"audit": {"ngram": 9}}}, "spec.audit is immutable"),
        (
            {"spec": {"train": {"dataset_id": DS, "model": "m"}}},
            "spec.train must be set exactly when spec.type is 'train'",
        ),
    ],
)
def test_cel_rules_refuse_bad_updates(
    crds_installed: K8sCluster, api: Any, namespace: str, change: dict[str, Any], message: str
) -> None:
    obj = make_nexajob(namespace)
    obj["spec"]["suspend"] = True  # no operator needed for this
    create(api, obj)
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, NEXAJOB_PLURAL, obj["metadata"]["name"], change
        )
    assert message in refused.value.body


def test_a_type_without_its_spec_is_refused(crds_installed: K8sCluster, api: Any, namespace: str) -> None:
    obj = make_nexajob(namespace)
    obj["spec"]["type"] = "train"
    with pytest.raises(ApiException) as refused:
        create(api, obj)
    assert "spec.train must be set exactly when spec.type is 'train'" in refused.value.body


def test_sigkill_mid_reconcile_never_duplicates_an_attempt(
    operator: OperatorProcess, api: Any, namespace: str
) -> None:
    rng = random.Random(7)
    objs = []
    for i in range(12):
        annotations = {KWOK_RUN_DURATION_ANNOTATION: f"{rng.randint(1, 4)}s"}
        if i % 4 == 3:
            annotations[KWOK_OUTCOME_ANNOTATION] = "fail"
        obj = make_nexajob(namespace, max_retries=1, pod_annotations=annotations)
        if i % 4 != 3:
            write_result(operator, obj, 1, {"i": i})
        objs.append(obj)
    for obj in objs:
        create(api, obj)
        time.sleep(rng.uniform(0.0, 0.2))
    for _ in range(6):
        time.sleep(rng.uniform(0.3, 1.5))
        operator.kill()
        operator.start()
    names = [o["metadata"]["name"] for o in objs]
    finished = {name: terminal(api, namespace, name, timeout=180) for name in names}
    for i, name in enumerate(names):
        status = finished[name]["status"]
        expected = ("Failed", 2) if i % 4 == 3 else ("Completed", 1)
        assert (status["phase"], status["attempts"]) == expected, (name, status, operator.logs()[-3000:])
        jobs = [j.metadata.name for j in jobs_of(api, namespace, name)]
        assert jobs == [f"{name}-a{n}" for n in range(1, status["attempts"] + 1)]
        for job in jobs_of(api, namespace, name):
            # One pod per attempt: the Job never had to replace one.
            assert (job.status.succeeded or 0) + (job.status.failed or 0) == 1
    time.sleep(RESYNC_SECONDS * 2)
    assert all(get(api, namespace, n)["status"]["phase"] == finished[n]["status"]["phase"] for n in names)
