"""Failures the adversarial tests of issue 21 found, each reproduced on the real control plane
(kube-apiserver, controller-manager, KubeRay, kwok) with the operator as a subprocess."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from residency_watch import BoundPod, ResidencyWatch
from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec, ResolvedHyperparameters
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.backends.context import JobContext
from sovereign_operator.backends.kuberay import KubeRayBackend
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.jobconfig import job_config_of
from sovereign_operator.builders.names import rayjob_name
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.k8s.client import RAYJOB, Kube, load_configuration

from .operator_process import (
    MODEL_SOURCES,
    OperatorProcess,
    finetunejob,
    ftj,
    get_json,
    modeldeployment,
    owned,
    policy_for,
    setup_namespace,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def doomed(crds: LocalCluster) -> Iterator[str]:
    """A namespace the test deletes itself (and waits for)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    crds.kubectl("create", "namespace", name)
    setup_namespace(crds, name, allowedModelSources=MODEL_SOURCES)
    yield name
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{name}", "--wait=false", check=False)
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


def phase(cluster: LocalCluster, namespace: str, name: str) -> str | None:
    status = (ftj(cluster, namespace, name) or {}).get("status") or {}
    return status.get("phase")


def has_finalizer(cluster: LocalCluster, kind: str, namespace: str, name: str) -> bool:
    obj = get_json(cluster, kind, name, "-n", namespace) or {}
    return "sovereign-ai.eu/finalizer" in (obj.get("metadata") or {}).get("finalizers", [])


@pytest.mark.parametrize(
    ("watch", "restart"),
    # Both namespaced cases failed before; the cluster-wide one logged a 403 loop.
    [("namespaced", False), ("namespaced", True), ("cluster", False)],
)
def test_deleting_a_namespace_finishes_in_both_watch_modes(
    crds: LocalCluster, doomed: str, tmp_path: Path, watch: str, restart: bool
) -> None:
    """Before: with SOVAI_NAMESPACES, Kopf stopped watching the terminating namespace, the
    finalizers stayed, and the namespace never went, even after an operator restart."""
    namespaces = [doomed] if watch == "namespaced" else []
    with OperatorProcess(crds, tmp_path, namespaces=namespaces) as operator:
        crds.apply(finetunejob("doomed-job", doomed))
        crds.apply(modeldeployment("doomed-serving", doomed))
        wait_phase(crds, doomed, "doomed-job", "Queued", log=operator.log_tail)
        wait_for(
            lambda: has_finalizer(crds, "modeldeployment", doomed, "doomed-serving"),
            60,
            "the ModelDeployment's finalizer",
            on_timeout=operator.log_tail,
        )
        if restart:
            operator.stop()
        crds.kubectl("delete", "namespace", doomed, "--wait=false")
        if restart:
            operator.start()
        wait_for(
            lambda: get_json(crds, "namespace", doomed) is None,
            60,
            f"namespace {doomed} to be deleted ({watch} watch, restart: {restart})",
            on_timeout=operator.log_tail,
        )
        # A pass that meets the namespace's deletion halfway may be refused once; it must not
        # fail and retry (the 403 loop of before).
        refusals = [
            line
            for line in operator.log_text().splitlines()
            if "being terminated" in line and "failed" in line
        ]
        assert not refusals, "\n".join(refusals[:5])


