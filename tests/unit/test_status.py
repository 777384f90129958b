"""compute_status: phase and conditions from the same facts; times move only on change."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.common import PodPlacement
from sovereign_operator.api.v1alpha1.finetunejob import (
    FineTuneJobPhase,
    FineTuneJobSpec,
    FineTuneJobStatus,
    ResolvedHyperparameters,
)
from sovereign_operator.backends.kuberay import observe_rayjob
from sovereign_operator.backends.kueue import QueueStanding
from sovereign_operator.backends.pods import PodFacts, pod_facts
from sovereign_operator.backends.types import BackendObservation, BackendState
from sovereign_operator.status.finetunejob import (
    Observed,
    Validation,
    compute_status,
    conditions_by_type,
)

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
SPEC = FineTuneJobSpec.model_validate(
    {"baseModel": {"uri": "hf://acme/tiny"}, "dataset": {"trainingUri": "s3://eu-data/t.jsonl"}}
)
HP = ResolvedHyperparameters(
    epochs=3,
    batch_size=8,
    micro_batch_size=4,
    learning_rate=2e-4,
    max_seq_length=2048,
    warmup_ratio=0.03,
    seed=42,
)
VALID = Validation(
    ok=True,
    policy_name="eu-only",
    allowed_regions=("eu-central-fra", "eu-west-par"),
    requested_regions=("eu-west-par",),
    regions=("eu-west-par",),
    hyperparameters=HP,
)
TYPES = [
    "InputsValidated",
    "ResidencyVerified",
    "Admitted",
    "Running",
    "Succeeded",
    "Failed",
    "Suspended",
]


def observed(state: BackendState, validation: Validation = VALID, **backend: Any) -> Observed:
    return Observed(
        generation=1,
        validation=validation,
        backend=BackendObservation(state, name="ft", created_at=T0, **backend),
        startup_deadline_seconds=60,
    )


def statuses(status: FineTuneJobStatus) -> dict[str, str]:
    return {c.type: c.status.value for c in status.conditions}


@pytest.mark.parametrize(
    ("state", "phase", "true_conditions"),
    [
        (
            BackendState.PENDING,
            FineTuneJobPhase.QUEUED,
            {"InputsValidated", "ResidencyVerified", "Admitted"},
        ),
        (
            BackendState.RUNNING,
            FineTuneJobPhase.RUNNING,
            {"InputsValidated", "ResidencyVerified", "Admitted", "Running"},
        ),
        (
            BackendState.SUCCEEDED,
            FineTuneJobPhase.SUCCEEDED,
            {"InputsValidated", "ResidencyVerified", "Admitted", "Succeeded"},
        ),
        (
            BackendState.FAILED,
            FineTuneJobPhase.FAILED,
            {"InputsValidated", "ResidencyVerified", "Admitted", "Failed"},
        ),
    ],
)
def test_phase_and_conditions_agree(
    state: BackendState, phase: FineTuneJobPhase, true_conditions: set[str]
) -> None:
    result = {"modelUri": "models:/ft/1"} if state == BackendState.SUCCEEDED else None
    status = compute_status(SPEC, observed(state, result=result), None, T0)
    assert status.phase == phase
    assert [c.type for c in status.conditions] == TYPES
    assert {t for t, s in statuses(status).items() if s == "True"} == true_conditions
    assert all(c.observed_generation == 1 for c in status.conditions)
    assert status.observed_generation == 1


def test_a_cancelled_job_is_cancelled_whatever_its_ray_job_does() -> None:
    running = compute_status(SPEC, observed(BackendState.RUNNING), None, T0)
    cancel = SPEC.model_copy(update={"cancel": True})
    cancelled = compute_status(
        cancel, observed(BackendState.RUNNING), running, T0 + timedelta(minutes=5)
    )
    assert cancelled.phase == FineTuneJobPhase.CANCELLED
    assert cancelled.completion_time == T0 + timedelta(minutes=5)
    assert cancelled.error is None
    marks = conditions_by_type(cancelled)
    assert marks["Cancelled"].status.value == "True"
    assert marks["Cancelled"].reason == "CancelledBySpec"
    assert marks["Running"].status.value == "False"
    # Terminal: the Ray job's later end changes nothing.
    later = compute_status(
        cancel, observed(BackendState.FAILED), cancelled, T0 + timedelta(hours=1)
    )
    assert later.phase == FineTuneJobPhase.CANCELLED
    # The others never carry the condition.
    assert "Cancelled" not in conditions_by_type(running)


def test_hyperparameters_the_trainer_chooses_are_reported_as_it_reports_them() -> None:
    # epochs and batch sizes left "auto": the validation's values are estimates.
    autos = replace(VALID, chosen_by_trainer=("epochs", "batchSize", "microBatchSize"))
    queued = compute_status(SPEC, observed(BackendState.PENDING, validation=autos), None, T0)
    assert queued.resolved_hyperparameters is None
    said = conditions_by_type(queued)["InputsValidated"].message
    assert "epochs=auto batchSize=auto microBatchSize=auto learningRate=0.0002" in said
    assert "the trainer chooses each auto from the dataset's size" in said
    chosen = HP.model_copy(update={"epochs": 6, "batch_size": 16}).to_json_dict()
    running = compute_status(
        SPEC,
        observed(
            BackendState.RUNNING, validation=autos, progress={"step": 1, "hyperparameters": chosen}
        ),
        queued,
        T0 + timedelta(minutes=1),
    )
    assert running.resolved_hyperparameters is not None
    assert (
        running.resolved_hyperparameters.epochs,
        running.resolved_hyperparameters.batch_size,
    ) == (6, 16)
    assert running.progress is not None
    assert running.progress.step == 1
    # Kept once the pods (and their log) are gone.
    later = compute_status(
        SPEC, observed(BackendState.PENDING, validation=autos), running, T0 + timedelta(minutes=2)
    )
    assert later.resolved_hyperparameters == running.resolved_hyperparameters


def test_residency_evidence_names_policy_and_regions() -> None:
    status = compute_status(SPEC, observed(BackendState.PENDING), None, T0)
    residency = conditions_by_type(status)["ResidencyVerified"]
    assert residency.reason == "RegionsAllowed"
    assert residency.message == (
        "SovereigntyPolicy eu-only allows [eu-central-fra, eu-west-par]; requested "
        "[eu-west-par]; every pod is pinned to [eu-west-par]"
    )
    assert status.policy_name == "eu-only"
    assert status.regions == ["eu-west-par"]
    assert status.resolved_hyperparameters == HP


def test_invalid_input_fails_with_the_field() -> None:
    bad = Validation(
        ok=False,
        code="InvalidSpec",
        field="spec.dataset.trainingUri",
        message="spec.dataset.trainingUri: must be s3://, pvc://, hf:// or file://",
    )
    status = compute_status(SPEC, observed(BackendState.ABSENT, validation=bad), None, T0)
    assert status.phase == FineTuneJobPhase.FAILED
    conditions = conditions_by_type(status)
    assert conditions["InputsValidated"].status.value == "False"
    assert conditions["InputsValidated"].reason == "InvalidSpec"
    assert conditions["Failed"].status.value == "True"
    assert status.error is not None
    assert status.error.field == "spec.dataset.trainingUri"


def test_residency_violation_sets_residency_false_not_inputs() -> None:
    bad = Validation(
        ok=False,
        code="PolicyViolation",
        field="spec.placement.regions",
        message="spec.placement.regions: 'us-east-1' is not allowed",
        residency=True,
    )
    status = compute_status(SPEC, observed(BackendState.ABSENT, validation=bad), None, T0)
    conditions = conditions_by_type(status)
    assert conditions["InputsValidated"].status.value == "True"
    assert conditions["ResidencyVerified"].status.value == "False"
    assert conditions["ResidencyVerified"].reason == "PolicyViolation"


def test_transition_time_moves_only_when_status_changes() -> None:
    queued = compute_status(SPEC, observed(BackendState.PENDING), None, T0)
    still = compute_status(SPEC, observed(BackendState.PENDING), queued, T0 + timedelta(seconds=5))
    assert still == queued
    running = compute_status(
        SPEC, observed(BackendState.RUNNING), queued, T0 + timedelta(seconds=9)
    )
    before, after = conditions_by_type(queued), conditions_by_type(running)
    assert after["Running"].last_transition_time == T0 + timedelta(seconds=9)
    assert after["InputsValidated"].last_transition_time == T0
    # Running's reason changed on other conditions, not their status: times stay.
    assert after["Succeeded"].last_transition_time == before["Succeeded"].last_transition_time


def test_success_records_result_and_completion() -> None:
    result = {
        "runId": "r1",
        "experimentId": "7",
        "modelName": "tiny-ft",
        "modelVersion": 3,
        "modelUri": "models:/tiny-ft/3",
        "outputUri": "s3://eu/out",
        "modelDigest": "sha256:" + "ab" * 32,
    }
    end = T0 + timedelta(minutes=5)
    status = compute_status(
        SPEC, observed(BackendState.SUCCEEDED, result=result, end_time=end), None, end
    )
    assert status.completion_time == end
    assert status.fine_tuned_model == "models:/tiny-ft/3"
    assert status.output_uri == "s3://eu/out"
    assert status.mlflow is not None
    assert status.mlflow.model_dump(by_alias=True) == {
        "runId": "r1",
        "experimentId": "7",
        "modelName": "tiny-ft",
        "modelVersion": "3",
        "modelUri": "models:/tiny-ft/3",
        # What a ModelDeployment serving this job expects its fetched model to hash to.
        "modelDigest": "sha256:" + "ab" * 32,
    }


def _compute_result(training_flops: float, base: float | None) -> dict[str, Any]:
    """The trainer's result["compute"] (accounting.account), with the keys status ignores."""
    return {
        "compute": {
            "wallSeconds": 7200.0,
            "workers": 2,
            "gpusPerWorker": 8,
            "gpuModel": "NVIDIA H100 80GB HBM3",
            "gpuHours": 32.0,
            "cpuThreadsPerWorker": None,
            "cpuCoreHours": None,
            "tokens": 1_000_000,
            "flopsPerToken": training_flops / 1_000_000,
            "trainingFlops": training_flops,
            "flopsMethod": "FLOPs per token x tokens trained",
            "energyKwh": 22.4,
            "energyMethod": "GPU-hours x 700 W",
            "pue": None,
            "baseModelTrainingFlops": base,
            "baseModelTrainingFlopsSource": "baseModel.trainingFlops" if base else None,
            "baseComputeRatio": training_flops / base if base else None,
            "exceedsOneThird": 3 * training_flops > base if base else None,
        }
    }


