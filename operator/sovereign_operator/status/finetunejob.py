"""compute_status: the one pure function that turns observed facts into a FineTuneJob's status.

Phase and conditions are derived from the same facts in the same pass, so they can never
disagree (kuberay#2314). A condition's lastTransitionTime moves only when its status changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sovereign_training.progress import PROGRESS_KEYS

from ..api.v1alpha1.common import (
    Condition,
    ConditionStatus,
    ErrorInfo,
    PodPlacement,
    StoragePlace,
)
from ..api.v1alpha1.finetunejob import (
    ComputeUsage,
    ExecutionBackend,
    FineTuneJobConditionType,
    FineTuneJobPhase,
    FineTuneJobSpec,
    FineTuneJobStatus,
    MlflowInfo,
    Progress,
    ResolvedHyperparameters,
)
from ..backends.kueue import QueueStanding
from ..backends.types import BackendObservation, BackendState

TERMINAL = frozenset(
    {FineTuneJobPhase.SUCCEEDED, FineTuneJobPhase.FAILED, FineTuneJobPhase.CANCELLED}
)
CONDITION_ORDER = tuple(FineTuneJobConditionType)
_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# The trainer's progress keys (the contract: sovereign_training.progress) that status.progress
# carries; "hyperparameters" goes to status.resolvedHyperparameters instead.
_PROGRESS_KEYS = frozenset(PROGRESS_KEYS) & {
    f.alias or name for name, f in Progress.model_fields.items()
}
_COMPUTE_KEYS = {f.alias or name for name, f in ComputeUsage.model_fields.items()}


@dataclass(frozen=True)
class Validation:
    """The outcome of the Validating step: either the evidence, or what is wrong and where."""

    ok: bool
    policy_name: str | None = None
    allowed_regions: tuple[str, ...] = ()
    requested_regions: tuple[str, ...] | None = None
    regions: tuple[str, ...] = ()
    # Without a dataset size: exact unless chosen_by_trainer names some (they are estimates).
    hyperparameters: ResolvedHyperparameters | None = None
    # Hyperparameters left "auto" that depend on the data: the trainer chooses them.
    chosen_by_trainer: tuple[str, ...] = ()
    code: str | None = None
    message: str | None = None
    field: str | None = None
    residency: bool = False  # the failure is about where the job may run
    places: tuple[StoragePlace, ...] = ()  # where each URI goes (evidence)


@dataclass(frozen=True)
class Observed:
    """Everything compute_status needs to know about the world, gathered by the handler."""

    generation: int
    validation: Validation
    backend: BackendObservation
    backend_kind: ExecutionBackend = ExecutionBackend.KUBERAY
    placement: tuple[PodPlacement, ...] = field(default_factory=tuple)
    startup_deadline_seconds: int = 900
    result_deadline_seconds: int = 600
    # Where its RayJob stands in its Kueue queue, while it waits there for quota.
    queue: QueueStanding | None = None


@dataclass(frozen=True)
class _Decision:
    phase: FineTuneJobPhase
    reason: str
    message: str
    error: ErrorInfo | None = None


RESUMED = "Resumed"
# The Running condition's reason while Kueue holds the job's RayJob for quota.
WAITING_FOR_QUOTA = "WaitingForQuota"


def _was_suspended(condition: Condition | None) -> bool:
    return condition is not None and (
        condition.status == ConditionStatus.TRUE or condition.reason == RESUMED
    )


def _reason(text: str) -> str:
    cleaned = _REASON_UNSAFE.sub("", text) or "Unknown"
    return cleaned if cleaned[0].isalpha() else f"R{cleaned}"


def waiting_since(
    observed: Observed, previous: FineTuneJobStatus | None, now: datetime
) -> datetime | None:
    """Since when the current attempt has been trying to start: the RayJob's creation, the
    last resume, or KubeRay's start of this attempt (it sets status.startTime again when a
    retry begins and when its queue admits the job), whichever is latest. So a retry under
    backoffLimit gets the whole deadline, and time spent waiting in a queue is not start-up
    time. None (no deadline runs) while KubeRay is between two attempts: until it has deleted
    the failed attempt's cluster, status.startTime is still that attempt's."""
    backend = observed.backend
    if backend.between_attempts:
        return None
    moments = [m for m in (backend.created_at, backend.start_time) if m is not None]
    if previous is not None and previous.phase == FineTuneJobPhase.SUSPENDED:
        moments.append(now)  # resuming in this very pass
    if previous is not None and any(
        c.type == FineTuneJobConditionType.RUNNING and c.reason == WAITING_FOR_QUOTA
        for c in previous.conditions
    ):
        # Its queue admitted it since the last pass, which may run before KubeRay has written
        # this attempt's status.startTime: the attempt starts now.
        moments.append(now)
    for condition in previous.conditions if previous else []:
        if condition.type == FineTuneJobConditionType.SUSPENDED and condition.reason == RESUMED:
            moments.append(condition.last_transition_time)
    return max(moments) if moments else None


READING_RESULT = "ReadingResult"


def _awaiting_result(observed: Observed, now: datetime) -> _Decision:
    """A Ray job that succeeded but whose result (the trainer's SOVAI_RESULT line: the
    registered model, its digest, the inputs and compute) has not been read yet. Succeeded is
    terminal, and a ModelDeployment serves only what the result names, so the job stays
    Running while the result is read again, from the log and from the job's MLflow run (which
    keeps it too); it fails with ResultLost only once neither gave it within the result
    deadline. Both messages name what was tried."""
    backend = observed.backend
    finished = backend.end_time or now
    waited = (now - finished).total_seconds()
    limit = observed.result_deadline_seconds
    where = "the SOVAI_RESULT line of the submitter's log"
    if backend.result_tried:
        where += f" or the job's MLflow run ({backend.result_tried})"
    if waited > limit:
        code = "ResultLost"
        message = (
            f"the Ray job {backend.name} succeeded at {finished.isoformat()}, but its result "
            f"could not be read within {limit} s from {where}; the model it registered, if "
            "any, is in MLflow under the run tagged sovai.job.uid with this job's uid"
        )
        return _Decision(
            FineTuneJobPhase.FAILED, code, message, ErrorInfo(code=code, message=message)
        )
    message = (
        f"the Ray job {backend.name} succeeded; reading its result from {where} before the "
        "job is called Succeeded"
    )
    return _Decision(FineTuneJobPhase.RUNNING, READING_RESULT, message)


def _decide(
    spec: FineTuneJobSpec | None,
    observed: Observed,
    previous: FineTuneJobStatus | None,
    now: datetime,
) -> _Decision:
    validation = observed.validation
    backend = observed.backend
    if spec is not None and spec.cancel:
        return _Decision(
            FineTuneJobPhase.CANCELLED,
            "CancelledBySpec",
            "spec.cancel is true: its Ray job was stopped and its pods deleted; the FineTuneJob "
            "stays, with its evidence",
        )
    if not validation.ok:
        code = validation.code or "InvalidSpec"
        message = validation.message or "the spec is invalid"
        return _Decision(
            FineTuneJobPhase.FAILED,
            code,
            message,
            ErrorInfo(code=code, message=message, field=validation.field),
        )
    if backend.state == BackendState.FAILED:
        code = _reason(backend.reason or "TrainingFailed")
        message = backend.message or "the Ray job failed"
        if backend.failed_attempts > 1:
            limit = f", spec.execution.backoffLimit {spec.execution.backoff_limit}" if spec else ""
            message += f" (after {backend.failed_attempts} attempts{limit})"
        return _Decision(
            FineTuneJobPhase.FAILED, code, message, ErrorInfo(code=code, message=message)
        )
    if backend.state == BackendState.SUCCEEDED and backend.result is None:
        return _awaiting_result(observed, now)
    if backend.state == BackendState.SUCCEEDED:
        model = (backend.result or {}).get("modelUri")
        detail = f"; registered {model}" if model else ""
        if backend.result_from:
            detail += (
                f"; its result was read from {backend.result_from}, the submitter's log not "
                "giving it"
            )
        return _Decision(
            FineTuneJobPhase.SUCCEEDED, "TrainingSucceeded", f"training finished{detail}"
        )
    if spec is not None and spec.suspend:
        return _Decision(FineTuneJobPhase.SUSPENDED, "SuspendedBySpec", "spec.suspend is true")
    if backend.state == BackendState.SUSPENDED:
        # Suspended while spec.suspend is false: its queue (Kueue) holds it until there is
        # quota. Waiting for quota is not failing to start, so no deadline runs.
        queue = spec.placement.queue_name if spec is not None else None
        held = f"queue {queue}" if queue else "its queue"
        where = f" ({observed.queue.describe()})" if observed.queue else ""
        message = f"RayJob {backend.name} waits in {held} for quota{where}; it starts once admitted"
        return _Decision(FineTuneJobPhase.QUEUED, WAITING_FOR_QUOTA, message)
    if backend.state in (BackendState.PENDING, BackendState.ABSENT):
        since = waiting_since(observed, previous, now)
        deadline = observed.startup_deadline_seconds
        if since is not None and (now - since).total_seconds() > deadline:
            why = "; ".join(dict.fromkeys(backend.blockers)) or "no pod reported a cause"
            code = "StartupTimeout"
            message = (
                f"the job did not start within spec.execution.startupDeadlineSeconds "
                f"({deadline} s): {why}"
            )
            return _Decision(
                FineTuneJobPhase.FAILED, code, message, ErrorInfo(code=code, message=message)
            )
    attempt = _attempt(spec, backend)
    if backend.state == BackendState.RUNNING:
        return _Decision(
            FineTuneJobPhase.RUNNING, "Running", f"the Ray job {backend.name} is running{attempt}"
        )
    where = (
        f"RayJob {backend.name}"
        if observed.backend_kind == ExecutionBackend.KUBERAY
        else f"submission {backend.name}"
    )
    blockers = "; ".join(dict.fromkeys(backend.blockers))
    message = f"{where} is starting{attempt}" + (f" (waiting: {blockers})" if blockers else "")
    if backend.failed_attempts and backend.message:
        # KubeRay keeps why the last attempt failed only until the next one begins.
        failure = f"{backend.reason}: {backend.message}" if backend.reason else backend.message
        message += f"; attempt {backend.failed_attempts} failed: {failure}"
    return _Decision(FineTuneJobPhase.QUEUED, "Queued", message)


def _attempt(spec: FineTuneJobSpec | None, backend: BackendObservation) -> str:
    """The words ", attempt 2 of 3" once KubeRay has retried under backoffLimit; none before."""
    if not backend.failed_attempts:
        return ""
    of = f" of {spec.execution.backoff_limit + 1}" if spec is not None else ""
    return f", attempt {backend.failed_attempts + 1}{of}"


def _condition(
    kind: FineTuneJobConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    previous: dict[str, Condition],
    generation: int,
    now: datetime,
) -> Condition:
    before = previous.get(kind.value)
    moved = before is None or before.status != status
    return Condition(
        type=kind.value,
        status=status,
        reason=_reason(reason),
        message=message,
        last_transition_time=now if moved or before is None else before.last_transition_time,
        observed_generation=generation,
    )


def _progress(
    observed: BackendObservation, previous: Progress | None, done: bool
) -> Progress | None:
    progress = previous
    if observed.progress:
        values: dict[str, Any] = {
            k: v for k, v in observed.progress.items() if k in _PROGRESS_KEYS and v is not None
        }
        try:
            progress = Progress.model_validate(values)
        except ValidationError:
            progress = previous
    if progress is not None and progress.total_steps:
        percentage = min(100, int(progress.step * 100 / progress.total_steps))
        progress = progress.model_copy(update={"percentage": percentage})
    if done and progress is not None:
        progress = progress.model_copy(update={"percentage": 100, "estimated_remaining_seconds": 0})
    return progress


def _compute(result: dict[str, Any] | None, previous: ComputeUsage | None) -> ComputeUsage | None:
    """The result's compute figures (result["compute"]); the previous ones when it has none."""
    raw = (result or {}).get("compute")
    if not isinstance(raw, dict):
        return previous
    values = {k: v for k, v in raw.items() if k in _COMPUTE_KEYS and v is not None}
    try:
        return ComputeUsage.model_validate(values)
    except ValidationError:
        return previous


