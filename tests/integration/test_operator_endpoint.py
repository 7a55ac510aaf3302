"""NexaEndpoints and deploy NexaJobs through the operator process on the test control plane.

KWOK marks every pod bound to its nodes Running and Ready, so a Deployment's
replicas become ready without a serving container; kube-controller-manager runs
the Deployment, EndpointSlice, HPA and garbage-collector controllers for real.
Where KServe would be installed, the test installs a minimal InferenceService CRD
and writes the InferenceService's status the way KServe's controller does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from nexa.contracts import DeploySpec, JobType
from nexa.contracts.nexajob import (
    API_VERSION,
    GROUP,
    NEXAENDPOINT_KIND,
    NEXAENDPOINT_PLURAL,
    NEXAJOB_PLURAL,
    VERSION,
    nexajob_object,
)
from nexa.ids import new_id
from nexa_engines.serve import server as serve_cli
from tests.fixtures.k8s import CPU_NODE, K8sCluster
from tests.integration.operator_helpers import (
    RESYNC_SECONDS,
    SERVING_IMAGE,
    OperatorProcess,
    condition,
    crd_established,
    create_custom,
    get_custom,
    not_found,
    patch_custom,
    pods_with,
    read_or_none,
    start_operator,
    terminal,
    wait_for,
)

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

CKPT = "ckpt_" + "e" * 26
KSERVE_GROUP = "serving.kserve.io"
KSERVE_VERSION = "v1beta1"
ISVC_PLURAL = "inferenceservices"
ISVC_CRD = f"{ISVC_PLURAL}.{KSERVE_GROUP}"

pytestmark = pytest.mark.timeout(300)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespace(nexa_crds: K8sCluster) -> str:
    return nexa_crds.create_namespace()


@pytest.fixture(scope="module")
def operator(
    nexa_crds: K8sCluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    proc = start_operator(nexa_crds, namespace, tmp_path_factory.mktemp("operator-endpoint"))
    yield proc
    proc.stop()


def inference_service_crd() -> dict[str, Any]:
    """Just enough of KServe's CRD to serve the API: any spec, a status subresource."""
    free_form = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": ISVC_CRD},
        "spec": {
            "group": KSERVE_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": "InferenceService",
                "listKind": "InferenceServiceList",
                "plural": ISVC_PLURAL,
                "singular": "inferenceservice",
                "shortNames": ["isvc"],
            },
            "versions": [
                {
                    "name": KSERVE_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": free_form, "status": free_form},
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture
def kserve_installed(kube_api: Any) -> Iterator[None]:
    """The InferenceService API served for one test, and gone again after it (with its objects)."""
    extensions: Any = client.ApiextensionsV1Api(kube_api)
    extensions.create_custom_resource_definition(inference_service_crd())
    try:
        wait_for(
            "the InferenceService CRD to be established", lambda: crd_established(kube_api, ISVC_CRD), 60
        )
        yield
    finally:
        extensions.delete_custom_resource_definition(ISVC_CRD)
        wait_for(
            "the InferenceService CRD to be removed",
            lambda: not_found(lambda: extensions.read_custom_resource_definition(ISVC_CRD)),
            60,
        )


@pytest.fixture
def kserve_operator(
    kserve_installed: None, nexa_crds: K8sCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator of its own, started after the CRD: it decides once per process whether KServe is there."""
    namespace = nexa_crds.create_namespace()
    proc = start_operator(nexa_crds, namespace, tmp_path_factory.mktemp("operator-kserve"))
    yield proc
    proc.stop()


# --- helpers -------------------------------------------------------------------------------


def endpoint_object(namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": NEXAENDPOINT_KIND,
        "metadata": {"name": new_id("dp").replace("_", "-", 1), "namespace": namespace},
        "spec": {"checkpoint_id": CKPT, **spec},
    }


def endpoint_status(api: Any, namespace: str, name: str) -> dict[str, Any]:
    return get_custom(api, NEXAENDPOINT_PLURAL, namespace, name).get("status") or {}


def ready_endpoint(
    api: Any, namespace: str, name: str, replicas: int, timeout: float = 180.0
) -> dict[str, Any]:
    """The NexaEndpoint once it is Ready with ``replicas`` ready replicas."""

    def check() -> dict[str, Any] | None:
        obj = get_custom(api, NEXAENDPOINT_PLURAL, namespace, name)
        status = obj.get("status") or {}
        return obj if status.get("phase") == "Ready" and status.get("readyReplicas") == replicas else None

    try:
        found: dict[str, Any] = wait_for(f"NexaEndpoint {name} Ready with {replicas}", check, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status: {endpoint_status(api, namespace, name)}") from None
    return found


def deployment(api: Any, namespace: str, name: str) -> Any:
    return wait_for(
        f"Deployment {name}",
        lambda: (
            client.AppsV1Api(api)
            .list_namespaced_deployment(namespace, field_selector=f"metadata.name={name}")
            .items
        ),
        30,
    )[0]


def endpoint_pods(api: Any, namespace: str, name: str) -> list[Any]:
    return [
        p for p in pods_with(api, namespace, f"nexa.run/endpoint={name}") if not p.metadata.deletion_timestamp
    ]


def assert_owned_by(obj: Any, endpoint: dict[str, Any]) -> None:
    (owner,) = obj.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == (
        NEXAENDPOINT_KIND,
        endpoint["metadata"]["name"],
        endpoint["metadata"]["uid"],
    )
    assert owner.controller is True


def ready_addresses(api: Any, namespace: str, service: str) -> list[str]:
    """Pod IPs the Service routes to: what the EndpointSlice controller published for it."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sorted(
        address
        for item in slices.items
        for ep in item.endpoints or []
        if ep.conditions and ep.conditions.ready
        for address in ep.addresses
    )


# --- Deployment-backed endpoints ----------------------------------------------------------


def test_endpoint_serves_from_a_deployment_service_and_hpa_until_deleted(
    operator: OperatorProcess, kube_api: Any, namespace: str
) -> None:
    obj = endpoint_object(namespace, replicas=1, min_replicas=1, max_replicas=3, protocol="openai")
    name = obj["metadata"]["name"]
    endpoint = create_custom(kube_api, NEXAENDPOINT_PLURAL, obj)

    deploy = deployment(kube_api, namespace, name)
    assert_owned_by(deploy, endpoint)
    assert deploy.spec.replicas == 1
    server = deploy.spec.template.spec.containers[0]
    assert server.image == SERVING_IMAGE
    assert server.command == ["python", "-m", "nexa_engines.serve"]
    # The pod's arguments are ones the serving process really takes.
    parsed = serve_cli._parse(server.args)
    assert (parsed.checkpoint, parsed.port, parsed.host) == (CKPT, 8080, "0.0.0.0")
    key = next(e for e in server.env if e.name == "NEXA_SERVE_KEY")
    assert key.value_from.secret_key_ref.name == f"{name}-key" and key.value_from.secret_key_ref.optional
    assert {e.name: e.value for e in server.env}["NEXA_SERVING_PROTOCOL"] == "openai"
    assert [(p.name, p.container_port) for p in server.ports] == [("http", 8080)]
    assert server.readiness_probe.http_get.path == "/v2/health/ready"

    service: Any = client.CoreV1Api(kube_api).read_namespaced_service(name, namespace)
    assert_owned_by(service, endpoint)
    assert service.spec.selector == deploy.spec.selector.match_labels
    assert [(p.port, p.target_port) for p in service.spec.ports] == [(80, "http")]

    hpa = client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler(name, namespace)
    assert_owned_by(hpa, endpoint)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 3)
    assert (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) == ("Deployment", name)

    ready = ready_endpoint(kube_api, namespace, name, 1)
    status = ready["status"]
    assert status["url"] == f"http://{name}.{namespace}.svc.cluster.local"
    assert (status["backend"], status["replicas"]) == ("deployment", 1)
    assert condition(ready, "EndpointReady")["status"] == "True"  # type: ignore[index]
    (pod,) = endpoint_pods(kube_api, namespace, name)
    assert pod.spec.node_name == CPU_NODE
    # The Service really fronts the ready pod.
    wait_for(
        "the Service to route to the pod",
        lambda: ready_addresses(kube_api, namespace, name) == [pod.status.pod_ip],
        30,
    )

    # Deleting the endpoint: the garbage collector removes everything it owned.
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, NEXAENDPOINT_PLURAL, name
    )
    wait_for(
        "the NexaEndpoint to be deleted",
        partial(not_found, partial(get_custom, kube_api, NEXAENDPOINT_PLURAL, namespace, name)),
        30,
    )
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    autoscaling = client.AutoscalingV2Api(kube_api)
    children: dict[str, Callable[[], Any]] = {
        "Deployment": partial(apps.read_namespaced_deployment, name, namespace),
        "Service": partial(core.read_namespaced_service, name, namespace),
        "HPA": partial(autoscaling.read_namespaced_horizontal_pod_autoscaler, name, namespace),
    }
    # The collector maps a just-installed CRD only at its next discovery resync (every
    # 30s; until then "unable to get REST mapping"), so this first collection can lag.
    for what, read in children.items():
        wait_for(f"the {what} to be garbage-collected", partial(not_found, read), 90)
    wait_for("the pods to go", lambda: not pods_with(kube_api, namespace, f"nexa.run/endpoint={name}"), 60)