def test_success_records_compute_figures() -> None:
    status = compute_status(
        SPEC, observed(BackendState.SUCCEEDED, result=_compute_result(6e21, 6e22)), None, T0
    )
    assert status.compute is not None
    assert status.compute.to_json_dict() == {
        "gpuHours": 32.0,
        "wallSeconds": 7200.0,
        "tokens": 1_000_000,
        "trainingFlops": 6e21,
        "energyKwh": 22.4,
        "energyMethod": "GPU-hours x 700 W",
        "baseModelTrainingFlops": 6e22,
        "baseComputeRatio": 0.1,
    }


@pytest.mark.parametrize(
    ("base", "status_value", "reason", "message"),
    [
        (
            1e22,
            "True",
            "MoreThanOneThird",
            "the fine-tune used 6e+21 FLOP, 0.6 of the base model's 1e+22 FLOP: more than one "
            "third, so under the Commission's guidelines on general-purpose AI models whoever "
            "made this modification is the provider of the modified model, with the provider's "
            "obligations (AI Act Art. 53, Annex XI)",
        ),
        (
            1.8e22,  # exactly a third is not more than a third
            "False",
            "AtMostOneThird",
            "the fine-tune used 6e+21 FLOP, 0.333 of the base model's 1.8e+22 FLOP: not more "
            "than one third",
        ),
        (
            6e22,
            "False",
            "AtMostOneThird",
            "the fine-tune used 6e+21 FLOP, 0.1 of the base model's 6e+22 FLOP: not more than "
            "one third",
        ),
    ],
)
def test_modification_threshold_condition(
    base: float, status_value: str, reason: str, message: str
) -> None:
    status = compute_status(
        SPEC, observed(BackendState.SUCCEEDED, result=_compute_result(6e21, base)), None, T0
    )
    assert [c.type for c in status.conditions] == [*TYPES, "ModificationThresholdExceeded"]
    condition = conditions_by_type(status)["ModificationThresholdExceeded"]
    assert (condition.status.value, condition.reason, condition.message) == (
        status_value,
        reason,
        message,
    )
    # The finished job keeps it.
    later = compute_status(SPEC, observed(BackendState.SUCCEEDED), status, T0 + timedelta(hours=1))
    assert conditions_by_type(later)["ModificationThresholdExceeded"] == condition


