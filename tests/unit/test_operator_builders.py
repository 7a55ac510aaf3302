"""Pure builders: a NexaJob becomes the right batch/v1 Job; an endpoint its serving objects."""

from __future__ import annotations

from typing import Any

import pytest

from nexa.contracts import AuditSpec, ContainerSpec, DeploySpec, JobType, TrainSpec
from nexa.contracts.common import JobOptions, Resources
from nexa.contracts.nexajob import EXIT_FATAL, nexajob_object
from nexa_operator import builders
from nexa_operator.config import ConfigError, OperatorConfig

CONFIG = OperatorConfig(cpu_image="reg/cpu:1", cuda_image="reg/cuda:1", serving_image="reg/serve:1")
DS = "ds_" + "a" * 26
CKPT = "ckpt_" + "b" * 26


def nexajob(job_type: JobType, spec: JobOptions, **extra: Any) -> dict[str, Any]:
    obj = nexajob_object(
        job_id="job_" + "c" * 26, tenant_id="tnt_1", namespace="nexa-t1", job_type=job_type, spec=spec
    )
    obj["metadata"]["uid"] = "uid-1"
    obj["spec"].update(extra)
    return obj


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("job_type", "spec", "image", "gpus", "selector", "gpu_toleration"),
    [
        (JobType.audit, AuditSpec(dataset_uri=DS), "reg/cpu:1", None, {}, False),
        (
            JobType.audit,
            AuditSpec(dataset_uri=DS, resources=Resources(tier="premium")),
            "reg/cpu:1",
            None,
            {"nexa.run/tier": "premium"},
            False,
        ),
        (JobType.train, TrainSpec(dataset_id=DS, model="gpt2"), "reg/cuda:1", None, {}, False),
        (
            JobType.train,
            TrainSpec(dataset_id=DS, model="gpt2", resources=Resources(gpus=8, gpu_type="H100", tier="gpu")),
            "reg/cuda:1",
            "8",
            {"nexa.run/tier": "gpu", "nvidia.com/gpu.product": "H100"},
            True,
        ),
        (
            JobType.container,
            ContainerSpec(image="busybox:1", command=["sh"], args=["-c", "true"]),
            "busybox:1",
            None,
            {},
            False,
        ),
    ],
)
def test_job_image_resources_and_placement(
    job_type: JobType,
    spec: JobOptions,
    image: str,
    gpus: str | None,
    selector: dict[str, str],
    gpu_toleration: bool,
) -> None:
    job = builders.build_job(nexajob(job_type, spec), 1, CONFIG)
    pod = job["spec"]["template"]["spec"]
    assert container(job)["image"] == image
    assert container(job)["resources"]["requests"].get("nvidia.com/gpu") == gpus
    assert container(job)["resources"]["limits"].get("nvidia.com/gpu") == gpus
    assert pod.get("nodeSelector", {}) == selector
    tolerations = pod.get("tolerations", [])
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations) == gpu_toleration


def test_disk_and_gpu_memory_become_ephemeral_storage_and_a_gpu_memory_affinity() -> None:
    spec = TrainSpec(
        dataset_id=DS,
        model="gpt2",
        resources=Resources(gpus=1, gpu_memory_gb=40, disk_gb=100, tier="HPC"),
    )
    job = builders.build_job(nexajob(JobType.train, spec), 1, CONFIG)
    pod = job["spec"]["template"]["spec"]
    resources = container(job)["resources"]
    assert (
        resources["requests"]["ephemeral-storage"] == resources["limits"]["ephemeral-storage"] == "102400Mi"
    )
    assert pod["nodeSelector"] == {"nexa.run/tier": "hpc"}  # NEXAPod's spelling, stored canonical
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {"matchExpressions": [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["40959"]}]}
    ]
    plain = builders.build_job(nexajob(JobType.audit, AuditSpec(dataset_uri=DS)), 1, CONFIG)
    assert "affinity" not in plain["spec"]["template"]["spec"]
    assert "ephemeral-storage" not in container(plain)["resources"]["requests"]


