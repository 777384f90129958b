"""The index functions read nothing that kopf_tuning.slim drops: each gives the same value for
a whole object, as the API server sends it, and for the object slimmed as the operator keeps
it (handlers/indexes.INDEXED_SPEC_FIELDS)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Coroutine
from typing import Any, cast

import kopf
import pytest

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec
from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.rayjob import build_rayjob
from sovereign_operator.builders.serving import ServedModel, ServingConfig, build_deployment
from sovereign_operator.handlers import indexes
from sovereign_operator.kopf_tuning import slim

JOB = Owner(name="ft", namespace="team-a", uid="job-uid")
SERVED = Owner(name="chat", namespace="team-a", uid="md-uid", kind="ModelDeployment")
RESIDENCY = Residency("eu-only", "topology.kubernetes.io/region", ("eu-west-par",))
BUILD = BuildConfig(runtime_image="registry.eu/sovai/runtime:1")
SERVING = ServingConfig(vllm_image="registry.eu/vllm:1", server_image="registry.eu/sovai:1")
MANAGED_FIELDS = [{"manager": "sovereign-ai-operator", "fieldsV1": {"f:spec": {"f:x": {}}}}]


def served(obj: dict[str, Any], uid: str, **status: Any) -> dict[str, Any]:
    """``obj`` as the API server sends it back: identity, managedFields and a status."""
    whole = copy.deepcopy(obj)
    whole["metadata"].update(
        uid=uid,
        resourceVersion="7",
        generation=2,
        creationTimestamp="2026-12-05T10:00:00Z",
        managedFields=MANAGED_FIELDS,
    )
    whole["status"] = status
    return whole


def rayjob() -> dict[str, Any]:
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "hf://acme/tiny"},
            "dataset": {"trainingUri": "pvc://data/train.jsonl"},
            "resources": {"workers": 2, "gpusPerWorker": 1},
            "placement": {"queueName": "eu-gpus"},
        }
    )
    built = build_rayjob(spec, JOB, BUILD, RESIDENCY, job_config='{"job": {}}')
    built["spec"]["suspend"] = True  # held by Kueue: not the default the index would assume
    return served(built, "rj-uid", jobDeploymentStatus="Suspended")


def head_template() -> dict[str, Any]:
    template: dict[str, Any] = rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    return template


def deployment() -> dict[str, Any]:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "models:/chat/3"}})
    built = build_deployment(spec, SERVED, RESIDENCY, ServedModel("models:/chat/3"), BUILD, SERVING)
    return served(built, "dep-uid", replicas=1, readyReplicas=1, observedGeneration=2)


def pod_of(template: dict[str, Any], name: str) -> dict[str, Any]:
    """A pod made from ``template`` and bound to a node, one container waiting on its image."""
    made: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**copy.deepcopy(template["metadata"]), "name": name, "namespace": "team-a"},
        "spec": {**copy.deepcopy(template["spec"]), "nodeName": "gpu-node-1"},
    }
    container = made["spec"]["containers"][0]["name"]
    return served(
        made,
        f"{name}-uid",
        phase="Pending",
        conditions=[{"type": "PodScheduled", "status": "True"}],
        containerStatuses=[
            {
                "name": container,
                "image": "registry.eu/sovai/runtime:1",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
            }
        ],
    )


def workload() -> dict[str, Any]:
    return served(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "Workload",
            "metadata": {
                "name": "rayjob-ft-1a2b3",
                "namespace": "team-a",
                "ownerReferences": [{"kind": "RayJob", "name": "ft", "uid": "rj-uid"}],
            },
            "spec": {
                "queueName": "eu-gpus",
                "priority": 5,
                "podSets": [{"name": "head", "count": 1, "template": head_template()}],
            },
        },
        "wl-uid",
        conditions=[
            {"type": "QuotaReserved", "status": "False", "message": "couldn't assign flavors"}
        ],
    )


def node() -> dict[str, Any]:
    return served(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "gpu-node-1", "labels": {"topology.kubernetes.io/region": "x"}},
            "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "gpu", "effect": "NoSchedule"}]},
        },
        "node-uid",
        images=[{"names": ["registry.eu/sovai/runtime:1"], "sizeBytes": 1}],
    )


IndexFunction = Callable[..., Coroutine[Any, Any, Any]]
CASES: list[tuple[tuple[str, str], Callable[[], dict[str, Any]], IndexFunction]] = [
    (("ray.io", "rayjobs"), rayjob, indexes.rayjobs_by_owner),
    (("apps", "deployments"), deployment, indexes.deployments_by_owner),
    (("", "pods"), lambda: pod_of(head_template(), "head"), indexes.pods_by_owner),
    (
        ("", "pods"),
        lambda: pod_of(deployment()["spec"]["template"], "serving"),
        indexes.serving_pods_by_owner,
    ),
    (("kueue.x-k8s.io", "workloads"), workload, indexes.workloads_waiting),
    (("", "nodes"), node, indexes.node_labels),
]


def indexed(function: IndexFunction, obj: dict[str, Any]) -> Any:
    body = kopf.Body(cast(kopf.RawBody, copy.deepcopy(obj)))
    return asyncio.run(function(body=body, labels=body.metadata.labels, name=body.metadata.name))


@pytest.mark.parametrize(
    ("kind", "make", "function"), CASES, ids=[function.__name__ for _, _, function in CASES]
)
def test_an_index_reads_the_same_from_the_slimmed_object(
    kind: tuple[str, str], make: Callable[[], dict[str, Any]], function: IndexFunction
) -> None:
    whole = make()
    slimmed = copy.deepcopy(whole)
    slim(slimmed, indexes.INDEXED_SPEC_FIELDS[kind])
    assert "managedFields" not in slimmed["metadata"]
    assert set(slimmed["spec"]) <= set(indexes.INDEXED_SPEC_FIELDS[kind])
    assert indexed(function, slimmed) == indexed(function, whole)
    assert indexed(function, whole)  # the case is one the index keeps


def test_every_slimmed_kind_has_a_case() -> None:
    assert {kind for kind, _, _ in CASES} == set(indexes.INDEXED_SPEC_FIELDS)


def test_kinds_with_handlers_keep_their_spec() -> None:
    job = {"metadata": {"name": "ft", "managedFields": MANAGED_FIELDS}, "spec": {"a": 1}}
    slim(job, None)
    assert job == {"metadata": {"name": "ft"}, "spec": {"a": 1}}
