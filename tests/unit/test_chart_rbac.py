"""The operator, and the gateway in cluster mode, get exactly the rights they need (listed here); the rest none."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.fixtures.helm import REPO_ROOT, VALUE_SETS, render

# The operator's rights: (apiGroup, resource) -> verbs. A change here is a security review.
OPERATOR_RIGHTS: dict[tuple[str, str], set[str]] = {
    # create: a NexaPipeline's steps are NexaJobs the operator makes.
    ("nexa.run", "nexajobs"): {"get", "list", "watch", "patch", "create"},
    ("nexa.run", "nexaendpoints"): {"get", "list", "watch", "create", "patch"},
    ("nexa.run", "nexapipelines"): {"get", "list", "watch"},
    ("nexa.run", "nexapipelines/status"): {"get", "patch"},
    ("nexa.run", "nexajobs/status"): {"get", "patch"},
    ("nexa.run", "nexaendpoints/status"): {"get", "patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "events"): {"create"},
    ("", "services"): {"get", "create"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "create"},
    ("serving.kserve.io", "inferenceservices"): {"get", "create"},
}
CLUSTER_RIGHTS = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}

# The gateway's rights in cluster mode, each a call of nexa_gateway/backends/kubernetes.py:
# (apiGroup, resource, resourceNames) -> verbs. "nexa-s3" is the chart's S3 Secret in ci/cluster-mode.
S3_SECRET = "nexa-s3"
GATEWAY_RIGHTS: dict[tuple[str, str, tuple[str, ...]], set[str]] = {
    ("nexa.run", "nexajobs", ()): {"get", "list", "create", "patch"},
    ("", "pods", ()): {"list"},
    ("", "pods/log", ()): {"get"},
    ("", "namespaces", ()): {"create"},
    ("", "secrets", ()): {"create"},
    ("", "secrets", (S3_SECRET,)): {"update"},
}
GATEWAY_SOURCE_RIGHTS = {("", "secrets", (S3_SECRET,)): {"get"}}


def rights(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def named_rights(role: dict[str, Any]) -> dict[tuple[str, str, tuple[str, ...]], set[str]]:
    """Like ``rights``, for roles that may narrow a rule to some object names."""
    granted: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        names = tuple(rule.get("resourceNames", ()))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource, names), set()).update(rule["verbs"])
    return granted


def roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Role", "ClusterRole")]


def gateway_roles(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        r["metadata"]["name"]: r for r in roles(objects) if r["metadata"]["name"].startswith("nexa-gateway")
    }


def test_cluster_wide_operator_has_exactly_the_listed_rights() -> None:
    by_name = {r["metadata"]["name"]: r for r in roles(render())}
    assert set(by_name) == {"nexa-operator", "nexa-operator-crds"}
    assert by_name["nexa-operator"]["kind"] == "ClusterRole"
    assert rights(by_name["nexa-operator"]) == OPERATOR_RIGHTS
    assert rights(by_name["nexa-operator-crds"]) == CLUSTER_RIGHTS


def test_namespaced_operator_gets_roles_in_the_watched_namespaces_only() -> None:
    objects = render(VALUE_SETS["kueue"])
    namespaced = [r for r in roles(objects) if r["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in namespaced) == ["nexa-team-a", "nexa-team-b"]
    assert all(rights(r) == OPERATOR_RIGHTS for r in namespaced)
    cluster = [r for r in roles(objects) if r["kind"] == "ClusterRole"]
    assert [r["metadata"]["name"] for r in cluster] == ["nexa-operator-crds"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert {b["metadata"]["namespace"] for b in bindings} == {"nexa-team-a", "nexa-team-b"}
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "nexa-operator", "namespace": "nexa"}]
        for b in bindings
    )


def test_cluster_mode_gateway_has_exactly_the_listed_rights() -> None:
    objects = render(VALUE_SETS["cluster-mode"])
    by_name = gateway_roles(objects)
    assert set(by_name) == {"nexa-gateway", "nexa-gateway-s3-source"}
    assert by_name["nexa-gateway"]["kind"] == "ClusterRole"
    assert named_rights(by_name["nexa-gateway"]) == GATEWAY_RIGHTS
    source = by_name["nexa-gateway-s3-source"]
    assert (source["kind"], source["metadata"]["namespace"]) == ("Role", "nexa")
    assert named_rights(source) == GATEWAY_SOURCE_RIGHTS
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    gateway_bindings = [b for b in bindings if b["roleRef"]["name"].startswith("nexa-gateway")]
    assert len(gateway_bindings) == 2
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "nexa-gateway", "namespace": "nexa"}]
        for b in gateway_bindings
    )


def test_cluster_mode_rights_shrink_with_what_the_gateway_is_allowed_to_do() -> None:
    objects = render(
        VALUE_SETS["cluster-mode"],
        ["gateway.kubernetes.createNamespaces=false", "gateway.kubernetes.copyS3Secret=false"],
    )
    by_name = gateway_roles(objects)
    assert set(by_name) == {"nexa-gateway"}
    assert named_rights(by_name["nexa-gateway"]) == {
        k: v for k, v in GATEWAY_RIGHTS.items() if k[1] not in ("namespaces", "secrets")
    }
    env = {e["name"] for e in _gateway_container(objects)["env"]}
    assert "NEXA_KUBE_S3_SECRET" not in env


def test_standalone_gateway_has_no_rights_and_no_token() -> None:
    objects = render()
    assert gateway_roles(objects) == {}
    assert not [o for o in objects if o["kind"].startswith("ValidatingAdmissionPolicy")]


def test_the_admission_policy_holds_the_gateway_to_its_prefix() -> None:
    objects = render(VALUE_SETS["cluster-mode"])
    policy = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicy")
    binding = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConditions"] == [
        {
            "name": "by-the-gateway",
            "expression": "request.userInfo.username == 'system:serviceaccount:nexa:nexa-gateway'",
        }
    ]
    covered = {
        (g, r)
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    # Every kind the gateway may write anywhere is held to the prefix.
    writable = {
        (g, r) for (g, r, _), verbs in GATEWAY_RIGHTS.items() if verbs & {"create", "update", "patch"}
    }
    assert writable <= covered
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "startsWith('team-')" in expressions and f"'{S3_SECRET}'" in expressions
    off = render(VALUE_SETS["cluster-mode"], ["gateway.kubernetes.admissionPolicy=false"])
    assert not [o for o in off if o["kind"].startswith("ValidatingAdmissionPolicy")]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_no_wildcards_no_exec_secrets_only_as_listed_and_only_api_clients_get_a_token(value_set: str) -> None:
    objects = render(VALUE_SETS[value_set])
    cluster_mode = bool(gateway_roles(objects))
    for role in roles(objects):
        name = role["metadata"]["name"]
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (name, rule)
            assert not {"pods/exec", "pods/attach", "serviceaccounts/token"} & set(rule["resources"])
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                # Never list, watch or patch; read only the source, by name, in the release namespace.
                assert name.startswith("nexa-gateway"), (name, rule)
                assert set(rule["verbs"]) <= {"create", "update", "get"}, (name, rule)
                assert "get" not in rule["verbs"] or role["kind"] == "Role", (name, rule)
                assert rule.get("resourceNames") or rule["verbs"] == ["create"], (name, rule)
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Pod"):
            spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
            wants_token = obj["metadata"]["name"] == "nexa-operator" or (
                cluster_mode and obj["metadata"]["name"] == "nexa-gateway"
            )
            assert spec.get("automountServiceAccountToken") is wants_token, obj["metadata"]["name"]


def test_every_kind_the_operator_writes_is_granted() -> None:
    """The operator's own table of managed kinds (nexa_operator.kube) stays covered by the chart."""
    kube = pytest.importorskip("nexa_operator.kube")
    for (api_version, _kind), path in kube._RESOURCES.items():
        group = api_version.split("/")[0] if "/" in api_version else ""
        resource = path.rsplit("/", 1)[1]
        assert (group, resource) in OPERATOR_RIGHTS, (
            f"the operator writes {resource}.{group} but has no right to"
        )


