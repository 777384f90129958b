"""The handlers' side of the audit log: record a pass's facts, or hold the pass back.

A pass whose facts cannot be recorded writes no status and changes nothing more: it raises,
and is retried (Kopf's retry for handlers, the next tick for the sweep), with a Warning Event
that says why. Nothing the operator did goes unrecorded, and nothing is recorded twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf

from ..api.v1alpha1.common import AuditTrail
from ..api.v1alpha1.finetunejob import FineTuneJobStatus
from ..api.v1alpha1.modeldeployment import ModelDeploymentStatus
from ..audit.facts import ADMITTED
from ..audit.log import AuditUnavailable
from ..audit.records import Fact, Subject
from .state import OperatorState

RETRY_SECONDS = 10
# Either kind's status: both carry `audit`.
StatusT = TypeVar("StatusT", FineTuneJobStatus, ModelDeploymentStatus)


def subject(kind: str, body: Mapping[str, Any]) -> Subject:
    meta = body.get("metadata") or {}
    return Subject(kind, str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")))


def record(
    state: OperatorState,
    body: Mapping[str, Any],
    about: Subject,
    facts: Sequence[Fact],
    policy_digest: str | None = None,
) -> AuditTrail | None:
    """Append the facts not yet recorded; the object's trail for its status (None when the
    operator keeps no audit log). kopf.TemporaryError when the log cannot be written now."""
    if state.audit is None:
        return None
    try:
        heads = state.audit.append(facts)
        admission = state.audit.first(about.uid, ADMITTED)
    except AuditUnavailable as error:
        state.metrics.errors.labels(about.kind, "audit", "AuditUnavailable").inc()
        # One Event an hour per object is enough to say why it is held back.
        hour = datetime.now(UTC).strftime("%Y%m%d%H")
        message = f"the audit log cannot be written, so this pass waits: {error}"
        state.event(body, "Warning", "AuditLogUnavailable", message[:1000], f"audit@{hour}")
        state.seen.pop(about.uid, None)  # the sweep retries on its next tick
        raise kopf.TemporaryError(message, delay=RETRY_SECONDS) from error
    head = heads.get(about.uid)
    return AuditTrail(
        log=str(state.audit.location),
        head=str(head) if head else None,
        admission=str(admission) if admission else None,
        policy_digest=policy_digest,
    )


def with_trail(new: StatusT, trail: AuditTrail | None, previous: StatusT | None) -> StatusT:
    """The new status with the object's trail: this pass's, else the one it had (a status is
    computed afresh, and an operator without a log leaves a trail written before alone)."""
    kept = trail or (previous.audit if previous is not None else None)
    return new if kept is None else new.model_copy(update={"audit": kept})