def test_no_threshold_condition_while_the_base_compute_is_unknown() -> None:
    status = compute_status(
        SPEC, observed(BackendState.SUCCEEDED, result=_compute_result(6e21, None)), None, T0
    )
    assert [c.type for c in status.conditions] == TYPES
    assert status.compute is not None
    assert status.compute.base_compute_ratio is None
    assert status.compute.training_flops == 6e21


def test_unreadable_compute_figures_are_left_out() -> None:
    result = {"compute": {"gpuHours": -1.0, "tokens": "many"}}
    status = compute_status(SPEC, observed(BackendState.SUCCEEDED, result=result), None, T0)
    assert status.compute is None
    assert [c.type for c in status.conditions] == TYPES


def test_failure_carries_backend_reason_and_message() -> None:
    status = compute_status(
        SPEC, observed(BackendState.FAILED, reason="DeadlineExceeded", message="too slow"), None, T0
    )
    failed = conditions_by_type(status)["Failed"]
    assert (failed.reason, failed.message) == ("DeadlineExceeded", "too slow")
    assert status.error is not None
    assert status.error.code == "DeadlineExceeded"


RESULT = {"modelUri": "models:/ft/1", "modelDigest": "sha256:" + "0" * 64, "runId": "r1"}


def test_terminal_phase_is_sticky() -> None:
    done = compute_status(SPEC, observed(BackendState.SUCCEEDED, result=RESULT), None, T0)
    assert done.phase == FineTuneJobPhase.SUCCEEDED
    later = compute_status(SPEC, observed(BackendState.FAILED), done, T0 + timedelta(hours=1))
    assert later.phase == FineTuneJobPhase.SUCCEEDED
    assert later.conditions == done.conditions