def test_job_runs_run_one_with_the_spec_and_attempt() -> None:
    spec = AuditSpec(dataset_uri=DS, ngram=7, timeout_seconds=600)
    job = builders.build_job(nexajob(JobType.audit, spec), 3, CONFIG)
    c = container(job)
    assert c["command"] == ["python", "-m", "nexa_engines.run_one"]
    args = c["args"]
    assert args[args.index("--job-type") + 1] == "audit"
    assert args[args.index("--attempt") + 1] == "3"
    assert args[args.index("--job-id") + 1] == "job_" + "c" * 26
    assert AuditSpec.model_validate_json(args[args.index("--spec-json") + 1]) == spec
    assert job["metadata"]["name"] == "job-" + "c" * 26 + "-a3"
    assert job["spec"]["activeDeadlineSeconds"] == 600


def test_job_failure_handling_and_lifecycle() -> None:
    job = builders.build_job(nexajob(JobType.audit, AuditSpec(dataset_uri=DS)), 1, CONFIG)
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["podReplacementPolicy"] == "Failed"
    assert spec["ttlSecondsAfterFinished"] == CONFIG.ttl_seconds_after_finished
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [EXIT_FATAL]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["suspend"] is False


def test_job_is_owned_labelled_and_restricted() -> None:
    job = builders.build_job(nexajob(JobType.audit, AuditSpec(dataset_uri=DS)), 1, CONFIG)
    owner = job["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "nexa.run/v1alpha1",
        "kind": "NexaJob",
        "name": "job-" + "c" * 26,
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["nexa.run/nexajob"] == "job-" + "c" * 26 and labels["nexa.run/attempt"] == "1"
    assert labels["nexa.run/tenant"] == "tnt_1"
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(job)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    ("store_env", "optional"),
    [({}, True), ({"NEXA_S3_ENDPOINT": "minio:9000", "NEXA_S3_BUCKET": "b"}, False)],
)
def test_s3_credentials_come_from_the_secret(store_env: dict[str, str], optional: bool) -> None:
    config = OperatorConfig(s3_secret="nexa-s3", store_env=store_env)
    c = container(builders.build_job(nexajob(JobType.audit, AuditSpec(dataset_uri=DS)), 1, config))
    assert "envFrom" not in c
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs == {
        "NEXA_S3_ACCESS_KEY": {"name": "nexa-s3", "key": "NEXA_S3_ACCESS_KEY", "optional": optional},
        "NEXA_S3_SECRET_KEY": {"name": "nexa-s3", "key": "NEXA_S3_SECRET_KEY", "optional": optional},
    }
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert not any("SECRET" in k or "ACCESS" in k for k in env)
    for key, value in store_env.items():
        assert env[key] == value


def test_kueue_labels_and_suspends() -> None:
    config = OperatorConfig(kueue_queue="gpu-queue")
    job = builders.build_job(nexajob(JobType.audit, AuditSpec(dataset_uri=DS)), 1, config)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job["spec"]["suspend"] is True


def test_user_suspend_creates_a_suspended_job() -> None:
    job = builders.build_job(nexajob(JobType.audit, AuditSpec(dataset_uri=DS), suspend=True), 1, CONFIG)
    assert job["spec"]["suspend"] is True


def test_an_external_s3_secret_with_other_key_names_is_read_by_those_names() -> None:
    config = OperatorConfig.from_env(
        {
            "NEXA_OPERATOR_S3_SECRET": "corp-s3",
            "NEXA_OPERATOR_S3_ACCESS_KEY_KEY": "accesskey",
            "NEXA_OPERATOR_S3_SECRET_KEY_KEY": "secretkey",
            "NEXA_S3_ENDPOINT": "s3.corp:443",
        }
    )
    job = builders.build_job(nexajob(JobType.audit, AuditSpec(dataset_uri=DS)), 1, config)
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container(job)["env"] if "valueFrom" in e}
    assert refs["NEXA_S3_ACCESS_KEY"] == {"name": "corp-s3", "key": "accesskey", "optional": False}
    assert refs["NEXA_S3_SECRET_KEY"] == {"name": "corp-s3", "key": "secretkey", "optional": False}


def test_container_jobs_use_the_users_command_and_env() -> None:
    spec = ContainerSpec(image="busybox:1", command=["sh"], args=["-c", "exit 0"], env={"A": "1"})
    job = builders.build_job(nexajob(JobType.container, spec), 1, CONFIG)
    c = container(job)
    assert c["command"] == ["sh"] and c["args"] == ["-c", "exit 0"]
    assert {"name": "A", "value": "1"} in c["env"]
    assert all(r["action"] != "FailJob" for r in job["spec"]["podFailurePolicy"]["rules"])