def test_scaling_replicas_reaches_the_deployment_and_the_status(
    operator: OperatorProcess, kube_api: Any, namespace: str
) -> None:
    obj = endpoint_object(namespace, replicas=1)
    name = obj["metadata"]["name"]
    create_custom(kube_api, NEXAENDPOINT_PLURAL, obj)
    ready_endpoint(kube_api, namespace, name, 1)
    assert not_found(
        lambda: client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler(name, namespace)
    )

    patch_custom(kube_api, NEXAENDPOINT_PLURAL, namespace, name, {"spec": {"replicas": 3}})
    ready = ready_endpoint(kube_api, namespace, name, 3)
    assert ready["status"]["replicas"] == 3
    assert deployment(kube_api, namespace, name).spec.replicas == 3
    assert len(endpoint_pods(kube_api, namespace, name)) == 3

    patch_custom(kube_api, NEXAENDPOINT_PLURAL, namespace, name, {"spec": {"replicas": 1}})
    ready_endpoint(kube_api, namespace, name, 1)
    wait_for("the extra pods to go", lambda: len(endpoint_pods(kube_api, namespace, name)) == 1, 60)
    assert deployment(kube_api, namespace, name).spec.replicas == 1


def test_deploy_nexajob_creates_its_endpoint_and_completes_when_it_is_ready(
    operator: OperatorProcess, kube_api: Any, namespace: str
) -> None:
    spec = DeploySpec(checkpoint_id=CKPT, replicas=2, protocol="v2", max_batch_size=8)
    obj = nexajob_object(
        job_id=new_id("job"), tenant_id="tnt_test", namespace=namespace, job_type=JobType.deploy, spec=spec
    )
    name = obj["metadata"]["name"]
    create_custom(kube_api, NEXAJOB_PLURAL, obj)

    endpoint = wait_for(
        "the deploy's NexaEndpoint",
        partial(read_or_none, partial(get_custom, kube_api, NEXAENDPOINT_PLURAL, namespace, name)),
        30,
    )
    assert endpoint["spec"]["checkpoint_id"] == CKPT
    assert (endpoint["spec"]["replicas"], endpoint["spec"]["protocol"]) == (2, "v2")
    assert endpoint["spec"]["tenant"] == "tnt_test"
    server = deployment(kube_api, namespace, name).spec.template.spec.containers[0]
    assert {e.name: e.value for e in server.env}["NEXA_MAX_BATCH_SIZE"] == "8"

    done = terminal(kube_api, namespace, name)
    assert done["status"]["phase"] == "Completed", done["status"]
    url = f"http://{name}.{namespace}.svc.cluster.local"
    assert done["status"]["result"] == {"endpoint": name, "url": url, "ready_replicas": 2}
    assert done["status"]["endpointName"] == name
    assert condition(done, "EndpointReady")["status"] == "True"  # type: ignore[index]
    assert endpoint_status(kube_api, namespace, name)["phase"] == "Ready"


