"""Facts about a ModelDeployment's children, read from their manifests. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
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


@dataclass(frozen=True)
class FetchRecord:
    """What a fetch init container said in its termination message: the digest it fetched
    (and what it checked it against), or why it refused the model."""

    uri: str
    digest: str | None = None  # of what was fetched; None when refused
    expected_digest: str | None = None  # what the digest was checked against, if anything
    job_uid: str | None = None  # the job uid the version's tag was checked against, if any
    reason: str | None = None  # DigestMismatch or ProvenanceMismatch when refused
    error: str | None = None  # the refusal, in words (naming expected and actual)


def _records(
    pods: Iterable[Mapping[str, Any]], model_uri: str, container_name: str
) -> Iterator[Mapping[str, Any]]:
    """The JSON records about ``model_uri`` in the termination messages of ``container_name``:
    its current state's, then its last state's, unless the current state is a success (a
    refusal before it is history)."""
    for pod in pods:
        for container in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if container.get("name") != container_name:
                continue
            state = container.get("state") or {}
            states = [state]
            if (state.get("terminated") or {}).get("exitCode") != 0:
                states.append(container.get("lastState") or {})
            for each in states:
                message = (each.get("terminated") or {}).get("message")
                if not message:
                    continue
                try:
                    record = json.loads(message)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("uri") == model_uri:
                    yield record


def _text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) and value else None


def fetch_record(
    pods: Iterable[Mapping[str, Any]], model_uri: str, container_name: str = FETCH_CONTAINER
) -> FetchRecord | None:
    """What the fetch init container ``container_name`` recorded for ``model_uri``, from any
    pod: a refusal first (one refusing pod says the model is not the one expected), else the
    digest fetched and what it was checked against."""
    fetched: FetchRecord | None = None
    for record in _records(pods, model_uri, container_name):
        reason, error = _text(record, "reason"), _text(record, "error")
        if reason and error:
            return FetchRecord(model_uri, reason=reason, error=error)
        digest = _text(record, "digest")
        if fetched is None and digest and digest.startswith("sha256:"):
            fetched = FetchRecord(
                model_uri,
                digest=digest,
                expected_digest=_text(record, "expectedDigest"),
                job_uid=_text(record, "jobUid"),
            )
    return fetched


def fetched_digest(
    pods: Iterable[Mapping[str, Any]], model_uri: str, container_name: str = FETCH_CONTAINER
) -> str | None:
    """The digest the fetch init container ``container_name`` recorded for ``model_uri`` in its
    termination message (the record `sovereign_training fetch --termination-log` writes), from
    any pod."""
    for record in _records(pods, model_uri, container_name):
        digest = _text(record, "digest")
        if digest and digest.startswith("sha256:"):
            return digest
    return None
