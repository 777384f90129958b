"""Facts about a ModelDeployment's children, read from their manifests. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..backends.pods import STUCK_WAITING_REASONS, pod_facts
from ..builders.serving import FETCH_CONTAINER

ROLLOUT_COMPLETE = "NewReplicaSetAvailable"
DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


@dataclass(frozen=True)
class DeploymentFacts:
    """The Deployment's rollout, as its controller reports it."""

    replicas: int
    ready: int
    updated: int
    current: bool  # the controller has seen the latest spec (observedGeneration)
    complete: bool  # the latest ReplicaSet is fully available
    deadline_exceeded: bool  # progressDeadlineSeconds passed without progress


def deployment_facts(live: Mapping[str, Any] | None) -> DeploymentFacts | None:
    """Rollout facts of a Deployment manifest; None when there is none."""
    if live is None:
        return None
    status = live.get("status") or {}
    generation = int((live.get("metadata") or {}).get("generation") or 0)
    progressing: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    current = int(status.get("observedGeneration") or 0) >= generation
    return DeploymentFacts(
        replicas=int((live.get("spec") or {}).get("replicas", 1)),
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        current=current,
        complete=current and progressing.get("reason") == ROLLOUT_COMPLETE,
        deadline_exceeded=current and progressing.get("reason") == DEADLINE_EXCEEDED,
    )


def blockers(pods: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """Why pods cannot start (unschedulable, image pull errors, crash loops), deduplicated."""
    found = (b for pod in pods for b in pod_facts(dict(pod)).blockers)
    return tuple(dict.fromkeys(found))


def blocker_reason(blocker: str) -> str:
    """The CamelCase reason inside a blocker text: Unschedulable or the container's reason."""
    if " is unschedulable" in blocker:
        return "Unschedulable"
    for reason in sorted(STUCK_WAITING_REASONS):
        if f": {reason}:" in blocker:
            return reason
    return "PodsNotReady"


def fetched_digest(
    pods: Iterable[Mapping[str, Any]], model_uri: str, container_name: str = FETCH_CONTAINER
) -> str | None:
    """The digest the fetch init container ``container_name`` recorded for ``model_uri`` in its
    termination message (the `.sovai-digest` record of `sovereign_training fetch`), from any
    pod."""
    for pod in pods:
        for container in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if container.get("name") != container_name:
                continue
            for state in (container.get("state"), container.get("lastState")):
                message = ((state or {}).get("terminated") or {}).get("message")
                if not message:
                    continue
                try:
                    record = json.loads(message)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("uri") == model_uri:
                    digest = record.get("digest")
                    if isinstance(digest, str) and digest.startswith("sha256:"):
                        return digest
    return None