def test_a_container_job_gets_no_platform_storage_credentials() -> None:
    """A user's image with the platform's S3 keys could list and overwrite every tenant's prefix."""
    config = OperatorConfig.from_env(
        {"NEXA_OPERATOR_S3_SECRET": "nexa-s3", "NEXA_S3_ENDPOINT": "minio:9000", "NEXA_S3_BUCKET": "nexa"}
    )
    spec = ContainerSpec(image="attacker/image:1", env={"NEXA_S3_ENDPOINT": "mine"})
    env = container(builders.build_job(nexajob(JobType.container, spec), 1, config))["env"]
    assert not [e for e in env if "valueFrom" in e]  # no Secret reference at all
    names = {e["name"] for e in env}
    assert not names & {"NEXA_S3_ACCESS_KEY", "NEXA_S3_SECRET_KEY", "NEXA_S3_BUCKET"}
    assert {"name": "NEXA_S3_ENDPOINT", "value": "mine"} in env  # the user's own value, nothing of ours
    # An engine job of the same config does get them (it reads and writes the store).
    engine_env = container(builders.build_job(nexajob(JobType.audit, AuditSpec(dataset_uri=DS)), 1, config))[
        "env"
    ]
    assert [e for e in engine_env if "valueFrom" in e]


GATEWAY_ENV = {
    "NEXA_OPERATOR_S3_SECRET": "nexa-s3",
    "NEXA_S3_ENDPOINT": "minio:9000",
    "NEXA_S3_BUCKET": "nexa",
    "NEXA_MODEL_CATALOG": '{"tiny": "org/tiny"}',
    "NEXA_OPERATOR_GATEWAY_URL": "http://nexa-gateway:8080",
    "NEXA_OPERATOR_ATTEMPT_TOKEN_SECRET": "shared-secret",
    "NEXA_OPERATOR_GATEWAY_NAMESPACE_PREFIX": "nexa-",
}


@pytest.mark.parametrize(
    ("namespace", "tenant", "through_gateway"),
    [
        ("nexa-tnt-1", "tnt_1", True),  # the gateway's own namespace for the tenant
        ("team-a", "tnt_1", False),  # applied by hand elsewhere: the gateway could not check it
        ("nexa-tnt-2", "tnt_1", False),  # another tenant's namespace
    ],
)
def test_engine_pods_of_gateway_namespaces_hold_an_attempt_token_not_storage_keys(
    namespace: str, tenant: str, through_gateway: bool
) -> None:
    from nexa.attempttokens import ATTEMPT_TOKEN_ENV, verify

    config = OperatorConfig.from_env(GATEWAY_ENV)
    job = nexajob(JobType.audit, AuditSpec(dataset_uri=DS), tenant=tenant)
    job["metadata"]["namespace"] = namespace
    env = container(builders.build_job(job, 3, config))["env"]
    values = {e["name"]: e.get("value") for e in env}
    if not through_gateway:
        assert [e for e in env if "valueFrom" in e] and ATTEMPT_TOKEN_ENV not in values
        return
    assert not [e for e in env if "valueFrom" in e]  # no Secret reference, so no S3 keys
    assert not {n for n in values if n.startswith("NEXA_S3_") or n == "NEXA_ARTIFACT_ROOT"}
    assert (
        values["NEXA_STORE_ACCESS"] == "gateway" and values["NEXA_GATEWAY_URL"] == "http://nexa-gateway:8080"
    )
    assert values["NEXA_MODEL_CATALOG"] == '{"tiny": "org/tiny"}'
    claim = verify(b"shared-secret", str(values[ATTEMPT_TOKEN_ENV]))
    assert (claim.job_id, claim.attempt, claim.tenant) == (values["NEXA_JOB_ID"], 3, tenant)
    # A user's container in the same namespace still gets nothing of the platform's.
    own = container(
        builders.build_job(nexajob(JobType.container, ContainerSpec(image="u/i:1"), tenant=tenant), 1, config)
    )
    assert ATTEMPT_TOKEN_ENV not in {e["name"] for e in own["env"]}


@pytest.mark.parametrize("attempt", [1, 2, 17])
def test_job_names_are_deterministic_and_short(attempt: int) -> None:
    long = "x" * 250
    assert builders.job_name(long, attempt) == builders.job_name(long, attempt)
    assert len(builders.job_name(long, attempt)) <= 63
    assert builders.job_name(long, attempt).endswith(f"-a{attempt}")
    assert builders.job_name(long + "y", attempt) != builders.job_name(long, attempt)


