"""The Kueue objects of examples/kueue/eu-gpu-queues.yaml (docs/kueue.md), made one test's own:
the integration tier's queue on kwok's GPU nodes and the e2e tier's on the real node's CPUs
both start from what users are told to apply."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kueue" / "eu-gpu-queues.yaml"
PARIS = "eu-west-par"


def queue_objects(
    namespace: str, paris: Mapping[str, str], *, flavors: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The example's ResourceFlavors, ClusterQueue and LocalQueue (in that order). The
    ClusterQueue is named after ``namespace`` and takes only its jobs; ``paris`` overrides the
    Paris flavor's quotas (resource name -> nominal quota); with ``flavors``, it offers only
    those flavors, each with the Paris quotas. The LocalQueue is in ``namespace``."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(EXAMPLE.read_text()):
        if doc:
            by_kind.setdefault(doc["kind"], []).append(doc)
    [cluster_queue] = copy.deepcopy(by_kind["ClusterQueue"])
    [local_queue] = copy.deepcopy(by_kind["LocalQueue"])
    cluster_queue["metadata"]["name"] = f"{cluster_queue['metadata']['name']}-{namespace}"
    cluster_queue["spec"]["namespaceSelector"] = {
        "matchLabels": {"kubernetes.io/metadata.name": namespace}
    }
    [group] = cluster_queue["spec"]["resourceGroups"]
    quotas = next(f for f in group["flavors"] if f["name"] == PARIS)
    for resource in quotas["resources"]:
        resource["nominalQuota"] = paris.get(resource["name"], resource["nominalQuota"])
    if flavors:
        group["flavors"] = [{**copy.deepcopy(quotas), "name": name} for name in flavors]
    local_queue["metadata"]["namespace"] = namespace
    local_queue["spec"]["clusterQueue"] = cluster_queue["metadata"]["name"]
    return [*by_kind["ResourceFlavor"], cluster_queue, local_queue]