def test_a_success_is_not_called_succeeded_before_its_result_is_read() -> None:
    # The log could not be read in the pass that saw the Ray job succeed: the job is not
    # made terminal without its result, and a later pass that reads it completes the job.
    ended = T0 + timedelta(minutes=30)
    waiting = compute_status(
        SPEC, observed(BackendState.SUCCEEDED, end_time=ended), None, ended + timedelta(seconds=5)
    )
    assert waiting.phase == FineTuneJobPhase.RUNNING
    running = conditions_by_type(waiting)["Running"]
    assert running.reason == "ReadingResult"
    assert "reading its result" in running.message
    assert waiting.fine_tuned_model is None
    assert waiting.completion_time is None
    read = compute_status(
        SPEC,
        observed(BackendState.SUCCEEDED, end_time=ended, result=RESULT),
        waiting,
        ended + timedelta(seconds=40),
    )
    assert read.phase == FineTuneJobPhase.SUCCEEDED
    assert read.fine_tuned_model == "models:/ft/1"
    assert read.mlflow is not None
    assert read.mlflow.model_digest == RESULT["modelDigest"]
    assert read.completion_time == ended


def test_a_result_unreadable_past_the_result_deadline_fails_with_result_lost() -> None:
    ended = T0 + timedelta(minutes=30)
    lost = compute_status(
        SPEC, observed(BackendState.SUCCEEDED, end_time=ended), None, ended + timedelta(hours=1)
    )
    assert lost.phase == FineTuneJobPhase.FAILED
    assert lost.error is not None
    assert lost.error.code == "ResultLost"
    assert "could not be read within 600 s" in lost.error.message
    assert "sovai.job.uid" in lost.error.message


MLFLOW_TRIED = (
    "MLflow at http://mlflow:5000 has no run in experiment 'team-a/ft' tagged "
    "sovai.job.uid=u1 that kept a result (sovai/result.json)"
)


def test_a_result_read_from_mlflow_makes_the_same_success_and_says_where_it_came_from() -> None:
    ended = T0 + timedelta(minutes=30)
    later = ended + timedelta(seconds=40)
    from_log = compute_status(
        SPEC, observed(BackendState.SUCCEEDED, end_time=ended, result=RESULT), None, later
    )
    from_mlflow = compute_status(
        SPEC,
        observed(
            BackendState.SUCCEEDED, end_time=ended, result=RESULT, result_from="MLflow run r1"
        ),
        None,
        later,
    )
    assert from_mlflow.phase == FineTuneJobPhase.SUCCEEDED
    succeeded = conditions_by_type(from_mlflow)["Succeeded"]
    assert succeeded.message == (
        "training finished; registered models:/ft/1; its result was read from MLflow run r1, "
        "the submitter's log not giving it"
    )
    assert conditions_by_type(from_log)["Succeeded"].message == (
        "training finished; registered models:/ft/1"
    )
    # Everything else is what the log's result would have made.
    same = from_mlflow.model_copy(update={"conditions": from_log.conditions})
    assert same == from_log


