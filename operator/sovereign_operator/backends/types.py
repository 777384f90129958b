"""What every backend reports about a job, in one shape, so status is the same for all."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class BackendState(StrEnum):
    """The backend job's state, normalised across KubeRay and the Job Submission API."""

    ABSENT = "Absent"  # nothing submitted or created (yet, or any more)
    PENDING = "Pending"  # created, not yet running (cluster starting, queued, retrying)
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class BackendObservation:
    """Facts read from the backend; compute_status turns them into phase and conditions."""

    state: BackendState
    name: str | None = None  # RayJob name or submission id
    created_at: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    reason: str | None = None
    message: str | None = None
    progress: dict[str, Any] | None = None  # last SOVAI_PROGRESS document
    result: dict[str, Any] | None = None  # the SOVAI_RESULT document
    # Where the result was read from when not the log: "MLflow run <id>" (evidence's origin).
    result_from: str | None = None
    # While there is no result: what the last look in MLflow found instead (kuberay).
    result_tried: str | None = None
    # Why pods cannot start (unschedulable, image pull errors): evidence for StartupTimeout.
    blockers: tuple[str, ...] = field(default_factory=tuple)
    # resourceVersion of the child observed (kuberay): a later pass sees whether it changed.
    version: str | None = None
    uid: str | None = None  # the child's uid (kuberay): which RayJob the audit log records
    # Attempts that failed so far (KubeRay's status.failed; the rayCluster backend's count once
    # its last attempt failed): compute_status says which attempt runs and how many ran.
    failed_attempts: int = 0
    # KubeRay is between two attempts: it deletes the failed one's cluster, and sets the next
    # one's start time only once that is done (status Retrying, then New).
    between_attempts: bool = False