def test_names_that_differ_only_by_dot_and_dash_keep_their_own_children(
    crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """Before: "llama.v2" and "llama-v2" shared one RayJob and one ConfigMap (job.json, which
    the RayJob now carries); deleting one deleted the other's."""
    setup_namespace(crds, namespace)
    with OperatorProcess(crds, tmp_path, namespaces=[namespace]) as operator:
        for name in ("llama.v2", "llama-v2"):
            crds.apply(finetunejob(name, namespace))
        jobs = {
            name: wait_phase(crds, namespace, name, "Queued", log=operator.log_tail)
            for name in ("llama.v2", "llama-v2")
        }
        children = {}
        for name, job in jobs.items():
            uid = job["metadata"]["uid"]
            [rayjob] = owned(crds, "rayjobs.ray.io", namespace, uid)
            [egress] = owned(crds, "networkpolicies", namespace, uid)
            assert rayjob["metadata"]["ownerReferences"][0]["uid"] == uid
            assert egress["metadata"]["ownerReferences"][0]["uid"] == uid
            assert json.loads(job_config_of(rayjob) or "{}")["job"]["name"] == name
            children[name] = (rayjob["metadata"]["name"], egress["metadata"]["name"])
        assert children["llama.v2"] != children["llama-v2"]
        crds.kubectl("delete", "finetunejob", "llama.v2", "-n", namespace)
        wait_for(lambda: ftj(crds, namespace, "llama.v2") is None, 60, "llama.v2 deleted")
        survivor = jobs["llama-v2"]["metadata"]["uid"]
        assert len(owned(crds, "rayjobs.ray.io", namespace, survivor)) == 1
        assert len(owned(crds, "networkpolicies", namespace, survivor)) == 1
        assert phase(crds, namespace, "llama-v2") == "Queued"


def test_a_foreign_object_with_a_childs_name_is_left_alone_and_named(
    crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    setup_namespace(crds, namespace)
    # Someone else's NetworkPolicy, with the name the job's own would have.
    foreign = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "taken-egress", "namespace": namespace, "labels": {"a": "b"}},
        "spec": {"podSelector": {"matchLabels": {"app": "theirs"}}, "policyTypes": ["Egress"]},
    }
    crds.apply(foreign)
    with OperatorProcess(crds, tmp_path, namespaces=[namespace]) as operator:
        crds.apply(finetunejob("taken", namespace))

        def blocked() -> str | None:
            message = str(
                next(
                    (
                        c["message"]
                        for c in ((ftj(crds, namespace, "taken") or {}).get("status") or {}).get(
                            "conditions", []
                        )
                        if c["type"] == "Admitted"
                    ),
                    "",
                )
            )
            return message if "already exists and belongs to no controller" in message else None

        message = wait_for(blocked, 60, "the name conflict in status", on_timeout=operator.log_tail)
        assert f"NetworkPolicy {namespace}/taken-egress" in message
        # Nothing of the job runs without its own NetworkPolicy: no RayJob was made either.
        job = ftj(crds, namespace, "taken") or {}
        assert not owned(crds, "rayjobs.ray.io", namespace, str(job["metadata"]["uid"]))
    theirs = get_json(crds, "networkpolicy", "taken-egress", "-n", namespace)
    assert theirs["spec"] == foreign["spec"]
    assert theirs["metadata"]["labels"] == {"a": "b"}
    assert "ownerReferences" not in theirs["metadata"]