def test_while_reading_the_result_and_when_it_is_lost_the_status_names_what_was_tried() -> None:
    ended = T0 + timedelta(minutes=30)
    waiting = compute_status(
        SPEC,
        observed(BackendState.SUCCEEDED, end_time=ended, result_tried=MLFLOW_TRIED),
        None,
        ended + timedelta(seconds=5),
    )
    assert conditions_by_type(waiting)["Running"].message == (
        "the Ray job ft succeeded; reading its result from the SOVAI_RESULT line of the "
        f"submitter's log or the job's MLflow run ({MLFLOW_TRIED}) before the job is called "
        "Succeeded"
    )
    lost = compute_status(
        SPEC,
        observed(BackendState.SUCCEEDED, end_time=ended, result_tried=MLFLOW_TRIED),
        waiting,
        ended + timedelta(hours=1),
    )
    assert lost.error is not None
    assert lost.error.message == (
        "the Ray job ft succeeded at 2026-11-27T08:30:00+00:00, but its result could not be "
        "read within 600 s from the SOVAI_RESULT line of the submitter's log or the job's "
        f"MLflow run ({MLFLOW_TRIED}); the model it registered, if any, is in MLflow under the "
        "run tagged sovai.job.uid with this job's uid"
    )


def test_startup_deadline_fails_with_the_blockers() -> None:
    blocked = ("pod ft-head is unschedulable: 0/7 nodes are available",)
    within = compute_status(
        SPEC, observed(BackendState.PENDING, blockers=blocked), None, T0 + timedelta(seconds=59)
    )
    assert within.phase == FineTuneJobPhase.QUEUED
    late = compute_status(
        SPEC, observed(BackendState.PENDING, blockers=blocked), within, T0 + timedelta(seconds=61)
    )
    assert late.phase == FineTuneJobPhase.FAILED
    assert late.error is not None
    assert late.error.code == "StartupTimeout"
    assert late.error.message == (
        "the job did not start within spec.execution.startupDeadlineSeconds (60 s): "
        "pod ft-head is unschedulable: 0/7 nodes are available"
    )


def test_running_job_is_not_subject_to_startup_deadline() -> None:
    status = compute_status(SPEC, observed(BackendState.RUNNING), None, T0 + timedelta(hours=2))
    assert status.phase == FineTuneJobPhase.RUNNING


def test_suspend_sets_suspended() -> None:
    spec = SPEC.model_copy(update={"suspend": True})
    status = compute_status(spec, observed(BackendState.SUSPENDED), None, T0)
    assert status.phase == FineTuneJobPhase.SUSPENDED
    assert statuses(status)["Suspended"] == "True"
    assert statuses(status)["Running"] == "False"


def test_progress_percentage_and_placement_evidence_survive_teardown() -> None:
    progress = {"step": 25, "totalSteps": 100, "epoch": 0.5, "trainLoss": 1.5, "unknown": 1}
    where = (PodPlacement(pod="ft-head", node="kwok-eu-west-par-gpu-0", region="eu-west-par"),)
    first = compute_status(
        SPEC,
        Observed(
            1,
            VALID,
            BackendObservation(BackendState.RUNNING, name="ft", progress=progress),
            placement=where,
        ),
        None,
        T0,
    )
    assert first.progress is not None
    assert first.progress.percentage == 25
    gone = compute_status(SPEC, observed(BackendState.RUNNING), first, T0)
    assert gone.placement == list(where)


