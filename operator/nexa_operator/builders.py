"""Pure builders: a NexaJob or NexaEndpoint in, the Kubernetes objects it needs out. No I/O."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from nexa.attempttokens import ATTEMPT_TOKEN_ENV, mint
from nexa.contracts import ContainerSpec, JobType, spec_for
from nexa.contracts.common import JobOptions
from nexa.contracts.nexajob import (
    API_VERSION,
    ENGINE_CONTAINER,
    EXIT_FATAL,
    LABEL_ATTEMPT,
    LABEL_ENDPOINT,
    LABEL_JOB_TYPE,
    LABEL_MANAGED_BY,
    LABEL_NEXAJOB,
    LABEL_TENANT,
    NEXAENDPOINT_KIND,
    NEXAJOB_KIND,
    nexajob_job_id,
    nexajob_payload,
)
from nexa_operator.config import OperatorConfig

MANAGER = "nexa-operator"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # set by NVIDIA GPU Feature Discovery, in MiB
SERVING_PORT = 8080
RUN_UID = 10001
# Types whose engines need CUDA even when a job asks for no GPU explicitly.
CUDA_TYPES = frozenset({JobType.train, JobType.evaluate})
MAX_NAME = 63
# A NexaJob annotation holding a JSON object of annotations for its pods
# (service-mesh, monitoring or simulator hints that belong on the pod).
POD_ANNOTATIONS = "nexa.run/pod-annotations"


def _name(base: str, suffix: str) -> str:
    """``base-suffix`` within 63 characters; a long base is cut and made unique by a hash."""
    name = f"{base}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-.')}-{digest}-{suffix}"


def job_name(nexajob_name: str, attempt: int) -> str:
    """The Kubernetes Job of one attempt: the same name every time, so a repeat create is ``AlreadyExists``."""
    return _name(nexajob_name, f"a{attempt}")


def owner_reference(obj: dict[str, Any]) -> dict[str, Any]:
    """An owner reference to a Nexa resource that makes it the controller of the owned object."""
    return {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj.get("kind", NEXAJOB_KIND),
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def validated_spec(nexajob: dict[str, Any]) -> tuple[JobType, JobOptions]:
    """The NexaJob's spec as its contract model; ``ValueError``/``ValidationError`` when it is not one."""
    job_type, payload = nexajob_payload(nexajob["spec"])
    options = spec_for(job_type, payload)
    if options.verification is not None:
        # Replicas and a quorum are for the mesh's untrusted pull workers (docs/mesh.md).
        raise ValueError("not supported in cluster mode: verification (replicas and a quorum)")
    if isinstance(options, ContainerSpec) and options.cluster_gaps():
        # A pod cannot honour these (docs/containers.md): refuse rather than run it differently.
        raise ValueError("not supported in cluster mode: " + "; ".join(options.cluster_gaps()))
    return job_type, options


def engine_image(job_type: JobType, options: JobOptions, config: OperatorConfig) -> str:
    """The image that runs ``job_type``: the user's for container jobs, CUDA for GPU work, else CPU."""
    image = getattr(options, "image", None)
    if job_type is JobType.container and isinstance(image, str):
        return image
    if options.resources.gpus > 0 or job_type in CUDA_TYPES:
        return config.cuda_image
    return config.cpu_image


def container_resources(options: JobOptions) -> dict[str, Any]:
    """CPU, memory and GPU requests and limits for the engine container."""
    res = options.resources
    memory = f"{max(1, round(res.memory_gb * 1024))}Mi"
    cpu = f"{max(1, round(res.cpu * 1000))}m"
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if res.gpus > 0:
        requests[GPU_RESOURCE] = str(res.gpus)
        limits[GPU_RESOURCE] = str(res.gpus)
    if res.disk_gb is not None:
        # Scratch space: the work and tmp volumes are emptyDirs, which count as ephemeral storage.
        disk = f"{max(1, round(res.disk_gb * 1024))}Mi"
        requests["ephemeral-storage"] = disk
        limits["ephemeral-storage"] = disk
    return {"requests": requests, "limits": limits}


def node_affinity(options: JobOptions) -> dict[str, Any] | None:
    """Required node affinity for what a node selector cannot say: at least this much memory on each
    GPU, read from GPU Feature Discovery's ``nvidia.com/gpu.memory`` label (MiB)."""
    res = options.resources
    if res.gpu_memory_gb is None or res.gpus == 0:
        return None
    at_least_mib = max(1, round(res.gpu_memory_gb * 1024))
    term = {
        "matchExpressions": [{"key": GPU_MEMORY_LABEL, "operator": "Gt", "values": [str(at_least_mib - 1)]}]
    }
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def placement(options: JobOptions, config: OperatorConfig) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Node selector and tolerations for the job's tier, GPU type and GPU count."""
    res = options.resources
    selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    if res.tier:
        selector[config.tier_label] = res.tier
        tolerations.append(
            {"key": config.tier_label, "operator": "Equal", "value": res.tier, "effect": "NoSchedule"}
        )
    if res.gpu_type:
        selector[config.gpu_type_label] = res.gpu_type
    if res.gpus > 0:
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return selector, tolerations


