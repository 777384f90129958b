"""compute_status: the one pure function that turns observed facts into a ModelDeployment's status.

Phase and the five conditions come from one decision, so they cannot disagree. A condition's
lastTransitionTime moves only when its status changes. Nothing here is terminal: the timer
recomputes every pass, so a fixed spec or a job that succeeds later heals the deployment.

ModelVerified says whether the model the pods fetched is the one expected. The fetch init
containers refuse (and record why) a fineTuneJobRef's model whose MLflow tags do not name the
job or whose digest is not the one the trainer recorded; a refusal, or a fetched digest that
differs from the job's record, makes the deployment Failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from ..api.v1alpha1.common import Condition, ConditionStatus, ErrorInfo, PodPlacement
from ..api.v1alpha1.modeldeployment import (
    ModelDeploymentConditionType,
    ModelDeploymentPhase,
    ModelDeploymentStatus,
)
from ..validation.model_source import REF_FIELD, Resolution
from .finetunejob import Validation
from .serving_facts import DeploymentFacts, FetchRecord, blocker_reason

Phase = ModelDeploymentPhase
Type = ModelDeploymentConditionType
T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
Verdict = tuple[ConditionStatus, str, str]  # a condition's status, reason and message
URI_FIELD = "spec.model.uri"
BASE_FIELD = "spec.model.baseModel"
_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class ServingObserved:
    """Everything compute_status needs, gathered by the handler."""

    generation: int
    validation: Validation  # parse + policy; ok=False says what is wrong and where
    resolution: Resolution | None  # None when the spec could not be parsed
    suspend: bool = False
    deployment: DeploymentFacts | None = None
    wanted_replicas: int | None = None  # what the operator asked for (None: the HPA decides)
    blockers: tuple[str, ...] = ()
    placement: tuple[PodPlacement, ...] = field(default_factory=tuple)
    url: str | None = None
    served_model_name: str | None = None
    fetched_digest: str | None = None
    fetched_base_digest: str | None = None  # an unmerged adapter's base, as fetched
    fetch: FetchRecord | None = None  # fetch-model's record: a refusal, else what it checked
    base_fetch: FetchRecord | None = None  # fetch-base-model's record


@dataclass(frozen=True)
class _Decision:
    phase: ModelDeploymentPhase
    reason: str
    message: str
    error: ErrorInfo | None = None


def _ratio(facts: DeploymentFacts) -> str:
    return f"{facts.ready}/{facts.replicas} replicas ready"


def _decide(observed: ServingObserved, verified: Verdict) -> _Decision:
    validation, resolution, facts = observed.validation, observed.resolution, observed.deployment
    if not validation.ok:
        code = validation.code or "InvalidSpec"
        message = validation.message or "the spec is invalid"
        return _Decision(
            Phase.FAILED,
            code,
            message,
            ErrorInfo(code=code, message=message, field=validation.field),
        )
    assert resolution is not None
    if resolution.uri is None:
        if resolution.final:
            error = ErrorInfo(code=resolution.reason, message=resolution.message, field=REF_FIELD)
            return _Decision(Phase.FAILED, resolution.reason, resolution.message, error)
        return _Decision(Phase.PENDING, resolution.reason, resolution.message)
    if observed.suspend:
        still = f"; {facts.ready} replicas still running" if facts and facts.ready else ""
        return _Decision(
            Phase.SUSPENDED, "Suspended", f"spec.suspend is true: scaled to zero{still}"
        )
    if verified[0] == F:
        # The pods refuse to serve it; waiting will not help until the model or the job changes.
        _, reason, message = verified
        error = ErrorInfo(code=reason, message=message, field=_model_field(observed))
        return _Decision(Phase.FAILED, reason, message, error)
    if facts is None:
        return _Decision(Phase.DEPLOYING, "Creating", "creating the Deployment")
    waiting = "; ".join(observed.blockers)
    if facts.deadline_exceeded:
        reason = (
            blocker_reason(observed.blockers[0])
            if observed.blockers
            else "ProgressDeadlineExceeded"
        )
        message = f"the rollout made no progress within its deadline ({_ratio(facts)})"
        message += f": {waiting}" if waiting else ""
        return _Decision(Phase.DEGRADED, reason, message)
    if not facts.complete:
        message = f"rolling out: {_ratio(facts)}" + (f" (waiting: {waiting})" if waiting else "")
        return _Decision(Phase.DEPLOYING, "RollingOut", message)
    if facts.replicas == 0:
        return _Decision(Phase.PENDING, "ScaledToZero", "the Deployment has 0 replicas")
    if facts.ready >= facts.replicas:
        return _Decision(Phase.READY, "Ready", f"{_ratio(facts)}, serving at {observed.url}")
    message = _ratio(facts) + (f": {waiting}" if waiting else "")
    return _Decision(Phase.DEGRADED, "ReplicasUnavailable", message)


def _reason(text: str) -> str:
    cleaned = _REASON_UNSAFE.sub("", text) or "Unknown"
    return cleaned if cleaned[0].isalpha() else f"R{cleaned}"


def _model_resolved(observed: ServingObserved) -> tuple[ConditionStatus, str, str]:
    validation, resolution = observed.validation, observed.resolution
    if resolution is None:
        return U, "NotChecked", "the spec is invalid"
    if not validation.ok and (validation.field or "").startswith("spec.model"):
        return F, validation.code or "PolicyViolation", validation.message or ""
    if resolution.uri is None:
        return F, resolution.reason, resolution.message
    return T, resolution.reason, resolution.message


def _residency(observed: ServingObserved) -> tuple[ConditionStatus, str, str]:
    validation = observed.validation
    if not validation.ok:
        if validation.residency:
            return F, validation.code or "PolicyViolation", validation.message or ""
        return U, "NotChecked", "the spec is invalid"
    requested = ", ".join(validation.requested_regions or ()) or "any allowed"
    return (
        T,
        "RegionsAllowed",
        f"SovereigntyPolicy {validation.policy_name} allows "
        f"[{', '.join(validation.allowed_regions)}]; requested [{requested}]; "
        f"every pod is pinned to [{', '.join(validation.regions)}]",
    )


def _model_field(observed: ServingObserved) -> str:
    """The spec field that named the model (or base) that was refused."""
    resolution = observed.resolution
    if resolution is None or resolution.reason != "UriGiven":
        return REF_FIELD
    model_refused = observed.fetch is not None and observed.fetch.reason
    base_refused = observed.base_fetch is not None and observed.base_fetch.reason
    return BASE_FIELD if base_refused and not model_refused else URI_FIELD


def _model_verified(observed: ServingObserved, kept: Condition | None) -> Verdict:
    """Whether the pods fetched the model expected: refused (False), checked (True), nothing to
    check it against or not fetched yet (Unknown). ``kept``: the previous ModelVerified, for the
    same model, stands while no pod has a record (pods come and go)."""
    resolution = observed.resolution
    if not observed.validation.ok or resolution is None or resolution.uri is None:
        return U, "NotChecked", "there is no model to verify yet"
    uri, provenance = resolution.uri, resolution.provenance
    for record, container in (
        (observed.fetch, "fetch-model"),
        (observed.base_fetch, "fetch-base-model"),
    ):
        if record is not None and record.reason:
            return (
                F,
                record.reason,
                f"init container {container} refused {record.uri}: {record.error}",
            )
    fetched = observed.fetched_digest
    if fetched is None:
        if kept is not None:
            return kept.status, kept.reason, kept.message
        return U, "NotFetched", f"no pod has fetched {uri} yet"
    checked = observed.fetch or FetchRecord(uri)
    if provenance is not None:
        if provenance.digest and fetched != provenance.digest:
            return (
                F,
                "DigestMismatch",
                f"{uri}: the pods fetched digest {fetched}; the FineTuneJob's trainer recorded "
                f"{provenance.digest}",
            )
        if checked.job_uid != provenance.job_uid:
            return U, "NotVerified", f"{uri}: fetched {fetched} without checking its provenance"
        if provenance.digest:
            files = f"the fetched files have the digest its trainer recorded ({fetched})"
        elif checked.expected_digest:
            files = f"the fetched files have the digest its version's tag records ({fetched})"
        else:  # a job from before digests were recorded, on an untagged version
            files = f"no digest was recorded to check the fetched files ({fetched}) against"
        return (
            T,
            "Verified",
            f"{uri}: its MLflow version names the FineTuneJob's uid {provenance.job_uid}; {files}",
        )
    if checked.expected_digest:
        return (
            T,
            "DigestVerified",
            f"{uri}: the fetched files have the digest its MLflow version records ({fetched})",
        )
    return (
        U,
        "NoExpectation",
        f"{uri}: fetched {fetched}; no FineTuneJob or MLflow digest tag says what it should be",
    )


def _kept_digest(
    fetched: str | None, uri: str | None, previous_uri: str | None, previous: str | None
) -> str | None:
    """The digest of what the pods serve at ``uri``: as fetched now, else as recorded before
    for the same URI (pods come and go; the record stays until the model changes)."""
    if uri is None:
        return None
    if fetched is not None:
        return fetched
    return previous if previous_uri == uri else None


def compute_status(
    observed: ServingObserved, previous: ModelDeploymentStatus | None, now: datetime
) -> ModelDeploymentStatus:
    """The complete status of a ModelDeployment: phase, all five conditions, the evidence."""
    before = {c.type: c for c in (previous.conditions if previous else [])}
    same_model = (
        previous is not None
        and observed.resolution is not None
        and previous.model_uri == observed.resolution.uri
    )
    verified = _model_verified(
        observed, before.get(Type.MODEL_VERIFIED.value) if same_model else None
    )
    decision = _decide(observed, verified)
    phase = decision.phase

    def cond(
        kind: ModelDeploymentConditionType, value: tuple[ConditionStatus, str, str]
    ) -> Condition:
        status, reason, message = value
        old = before.get(kind.value)
        moved = old is None or old.status != status
        return Condition(
            type=kind.value,
            status=status,
            reason=_reason(reason),
            message=message,
            last_transition_time=now if moved or old is None else old.last_transition_time,
            observed_generation=observed.generation,
        )

    mine = (decision.reason, decision.message)
    progressing = (T if phase == Phase.DEPLOYING else F, *mine)
    ready = (T if phase == Phase.READY else F, *mine)
    conditions = [
        cond(Type.MODEL_RESOLVED, _model_resolved(observed)),
        cond(Type.RESIDENCY_VERIFIED, _residency(observed)),
        cond(Type.MODEL_VERIFIED, verified),
        cond(Type.PROGRESSING, progressing),
        cond(Type.READY, ready),
    ]
    uri = observed.resolution.uri if observed.resolution else None
    base = observed.resolution.base if observed.resolution else None
    base_uri = base.uri if base and uri else None
    digest = _kept_digest(
        observed.fetched_digest, uri, previous.model_uri if previous else None,
        previous.model_digest if previous else None,
    )  # fmt: skip
    base_digest = _kept_digest(
        observed.fetched_base_digest, base_uri, previous.base_model_uri if previous else None,
        previous.base_model_digest if previous else None,
    )  # fmt: skip
    validation = observed.validation
    facts = observed.deployment
    deployed = uri is not None and validation.ok
    return ModelDeploymentStatus(
        phase=phase,
        conditions=conditions,
        observed_generation=observed.generation,
        url=observed.url if deployed else None,
        replicas=observed.wanted_replicas
        if observed.wanted_replicas is not None
        else (facts.replicas if facts else None),
        ready_replicas=facts.ready if facts else (0 if deployed else None),
        model_uri=uri,
        model_digest=digest,
        base_model_uri=base_uri,
        base_model_digest=base_digest,
        served_model_name=observed.served_model_name,
        policy_name=validation.policy_name,
        regions=list(validation.regions) if validation.ok else None,
        storage=list(validation.places) or None if validation.ok else None,
        placement=sorted(observed.placement, key=lambda p: p.pod) or None,
        error=decision.error,
    )