def _threshold(compute: ComputeUsage | None) -> tuple[ConditionStatus, str, str] | None:
    """ModificationThresholdExceeded: the fine-tune's compute against one third of the base
    model's; None while the base model's training compute is not known."""
    if compute is None or compute.base_compute_ratio is None:
        return None
    ratio = compute.base_compute_ratio
    used = (
        f"the fine-tune used {compute.training_flops:.3g} FLOP, {ratio:.3g} of the base model's "
        f"{compute.base_model_training_flops:.3g} FLOP"
        if compute.training_flops is not None and compute.base_model_training_flops is not None
        else f"the fine-tune used {ratio:.3g} of the base model's training compute"
    )
    if 3.0 * ratio > 1.0:
        return (
            ConditionStatus.TRUE,
            "MoreThanOneThird",
            f"{used}: more than one third, so under the Commission's guidelines on "
            "general-purpose AI models whoever made this modification is the provider of the "
            "modified model, with the provider's obligations (AI Act Art. 53, Annex XI)",
        )
    return ConditionStatus.FALSE, "AtMostOneThird", f"{used}: not more than one third"


def _merge_placement(
    previous: list[PodPlacement] | None, current: tuple[PodPlacement, ...]
) -> list[PodPlacement] | None:
    """Pods disappear after teardown; the evidence of where they ran must not."""
    merged = {p.pod: p for p in previous or []}
    merged.update({p.pod: p for p in current})
    return [merged[name] for name in sorted(merged)] or None


