"""Where this process runs, as the place itself says, and the refusal to train anywhere else.

In the operator's pods the node's name and region come from the Kubernetes downward API
(SOVAI_NODE_NAME, SOVAI_NODE_REGION: the region label of the node the pod was bound to). On a Ray
cluster the operator did not make (the rayCluster backend) they come from the Ray node itself:
the label named SOVAI_REGION_LABEL that the node was started with (`ray start --labels`). The
operator never states the region for them: its policy says where the cluster should be, not
where it is.
"""

from __future__ import annotations

import os
import socket

UNKNOWN = "unknown"


class PlacementError(RuntimeError):
    """This node is outside the regions the job may run in."""


def _ray_node_label(key: str) -> str | None:
    try:
        import ray

        if not ray.is_initialized():
            return None
        value = ray.get_runtime_context().get_node_labels().get(key)
    except Exception:  # Ray absent, or too old for node labels: no evidence from it
        return None
    return str(value) if value else None


def node_identity() -> dict[str, str]:
    """{"node": name, "region": region or "unknown"} of the node this process runs on."""
    label = os.environ.get("SOVAI_REGION_LABEL", "")
    region = os.environ.get("SOVAI_NODE_REGION") or (_ray_node_label(label) if label else None)
    return {
        "node": os.environ.get("SOVAI_NODE_NAME") or socket.gethostname(),
        "region": region or UNKNOWN,
    }


def refuse_outside(allowed: list[str]) -> dict[str, str]:
    """This node's identity; PlacementError when it says it is in a region outside
    ``allowed`` (an empty list allows every region). An unknown region is let through here and
    judged by the operator, which sees the evidence (or its absence) in the result."""
    identity = node_identity()
    region = identity["region"]
    if allowed and region != UNKNOWN and region not in allowed:
        label = os.environ.get("SOVAI_REGION_LABEL") or "region"
        raise PlacementError(
            f"placement.regions: node {identity['node']} is in {region} (its {label} label), "
            f"outside the allowed regions [{', '.join(allowed)}]; nothing was trained there"
        )
    return identity
