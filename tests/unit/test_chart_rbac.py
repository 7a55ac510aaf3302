"""The operator gets exactly the rights it needs (listed here), the other components none."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.helm import VALUE_SETS, render

# The operator's rights: (apiGroup, resource) -> verbs. A change here is a security review.
OPERATOR_RIGHTS: dict[tuple[str, str], set[str]] = {
    ("nexa.run", "nexajobs"): {"get", "list", "watch", "patch"},
    ("nexa.run", "nexaendpoints"): {"get", "list", "watch", "create", "patch"},
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


def rights(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Role", "ClusterRole")]


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


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_no_wildcards_no_secrets_no_exec_and_only_the_operator_gets_a_token(value_set: str) -> None:
    objects = render(VALUE_SETS[value_set])
    for role in roles(objects):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert not {"secrets", "pods/exec", "pods/attach", "serviceaccounts/token"} & set(
                rule["resources"]
            )
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Pod"):
            spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
            wants_token = obj["metadata"]["name"] == "nexa-operator"
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