def compute_status(
    spec: FineTuneJobSpec | None,
    observed: Observed,
    previous: FineTuneJobStatus | None,
    now: datetime,
) -> FineTuneJobStatus:
    """The complete status of a FineTuneJob: phase, all conditions, and the evidence. Pure.

    A terminal phase (Succeeded, Failed, Cancelled) never changes again.
    """
    generation = observed.generation
    if previous is not None and previous.phase in TERMINAL:
        return previous.model_copy(
            update={
                "observed_generation": generation,
                "placement": _merge_placement(previous.placement, observed.placement),
            }
        )
    decision = _decide(spec, observed, previous, now)
    phase = decision.phase
    validation = observed.validation
    backend = observed.backend
    before = {c.type: c for c in (previous.conditions if previous else [])}

    def cond(
        kind: FineTuneJobConditionType, status: ConditionStatus, reason: str, message: str
    ) -> Condition:
        return _condition(kind, status, reason, message, before, generation, now)

    T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
    conditions: list[Condition] = []
    # InputsValidated and ResidencyVerified
    if not validation.ok:
        code, message = decision.reason, decision.message
        if validation.residency:
            conditions.append(
                cond(
                    FineTuneJobConditionType.INPUTS_VALIDATED, T, "Valid", "the spec is well-formed"
                )
            )
            conditions.append(cond(FineTuneJobConditionType.RESIDENCY_VERIFIED, F, code, message))
        else:
            conditions.append(cond(FineTuneJobConditionType.INPUTS_VALIDATED, F, code, message))
            conditions.append(
                cond(
                    FineTuneJobConditionType.RESIDENCY_VERIFIED,
                    U,
                    "NotChecked",
                    "the spec is invalid",
                )
            )
    else:
        conditions.append(
            cond(
                FineTuneJobConditionType.INPUTS_VALIDATED,
                T,
                "Valid",
                f"the spec is valid; hyperparameters: {_hyperparameters_said(validation)}",
            )
        )
        requested = (
            ", ".join(validation.requested_regions)
            if validation.requested_regions
            else "any allowed"
        )
        conditions.append(
            cond(
                FineTuneJobConditionType.RESIDENCY_VERIFIED,
                T,
                "RegionsAllowed",
                f"SovereigntyPolicy {validation.policy_name} allows "
                f"[{', '.join(validation.allowed_regions)}]; requested [{requested}]; "
                f"every pod is pinned to [{', '.join(validation.regions)}]",
            )
        )
    # Admitted
    kuberay = observed.backend_kind == ExecutionBackend.KUBERAY
    what = "RayJob" if kuberay else "Ray job submission"
    if not validation.ok:
        conditions.append(
            cond(FineTuneJobConditionType.ADMITTED, F, "NotAdmitted", "the job failed validation")
        )
    elif backend.state != BackendState.ABSENT or (
        previous is not None and previous.start_time is not None
    ):
        conditions.append(
            cond(
                FineTuneJobConditionType.ADMITTED,
                T,
                "RayJobCreated" if kuberay else "Submitted",
                f"{what} {backend.name or ''} created".replace("  ", " "),
            )
        )
    else:
        reason = "SuspendedBySpec" if phase == FineTuneJobPhase.SUSPENDED else "Creating"
        blocked = "; ".join(dict.fromkeys(backend.blockers))
        message = f"no {what} yet" + (f": {blocked}" if blocked else "")
        conditions.append(cond(FineTuneJobConditionType.ADMITTED, F, reason, message))
    for kind, target in (
        (FineTuneJobConditionType.RUNNING, FineTuneJobPhase.RUNNING),
        (FineTuneJobConditionType.SUCCEEDED, FineTuneJobPhase.SUCCEEDED),
        (FineTuneJobConditionType.FAILED, FineTuneJobPhase.FAILED),
        (FineTuneJobConditionType.SUSPENDED, FineTuneJobPhase.SUSPENDED),
    ):
        if phase == target:
            conditions.append(cond(kind, T, decision.reason, decision.message))
        elif kind == FineTuneJobConditionType.RUNNING and phase == FineTuneJobPhase.QUEUED:
            # Why it is not running yet: what the RayJob waits for (quota in its queue, pods,
            # KubeRay's failures).
            conditions.append(cond(kind, F, decision.reason, decision.message))
        elif kind == FineTuneJobConditionType.SUSPENDED and _was_suspended(before.get(kind.value)):
            # Remembered, so the start-up deadline counts from the resume, not from creation.
            conditions.append(cond(kind, F, RESUMED, "resumed after a suspension"))
        else:
            conditions.append(cond(kind, F, phase.value, f"the job is {phase.value}"))
    if phase == FineTuneJobPhase.CANCELLED:
        # Only on a cancelled job: the others never carry it.
        conditions.append(
            cond(FineTuneJobConditionType.CANCELLED, T, decision.reason, decision.message)
        )

    prev = previous or FineTuneJobStatus()
    start_time = prev.start_time or (
        backend.created_at if backend.state != BackendState.ABSENT else None
    )
    terminal = phase in TERMINAL
    completion = (backend.end_time or now) if terminal else None
    result = backend.result if phase == FineTuneJobPhase.SUCCEEDED else None
    mlflow = prev.mlflow
    fine_tuned = prev.fine_tuned_model
    output_uri = prev.output_uri
    if result:
        output_uri = _str(result.get("outputUri")) or output_uri
        mlflow = MlflowInfo(
            run_id=_str(result.get("runId")),
            experiment_id=_str(result.get("experimentId")),
            model_name=_str(result.get("modelName")),
            model_version=_str(result.get("modelVersion")),
            model_uri=_str(result.get("modelUri")),
            model_digest=_str(result.get("modelDigest")),
        )
        fine_tuned = _str(result.get("modelUri"))
    compute = _compute(result, prev.compute)
    threshold = _threshold(compute)
    if threshold is not None:
        conditions.append(
            cond(FineTuneJobConditionType.MODIFICATION_THRESHOLD_EXCEEDED, *threshold)
        )
    ok = validation.ok
    return FineTuneJobStatus(
        phase=phase,
        conditions=conditions,
        observed_generation=generation,
        start_time=start_time,
        completion_time=completion,
        ray_job_name=backend.name
        if observed.backend_kind == ExecutionBackend.KUBERAY and backend.name
        else prev.ray_job_name,
        submission_id=backend.name
        if observed.backend_kind != ExecutionBackend.KUBERAY and backend.name
        else prev.submission_id,
        policy_name=validation.policy_name or prev.policy_name,
        regions=list(validation.regions) if ok else prev.regions,
        storage=(list(validation.places) or None) if ok else prev.storage,
        placement=_merge_placement(prev.placement, observed.placement),
        progress=_progress(backend, prev.progress, phase == FineTuneJobPhase.SUCCEEDED),
        resolved_hyperparameters=_resolved_hyperparameters(
            validation, backend, prev.resolved_hyperparameters
        ),
        mlflow=mlflow,
        compute=compute,
        fine_tuned_model=fine_tuned,
        output_uri=output_uri,
        error=decision.error,
    )


