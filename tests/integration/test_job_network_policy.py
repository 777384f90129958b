"""The kuberay backend and a job's egress NetworkPolicy, against the real API server: made
before the job's other children, kept current when the policy's CIDRs change, never taken over
from another owner, and deleted with the job. The backend is run directly, as the operator's
passes would run it (the pattern of test_reliability's job.json test)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec, ResolvedHyperparameters
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.backends.context import JobContext
from sovereign_operator.backends.kuberay import KubeRayBackend
from sovereign_operator.backends.types import BackendObservation, BackendState
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.names import network_policy_name, rayjob_name
from sovereign_operator.builders.network import build_job_network_policy
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.k8s.client import (
    NETWORK_POLICY,
    RAYJOB,
    Kube,
    load_configuration,
)

from .operator_process import finetunejob, ftj, policy_for, setup_namespace, wait_for

pytestmark = pytest.mark.integration

HP = ResolvedHyperparameters(
    epochs=1,
    batch_size=8,
    micro_batch_size=4,
    learning_rate=2e-4,
    max_seq_length=512,
    warmup_ratio=0.0,
    seed=42,
)
DECLARED = "141.95.161.0/24"


class Job:
    """A real FineTuneJob (its children's owner; no operator runs here) and the backend."""

    def __init__(self, crds: LocalCluster, namespace: str, name: str) -> None:
        setup_namespace(crds, namespace)
        crds.apply(finetunejob(name, namespace))
        uid = str((ftj(crds, namespace, name) or {})["metadata"]["uid"])
        self.kube = Kube(partial(load_configuration, str(crds.kubeconfig)), pool_size=2)
        self.backend = KubeRayBackend(self.kube)
        self.owner = Owner(name=name, namespace=namespace, uid=uid)
        self.spec = FineTuneJobSpec.model_validate(finetunejob(name, namespace)["spec"])
        self.policy = SovereigntyPolicySpec.model_validate(policy_for(namespace)["spec"])

    def with_cidr(self) -> SovereigntyPolicySpec:
        return self.policy.model_copy(
            update={"egress": self.policy.egress.model_copy(update={"allowed_cidrs": [DECLARED]})}
        )

    def reconcile(self, policy: SovereigntyPolicySpec) -> BackendObservation:
        live = self.kube.get_or_none(RAYJOB, self.owner.namespace, rayjob_name(self.owner.name))
        residency = Residency("pol", "topology.kubernetes.io/region", ("eu-west-par",))
        build = BuildConfig(runtime_image="registry.eu-west-par.example.eu/x:1")
        context = JobContext(self.spec, self.owner, 1, residency, HP, policy, build, None, live)
        return self.backend.reconcile(context)

    def get(self, kind: Any, name: str) -> dict[str, Any] | None:
        return self.kube.get_or_none(kind, self.owner.namespace, name)

    def gone(self, kind: Any, name: str) -> bool:
        return self.get(kind, name) is None


@pytest.fixture
def job(crds: LocalCluster, namespace: str) -> Iterator[Job]:
    yield Job(crds, namespace, "ft")
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", "--wait=false", check=False)


def version(obj: dict[str, Any] | None) -> int:
    assert obj is not None
    return int(obj["metadata"]["resourceVersion"])


def test_the_network_policy_is_made_before_the_rayjob(job: Job) -> None:
    observation = job.reconcile(job.policy)
    assert observation.state == BackendState.PENDING
    netpol = job.get(NETWORK_POLICY, network_policy_name("ft"))
    rayjob = job.get(RAYJOB, rayjob_name("ft"))
    assert netpol is not None
    assert rayjob is not None
    assert netpol["spec"] == build_job_network_policy(job.owner, job.policy)["spec"]
    assert netpol["metadata"]["creationTimestamp"] <= rayjob["metadata"]["creationTimestamp"]


def test_a_changed_policy_reaches_the_network_policy_of_a_live_job(job: Job) -> None:
    job.reconcile(job.policy)
    netpol = job.get(NETWORK_POLICY, network_policy_name("ft"))
    job.reconcile(job.policy)  # nothing changed: nothing is written
    assert version(job.get(NETWORK_POLICY, network_policy_name("ft"))) == version(netpol)
    job.reconcile(job.with_cidr())
    updated = job.get(NETWORK_POLICY, network_policy_name("ft"))
    assert updated is not None
    assert updated["spec"]["egress"][-1] == {"to": [{"ipBlock": {"cidr": DECLARED}}]}


def test_a_foreign_network_policy_keeps_the_rayjob_from_being_made(
    crds: LocalCluster, job: Job
) -> None:
    namespace = job.owner.namespace
    foreign = build_job_network_policy(
        Owner(name="ft", namespace=namespace, uid="other"), job.policy
    )
    del foreign["metadata"]["ownerReferences"]
    crds.apply(foreign)
    before = job.get(NETWORK_POLICY, network_policy_name("ft"))
    observation = job.reconcile(job.policy)
    assert observation.state == BackendState.ABSENT
    assert f"NetworkPolicy {namespace}/ft-egress already exists" in observation.blockers[0]
    assert job.get(RAYJOB, rayjob_name("ft")) is None
    assert version(job.get(NETWORK_POLICY, network_policy_name("ft"))) == version(before)


def test_delete_removes_the_network_policy_with_the_rest(job: Job) -> None:
    job.reconcile(job.policy)
    job.backend.delete(job.owner, None)
    # Deletion is asynchronous: KubeRay may already have put its finalizer on the RayJob, which
    # then stays, marked for deletion, until KubeRay has cleaned up after it.
    children = [
        (RAYJOB, rayjob_name("ft")),
        (NETWORK_POLICY, network_policy_name("ft")),
    ]
    for kind, name in children:
        live = job.get(kind, name)
        assert live is None or live["metadata"].get("deletionTimestamp"), (kind.plural, live)
    for kind, name in children:
        wait_for(partial(job.gone, kind, name), 60, f"{kind.plural}/{name} gone")
