"""FineTuneJob handlers: parse -> decide -> ensure -> write status, each one call.

One reconcile serves the create, resume and update handlers and the level-based follow-up
sweep (finetunejob_follow.py), so the same facts always lead to the same status, whichever
event woke the operator up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.v1alpha1.common import PodPlacement
from ..api.v1alpha1.finetunejob import (
    ExecutionBackend,
    FineTuneJobPhase,
    FineTuneJobSpec,
    FineTuneJobStatus,
)
from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from ..audit import facts as audit_facts
from ..audit.facts import ADMITTED
from ..audit.records import Fact, Head, Subject
from ..backends.context import JobContext
from ..backends.kuberay import KubeRayBackend
from ..backends.kueue import QueueStanding, standing
from ..backends.pods import PodFacts
from ..backends.raycluster import RayClusterBackend
from ..backends.types import BackendObservation, BackendState
from ..builders.context import QUEUE_NAME_LABEL, Owner, Residency
from ..k8s.client import FINETUNEJOB, ApiError
from ..k8s.events import last_change, transition_key
from ..policy.places import hub_mirror, routes_document
from ..status.finetunejob import (
    TERMINAL,
    Observed,
    Validation,
    compute_status,
    result_placement,
    waiting_since,
)
from ..status.patch import status_patch
from ..validation.finetunejob import pods_within_regions, validate
from .audit_trail import record, subject, with_trail
from .indexes import labels_of_namespace, one, policies_of
from .state import JobRef, OperatorState, state_of

log = logging.getLogger(__name__)
KIND = "FineTuneJob"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def parse_status(status: Mapping[str, Any] | None) -> FineTuneJobStatus | None:
    """The stored status, typed; None when absent or unreadable (then it is recomputed)."""
    if not status or "phase" not in status:
        return None
    try:
        return FineTuneJobStatus.model_validate(dict(status))
    except ValidationError:
        log.warning("ignoring an unreadable status", exc_info=True)
        return None


def _placement(
    pods: tuple[PodFacts, ...], nodes: kopf.Index[str, Any] | None, region_label: str
) -> tuple[PodPlacement, ...]:
    result = []
    for pod in pods:
        if not pod.node:
            continue
        labels = (one(nodes, pod.node) if nodes is not None else None) or {}
        result.append(
            PodPlacement(pod=pod.name, node=pod.node, region=labels.get(region_label, "unknown"))
        )
    return tuple(result)


def _announce(
    state: OperatorState,
    body: kopf.Body,
    previous: FineTuneJobStatus | None,
    new: FineTuneJobStatus,
) -> None:
    """An Event on every phase transition, with the message of the condition that moved."""
    if previous is not None and previous.phase == new.phase:
        return
    message = new.error.message if new.error else ""
    # Back from Running to Queued is a retry under backoffLimit: the Running condition says
    # which attempt starts, and why the last one failed.
    retry = (
        previous is not None
        and previous.phase == FineTuneJobPhase.RUNNING
        and new.phase == FineTuneJobPhase.QUEUED
    )
    wanted = "Running" if retry else "Admitted"
    if not message:
        for condition in new.conditions:
            if condition.type == new.phase_name or (
                new.phase == FineTuneJobPhase.QUEUED and condition.type == wanted
            ):
                message = condition.message
    if new.phase == FineTuneJobPhase.QUEUED:
        # The residency evidence goes with the Queued event: one write per transition.
        for condition in new.conditions:
            if condition.type == "ResidencyVerified" and condition.status.value == "True":
                message = f"{message}; {condition.message}"
    kind = "Warning" if new.phase == FineTuneJobPhase.FAILED or retry else "Normal"
    before = previous.phase_name if previous else "New"
    changed = last_change(previous.conditions) if previous else None
    state.event(
        body,
        kind,
        new.phase_name,
        f"{before} -> {new.phase_name}: {message}".strip(),
        transition_key(before, new.phase_name, changed),
    )


def _backend(state: OperatorState, spec: FineTuneJobSpec) -> KubeRayBackend | RayClusterBackend:
    if spec.execution.backend == ExecutionBackend.RAY_CLUSTER:
        return state.raycluster
    return state.kuberay


def _seen(
    rayjob_version: str | None, pods: tuple[PodFacts, ...], queue: QueueStanding | None
) -> Hashable:
    """What a follow-up pass looks at besides the clock: the RayJob, its pods and its place
    in its Kueue queue (which moves when other workloads are admitted). Spec changes come as
    update events, which the update handler reconciles at once."""
    return (rayjob_version, pods, queue)


def _resource_version(obj: Mapping[str, Any] | None) -> str | None:
    version = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return None if version is None else str(version)


def _observed_children(
    indexes: Mapping[str, Any], uid: str
) -> tuple[dict[str, Any] | None, tuple[PodFacts, ...], QueueStanding | None]:
    live = one(indexes["sovai_rayjobs"], uid) if "sovai_rayjobs" in indexes else None
    pods = tuple(sorted(indexes.get("sovai_pods", {}).get(uid, ()), key=lambda p: p.name))
    return live, pods, _queue_standing(indexes, live)


def _queue_standing(
    indexes: Mapping[str, Any], live: Mapping[str, Any] | None
) -> QueueStanding | None:
    """Where the RayJob stands among the workloads waiting in its LocalQueue; None unless
    Kueue holds it there."""
    metadata = (live or {}).get("metadata") or {}
    queue = (metadata.get("labels") or {}).get(QUEUE_NAME_LABEL)
    workloads = indexes.get("sovai_workloads")
    if not queue or workloads is None or not (live or {}).get("spec", {}).get("suspend"):
        return None
    waiting = workloads.get(f"{metadata.get('namespace')}/{queue}", ())
    return standing(waiting, str(metadata.get("uid")))


def needs_pass(state: OperatorState, uid: str) -> bool:
    """Whether a follow-up pass over a job has anything to do: its RayJob or pods changed
    since the last pass, or a deadline may have passed. No I/O: it runs for every job on
    every tick."""
    live, pods, queue = _observed_children(state.indexes, uid)
    return state.due(uid, _seen(_resource_version(live), pods, queue))


def reconcile(
    state: OperatorState,
    body: kopf.Body,
    *,
    handler: str,
    raise_permanent: bool,
    indexes: Mapping[str, Any],
    kopf_patch: kopf.Patch | None = None,
) -> None:
    """One level-based pass over a FineTuneJob. With ``kopf_patch`` (the create, resume and
    update handlers) the status goes into Kopf's own patch, written in one request together
    with Kopf's record of what it handled; without it (follow-ups), it is patched here."""
    meta, namespace, name = body.metadata, body.metadata.namespace, body.metadata.name
    uid = str(meta.uid)
    assert namespace is not None
    assert name is not None
    live, pods, queue = _observed_children(indexes, uid)
    with state.job_lock(uid), state.measured(KIND, handler):
        status = body.get("status")
        previous = parse_status(status)
        if previous is not None and previous.phase in TERMINAL:
            state.metrics.phases.set(uid, previous.phase.value)
            state.unfollow(uid)
            return
        generation = int(meta.get("generation") or 1)
        policies = policies_of(indexes.get("sovai_policies"))
        spec, validation = validate(
            body.get("spec") or {},
            namespace,
            labels_of_namespace(state.kube, indexes.get("sovai_namespaces"), namespace),
            policies,
            state.settings.default_policy,
            state.build.runtime_image,
            state.platform,
        )
        backend_kind = ExecutionBackend.KUBERAY
        deadline = state.settings.startup_deadline_seconds
        observation = BackendObservation(BackendState.ABSENT)
        placement: tuple[PodPlacement, ...] = ()
        ctx: JobContext | None = None
        if spec is not None:
            backend_kind = spec.execution.backend
            deadline = deadline or spec.execution.startup_deadline_seconds
        about = subject(KIND, body)
        policy_digest = previous.audit.policy_digest if previous and previous.audit else None
        if spec is not None and validation.ok:
            # Residency is also where the pods are, not only where they were pinned: a region
            # the policy dropped while they ran is a violation too.
            bound_policy = policies[str(validation.policy_name)]
            validation = pods_within_regions(
                validation, _placement(pods, indexes.get("sovai_nodes"), bound_policy.region_label)
            )
        if spec is not None and validation.ok:
            assert validation.policy_name is not None
            assert validation.hyperparameters is not None
            policy = policies[validation.policy_name]
            # Recorded before anything is made for the job: what it was admitted to do, and
            # under which rules. The trainer is given the admission record's place.
            bound = audit_facts.policy_facts(
                about,
                validation.policy_name,
                audit_facts.content_digest(policy),
                validation.regions,
                policy_digest,
            )
            policy_digest = audit_facts.content_digest(policy)
            record(state, body, about, [*bound, audit_facts.job_admission(about, generation, spec)])
            admission = admission_head(state, uid, previous)
            ctx = JobContext(
                spec=spec,
                owner=Owner(name=name, namespace=namespace, uid=uid),
                generation=generation,
                residency=Residency(
                    validation.policy_name,
                    policy.region_label,
                    validation.regions,
                    routes_document(policy),
                    hub_mirror(validation.places),
                ),
                hyperparameters=validation.hyperparameters,
                policy=policy,
                build=state.build,
                previous=previous,
                live_rayjob=live,
                pods=pods,
                chain_head=str(admission) if admission else None,
            )
            if not spec.cancel:
                observation = _backend(state, spec).reconcile(ctx)
            placement = _placement(pods, indexes.get("sovai_nodes"), policy.region_label)
            placement += result_placement(observation.result)
        observed = Observed(
            generation=generation,
            validation=validation,
            backend=observation,
            backend_kind=backend_kind,
            placement=placement,
            startup_deadline_seconds=deadline or 900,
            result_deadline_seconds=state.settings.result_deadline_seconds,
            queue=queue,
        )
        new = compute_status(spec, observed, previous, _now())
        facts = _job_facts(about, generation, validation, new, observation)
        runs = live is not None or bool(previous and previous.submission_id)
        violating = not validation.ok and runs and not (spec is not None and spec.cancel)
        cancelling = new.phase == FineTuneJobPhase.CANCELLED and runs
        if violating:
            # The policy no longer allows what runs (tightened, or gone): stop it, recorded
            # first, rather than leave its pods where they may not be.
            reason = validation.code or "PolicyViolation"
            facts.append(audit_facts.stopped(about, generation, reason, validation.message or ""))
        if cancelling:
            message = "spec.cancel is true"
            facts.append(audit_facts.stopped(about, generation, "Cancelled", message))
        new = with_trail(new, record(state, body, about, facts, policy_digest), previous)
        if violating or cancelling:
            owner = Owner(name=name, namespace=namespace, uid=uid)
            why = (
                "the job was cancelled (spec.cancel)"
                if cancelling
                else "the SovereigntyPolicy no longer allows the job"
            )
            _stop(state, body, owner, previous, policies, why)
        if (
            ctx is not None
            and spec is not None
            and new.error is not None
            and new.error.code == "StartupTimeout"
        ):
            _backend(state, spec).stop(ctx)
        patch = status_patch(status, new)
        if patch is not None:
            if kopf_patch is not None:
                kopf_patch.setdefault("status", {}).update(patch)
            else:
                try:
                    state.kube.merge_patch(
                        FINETUNEJOB, namespace, name, {"status": patch}, subresource="status"
                    )
                except ApiError as error:
                    if error.status != 404:
                        raise
                    state.forget(uid)  # deleted while this pass ran: nothing left to record
                    return
        state.metrics.phases.set(uid, new.phase_name)
        version = observation.version or _resource_version(live)
        if new.phase in TERMINAL:
            state.unfollow(uid)
        else:
            state.jobs[uid] = JobRef(namespace, name)
            state.seen[uid] = (
                _seen(version, pods, queue),
                time.monotonic() + _recheck_after(state, new, observed, live, deadline or 900),
            )
        _announce(state, body, previous, new)
    if not validation.ok and raise_permanent:
        raise kopf.PermanentError(validation.message or "invalid FineTuneJob")


