"""One merge patch per status change; Kopf's own record in the status is never touched."""

from __future__ import annotations

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobPhase, FineTuneJobStatus
from sovereign_operator.status.patch import status_patch


def test_no_patch_when_nothing_changed_even_with_kopfs_record_stored() -> None:
    new = FineTuneJobStatus(phase=FineTuneJobPhase.QUEUED, ray_job_name="ft")
    stored = {**new.to_json_dict(), "lastHandledConfiguration": '{"spec":{}}'}
    assert status_patch(stored, new) is None


def test_changed_fields_are_set_and_vanished_ones_nulled_but_not_kopfs_record() -> None:
    stored = {
        "phase": "Queued",
        "rayJobName": "ft",
        "conditions": [],
        "lastHandledConfiguration": '{"spec":{}}',
    }
    new = FineTuneJobStatus(phase=FineTuneJobPhase.RUNNING, conditions=[])
    assert status_patch(stored, new) == {"phase": "Running", "rayJobName": None, "conditions": []}


def test_a_computed_record_is_never_written_over_kopfs() -> None:
    new = FineTuneJobStatus(phase=FineTuneJobPhase.QUEUED, last_handled_configuration="stale")
    patch = status_patch({"lastHandledConfiguration": "current"}, new)
    assert patch is not None
    assert "lastHandledConfiguration" not in patch
