"""Kopf indexes: in-memory views of the children, pods, nodes, policies and namespaces.

The level-based timer reads these instead of calling the API server, so following thousands
of jobs costs no requests while nothing changes. Values are kept small on purpose (memory).
"""

from __future__ import annotations

from typing import Any

import kopf

from ..backends.pods import PodFacts, pod_facts
from ..builders.context import JOB_UID_LABEL, SPEC_HASH_ANNOTATION


def rayjob_summary(body: Any) -> dict[str, Any]:
    """The parts of a RayJob the operator reads: identity, desired-spec hash, suspend, status."""
    metadata = body.get("metadata", {})
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "resourceVersion": metadata.get("resourceVersion"),
            "creationTimestamp": metadata.get("creationTimestamp"),
            "annotations": {
                SPEC_HASH_ANNOTATION: (metadata.get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
            },
        },
        "spec": {"suspend": (body.get("spec") or {}).get("suspend", False)},
        "status": dict(body.get("status") or {}),
    }


def rayjobs_by_owner(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    """RayJob summaries keyed by the owning FineTuneJob's uid."""
    return {labels[JOB_UID_LABEL]: rayjob_summary(body)}


def pods_by_owner(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, PodFacts]:
    """Pod facts keyed by the owning FineTuneJob's uid."""
    return {labels[JOB_UID_LABEL]: pod_facts(dict(body))}


def node_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    """Node labels keyed by node name (for the region of each pod)."""
    return {name: dict(labels)}


def policies(name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    """SovereigntyPolicy specs keyed by name."""
    return {name: dict(spec)}


def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    """Namespace labels keyed by namespace name (for policies' namespaceSelector)."""
    return {name: dict(labels)}


def one(index: kopf.Index[str, Any], key: str) -> Any | None:
    """The single value stored under ``key``, or None."""
    store = index.get(key)
    if not store:
        return None
    for value in store:
        return value
    return None