def admission_head(
    state: OperatorState, uid: str, previous: FineTuneJobStatus | None
) -> Head | None:
    """The admission record to give the trainer: from the chain, for a job not started yet or
    already given one. A job that started before the operator kept a log gets none, so that
    its job.json (and so its running RayJob) does not change when the log is turned on."""
    if state.audit is None:
        return None
    started = previous is not None and previous.start_time is not None
    given = previous is not None and previous.audit is not None and previous.audit.admission
    if started and not given:
        return None
    return state.audit.first(uid, ADMITTED)


def _stop(
    state: OperatorState,
    body: kopf.Body,
    owner: Owner,
    previous: FineTuneJobStatus | None,
    policies: Mapping[str, SovereigntyPolicySpec],
    why: str,
) -> None:
    """Stop a job's RayJob (and so its pods), or its submission on a Ray cluster: it was
    cancelled, or the policy it was admitted under no longer allows it. The FineTuneJob
    stays, with its evidence."""
    state.kuberay.stop_owned(owner)
    raw = body.get("spec") or {}
    bound = previous.policy_name if previous else None
    if previous is not None and previous.submission_id and bound is not None and bound in policies:
        ref = (raw.get("execution") or {}).get("rayClusterRef")
        try:
            state.raycluster.delete_run(policies[bound], ref, owner, previous)
        except Exception:
            log.warning("could not stop the Ray job of %s/%s", owner.namespace, owner.name)
    state.event(
        body,
        "Warning",
        "Stopped",
        f"its pods were stopped: {why}",
        f"stopped: {why}",
    )


