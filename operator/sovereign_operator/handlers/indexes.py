"""Kopf indexes: in-memory views of the children, pods, nodes, policies and namespaces.

The level-based follow-ups read these instead of calling the API server, so following
thousands of jobs costs no requests while nothing changes. Values are kept small on purpose
(memory).
The index functions are async although they never wait: Kopf runs sync handlers in its
thread pool, and a thread hand-off per watch event costs more than the function itself.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from ..backends.kueue import QueuedWorkload, queued_workload
from ..backends.pods import PodFacts, pod_facts
from ..builders.context import JOB_UID_LABEL, QUEUE_NAME_LABEL, SPEC_HASH_ANNOTATION
from ..builders.serving import DEPLOYMENT_UID_LABEL
from ..k8s.client import NAMESPACE, Kube

log = logging.getLogger(__name__)

# The kinds the operator only indexes, by (group, plural), and the keys of their spec that the
# index functions below read. The rest of the spec is dropped as each object arrives
# (kopf_tuning.slim_watched_objects): a RayJob's pod templates, for one, are KubeRay's to read.
# An index function that reads another spec key must name it here
# (tests/unit/test_indexes.py compares each function on whole and slimmed objects).
INDEXED_SPEC_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("ray.io", "rayjobs"): ("suspend",),
    ("", "pods"): ("nodeName",),
    ("apps", "deployments"): ("replicas",),
    ("", "nodes"): (),
    ("kueue.x-k8s.io", "workloads"): ("queueName", "priority"),
}


def rayjob_summary(body: Any) -> dict[str, Any]:
    """The parts of a RayJob the operator reads: identity, desired-spec hash, suspend, status."""
    metadata = body.get("metadata", {})
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "creationTimestamp": metadata.get("creationTimestamp"),
            "annotations": {
                SPEC_HASH_ANNOTATION: (metadata.get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
            },
            # The Kueue LocalQueue it waits in, if any (its place there is read from Workloads).
            "labels": {
                key: value
                for key, value in (metadata.get("labels") or {}).items()
                if key == QUEUE_NAME_LABEL
            },
        },
        "spec": {"suspend": (body.get("spec") or {}).get("suspend", False)},
        "status": dict(body.get("status") or {}),
    }


async def rayjobs_by_owner(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    """RayJob summaries keyed by the owning FineTuneJob's uid."""
    return {labels[JOB_UID_LABEL]: rayjob_summary(body)}


async def pods_by_owner(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, PodFacts]:
    """Pod facts keyed by the owning FineTuneJob's uid."""
    return {labels[JOB_UID_LABEL]: pod_facts(dict(body))}


async def workloads_waiting(body: kopf.Body, **_: Any) -> dict[str, QueuedWorkload]:
    """Kueue Workloads waiting for quota keyed by "namespace/LocalQueue"; an admitted or
    finished one leaves the index (an empty result drops what was stored for it)."""
    found = queued_workload(body)
    return {} if found is None else {found[0]: found[1]}


async def node_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    """Node labels keyed by node name (for the region of each pod)."""
    return {name: dict(labels)}


async def policies(name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    """SovereigntyPolicy specs keyed by name."""
    return {name: dict(spec)}


async def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    """Namespace labels keyed by namespace name (for policies' namespaceSelector)."""
    return {name: dict(labels)}


def deployment_summary(body: Any) -> dict[str, Any]:
    """The parts of a serving Deployment a ModelDeployment's pass reads: identity, generation,
    desired-spec hash, replicas and the rollout status."""
    metadata = body.get("metadata", {})
    return {
        "metadata": {
            "name": metadata.get("name"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "generation": metadata.get("generation"),
            "annotations": {
                SPEC_HASH_ANNOTATION: (metadata.get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
            },
        },
        "spec": {"replicas": (body.get("spec") or {}).get("replicas", 1)},
        "status": dict(body.get("status") or {}),
    }


async def deployments_by_owner(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    """Serving Deployment summaries keyed by the owning ModelDeployment's uid."""
    return {labels[DEPLOYMENT_UID_LABEL]: deployment_summary(body)}


def serving_pod(body: Any) -> dict[str, Any]:
    """A serving pod as its ModelDeployment's pass reads it: name, node, and the status that
    holds its blockers and its fetch containers' termination messages (the digest fetched)."""
    metadata = body.get("metadata", {})
    status = body.get("status") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": {
            key: status[key]
            for key in ("phase", "conditions", "initContainerStatuses", "containerStatuses")
            if key in status
        },
    }


async def serving_pods_by_owner(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    """Serving pods keyed by the owning ModelDeployment's uid."""
    return {labels[DEPLOYMENT_UID_LABEL]: serving_pod(body)}


async def finetunejob_phases(
    name: str, namespace: str | None, uid: str, status: kopf.Status, **_: Any
) -> dict[str, tuple[str, str | None]]:
    """(uid, phase) of each FineTuneJob keyed by "namespace/name": a ModelDeployment that
    serves one has a pass when it is made, re-made or changes phase."""
    return {f"{namespace}/{name}": (uid, status.get("phase"))}


def one(index: kopf.Index[str, Any], key: str) -> Any | None:
    """The single value stored under ``key``, or None."""
    store = index.get(key)
    if not store:
        return None
    for value in store:
        return value
    return None


def policies_of(index: kopf.Index[str, Any] | None) -> dict[str, SovereigntyPolicySpec]:
    """Every readable SovereigntyPolicy in the index, by name (unreadable ones are logged)."""
    result: dict[str, SovereigntyPolicySpec] = {}
    for name in list(index or {}):
        raw = one(index, name) if index is not None else None
        if raw is None:
            continue
        try:
            result[name] = SovereigntyPolicySpec.model_validate(raw)
        except ValidationError:
            log.warning("SovereigntyPolicy %s is unreadable and ignored", name)
    return result


def labels_of_namespace(
    kube: Kube, index: kopf.Index[str, Any] | None, namespace: str
) -> dict[str, str]:
    """A namespace's labels from the index, or from the API server before the index is warm."""
    labels = one(index, namespace) if index is not None else None
    if labels is None:
        labels = (kube.get(NAMESPACE, None, namespace).get("metadata") or {}).get("labels") or {}
    return dict(labels)
