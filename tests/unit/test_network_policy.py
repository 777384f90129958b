"""The egress NetworkPolicies: a FineTuneJob's Ray pods and a ModelDeployment's serving pods
(builders/network.py). How the kuberay backend ensures the job's one, against the real API
server: tests/integration/test_job_network_policy.py."""

from __future__ import annotations

import pytest

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec
from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.names import network_policy_name, rayjob_name
from sovereign_operator.builders.network import build_job_network_policy, dns_rule
from sovereign_operator.builders.rayjob import build_rayjob
from sovereign_operator.builders.serving_children import build_network_policy

OWNER = Owner(name="ft", namespace="team-a", uid="0000-1111")
OWNER_REF = {
    "apiVersion": "sovereign-ai.eu/v1alpha1",
    "kind": "FineTuneJob",
    "name": "ft",
    "uid": "0000-1111",
    "controller": True,
    "blockOwnerDeletion": True,
}
DNS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
OWN_PODS = {"to": [{"podSelector": {"matchLabels": {"sovereign-ai.eu/job-uid": "0000-1111"}}}]}
POLICY = SovereigntyPolicySpec.model_validate(
    {
        "allowedRegions": ["eu-west-gra"],
        "storageEndpoints": [
            {
                "name": "ovh-gra",
                "url": "https://s3.gra.io.cloud.ovh.net",
                "region": "eu-west-gra",
                "cidrs": ["141.95.161.0/24", "2001:41d0:301::/48"],
            },
            {
                "name": "mlflow",
                "url": "http://mlflow.mlflow.svc:5000",
                "region": "eu-west-gra",
                "cidrs": ["10.96.0.0/12"],
            },
            # Reached only through allowedCIDRs, if at all: adds nothing.
            {"name": "hf-mirror", "url": "https://hf.mirror.example.eu", "region": "eu-west-gra"},
        ],
        # 10.96.0.0/12 is declared twice: one ipBlock.
        "egress": {"allowedCIDRs": ["192.168.10.0/24", "10.96.0.0/12"]},
    }
)
DECLARED = {
    "to": [
        {"ipBlock": {"cidr": "10.96.0.0/12"}},
        {"ipBlock": {"cidr": "141.95.161.0/24"}},
        {"ipBlock": {"cidr": "192.168.10.0/24"}},
        {"ipBlock": {"cidr": "2001:41d0:301::/48"}},
    ]
}
NO_CIDRS = SovereigntyPolicySpec.model_validate(
    {
        "allowedRegions": ["eu-west-gra"],
        "storageEndpoints": [
            {"name": "mlflow", "url": "http://mlflow.mlflow.svc:5000", "region": "eu-west-gra"}
        ],
    }
)
SPEC = FineTuneJobSpec.model_validate(
    {
        "baseModel": {"uri": "hf://mistralai/tiny"},
        "dataset": {"trainingUri": "pvc://data/train.jsonl"},
        "resources": {"workers": 2, "gpusPerWorker": 1},
    }
)
RESIDENCY = Residency("eu-only", "topology.kubernetes.io/region", ("eu-west-gra",))
CFG = BuildConfig(runtime_image="registry.sovereign-ai.eu/sovereign-ai/runtime:0.1.0")


# -- the builders ---------------------------------------------------------------------------


def test_job_network_policy_is_exactly_as_expected() -> None:
    assert build_job_network_policy(OWNER, POLICY) == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "ft-egress",
            "namespace": "team-a",
            "labels": {
                "app.kubernetes.io/managed-by": "sovereign-ai-operator",
                "sovereign-ai.eu/finetunejob": "ft",
                "sovereign-ai.eu/job-uid": "0000-1111",
                "sovereign-ai.eu/component": "network-policy",
            },
            "ownerReferences": [OWNER_REF],
        },
        "spec": {
            "podSelector": {"matchLabels": {"sovereign-ai.eu/job-uid": "0000-1111"}},
            "policyTypes": ["Egress"],
            "egress": [DNS, OWN_PODS, DECLARED],
        },
    }


def test_a_policy_without_cidrs_lets_the_job_reach_only_dns_and_its_own_pods() -> None:
    assert build_job_network_policy(OWNER, NO_CIDRS)["spec"]["egress"] == [DNS, OWN_PODS]


def test_serving_pods_reach_dns_and_every_declared_cidr() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "models:/chat/3"}})
    owner = Owner(name="chat", namespace="team-a", uid="uid-chat", kind="ModelDeployment")
    assert build_network_policy(spec, owner, POLICY)["spec"]["egress"] == [DNS, DECLARED]
    assert build_network_policy(spec, owner, NO_CIDRS)["spec"]["egress"] == [DNS]
    assert dns_rule() == DNS  # one rule, shared


def test_the_policy_selects_every_pod_of_its_job_and_no_other() -> None:
    selector = build_job_network_policy(OWNER, POLICY)["spec"]["podSelector"]["matchLabels"]
    cluster = build_rayjob(SPEC, OWNER, CFG, RESIDENCY, job_config="{}")["spec"]
    templates = {
        "head": cluster["rayClusterSpec"]["headGroupSpec"]["template"],
        "workers": cluster["rayClusterSpec"]["workerGroupSpecs"][0]["template"],
        "submitter": cluster["submitterPodTemplate"],
    }
    for role, template in templates.items():
        assert selector.items() <= template["metadata"]["labels"].items(), role
    other = Owner(name="ft", namespace="team-a", uid="2222-3333")
    other_head = build_rayjob(SPEC, other, CFG, RESIDENCY, job_config="{}")["spec"]
    labels = other_head["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items()


@pytest.mark.parametrize("name", ["ft", "llama.v2", "x" * 253])
def test_network_policy_name_is_the_rayjobs_and_fits(name: str) -> None:
    assert network_policy_name(name) == f"{rayjob_name(name)}-egress"
    assert len(network_policy_name(name)) <= 63
