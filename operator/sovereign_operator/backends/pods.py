"""Compact facts about a job's pods: where each runs, and what keeps it from starting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..builders.context import COMPONENT_LABEL

# Container waiting reasons that will not heal by waiting.
STUCK_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)


@dataclass(frozen=True)
class PodFacts:
    """What the operator keeps about one pod (small: it is cached for every pod it owns)."""

    name: str
    namespace: str
    node: str | None
    phase: str
    blockers: tuple[str, ...] = ()
    component: str = ""  # ray-head, ray-worker, ray-submitter (the component label)


def pod_facts(pod: dict[str, Any]) -> PodFacts:
    """Node, phase and start-up blockers of a pod manifest."""
    metadata = pod.get("metadata", {})
    status = pod.get("status", {}) or {}
    name = metadata.get("name", "")
    blockers: list[str] = []
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            blockers.append(f"pod {name} is unschedulable: {condition.get('message', '')}".strip())
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in STUCK_WAITING_REASONS:
            detail = waiting.get("message") or container.get("image", "")
            blockers.append(f"pod {name} container {container.get('name')}: {reason}: {detail}")
    return PodFacts(
        name=name,
        namespace=metadata.get("namespace", ""),
        node=(pod.get("spec") or {}).get("nodeName"),
        phase=status.get("phase", "Pending"),
        blockers=tuple(blockers),
        component=(metadata.get("labels") or {}).get(COMPONENT_LABEL, ""),
    )
