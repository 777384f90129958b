"""The egress NetworkPolicies: a FineTuneJob's Ray pods and a ModelDeployment's serving pods
(builders/network.py), and how the kuberay backend ensures the job's one before its RayJob."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec, ResolvedHyperparameters
from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.backends.context import JobContext
from sovereign_operator.backends.kuberay import KubeRayBackend
from sovereign_operator.backends.types import BackendState
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.names import network_policy_name, rayjob_name
from sovereign_operator.builders.network import build_job_network_policy, dns_rule
from sovereign_operator.builders.rayjob import build_rayjob
from sovereign_operator.builders.serving_children import build_network_policy
from sovereign_operator.k8s.client import ApiError, Kind, Kube, kind_of
from sovereign_operator.k8s.credentials import Credentials

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
HP = ResolvedHyperparameters(
    epochs=1,
    batch_size=8,
    micro_batch_size=4,
    learning_rate=2e-4,
    max_seq_length=512,
    warmup_ratio=0.0,
    seed=42,
)


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
    cluster = build_rayjob(SPEC, OWNER, CFG, RESIDENCY, config_sha256="ab" * 32)["spec"]
    templates = {
        "head": cluster["rayClusterSpec"]["headGroupSpec"]["template"],
        "workers": cluster["rayClusterSpec"]["workerGroupSpecs"][0]["template"],
        "submitter": cluster["submitterPodTemplate"],
    }
    for role, template in templates.items():
        assert selector.items() <= template["metadata"]["labels"].items(), role
    other = Owner(name="ft", namespace="team-a", uid="2222-3333")
    other_head = build_rayjob(SPEC, other, CFG, RESIDENCY, config_sha256="ab" * 32)["spec"]
    labels = other_head["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items()


@pytest.mark.parametrize("name", ["ft", "llama.v2", "x" * 253])
def test_network_policy_name_is_the_rayjobs_and_fits(name: str) -> None:
    assert network_policy_name(name) == f"{rayjob_name(name)}-egress"
    assert len(network_policy_name(name)) <= 63


# -- the kuberay backend --------------------------------------------------------------------


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class MemoryKube(Kube):
    """An API server in memory for the calls ensure and delete_owned make, each recorded as
    (verb, plural, name). Anything else reaches the closed port of the base client and fails."""

    def __init__(self) -> None:
        super().__init__(Credentials(server="https://127.0.0.1:9"), pool_size=1)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        key = (kind_of(manifest).plural, manifest["metadata"]["name"])
        self.calls.append(("create", *key))
        if key in self.objects:
            raise ApiError(409, "Conflict", json.dumps({"message": "already exists"}))
        stored = json.loads(json.dumps(manifest))
        stored["metadata"]["uid"] = f"uid-{key[1]}"
        self.objects[key] = stored
        return stored

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        self.calls.append(("get", kind.plural, name))
        if (kind.plural, name) not in self.objects:
            raise ApiError(404, "Not Found", json.dumps({"message": "not found"}))
        return self.objects[(kind.plural, name)]

    def merge_patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append(("patch", kind.plural, name))
        self.objects[(kind.plural, name)] = _merge(self.objects[(kind.plural, name)], patch)
        return self.objects[(kind.plural, name)]

    def delete(self, kind: Kind, namespace: str | None, name: str, uid: str | None = None) -> bool:
        self.calls.append(("delete", kind.plural, name))
        return self.objects.pop((kind.plural, name), None) is not None

    def writes(self) -> list[tuple[str, str, str]]:
        return [call for call in self.calls if call[0] != "get"]


def context(policy: SovereigntyPolicySpec, live: dict[str, Any] | None = None) -> JobContext:
    return JobContext(
        spec=SPEC,
        owner=OWNER,
        generation=1,
        residency=RESIDENCY,
        hyperparameters=HP,
        policy=policy,
        build=CFG,
        previous=None,
        live_rayjob=live,
    )


def test_the_network_policy_is_made_before_the_rayjob() -> None:
    kube = MemoryKube()
    observation = KubeRayBackend(kube).reconcile(context(POLICY))
    assert observation.state == BackendState.PENDING
    assert kube.writes() == [
        ("create", "networkpolicies", "ft-egress"),
        ("create", "configmaps", "ft-config"),
        ("create", "rayjobs", "ft"),
    ]
    stored = kube.objects[("networkpolicies", "ft-egress")]
    assert stored["spec"] == build_job_network_policy(OWNER, POLICY)["spec"]


def test_a_changed_policy_reaches_the_network_policy_of_a_live_job() -> None:
    kube = MemoryKube()
    backend = KubeRayBackend(kube)
    backend.reconcile(context(NO_CIDRS))
    live = kube.objects[("rayjobs", "ft")]
    kube.calls.clear()
    backend.reconcile(context(NO_CIDRS, live))
    assert kube.calls == []  # nothing changed: no request at all
    backend.reconcile(context(POLICY, live))
    assert ("patch", "networkpolicies", "ft-egress") in kube.writes()
    assert kube.objects[("networkpolicies", "ft-egress")]["spec"]["egress"] == [
        DNS,
        OWN_PODS,
        DECLARED,
    ]


def test_a_foreign_network_policy_keeps_the_rayjob_from_being_made() -> None:
    kube = MemoryKube()
    foreign = build_job_network_policy(Owner(name="ft", namespace="team-a", uid="other"), POLICY)
    kube.objects[("networkpolicies", "ft-egress")] = foreign
    observation = KubeRayBackend(kube).reconcile(context(POLICY))
    assert observation.state == BackendState.ABSENT
    assert "NetworkPolicy team-a/ft-egress already exists" in observation.blockers[0]
    assert kube.writes() == [("create", "networkpolicies", "ft-egress")]
    assert kube.objects[("networkpolicies", "ft-egress")] is foreign


def test_delete_removes_the_network_policy_after_the_rayjob() -> None:
    kube = MemoryKube()
    backend = KubeRayBackend(kube)
    backend.reconcile(context(POLICY))
    kube.calls.clear()
    backend.delete(OWNER, None)
    assert kube.writes() == [
        ("delete", "rayjobs", "ft"),
        ("delete", "configmaps", "ft-config"),
        ("delete", "networkpolicies", "ft-egress"),
    ]
    assert kube.objects == {}