@pytest.mark.parametrize(
    ("status", "state", "reason"),
    [
        ({}, BackendState.PENDING, None),
        ({"jobDeploymentStatus": "Initializing"}, BackendState.PENDING, None),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, BackendState.RUNNING, None),
        (
            {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
            BackendState.SUCCEEDED,
            None,
        ),
        (
            {"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"},
            BackendState.FAILED,
            "RayJobStopped",
        ),
        (
            {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"},
            BackendState.FAILED,
            "DeadlineExceeded",
        ),
        ({"jobDeploymentStatus": "Suspended"}, BackendState.SUSPENDED, None),
    ],
)
def test_rayjob_states(status: dict[str, str], state: BackendState, reason: str | None) -> None:
    rayjob = {
        "metadata": {"name": "ft", "creationTimestamp": "2026-11-27T08:00:00Z"},
        "status": status,
    }
    observation = observe_rayjob(rayjob, [])
    assert observation.state == state
    assert observation.reason == reason
    assert observation.created_at == T0


def test_kuberays_pod_creation_failures_are_blockers_at_once() -> None:
    refusal = 'pods "ft-head-x" is forbidden: exceeded quota: pods, requested: pods=1'
    failure = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreateHeadPod",
        "message": refusal,
    }
    rayjob = {
        "metadata": {"name": "ft", "creationTimestamp": "2026-11-27T08:00:00Z"},
        "status": {
            "jobDeploymentStatus": "Initializing",
            "rayClusterStatus": {
                "conditions": [
                    {"type": "HeadPodReady", "status": "False", "reason": "HeadPodNotFound"},
                    failure,
                ]
            },
        },
    }
    observation = observe_rayjob(rayjob, [])
    assert observation.state == BackendState.PENDING
    assert observation.blockers == (f"FailedCreateHeadPod: {refusal}",)
    failure["status"] = "False"  # KubeRay clears it once pods are created
    assert observe_rayjob(rayjob, []).blockers == ()


def test_pod_blockers_name_the_cause() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/7 nodes are available",
                }
            ],
            "containerStatuses": [
                {
                    "name": "c",
                    "image": "x",
                    "state": {
                        "waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}
                    },
                }
            ],
        },
    }
    assert pod_facts(pod) == PodFacts(
        name="p",
        namespace="n",
        node=None,
        phase="Pending",
        blockers=(
            "pod p is unschedulable: 0/7 nodes are available",
            "pod p container c: ImagePullBackOff: pull access denied",
        ),
    )


def test_startup_deadline_counts_from_the_resume() -> None:
    spec = SPEC.model_copy(update={"suspend": True})
    suspended = compute_status(spec, observed(BackendState.SUSPENDED), None, T0)
    resume_at = T0 + timedelta(hours=1)
    resumed = compute_status(SPEC, observed(BackendState.SUSPENDED), suspended, resume_at)
    assert resumed.phase == FineTuneJobPhase.QUEUED
    assert conditions_by_type(resumed)["Suspended"].reason == "Resumed"
    later = compute_status(
        SPEC, observed(BackendState.PENDING), resumed, resume_at + timedelta(seconds=30)
    )
    assert later.phase == FineTuneJobPhase.QUEUED
    late = compute_status(
        SPEC, observed(BackendState.PENDING), later, resume_at + timedelta(seconds=61)
    )
    assert late.phase == FineTuneJobPhase.FAILED


def test_a_job_held_by_its_queue_is_never_failed_by_the_startup_deadline() -> None:
    spec = SPEC.model_copy(
        update={"placement": SPEC.placement.model_copy(update={"queue_name": "eu-gpus"})}
    )
    held = compute_status(spec, observed(BackendState.SUSPENDED), None, T0 + timedelta(hours=5))
    assert held.phase == FineTuneJobPhase.QUEUED
    assert held.error is None
    running = conditions_by_type(held)["Running"]
    assert running.reason == "WaitingForQuota"
    assert running.message == "RayJob ft waits in queue eu-gpus for quota; it starts once admitted"
    # Where it stands in the queue, once Kueue's Workload for it is seen.
    standing = QueueStanding(2, 3, "insufficient unused quota for nvidia.com/gpu")
    placed = replace(observed(BackendState.SUSPENDED), queue=standing)
    again = compute_status(spec, placed, held, T0 + timedelta(hours=5))
    assert conditions_by_type(again)["Running"].message == (
        "RayJob ft waits in queue eu-gpus for quota (position 2 of 3 waiting; Kueue: "
        "insufficient unused quota for nvidia.com/gpu); it starts once admitted"
    )


def test_a_job_its_queue_just_admitted_gets_its_whole_startup_deadline() -> None:
    # The first pass after Kueue lifts the suspension may come before KubeRay writes the
    # attempt's status.startTime: the RayJob's creation, hours ago, must not count.
    spec = SPEC.model_copy(
        update={"placement": SPEC.placement.model_copy(update={"queue_name": "eu-gpus"})}
    )
    later = T0 + timedelta(hours=5)
    held = compute_status(spec, observed(BackendState.SUSPENDED), None, later)
    released = compute_status(spec, observed(BackendState.PENDING), held, later)
    assert released.phase == FineTuneJobPhase.QUEUED, released.error
    assert conditions_by_type(released)["Running"].reason == "Queued"