def engine_command(
    job_type: JobType, options: JobOptions, *, job_id: str, attempt: int, tenant: str
) -> tuple[list[str], list[str]]:
    """The container's command and args: ``nexa_engines.run_one`` for engines, the user's for containers."""
    if job_type is JobType.container:
        return list(getattr(options, "command", [])), list(getattr(options, "args", []))
    spec_json = json.dumps(options.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)
    return (
        ["python", "-m", "nexa_engines.run_one"],
        [
            "--job-type",
            job_type.value,
            "--job-id",
            job_id,
            "--attempt",
            str(attempt),
            "--tenant",
            tenant,
            "--spec-json",
            spec_json,
        ],
    )


def _security_context() -> tuple[dict[str, Any], dict[str, Any]]:
    pod = {
        "runAsNonRoot": True,
        "runAsUser": RUN_UID,
        "runAsGroup": RUN_UID,
        "fsGroup": RUN_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return pod, container


def s3_credentials_env(config: OperatorConfig) -> list[dict[str, Any]]:
    """NEXA_S3_ACCESS_KEY / NEXA_S3_SECRET_KEY from the S3 Secret, by the key names it uses.

    Explicit keys rather than ``envFrom``: an external S3 Secret may name its keys
    differently, and the engine should see those two values, not the whole Secret.
    """
    if not config.s3_secret:
        return []
    # Without S3 the engine runs on a local store and the Secret may be absent.
    optional = "NEXA_S3_ENDPOINT" not in config.store_env
    return [
        {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": config.s3_secret, "key": key, "optional": optional}},
        }
        for name, key in (
            ("NEXA_S3_ACCESS_KEY", config.s3_access_key_key),
            ("NEXA_S3_SECRET_KEY", config.s3_secret_key_key),
        )
    ]


def _env(
    job_type: JobType,
    options: JobOptions,
    config: OperatorConfig,
    *,
    job_id: str,
    attempt: int,
    tenant: str,
    gateway_store: bool,
) -> list[dict[str, Any]]:
    env: dict[str, str] = {"NEXA_JOB_ID": job_id, "NEXA_ATTEMPT": str(attempt), "HOME": "/tmp"}
    if job_type is JobType.container:
        # A user's own image never holds the platform's storage credentials: with them it
        # could read and overwrite every tenant's artifacts. It gets its own env only.
        env.update(getattr(options, "env", {}))
        return [{"name": k, "value": v} for k, v in sorted(env.items())]
    if gateway_store:
        # No storage credentials at all: a token for this attempt, which the gateway honours
        # for the tenant's own artifacts while the attempt is the NexaJob's current one.
        assert config.attempt_token_secret is not None and config.gateway_url is not None
        env.update({k: v for k, v in config.store_env.items() if not k.startswith("NEXA_S3_")})
        env["NEXA_WORKDIR"] = "/work"
        env["NEXA_STORE_ACCESS"] = "gateway"
        env["NEXA_GATEWAY_URL"] = config.gateway_url
        env[ATTEMPT_TOKEN_ENV] = mint(config.attempt_token_secret, job_id, attempt, tenant)
        return [{"name": k, "value": v} for k, v in sorted(env.items())]
    env.update(config.store_env)
    env["NEXA_WORKDIR"] = "/work"
    env["NEXA_ARTIFACT_ROOT"] = "/work/artifacts"
    return [{"name": k, "value": v} for k, v in sorted(env.items())] + s3_credentials_env(config)


def nexa_labels(nexajob: dict[str, Any], job_type: JobType, attempt: int) -> dict[str, str]:
    """Labels every object of one attempt carries; the operator finds its Jobs and Pods by them."""
    labels = {
        LABEL_NEXAJOB: nexajob["metadata"]["name"],
        LABEL_ATTEMPT: str(attempt),
        LABEL_JOB_TYPE: job_type.value,
        LABEL_MANAGED_BY: MANAGER,
    }
    tenant = nexajob["spec"].get("tenant")
    if tenant:
        labels[LABEL_TENANT] = str(tenant)
    return labels


def pod_failure_policy(job_type: JobType) -> dict[str, Any]:
    """Evictions and preemptions never count; an engine's fatal exit code fails the Job at once."""
    rules: list[dict[str, Any]] = [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    if job_type is not JobType.container:
        rules.append(
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": ENGINE_CONTAINER, "operator": "In", "values": [EXIT_FATAL]},
            }
        )
    return {"rules": rules}


def build_job(nexajob: dict[str, Any], attempt: int, config: OperatorConfig) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs ``attempt`` of a NexaJob."""
    job_type, options = validated_spec(nexajob)
    meta = nexajob["metadata"]
    job_id = nexajob_job_id(meta["name"], meta.get("uid", ""))
    tenant = str(nexajob["spec"].get("tenant") or "default")
    labels = nexa_labels(nexajob, job_type, attempt)
    if config.kueue_queue:
        labels[KUEUE_QUEUE_LABEL] = config.kueue_queue
    command, args = engine_command(job_type, options, job_id=job_id, attempt=attempt, tenant=tenant)
    selector, tolerations = placement(options, config)
    env = _env(
        job_type,
        options,
        config,
        job_id=job_id,
        attempt=attempt,
        tenant=tenant,
        gateway_store=config.pods_use_gateway_store(meta["namespace"], nexajob["spec"].get("tenant")),
    )
    pod_security, container_security = _security_context()
    container: dict[str, Any] = {
        "name": ENGINE_CONTAINER,
        "image": engine_image(job_type, options, config),
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "env": env,
        "resources": container_resources(options),
        "securityContext": container_security,
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    if command:
        container["command"] = command
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": pod_security,
        "volumes": [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        "automountServiceAccountToken": False,
    }
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    if selector:
        pod_spec["nodeSelector"] = selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    affinity = node_affinity(options)
    if affinity:
        pod_spec["affinity"] = affinity
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"], attempt),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {"nexa.run/job-id": job_id, "nexa.run/priority": str(options.priority)},
            "ownerReferences": [owner_reference(nexajob)],
        },
        "spec": {
            "parallelism": 1,
            "completions": 1,
            # Retries are new attempts (new Jobs) made by the operator, so each has its own number.
            "backoffLimit": 0,
            "podFailurePolicy": pod_failure_policy(job_type),
            "podReplacementPolicy": "Failed",
            "activeDeadlineSeconds": options.timeout_seconds,
            "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
            # Kueue admits suspended Jobs; a user's suspend holds the Job back too.
            "suspend": bool(config.kueue_queue) or bool(nexajob["spec"].get("suspend")),
            "template": {
                "metadata": {"labels": dict(labels), "annotations": pod_annotations(nexajob)},
                "spec": pod_spec,
            },
        },
    }


def pod_annotations(nexajob: dict[str, Any]) -> dict[str, str]:
    """The annotations the NexaJob's ``nexa.run/pod-annotations`` JSON object asks for on its pods."""
    raw = (nexajob["metadata"].get("annotations") or {}).get(POD_ANNOTATIONS)
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"annotation {POD_ANNOTATIONS} must be a JSON object: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"annotation {POD_ANNOTATIONS} must be a JSON object")
    return {str(k): str(v) for k, v in doc.items()}


# --- endpoints --------------------------------------------------------------------------------


def endpoint_object(nexajob: dict[str, Any]) -> dict[str, Any]:
    """The NexaEndpoint a deploy NexaJob creates (same name and namespace as the NexaJob)."""
    job_type, options = validated_spec(nexajob)
    if job_type is not JobType.deploy:
        raise ValueError(f"only deploy jobs create endpoints, not {job_type.value}")
    payload = options.model_dump(mode="json", exclude_none=True)
    spec = {
        k: payload[k]
        for k in ("checkpoint_id", "replicas", "min_replicas", "max_replicas", "protocol", "max_batch_size")
    }
    spec["resources"] = payload["resources"]
    if nexajob["spec"].get("tenant"):
        spec["tenant"] = nexajob["spec"]["tenant"]
    meta = nexajob["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": NEXAENDPOINT_KIND,
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": {LABEL_NEXAJOB: meta["name"], LABEL_MANAGED_BY: MANAGER},
        },
        "spec": spec,
    }


