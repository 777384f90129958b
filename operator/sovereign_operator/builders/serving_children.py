"""The other children of a ModelDeployment: Service, HPA, PodDisruptionBudget, NetworkPolicy.

Pure builders. A builder returns None when the child must not exist for this spec (no HPA
without autoscaling, no PDB for a single replica), so that the caller deletes it.
"""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1.modeldeployment import ModelDeploymentSpec, ScaleMetric
from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from .context import Owner
from .network import cidr_rules, dns_rule
from .serving import child_metadata, selector_labels, serving_name


def service_url(owner: Owner, spec: ModelDeploymentSpec) -> str:
    """In-cluster base URL of the OpenAI-compatible API."""
    return f"http://{serving_name(owner.name)}.{owner.namespace}.svc:{spec.serving.port}/v1"


def build_service(spec: ModelDeploymentSpec, owner: Owner) -> dict[str, Any]:
    """A ClusterIP Service in front of the ready serving pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(spec, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner),
            "ports": [
                {"name": "http", "port": spec.serving.port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def build_hpa(spec: ModelDeploymentSpec, owner: Owner) -> dict[str, Any] | None:
    """An autoscaling/v2 HPA when spec.autoscaling is set and the deployment is not suspended."""
    scaling = spec.autoscaling
    if scaling is None or spec.suspend:
        return None
    metric = "cpu" if scaling.metric == ScaleMetric.CPU else "memory"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(spec, owner),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": serving_name(owner.name),
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": metric,
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_average_utilization,
                        },
                    },
                }
            ],
        },
    }


def build_pdb(spec: ModelDeploymentSpec, owner: Owner) -> dict[str, Any] | None:
    """A PodDisruptionBudget allowing one voluntary disruption at a time, when more than one
    replica runs; with one replica it would only block node drains."""
    if spec.suspend:
        return None
    most = spec.autoscaling.max_replicas if spec.autoscaling else (spec.replicas or 1)
    if most <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(spec, owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(owner)}},
    }


def build_network_policy(
    spec: ModelDeploymentSpec, owner: Owner, policy: SovereigntyPolicySpec
) -> dict[str, Any]:
    """Egress of the serving pods (the fetch init containers included): cluster DNS and the
    policy's declared CIDRs (its storageEndpoints', where models are fetched from, and
    egress.allowedCIDRs), nothing else. Ingress is left to the cluster's own policies."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(spec, owner),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner)},
            "policyTypes": ["Egress"],
            "egress": [dns_rule(), *cidr_rules(policy)],
        },
    }
