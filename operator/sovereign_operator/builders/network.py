"""Egress NetworkPolicies of the pods the operator makes: a FineTuneJob's Ray pods, and the
rules it shares with a ModelDeployment's serving pods (builders/serving_children.py). Pure.

Each lets pods reach only what the SovereigntyPolicy declares: the cluster's DNS, the cidrs of
its storageEndpoints (S3 services, the MLflow tracking server, Hugging Face mirrors) and its
egress.allowedCIDRs. Ingress is left to the cluster's own policies.
"""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from .context import JOB_UID_LABEL, Owner
from .jobconfig import child_labels
from .names import network_policy_name

DNS_NAMESPACE_LABELS = {"kubernetes.io/metadata.name": "kube-system"}
DNS_POD_LABELS = {"k8s-app": "kube-dns"}
NETWORK_POLICY_COMPONENT = "network-policy"


def dns_rule() -> dict[str, Any]:
    """Egress to the cluster's DNS (CoreDNS or kube-dns in kube-system), port 53."""
    return {
        "to": [
            {
                "namespaceSelector": {"matchLabels": dict(DNS_NAMESPACE_LABELS)},
                "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def declared_cidrs(policy: SovereigntyPolicySpec) -> list[str]:
    """Every CIDR the policy lets pods reach: its storageEndpoints' cidrs and its
    egress.allowedCIDRs, sorted, each once."""
    cidrs = set(policy.egress.allowed_cidrs)
    for endpoint in policy.storage_endpoints:
        cidrs.update(endpoint.cidrs)
    return sorted(cidrs)


def cidr_rules(policy: SovereigntyPolicySpec) -> list[dict[str, Any]]:
    """One egress rule to every declared CIDR, or none when the policy declares none. Any
    port: an endpoint's URL names the port of its Service, which network plugins compare
    after translating it to the pod's own port."""
    cidrs = declared_cidrs(policy)
    if not cidrs:
        return []
    return [{"to": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]}]


def _job_pods(owner: Owner) -> dict[str, Any]:
    # Every pod of the job carries its uid (builders/jobconfig.child_labels): head, workers
    # and submitter alike, whatever the RayJob's generated cluster name.
    return {"matchLabels": {JOB_UID_LABEL: owner.uid}}


def build_job_network_policy(owner: Owner, policy: SovereigntyPolicySpec) -> dict[str, Any]:
    """The egress NetworkPolicy of a FineTuneJob's Ray pods (head, workers, submitter):
    cluster DNS; every pod of the same job, on any port (Ray's GCS, dashboard, object
    managers and workers, and the collective traffic between the training workers); the
    policy's declared CIDRs; nothing else.

    The Kubernetes API is not allowed: nothing in the Ray pods calls it. KubeRay's submitter
    runs `ray job submit` against the head's dashboard, the workers wait for the head's GCS,
    in-tree autoscaling is off (its sidecar is what would call the API), the trainer reads
    job.json from its pod's annotations (a downward API volume), and Ray's auth token comes
    from a secretKeyRef that the kubelet resolves.
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(owner.name),
            "namespace": owner.namespace,
            "labels": child_labels(owner, NETWORK_POLICY_COMPONENT),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "podSelector": _job_pods(owner),
            "policyTypes": ["Egress"],
            "egress": [
                dns_rule(),
                {"to": [{"podSelector": _job_pods(owner)}]},
                *cidr_rules(policy),
            ],
        },
    }
