"""NetworkPolicies: everything of the release is denied by default, then only the needed paths open."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.helm import VALUE_SETS, pod_specs, render


def policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "Exists" and expr["key"] not in labels:
            return False
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def pod_labels(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    found = {}
    for obj in objects:
        if obj["kind"] == "Pod":
            found[obj["metadata"]["name"]] = obj["metadata"]["labels"]
        elif obj["kind"] in ("Deployment", "StatefulSet"):
            found[obj["metadata"]["name"]] = obj["spec"]["template"]["metadata"]["labels"]
    return found


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_default_deny_selects_every_pod_and_each_pod_has_its_own_allow_policy(value_set: str) -> None:
    objects = render(VALUE_SETS[value_set])
    nps = policies(objects)
    deny = nps.pop("nexa-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    labels = pod_labels(objects)
    assert len(labels) == len(pod_specs(objects))
    for name, pod in labels.items():
        assert selects(deny["spec"]["podSelector"], pod), f"{name} escapes the default deny"
        allowing = [n for n, p in nps.items() if selects(p["spec"]["podSelector"], pod)]
        assert len(allowing) == 1, f"{name} is selected by {allowing}"


def test_the_database_only_hears_the_gateway_and_minio_only_nexa_pods() -> None:
    nps = policies(render())
    pg = nps["nexa-postgresql"]["spec"]
    assert pg["egress"] == []
    assert pg["ingress"] == [
        {
            "from": [
                {
                    "podSelector": {
                        "matchLabels": {
                            "app.kubernetes.io/name": "nexa",
                            "app.kubernetes.io/instance": "nexa",
                            "app.kubernetes.io/component": "gateway",
                        }
                    }
                }
            ],
            "ports": [{"protocol": "TCP", "port": 5432}],
        }
    ]
    minio = nps["nexa-minio"]["spec"]
    assert minio["egress"] == []
    peers = minio["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "nexa"}}} in peers
    # Engine pods the operator starts in tenant namespaces read and write artifacts too.
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "nexa-operator"}},
    } in peers


def test_the_operator_may_reach_the_api_server_and_nothing_may_reach_it_but_prometheus() -> None:
    operator = policies(render())["nexa-operator"]["spec"]
    assert operator["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"protocol": "TCP", "port": 9090}],
        }
    ]
    api_rule = operator["egress"][-1]
    assert api_rule["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]
    limited = policies(render(sets=["networkPolicy.apiServerCIDRs[0]=10.96.0.1/32"]))["nexa-operator"]["spec"]
    assert limited["egress"][-1]["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]


def test_network_policies_can_be_turned_off() -> None:
    assert policies(render(sets=["networkPolicy.enabled=false"])) == {}
