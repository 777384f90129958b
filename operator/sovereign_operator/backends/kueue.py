"""Where a RayJob stands in its Kueue queue, read from Kueue's Workloads (pure functions).

Kueue keeps one Workload per queued job. Its on-demand visibility API would say the position,
but it is an aggregated API that not every cluster exposes, so the operator orders the pending
Workloads of the job's LocalQueue itself, the way Kueue's queues order them: higher priority
first, then the older queue-order timestamp (creation, or the last eviction that sends a
workload to the back: a pods-ready timeout or a failed admission check), then the name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

WORKLOAD_GROUP = "kueue.x-k8s.io"
WORKLOAD_VERSION = "v1beta2"
# Evictions after which Kueue queues a workload by the eviction's time, not its creation.
REQUEUED_BY_EVICTION = frozenset({"PodsReadyTimeout", "AdmissionCheck"})


@dataclass(frozen=True, order=True)
class QueuedWorkload:
    """A Workload waiting for quota, as the index keeps it; fields in queue order."""

    negative_priority: int
    queued_at: str  # RFC 3339 in UTC: orders as text
    name: str
    owner_uid: str = ""
    # Kueue's own words on why it is not admitted yet (QuotaReserved=False).
    why: str = ""


@dataclass(frozen=True)
class QueueStanding:
    """A job's place among the workloads waiting in its LocalQueue (1 = next)."""

    position: int
    waiting: int
    why: str = ""

    def describe(self) -> str:
        detail = f"; Kueue: {self.why}" if self.why else ""
        return f"position {self.position} of {self.waiting} waiting{detail}"


def _condition(conditions: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def queued_workload(body: Mapping[str, Any]) -> tuple[str, QueuedWorkload] | None:
    """(``namespace/queue``, the entry) for a Workload that waits for quota; None for one
    that has quota, finished, or names no queue."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    conditions = (body.get("status") or {}).get("conditions") or []
    queue = spec.get("queueName")
    if not queue:
        return None
    for done in ("QuotaReserved", "Finished"):
        condition = _condition(conditions, done)
        if condition is not None and condition.get("status") == "True":
            return None
    queued_at = str(metadata.get("creationTimestamp") or "")
    evicted = _condition(conditions, "Evicted")
    evicted_to_back = (evicted or {}).get("reason") in REQUEUED_BY_EVICTION
    if evicted is not None and evicted.get("status") == "True" and evicted_to_back:
        queued_at = str(evicted.get("lastTransitionTime") or queued_at)
    reserved = _condition(conditions, "QuotaReserved")
    owners = metadata.get("ownerReferences") or []
    entry = QueuedWorkload(
        negative_priority=-int(spec.get("priority") or 0),
        queued_at=queued_at,
        name=str(metadata.get("name")),
        owner_uid=str(owners[0].get("uid")) if owners else "",
        why=str((reserved or {}).get("message") or ""),
    )
    return f"{metadata.get('namespace')}/{queue}", entry


def standing(waiting: Iterable[QueuedWorkload], owner_uid: str) -> QueueStanding | None:
    """The place of the Workload owned by ``owner_uid`` (the RayJob) among ``waiting``; None
    when it is not among them (not made yet, or admitted)."""
    ordered = sorted(waiting)
    for position, entry in enumerate(ordered, start=1):
        if entry.owner_uid == owner_uid:
            return QueueStanding(position, len(ordered), entry.why)
    return None
