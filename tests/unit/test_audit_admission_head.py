"""Which admission record a job's trainer is given: the chain's, unless the job started before
the operator kept a log (then none, so that turning the log on changes no running job)."""

from __future__ import annotations

from datetime import UTC, datetime

from offline_state import offline_state

from sovereign_operator.api.v1alpha1.common import AuditTrail
from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobPhase, FineTuneJobStatus
from sovereign_operator.audit.log import AuditLog, Location
from sovereign_operator.audit.records import Head
from sovereign_operator.handlers.finetunejob import admission_head

ADMITTED = Head(2, "sha256:" + "a" * 64)


class Chain(AuditLog):
    """The log as loaded: only the lookup is used (no store)."""

    def __init__(self) -> None:
        super().__init__(client=None, location=Location.parse("s3://audit/x"), writer="t")

    def first(self, uid: str, event: str) -> Head | None:
        return ADMITTED if (uid, event) == ("u1", "Admitted") else None


def status(started: bool, given: bool) -> FineTuneJobStatus:
    return FineTuneJobStatus(
        phase=FineTuneJobPhase.RUNNING,
        start_time=datetime(2026, 12, 5, tzinfo=UTC) if started else None,
        audit=AuditTrail(admission=str(ADMITTED)) if given else None,
    )


def test_a_new_or_queued_job_gets_its_admission_record() -> None:
    state = offline_state()
    state.audit = Chain()
    assert admission_head(state, "u1", None) == ADMITTED
    assert admission_head(state, "u1", status(started=False, given=False)) == ADMITTED
    assert admission_head(state, "u1", status(started=True, given=True)) == ADMITTED


def test_a_job_started_before_the_log_keeps_its_config() -> None:
    state = offline_state()
    state.audit = Chain()
    assert admission_head(state, "u1", status(started=True, given=False)) is None


def test_no_log_no_record() -> None:
    assert admission_head(offline_state(), "u1", None) is None