def test_the_startup_deadline_counts_from_the_start_of_the_current_attempt() -> None:
    # KubeRay sets status.startTime again when its queue admits the job and when a retry under
    # backoffLimit begins: each attempt gets the whole deadline.
    attempt = T0 + timedelta(hours=2)
    pending = observed(BackendState.PENDING, start_time=attempt)
    within = compute_status(SPEC, pending, None, attempt + timedelta(seconds=59))
    assert within.phase == FineTuneJobPhase.QUEUED
    late = compute_status(SPEC, pending, within, attempt + timedelta(seconds=61))
    assert late.phase == FineTuneJobPhase.FAILED
    assert late.error is not None
    assert late.error.code == "StartupTimeout"


def test_a_kuberay_retry_says_which_attempt_runs_and_the_last_failure_how_many_ran() -> None:
    spec = SPEC.model_copy(
        update={"execution": SPEC.execution.model_copy(update={"backoff_limit": 2})}
    )
    first = compute_status(spec, observed(BackendState.RUNNING), None, T0)
    assert conditions_by_type(first)["Running"].message == "the Ray job ft is running"
    # KubeRay says why the attempt failed while it tears its cluster down, and no longer once
    # the next attempt begins.
    rayjob = {
        "metadata": {"name": "ft", "creationTimestamp": "2026-11-27T08:00:00Z"},
        "status": {
            "jobDeploymentStatus": "Retrying",
            "failed": 1,
            "reason": "AppFailed",
            "message": "the trainer exited with 1",
        },
    }
    retrying = compute_status(spec, _observed_rayjob(rayjob), first, T0)
    assert retrying.phase == FineTuneJobPhase.QUEUED
    assert conditions_by_type(retrying)["Running"].message == (
        "RayJob ft is starting, attempt 2 of 3; attempt 1 failed: AppFailed: the trainer "
        "exited with 1"
    )
    rayjob["status"] = {"jobDeploymentStatus": "Initializing", "failed": 1}
    starting = compute_status(spec, _observed_rayjob(rayjob), retrying, T0)
    assert conditions_by_type(starting)["Running"].message == (
        "RayJob ft is starting, attempt 2 of 3"
    )
    rayjob["status"] = {"jobDeploymentStatus": "Running", "failed": 1}
    second = compute_status(spec, _observed_rayjob(rayjob), starting, T0)
    assert conditions_by_type(second)["Running"].message == (
        "the Ray job ft is running, attempt 2 of 3"
    )
    rayjob["status"] = {
        "jobDeploymentStatus": "Failed",
        "failed": 3,
        "reason": "AppFailed",
        "message": "the trainer exited with 1",
    }
    failed = compute_status(spec, _observed_rayjob(rayjob), second, T0)
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == (
        "AppFailed",
        "the trainer exited with 1 (after 3 attempts, spec.execution.backoffLimit 2)",
    )


def _observed_rayjob(rayjob: dict[str, Any]) -> Observed:
    """What ``observed`` gives, with the backend read from a RayJob as KubeRay wrote it."""
    return replace(observed(BackendState.ABSENT), backend=observe_rayjob(rayjob))


def test_no_startup_deadline_runs_while_kuberay_is_between_two_attempts() -> None:
    # Until KubeRay has deleted the failed attempt's cluster (Retrying, then New), the RayJob's
    # status.startTime is still the failed attempt's: counted from it, a retry would be failed
    # before it began.
    for deployment in ("Retrying", "New"):
        rayjob = {
            "metadata": {"name": "ft", "creationTimestamp": "2026-11-27T08:00:00Z"},
            "status": {
                "jobDeploymentStatus": deployment,
                "failed": 1,
                "startTime": "2026-11-27T08:00:00Z",
            },
        }
        later = compute_status(SPEC, _observed_rayjob(rayjob), None, T0 + timedelta(hours=2))
        assert later.phase == FineTuneJobPhase.QUEUED, deployment
    # Once it starts the next attempt (Initializing, a new startTime), the deadline runs again.
    rayjob["status"] = {
        "jobDeploymentStatus": "Initializing",
        "failed": 1,
        "startTime": "2026-11-27T09:00:00Z",
    }
    late = compute_status(SPEC, _observed_rayjob(rayjob), None, T0 + timedelta(hours=2))
    assert late.error is not None
    assert late.error.code == "StartupTimeout"