def _hyperparameters_said(validation: Validation) -> str:
    """The hyperparameters as validation knows them: values, and "auto" for what the trainer
    chooses from the dataset's size."""
    hp = validation.hyperparameters
    if hp is None:
        return "none resolved"
    values: dict[str, Any] = {
        "epochs": hp.epochs,
        "batchSize": hp.batch_size,
        "microBatchSize": hp.micro_batch_size,
        "learningRate": f"{hp.learning_rate:g}",
    }
    for name in validation.chosen_by_trainer:
        values[name] = "auto"
    said = " ".join(f"{name}={value}" for name, value in values.items())
    if validation.chosen_by_trainer:
        said += " (the trainer chooses each auto from the dataset's size and reports it)"
    return said


def _reported_hyperparameters(backend: BackendObservation) -> ResolvedHyperparameters | None:
    """What the trainer reported it trains with (its progress or result lines)."""
    for document in (backend.result, backend.progress):
        raw = (document or {}).get("hyperparameters")
        if isinstance(raw, dict):
            try:
                return ResolvedHyperparameters.model_validate(raw)
            except ValidationError:
                continue
    return None


def _resolved_hyperparameters(
    validation: Validation, backend: BackendObservation, previous: ResolvedHyperparameters | None
) -> ResolvedHyperparameters | None:
    """The trainer's report once there is one; before, validation's values when none depends
    on the data (an estimate is never reported as what the job trains with); otherwise what
    was reported before."""
    reported = _reported_hyperparameters(backend)
    if reported is not None:
        return reported
    if validation.ok and not validation.chosen_by_trainer:
        return validation.hyperparameters
    return previous


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def conditions_by_type(status: FineTuneJobStatus) -> dict[str, Condition]:
    """The conditions of a status keyed by type (for tests and event messages)."""
    return {c.type: c for c in status.conditions}


def result_placement(result: dict[str, Any] | None) -> tuple[PodPlacement, ...]:
    """Where a Ray job on an existing cluster ran, as the trainer reported it."""
    nodes = (result or {}).get("nodes") or []
    return tuple(
        PodPlacement(
            pod=f"ray-node/{n.get('node')}", node=str(n.get("node")), region=str(n.get("region"))
        )
        for n in nodes
        if isinstance(n, dict) and n.get("node")
    )