def test_every_call_the_gateway_backend_makes_is_granted() -> None:
    """The chart's list follows the backend: each Kubernetes call in it maps to a granted right."""
    source = (REPO_ROOT / "api-gateway" / "nexa_gateway" / "backends" / "kubernetes.py").read_text()
    calls = set(re.findall(r"self\.(?:core|custom)\.(\w+)\(", source))
    needed = {
        "create_namespace": ("", "namespaces", "create"),
        "read_namespaced_secret": ("", "secrets", "get"),
        "create_namespaced_secret": ("", "secrets", "create"),
        "replace_namespaced_secret": ("", "secrets", "update"),
        "get_namespaced_custom_object": ("nexa.run", "nexajobs", "get"),
        "list_namespaced_custom_object": ("nexa.run", "nexajobs", "list"),
        "create_namespaced_custom_object": ("nexa.run", "nexajobs", "create"),
        "patch_namespaced_custom_object": ("nexa.run", "nexajobs", "patch"),
        "list_namespaced_pod": ("", "pods", "list"),
        "read_namespaced_pod_log": ("", "pods/log", "get"),
    }
    assert calls <= set(needed), f"calls with no mapped right: {calls - set(needed)}"
    granted = {
        (group, resource, verb)
        for rights_ in (GATEWAY_RIGHTS, GATEWAY_SOURCE_RIGHTS)
        for (group, resource, _), verbs in rights_.items()
        for verb in verbs
    }
    assert {needed[c] for c in calls} == granted


def _gateway_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    gateway = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "nexa-gateway"
    )
    container: dict[str, Any] = gateway["spec"]["template"]["spec"]["containers"][0]
    return container