def _endpoint_labels(endpoint: dict[str, Any]) -> dict[str, str]:
    return {LABEL_ENDPOINT: endpoint["metadata"]["name"], LABEL_MANAGED_BY: MANAGER}


ENDPOINT_KEY_SECRET_KEY = "api-key"


def endpoint_key_secret(endpoint: dict[str, Any]) -> str:
    """The Secret (in the endpoint's namespace) whose ``api-key`` the serving pods accept."""
    return f"{endpoint['metadata']['name']}-key"[:253]


def _serving_container(endpoint: dict[str, Any], config: OperatorConfig) -> dict[str, Any]:
    spec = endpoint["spec"]
    options = JobOptions.model_validate({"resources": spec.get("resources", {})})
    _, container_security = _security_context()
    env = {
        "NEXA_CHECKPOINT_ID": spec["checkpoint_id"],
        "NEXA_SERVING_PROTOCOL": spec.get("protocol", "both"),
        "NEXA_MAX_BATCH_SIZE": str(spec.get("max_batch_size", 16)),
        "NEXA_PORT": str(SERVING_PORT),
        "HOME": "/tmp",
    }
    env.update(config.store_env)
    args = ["--checkpoint", spec["checkpoint_id"], "--host", "0.0.0.0", "--port", str(SERVING_PORT)]
    args += ["--model-name", endpoint["metadata"]["name"], "--workdir", "/tmp/models"]
    tenant = spec.get("tenant")
    if tenant and config.gateway_url:
        # Callers present an API key of the endpoint's tenant, checked with the gateway.
        args += ["--tenant", str(tenant), "--gateway-url", config.gateway_url]
    key_env = {
        # An endpoint key the tenant keeps in a Secret of its namespace (optional): with
        # neither it nor a gateway, the server refuses to start rather than serve anyone.
        "name": "NEXA_SERVE_KEY",
        "valueFrom": {
            "secretKeyRef": {
                "name": endpoint_key_secret(endpoint),
                "key": ENDPOINT_KEY_SECRET_KEY,
                "optional": True,
            }
        },
    }
    image = spec.get("image") or config.serving_image
    # The platform's storage credentials go only into the platform's own serving image: a
    # NexaEndpoint may name any image, and that image must not read every tenant's artifacts.
    store_access = s3_credentials_env(config) if image == config.serving_image else []
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "nexa_engines.serve"],
        "args": args,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())] + store_access + [key_env],
        "ports": [{"name": "http", "containerPort": SERVING_PORT}],
        "resources": container_resources(options),
        "securityContext": container_security,
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return container


