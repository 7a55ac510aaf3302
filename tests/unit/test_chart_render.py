"""The chart lints, renders with every value set, and every object it renders is valid Kubernetes."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.helm import CHART, REPO_ROOT, VALUE_SETS, helm, pod_specs, render, template_args

kubernetes_validate = pytest.importorskip("kubernetes_validate")

# The Kubernetes version the offline schemas are taken from (the test control plane's minor).
KUBE_VERSION = "1.34.0"
# Kinds served by CRDs the schemas cannot know; they are checked by the tests that need them.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(VALUE_SETS[request.param])


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_is_clean_with_every_value_set(value_set: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in VALUE_SETS[value_set]:
        args += ["--values", str(path)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_every_rendered_object_passes_strict_kubernetes_validation(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    value_set, objects = rendered
    checked = 0
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"[{value_set}] {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )
        checked += 1
    assert checked >= 20


def test_every_pod_meets_the_restricted_pod_security_standard(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    value_set, objects = rendered
    specs = pod_specs(objects)
    assert len(specs) >= 4
    for where, spec in specs:
        pod_ctx = spec.get("securityContext") or {}
        assert pod_ctx.get("runAsNonRoot") is True, (value_set, where)
        assert pod_ctx.get("runAsUser", 0) != 0, (value_set, where)
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", (value_set, where)
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, (value_set, where, volume)
        for container in spec.get("initContainers", []) + spec["containers"]:
            ctx = container.get("securityContext") or {}
            name = f"{where}:{container['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, (value_set, name)
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], (value_set, name)
            assert not ctx.get("capabilities", {}).get("add"), (value_set, name)
            assert not ctx.get("privileged"), (value_set, name)
            # Every process here can run with a read-only root: the writable paths are emptyDirs.
            assert ctx.get("readOnlyRootFilesystem") is True, (value_set, name)
            assert "ports" not in container or all("hostPort" not in p for p in container["ports"]), name


def test_nexa_images_default_to_the_chart_version_which_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    package = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["version"] == chart["appVersion"] == package
    objects = render()
    images = {c["image"] for _, spec in pod_specs(objects) for c in spec["containers"]}
    nexa_images = {image for image in images if image.startswith("ghcr.io/nexa/")}
    assert {i.rsplit(":", 1)[0].rsplit("/", 1)[1] for i in nexa_images} == {
        "gateway",
        "operator",
        "engine-cpu",
    }
    assert all(image.endswith(f":{package}") for image in nexa_images), nexa_images
    operator = _one(objects, "Deployment", "nexa-operator")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["NEXA_OPERATOR_CUDA_IMAGE"] == f"ghcr.io/nexa/engine-cuda:{package}"
    pinned = render(sets=["image.tag=1.2.3", "gateway.image.tag=9.9.9"])
    gateway = _one(pinned, "Deployment", "nexa-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["image"] == "ghcr.io/nexa/gateway:9.9.9"
    assert _one(pinned, "Deployment", "nexa-operator")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ] == ("ghcr.io/nexa/operator:1.2.3")


def test_the_operator_runs_one_replica_that_is_stopped_before_its_successor_starts(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    operator = _one(objects, "Deployment", "nexa-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}


def test_the_gateway_serves_the_api_and_the_helm_test_calls_readyz() -> None:
    objects = render()
    gateway = _one(objects, "Deployment", "nexa-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["args"] == ["--host", "0.0.0.0", "--port", "8080"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in gateway["env"]}
    assert env["NEXA_S3_ENDPOINT"]["value"] == "nexa-minio:9000"
    assert env["NEXA_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "nexa-gateway"
    assert "NEXA_STRIPE_API_KEY" not in env  # billing is off by default: no code reads the key yet
    hook = next(o for o in objects if o["kind"] == "Pod")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "http://nexa-gateway:8080/readyz" in hook["spec"]["containers"][0]["command"][-1]


def test_external_s3_and_database_come_from_the_named_secrets() -> None:
    objects = render(VALUE_SETS["external-s3"])
    assert not [o for o in objects if o["metadata"]["name"] in ("nexa-minio", "nexa-postgresql")]
    gateway = _one(objects, "Deployment", "nexa-gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in gateway["env"]}
    assert env["NEXA_S3_ENDPOINT"]["value"] == "s3.eu-west-1.amazonaws.com:443"
    assert env["NEXA_S3_SECURE"]["value"] == "true"
    assert env["NEXA_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "nexa-s3-credentials",
        "key": "access-key",
    }
    assert env["NEXA_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "nexa-database", "key": "url"}


def test_kueue_and_gpu_settings_reach_the_operator_and_the_gpu_pool() -> None:
    kueue = _one(render(VALUE_SETS["kueue"]), "Deployment", "nexa-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in kueue["containers"][0]["env"]}
    assert env["NEXA_OPERATOR_KUEUE_QUEUE"] == "nexa-team"
    assert kueue["containers"][0]["args"][-4:] == ["--namespace", "nexa-team-a", "--namespace", "nexa-team-b"]
    gpu_objects = render(VALUE_SETS["gpu"])
    operator_env = {
        e["name"]: e.get("value")
        for e in _one(gpu_objects, "Deployment", "nexa-operator")["spec"]["template"]["spec"]["containers"][
            0
        ]["env"]
    }
    assert operator_env["NEXA_OPERATOR_TIER_LABEL"] == "cloud.example.com/pool"
    pool = _one(gpu_objects, "Deployment", "nexa-worker-gpu")["spec"]["template"]["spec"]
    worker = pool["containers"][0]
    assert worker["image"].startswith("ghcr.io/nexa/engine-cuda:")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["args"][-2:] == ["--job-types", "train,evaluate"]
    assert pool["nodeSelector"]["cloud.example.com/pool"] == "gpu"
    assert pool["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_ingress_routes_the_host_to_the_gateway_with_tls() -> None:
    objects = render(VALUE_SETS["ingress"])
    ingress = _one(objects, "Ingress", "nexa-gateway")
    assert ingress["spec"]["tls"] == [{"hosts": ["nexa.example.com"], "secretName": "nexa-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "nexa-gateway", "port": {"name": "http"}}
    monitors = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceMonitor"}
    assert monitors == {"nexa-gateway", "nexa-operator"}


def test_cluster_mode_runs_jobs_as_nexajobs_without_pull_workers() -> None:
    objects = render(VALUE_SETS["cluster-mode"])
    assert not [o for o in objects if "nexa.run/worker-pool" in o["metadata"].get("labels", {})]
    pod = _one(objects, "Deployment", "nexa-gateway")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert _one(objects, "ServiceAccount", "nexa-gateway")["automountServiceAccountToken"] is True
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["NEXA_BACKEND"]["value"] == "kubernetes"
    assert env["NEXA_KUBE_NAMESPACE_PREFIX"]["value"] == "team-"
    assert env["NEXA_KUBE_CREATE_NAMESPACES"]["value"] == "true"
    assert env["NEXA_KUBE_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The gateway copies the very Secret the operator tells engine pods to read.
    operator = _one(objects, "Deployment", "nexa-operator")["spec"]["template"]["spec"]["containers"][0]
    operator_env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["NEXA_KUBE_S3_SECRET"]["value"] == operator_env["NEXA_OPERATOR_S3_SECRET"] == "nexa-s3"
    # The settings the gateway reads are the ones the chart sets.
    settings = pytest.importorskip("nexa_gateway.settings")
    fields = {f"NEXA_{name.upper()}" for name in settings.Settings.model_fields}
    assert {name for name in env if name.startswith("NEXA_KUBE") or name == "NEXA_BACKEND"} <= fields
    standalone = render()
    assert "NEXA_BACKEND" not in {
        e["name"]
        for e in _one(standalone, "Deployment", "nexa-gateway")["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert _one(standalone, "Deployment", "nexa-worker-cpu")


def test_cluster_mode_engine_pods_get_attempt_tokens_signed_with_a_secret_both_sides_read() -> None:
    objects = render(VALUE_SETS["cluster-mode"])
    gateway = _one(objects, "Deployment", "nexa-gateway")["spec"]["template"]["spec"]["containers"][0]
    operator = _one(objects, "Deployment", "nexa-operator")["spec"]["template"]["spec"]["containers"][0]
    gateway_env = {e["name"]: e for e in gateway["env"]}
    operator_env = {e["name"]: e for e in operator["env"]}
    ref = {"secretKeyRef": {"name": "nexa-gateway", "key": "NEXA_ATTEMPT_TOKEN_SECRET"}}
    assert gateway_env["NEXA_ATTEMPT_TOKEN_SECRET"]["valueFrom"] == ref
    assert operator_env["NEXA_OPERATOR_ATTEMPT_TOKEN_SECRET"]["valueFrom"] == ref
    assert operator_env["NEXA_OPERATOR_GATEWAY_NAMESPACE_PREFIX"]["value"] == "team-"
    secret = _one(objects, "Secret", "nexa-gateway")["stringData"]
    assert len(secret["NEXA_ATTEMPT_TOKEN_SECRET"]) == 48
    # The gateway alone signs what it accepts from those pods: the key is its, never the operator's.
    assert (
        gateway_env["NEXA_PLATFORM_SIGNING_KEY"]["valueFrom"]["secretKeyRef"]["key"]
        == "NEXA_PLATFORM_SIGNING_KEY"
    )
    assert "NEXA_PLATFORM_SIGNING_KEY" not in {e["name"] for e in operator["env"]}
    from nexa_store.signing import SigningKey

    assert len(SigningKey.from_hex(secret["NEXA_PLATFORM_SIGNING_KEY"]).public_hex) == 64
    # Every setting is one the programs read.
    settings = pytest.importorskip("nexa_gateway.settings")
    assert "attempt_token_secret" in settings.Settings.model_fields
    from nexa_operator.config import OperatorConfig

    config = OperatorConfig.from_env(
        {
            k: "x"
            for k in operator_env
            if k.startswith("NEXA_OPERATOR_") and "PORT" not in k and "SECONDS" not in k
        }
    )
    assert config.attempt_token_secret == b"x" and config.gateway_namespace_prefix == "x"
    # Opting out, or standalone mode, sets none of it.
    direct = render(VALUE_SETS["cluster-mode"], ["operator.podStoreAccess=direct"])
    env = _one(direct, "Deployment", "nexa-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "NEXA_OPERATOR_ATTEMPT_TOKEN_SECRET" not in {e["name"] for e in env}
    assert "NEXA_ATTEMPT_TOKEN_SECRET" not in _one(render(), "Secret", "nexa-gateway")["stringData"]


def test_the_pod_monitor_scrapes_the_operators_serving_pods() -> None:
    builders = pytest.importorskip("nexa_operator.builders")
    from nexa_operator.config import OperatorConfig

    endpoint = {
        "metadata": {"name": "ep-1", "namespace": "team-a", "uid": "u-1"},
        "spec": {"checkpoint_id": "ck_1"},
    }
    deployment = builders.build_deployment(endpoint, OperatorConfig())
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}

    monitor = _one(render(VALUE_SETS["cluster-mode"]), "PodMonitor", "nexa-endpoints")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    selector = monitor["spec"]["selector"]
    assert all(pod_labels.get(k) == v for k, v in selector["matchLabels"].items())
    assert all(e["operator"] == "Exists" and e["key"] in pod_labels for e in selector["matchExpressions"])
    [scrape] = monitor["spec"]["podMetricsEndpoints"]
    assert scrape["path"] == "/metrics" and scrape["port"] in ports
    # Engine pods of ordinary jobs are managed by the operator too, but serve no metrics: not selected.
    assert "nexa.run/endpoint" in {e["key"] for e in selector["matchExpressions"]}

    scoped = render(VALUE_SETS["ingress"], ["operator.watchNamespaces={team-a,team-b}"])
    assert _one(scoped, "PodMonitor", "nexa-endpoints")["spec"]["namespaceSelector"] == {
        "matchNames": ["team-a", "team-b"]
    }
    assert not [o for o in render() if o["kind"] == "PodMonitor"]


def test_dashboards_are_configmaps_with_the_grafana_sidecar_label() -> None:
    maps = [o for o in render() if o["kind"] == "ConfigMap" and "-dashboard-" in o["metadata"]["name"]]
    names = {file for m in maps for file in m["data"]}
    assert names == {f"nexa-{p.stem}.json" for p in (CHART / "dashboards").glob("*.json")}
    assert all(m["metadata"]["labels"]["grafana_dashboard"] == "1" for m in maps)


BAD_VALUES = {
    "unknown top-level key": ["bogus=1"],
    "zero gateway replicas": ["gateway.replicas=0"],
    "port out of range": ["gateway.port=70000"],
    "unknown pull policy": ["image.pullPolicy=Sometimes"],
    "external S3 without endpoint": ["minio.enabled=false", "externalS3.existingSecret=s3"],
    "external S3 without secret": ["minio.enabled=false", "externalS3.endpoint=s3.example.com:443"],
    "external database without secret": ["postgresql.enabled=false"],
    "stripe without its secret": ["billing.stripe.enabled=true"],
    "TLS without a secret": ["gateway.ingress.enabled=true", "gateway.ingress.tls.enabled=true"],
    "worker pool of an unknown job type": [
        "workers.pools[0].name=cpu",
        "workers.pools[0].replicas=1",
        "workers.pools[0].image=cpu",
        "workers.pools[0].jobTypes[0]=bake",
    ],
    "third-party image on latest": ["minio.image.tag=latest"],
    "a watch namespace that is no DNS label": ["operator.watchNamespaces[0]=Team_A"],
    "an unknown gateway backend": ["gateway.backend=sql"],
    "a tenant namespace prefix that is no DNS label": ["gateway.kubernetes.namespacePrefix=Team_"],
}


@pytest.mark.parametrize("sets", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_values_schema_rejects_bad_values(sets: list[str]) -> None:
    result = helm(*template_args(sets=sets), check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr or "required" in result.stderr, result.stderr


def test_values_yaml_documents_every_top_level_key() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    lines = text.splitlines()
    for key in values:
        index = lines.index(next(line for line in lines if line.startswith(f"{key}:")))
        assert lines[index - 1].startswith("#"), f"values.yaml: `{key}` has no comment above it"


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def test_chart_files_are_not_left_over_placeholders() -> None:
    readme = (REPO_ROOT / "charts" / "README.md").read_text()
    assert "Not built yet" not in readme and "charts/nexa" in readme
    assert Path(CHART / "templates" / "NOTES.txt").is_file()


def test_the_operator_reads_an_external_s3_secret_by_its_key_names() -> None:
    # Engines get NEXA_S3_ACCESS_KEY / NEXA_S3_SECRET_KEY from whatever keys that Secret uses.
    objects = render(VALUE_SETS["external-s3"])
    operator = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("operator")
    )
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["NEXA_OPERATOR_S3_SECRET"] == "nexa-s3-credentials"
    assert env["NEXA_OPERATOR_S3_ACCESS_KEY_KEY"] == "access-key"
    assert env["NEXA_OPERATOR_S3_SECRET_KEY_KEY"] == "secret-key"


def test_the_model_catalog_reaches_the_gateway_and_the_operators_pods(tmp_path: Path) -> None:
    from nexa.contracts.catalog import parse_catalog
    from nexa_operator.config import OperatorConfig

    values = tmp_path / "models.yaml"
    catalog = {
        "Mistral-7B": "/models/mistral-7b",
        "gpt-4": {"base_url": "http://vllm.models:8000/v1", "model": "served-gpt", "api_key_env": "VLLM_KEY"},
    }
    values.write_text(yaml.safe_dump({"models": {"catalog": catalog, "defaultTeacher": "gpt-4"}}))
    objects = render([values])
    envs = {}
    for name in ("nexa-gateway", "nexa-operator"):
        container = _one(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        envs[name] = {e["name"]: e.get("value") for e in container["env"]}
    gateway = envs["nexa-gateway"]
    assert gateway["NEXA_DEFAULT_TEACHER"] == "gpt-4" and gateway["NEXA_DEFAULT_MODEL"] == "Mistral-7B"
    parsed = parse_catalog(gateway["NEXA_MODEL_CATALOG"])
    assert parsed["Mistral-7B"].source == "/models/mistral-7b" and parsed["gpt-4"].model == "served-gpt"
    # The operator hands the same catalog to every engine pod it builds.
    config = OperatorConfig.from_env({k: v for k, v in envs["nexa-operator"].items() if v is not None})
    assert parse_catalog(config.store_env["NEXA_MODEL_CATALOG"]) == parsed
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": {"catalog": {"x": {"base_url": "ftp://nope"}}}}))
    refused = helm(*template_args([bad]), check=False)
    assert refused.returncode != 0 and "base_url" in refused.stderr


def test_the_operators_health_port_is_not_the_local_gateways() -> None:
    """`nexa up` and an operator against a dev cluster often share a laptop."""
    from urllib.parse import urlsplit

    from nexa.config import DEFAULT_BASE_URL
    from nexa_operator.__main__ import DEFAULT_HEALTH_PORT

    gateway_port = urlsplit(DEFAULT_BASE_URL).port
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert DEFAULT_HEALTH_PORT != gateway_port and values["operator"]["healthPort"] == DEFAULT_HEALTH_PORT


def test_the_gateway_operator_and_workers_log_json_lines_unless_told_text() -> None:
    def formats(objects: list[dict[str, Any]]) -> dict[str, str]:
        found = {}
        for name, spec in pod_specs(objects):
            for container in spec["containers"]:
                for env in container.get("env", []):
                    if env["name"] == "NEXA_LOG_FORMAT":
                        found[name] = env["value"]
        return found

    default = formats(render())
    assert {"Deployment/nexa-gateway", "Deployment/nexa-operator"} <= set(default)
    assert any(name.startswith("Deployment/nexa-worker") for name in default), default
    assert set(default.values()) == {"json"}
    assert set(formats(render(sets=["logFormat=text"])).values()) == {"text"}