def _job_facts(
    about: Subject,
    generation: int,
    validation: Validation,
    new: FineTuneJobStatus,
    observation: BackendObservation,
) -> list[Fact]:
    """What this pass observed, for the audit log: a refusal, or the job's children, pods,
    outcome and phase."""
    if not validation.ok:
        reason, message = validation.code or "Invalid", validation.message or ""
        return [audit_facts.refusal(about, generation, reason, message), *_phase(about, new)]
    found = []
    if observation.uid and observation.name:
        found.append(audit_facts.child_fact(about, "RayJob", observation.name, observation.uid))
    if new.submission_id:
        found.append(
            audit_facts.child_fact(about, "RayJobSubmission", new.submission_id, new.submission_id)
        )
    found += audit_facts.placement_facts(about, new.placement or ())
    return found + audit_facts.job_outcome_facts(
        about, new, observation.result, observation.result_from
    )


def _phase(about: Subject, new: FineTuneJobStatus) -> list[Fact]:
    return [audit_facts.phase_fact(about, new.phase_name, new.observed_generation, new)]


def _recheck_after(
    state: OperatorState,
    new: FineTuneJobStatus,
    observed: Observed,
    live: dict[str, Any] | None,
    deadline: int,
) -> float:
    """How long an unchanged job may go without a pass: until its start-up deadline while it
    waits to start, every tick while a dashboard or Ray cluster may report progress, and
    5 minutes otherwise (a safety net; any change to the job or its children ends the wait)."""
    if new.submission_id and new.phase in (FineTuneJobPhase.QUEUED, FineTuneJobPhase.RUNNING):
        return 0.0  # the state of a job on a Ray cluster is only seen by asking it
    if new.phase == FineTuneJobPhase.QUEUED:
        now = _now()
        since = waiting_since(observed, new, now)
        if since is None or observed.backend.state == BackendState.SUSPENDED:
            # No deadline runs (nothing made yet, or held by its queue): any change to the
            # RayJob wakes the job up, and this is only the safety net.
            return 300.0 if since is not None else state.settings.reconcile_interval_seconds
        remaining = (since - now).total_seconds() + deadline + 1
        return max(remaining, state.settings.reconcile_interval_seconds)
    if new.phase == FineTuneJobPhase.RUNNING and observed.backend.state == BackendState.SUCCEEDED:
        return state.settings.reconcile_interval_seconds  # its result is read again (ReadingResult)
    if new.phase == FineTuneJobPhase.RUNNING and ((live or {}).get("status") or {}).get(
        "dashboardURL"
    ):
        return 0.0
    return 300.0