def test_deploy_builds_endpoint_deployment_service_and_hpa() -> None:
    spec = DeploySpec(
        checkpoint_id=CKPT, replicas=2, min_replicas=1, max_replicas=4, resources=Resources(gpus=1)
    )
    endpoint = builders.endpoint_object(nexajob(JobType.deploy, spec))
    endpoint["metadata"]["uid"] = "ep-uid"
    assert endpoint["spec"]["checkpoint_id"] == CKPT and endpoint["spec"]["max_replicas"] == 4
    deployment = builders.build_deployment(endpoint, CONFIG)
    assert deployment["spec"]["replicas"] == 2
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert server["image"] == "reg/serve:1" and server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        deployment["spec"]["selector"]["matchLabels"] == builders.build_service(endpoint)["spec"]["selector"]
    )
    hpa = builders.build_hpa(endpoint)
    assert hpa is not None and hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 4
    isvc = builders.build_inference_service(endpoint, CONFIG)
    assert isvc["spec"]["predictor"]["maxReplicas"] == 4


@pytest.mark.parametrize(
    ("gateway_url", "checks_tenant_keys"), [("http://gw.nexa.svc:8080", True), (None, False)]
)
def test_serving_pods_check_callers(gateway_url: str | None, checks_tenant_keys: bool) -> None:
    """The tenant's API keys (with a gateway) and the endpoint's key Secret; never an open endpoint."""
    from dataclasses import replace

    from nexa_engines.serve import server as serve_cli

    endpoint = builders.endpoint_object(nexajob(JobType.deploy, DeploySpec(checkpoint_id=CKPT)))
    endpoint["metadata"]["uid"] = "ep"
    config = replace(CONFIG, gateway_url=gateway_url)
    server = builders.build_deployment(endpoint, config)["spec"]["template"]["spec"]["containers"][0]
    parsed = serve_cli._parse(server["args"])
    assert not parsed.insecure_no_auth
    assert (parsed.tenant is not None and parsed.gateway_url == gateway_url) is checks_tenant_keys
    key = next(e for e in server["env"] if e["name"] == "NEXA_SERVE_KEY")
    assert key["valueFrom"]["secretKeyRef"]["name"] == builders.endpoint_key_secret(endpoint)


def test_only_the_platforms_serving_image_gets_storage_credentials() -> None:
    endpoint = builders.endpoint_object(nexajob(JobType.deploy, DeploySpec(checkpoint_id=CKPT)))
    endpoint["metadata"]["uid"] = "ep"

    def env_names(image: str | None) -> set[str]:
        if image is not None:
            endpoint["spec"]["image"] = image
        server = builders.build_deployment(endpoint, CONFIG)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"] for e in server["env"]}

    assert {"NEXA_S3_ACCESS_KEY", "NEXA_S3_SECRET_KEY"} <= env_names(None)
    assert {"NEXA_S3_ACCESS_KEY", "NEXA_S3_SECRET_KEY"} <= env_names(CONFIG.serving_image)
    assert not {"NEXA_S3_ACCESS_KEY", "NEXA_S3_SECRET_KEY"} & env_names("attacker/any:latest")


def test_fixed_size_endpoint_has_no_hpa() -> None:
    endpoint = builders.endpoint_object(nexajob(JobType.deploy, DeploySpec(checkpoint_id=CKPT)))
    endpoint["metadata"]["uid"] = "ep"
    assert builders.build_hpa(endpoint) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NEXA_OPERATOR_JOB_TTL_SECONDS": "soon"}, "NEXA_OPERATOR_JOB_TTL_SECONDS must be an integer"),
        ({"NEXA_OPERATOR_RESYNC_SECONDS": "-1"}, "NEXA_OPERATOR_RESYNC_SECONDS must be positive"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OperatorConfig.from_env(env)


def test_pod_annotations_come_from_the_json_annotation_only() -> None:
    obj = nexajob(JobType.audit, AuditSpec(dataset_uri=DS))
    obj["metadata"]["annotations"] = {
        "nexa.run/pod-annotations": '{"sidecar.istio.io/inject": "false"}',
        "other": "x",
    }
    job = builders.build_job(obj, 1, CONFIG)
    assert job["spec"]["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
