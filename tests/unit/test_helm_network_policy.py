"""The chart's NetworkPolicy for the operator's pod, and the spreading of its replicas
(pod anti-affinity, PodDisruptionBudget)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from chart_render import CHART, of_kind, one, template, template_error

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SELECTOR = {"app.kubernetes.io/name": "sovereign-ai-operator", "app.kubernetes.io/instance": "rel"}
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
DNS_RULE = {
    "to": [DNS_PEER],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}
API_RULE = {
    "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
    "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
}
RAY_RULE = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ray-system"}}}],
    "ports": [{"port": 8265, "protocol": "TCP"}],
}


def config(**changes: Any) -> dict[str, Any]:
    return {"config": {**VALUES["config"], **changes}}


def network_policy(**changes: Any) -> dict[str, Any]:
    return {"networkPolicy": {**VALUES["networkPolicy"], **changes}}


def pod_spec(values: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = one(template(values), "Deployment")["spec"]["template"]["spec"]
    return spec


def test_default_network_policy_allows_metrics_in_and_dns_and_the_api_out() -> None:
    policy = one(template(), "NetworkPolicy")
    assert policy["metadata"]["name"] == "rel-sovereign-ai-operator"
    assert policy["metadata"]["namespace"] == "sovai-system"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": SELECTOR},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {"from": [{"namespaceSelector": {}}], "ports": [{"port": 8080, "protocol": "TCP"}]}
        ],
        "egress": [DNS_RULE, API_RULE],
    }


def test_ray_dashboards_and_narrowed_api_server_are_allowed_out() -> None:
    values = network_policy(
        apiServer={"cidrs": ["10.0.0.1/32"], "ports": [6443]}, rayDashboards=[RAY_RULE]
    )
    egress = one(template(values), "NetworkPolicy")["spec"]["egress"]
    assert egress == [
        DNS_RULE,
        {
            "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
            "ports": [{"port": 6443, "protocol": "TCP"}],
        },
        RAY_RULE,
    ]


@pytest.mark.parametrize(
    "values",
    [network_policy(metricsFrom=[]), config(metricsPort=0)],
    ids=["no-scrapers", "metrics-off"],
)
def test_without_scrapers_or_metrics_no_ingress_is_allowed(values: dict[str, Any]) -> None:
    policy = one(template(values), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == []


def test_network_policy_can_be_turned_off() -> None:
    assert of_kind(template(network_policy(enabled=False)), "NetworkPolicy") == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (network_policy(rayDashboards=[{"ports": [{"port": 8265}]}]), "missing property 'to'"),
        (network_policy(rayDashboards=[{"to": [], "ports": [{"port": 8265}]}]), "minItems"),
        (network_policy(dnsTo=[]), "/networkPolicy/dnsTo"),
        (network_policy(apiServer={"cidrs": [], "ports": [443]}), "/networkPolicy/apiServer/cidrs"),
        (network_policy(metricsFrom=[{"podSelectr": {}}]), "podSelectr"),
    ],
    ids=["rule-without-to", "rule-to-nobody", "no-dns", "no-api-cidr", "typo-in-peer"],
)
def test_schema_refuses_rules_that_would_allow_everything_or_nothing(
    values: dict[str, Any], message: str
) -> None:
    # An egress rule without peers would allow every destination; the schema refuses it.
    assert message in template_error(values)


def test_one_replica_has_no_anti_affinity_and_no_disruption_budget() -> None:
    docs = template()
    assert "affinity" not in one(docs, "Deployment")["spec"]["template"]["spec"]
    assert of_kind(docs, "PodDisruptionBudget") == []


def test_replicas_spread_over_nodes_and_drain_one_at_a_time() -> None:
    docs = template(config(replicas=2))
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["affinity"] == {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": SELECTOR},
                    },
                }
            ]
        }
    }
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["metadata"]["name"] == "rel-sovereign-ai-operator"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}}


def test_values_affinity_is_kept_and_its_anti_affinity_wins() -> None:
    node = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["a"]}
                    ]
                }
            ]
        }
    }
    spec = pod_spec({**config(replicas=2), "affinity": {"nodeAffinity": node}})
    assert spec["affinity"]["nodeAffinity"] == node
    assert spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    own = pod_spec({**config(replicas=2), "affinity": {"podAntiAffinity": {}}})
    assert own["affinity"] == {"podAntiAffinity": {}}