def on_change(body: kopf.Body, memo: Any, patch: kopf.Patch, **kwargs: Any) -> None:
    """Create, resume and spec updates."""
    reconcile(
        state_of(memo),
        body,
        handler="ftj-reconcile",
        raise_permanent=True,
        indexes=kwargs,
        kopf_patch=patch,
    )


def follow(state: OperatorState, uid: str, job: JobRef) -> None:
    """A follow-up pass, from the sweep: read the job as it is now, then reconcile it."""
    body = state.current(uid, job, FINETUNEJOB)
    if body is not None:
        reconcile(state, body, handler="ftj-follow", raise_permanent=False, indexes=state.indexes)


def on_delete(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Delete the children explicitly and stop a submitted Ray job; Kopf then removes the
    finalizer."""
    cleanup(state_of(memo), body, kwargs.get("sovai_policies"))


def cleanup(
    state: OperatorState, body: kopf.Body, policy_index: kopf.Index[str, Any] | None
) -> None:
    """What deleting a FineTuneJob undoes: its children (those it controls), and a job it
    submitted to a Ray cluster."""
    meta = body.metadata
    assert meta.namespace is not None
    assert meta.name is not None
    uid = str(meta.uid)
    owner = Owner(name=meta.name, namespace=meta.namespace, uid=uid)
    previous = parse_status(body.get("status"))
    with state.job_lock(uid), state.measured(KIND, "ftj-cleanup"):
        # Recorded first: a deletion that cannot be recorded waits (Kopf keeps the finalizer).
        phase = previous.phase_name if previous else None
        record(state, body, subject(KIND, body), [audit_facts.deletion(subject(KIND, body), phase)])
        state.kuberay.delete(owner, previous)
        raw = body.get("spec") or {}
        if (raw.get("execution") or {}).get("backend") == ExecutionBackend.RAY_CLUSTER.value:
            policies = policies_of(policy_index)
            bound = previous.policy_name if previous else None
            if bound in policies:
                try:
                    state.raycluster.delete_run(
                        policies[bound], raw["execution"].get("rayClusterRef"), owner, previous
                    )
                except Exception:
                    log.warning("could not stop the Ray job of %s/%s", meta.namespace, meta.name)
    state.forget(uid)