def test_a_spec_change_that_only_touches_job_json_reaches_the_rayjob(
    crds: LocalCluster, namespace: str
) -> None:
    """Before: a new epochs changed only job.json, which the RayJob's hash did not cover, so
    a pass after the change saw "nothing to do" and job.json kept the old value: the
    trainer never saw it. The operator's kuberay backend, run here against the real API server
    twice, as two passes would (the admission rule that freezes a started job's spec is what
    keeps the operator from meeting this later; a pass between creating the RayJob and
    recording the start is where it met it)."""
    setup_namespace(crds, namespace)
    kube = Kube(partial(load_configuration, str(crds.kubeconfig)), pool_size=2)
    backend = KubeRayBackend(kube)
    # A real owner (no operator runs here): children of a missing owner are garbage-collected.
    crds.apply(finetunejob("retune", namespace))
    uid = str((ftj(crds, namespace, "retune") or {})["metadata"]["uid"])
    owner = Owner(name="retune", namespace=namespace, uid=uid)
    residency = Residency("pol", "topology.kubernetes.io/region", ("eu-west-par",))
    policy = SovereigntyPolicySpec.model_validate(policy_for(namespace)["spec"])
    build = BuildConfig(runtime_image="registry.eu-west-par.example.eu/x:1")

    def reconcile(epochs: int) -> None:
        # The spec's epochs changed (an explicit value: "auto" would be the trainer's to choose).
        method = {"type": "lora", "hyperparameters": {"epochs": epochs}}
        spec = FineTuneJobSpec.model_validate(
            finetunejob("retune", namespace, method=method)["spec"]
        )
        hyperparameters = ResolvedHyperparameters(
            epochs=epochs,
            batch_size=8,
            micro_batch_size=4,
            learning_rate=2e-4,
            max_seq_length=2048,
            warmup_ratio=0.0,
            seed=1,
        )
        live = kube.get_or_none(RAYJOB, namespace, rayjob_name(owner.name))
        context = JobContext(spec, owner, 1, residency, hyperparameters, policy, build, None, live)
        backend.reconcile(context)

    reconcile(epochs=2)
    reconcile(epochs=5)
    rayjob = kube.get(RAYJOB, namespace, rayjob_name(owner.name))
    text = job_config_of(rayjob)
    assert text is not None
    assert json.loads(text)["method"]["hyperparameters"]["epochs"] == 5
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert rayjob["spec"]["entrypoint"].endswith(f"--config-sha256 {digest}")


def test_kuberays_failure_to_create_pods_is_in_the_status_at_once(
    crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """Before: the job waited silently for its start-up deadline while KubeRay could not
    create a pod. A quota of zero pods makes every creation fail."""
    setup_namespace(crds, namespace)
    crds.kubectl("create", "quota", "no-pods", "-n", namespace, "--hard=pods=0")
    with OperatorProcess(crds, tmp_path, namespaces=[namespace]) as operator:
        crds.apply(finetunejob("quota", namespace))

        def surfaced() -> str | None:
            status = (ftj(crds, namespace, "quota") or {}).get("status") or {}
            for condition in status.get("conditions", []):
                if "FailedCreate" in condition.get("message", ""):
                    return str(condition["message"])
            return None

        message = wait_for(
            surfaced, 60, "KubeRay's failure in status", on_timeout=operator.log_tail
        )
        assert "exceeded quota" in message
        assert phase(crds, namespace, "quota") == "Queued"


def test_the_residency_watcher_sees_pods_and_flags_one_outside_the_regions(
    crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """The watcher every tier runs with: it records the operator's pods with their pinned
    regions, and flags a pod bound outside them (a probe label keeps the tier's own watcher,
    which selects the operator's label, out of it)."""
    setup_namespace(crds, namespace)
    nodes = get_json(crds, "nodes")["items"]
    outside = next(
        n["metadata"]["name"]
        for n in nodes
        if n["metadata"]["labels"].get("topology.kubernetes.io/region") == "us-east-1"
    )
    with OperatorProcess(crds, tmp_path, namespaces=[namespace]) as operator:
        with ResidencyWatch(crds.kubeconfig) as operators_pods:
            crds.apply(finetunejob("watched", namespace))
            wait_phase(crds, namespace, "watched", "Queued", log=operator.log_tail)

            def mine() -> list[BoundPod]:
                return [p for p in operators_pods.pods.values() if p.namespace == namespace]

            wait_for(lambda: len(mine()) >= 2, 60, "the head and worker pods bound")
        assert not operators_pods.violations()
        assert {p.pinned for p in mine()} == {("eu-central-fra", "eu-west-par")}
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": namespace, "labels": {"sovai-test": "probe"}},
        "spec": {"nodeName": outside, "containers": [{"name": "c", "image": "x"}]},
    }
    with ResidencyWatch(crds.kubeconfig, selector="sovai-test=probe") as probes:
        crds.apply(probe)
        wait_for(lambda: probes.pods, 30, "the probe pod recorded")
        assert probes.violations() == [
            f"pod {namespace}/probe on node {outside} (region us-east-1) has no required node "
            "affinity on topology.kubernetes.io/region"
        ]