# --- KServe -------------------------------------------------------------------------------


def test_with_kserve_installed_the_endpoint_is_an_inference_service(
    kserve_operator: OperatorProcess, kube_api: Any
) -> None:
    namespace = kserve_operator.namespace
    obj = endpoint_object(namespace, replicas=2, min_replicas=1, max_replicas=4)
    name = obj["metadata"]["name"]
    endpoint = create_custom(kube_api, NEXAENDPOINT_PLURAL, obj)
    custom: Any = client.CustomObjectsApi(kube_api)
    read_isvc = partial(
        custom.get_namespaced_custom_object, KSERVE_GROUP, KSERVE_VERSION, namespace, ISVC_PLURAL, name
    )
    made = wait_for("the InferenceService", partial(read_or_none, read_isvc), 60)
    (owner,) = made["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == (NEXAENDPOINT_KIND, endpoint["metadata"]["uid"])
    predictor = made["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    (container,) = predictor["containers"]
    assert (container["name"], container["image"]) == ("kserve-container", SERVING_IMAGE)
    assert not client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items
    wait_for(
        "a Pending kserve status",
        lambda: endpoint_status(kube_api, namespace, name).get("backend") == "kserve",
        30,
    )
    # Not Ready until KServe says so, however often the operator looks.
    time.sleep(RESYNC_SECONDS * 2)
    status = endpoint_status(kube_api, namespace, name)
    assert (status["phase"], status["readyReplicas"]) == ("Pending", 0)

    # What KServe's controller writes once the predictor is up.
    url = f"http://{name}.{namespace}.example.com"
    custom.patch_namespaced_custom_object_status(
        KSERVE_GROUP,
        KSERVE_VERSION,
        namespace,
        ISVC_PLURAL,
        name,
        {
            "status": {
                "url": url,
                "conditions": [
                    {"type": "PredictorReady", "status": "True"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"},
                ],
            }
        },
    )
    ready = ready_endpoint(kube_api, namespace, name, 2)
    assert (ready["status"]["url"], ready["status"]["backend"]) == (url, "kserve")
    assert condition(ready, "EndpointReady")["status"] == "True"  # type: ignore[index]