def build_deployment(endpoint: dict[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """The Deployment that serves a NexaEndpoint's checkpoint."""
    spec = endpoint["spec"]
    meta = endpoint["metadata"]
    labels = _endpoint_labels(endpoint)
    options = JobOptions.model_validate({"resources": spec.get("resources", {})})
    selector, tolerations = placement(options, config)
    pod_security, _ = _security_context()
    pod_spec: dict[str, Any] = {
        "containers": [_serving_container(endpoint, config)],
        "securityContext": pod_security,
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "automountServiceAccountToken": False,
    }
    if selector:
        pod_spec["nodeSelector"] = selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    affinity = node_affinity(options)
    if affinity:
        pod_spec["affinity"] = affinity
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(endpoint)],
        },
        "spec": {
            "replicas": int(spec.get("replicas", 1)),
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def build_service(endpoint: dict[str, Any]) -> dict[str, Any]:
    """The ClusterIP Service in front of a NexaEndpoint's pods."""
    meta = endpoint["metadata"]
    labels = _endpoint_labels(endpoint)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(endpoint)],
        },
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_hpa(endpoint: dict[str, Any]) -> dict[str, Any] | None:
    """A HorizontalPodAutoscaler when the endpoint may scale (max > min), else None."""
    spec = endpoint["spec"]
    low, high = int(spec.get("min_replicas", 1)), int(spec.get("max_replicas", 1))
    if high <= max(low, 1):
        return None
    meta = endpoint["metadata"]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": _endpoint_labels(endpoint),
            "ownerReferences": [owner_reference(endpoint)],
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"]},
            "minReplicas": max(1, low),
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }


def build_inference_service(endpoint: dict[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """A KServe ``InferenceService`` for the endpoint (used where KServe's CRD is installed)."""
    spec = endpoint["spec"]
    meta = endpoint["metadata"]
    container = _serving_container(endpoint, config)
    container["name"] = "kserve-container"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": _endpoint_labels(endpoint),
            "ownerReferences": [owner_reference(endpoint)],
        },
        "spec": {
            "predictor": {
                "minReplicas": int(spec.get("min_replicas", 1)),
                "maxReplicas": int(spec.get("max_replicas", 1)),
                "containers": [container],
            }
        },
    }


def endpoint_url(endpoint: dict[str, Any]) -> str:
    """The in-cluster URL of a Deployment-backed endpoint's Service."""
    meta = endpoint["metadata"]
    return f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local"
