"""ModelDeployment handlers: parse -> resolve and check -> ensure children -> write status.

One reconcile serves create, resume, spec updates and the level-based timer; the timer is what
notices a FineTuneJob that succeeds later, a rollout that stalls, and pods that become ready.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.v1alpha1.common import GROUP, VERSION, PodPlacement
from ..api.v1alpha1.modeldeployment import (
    KIND,
    PLURAL,
    ModelDeploymentPhase,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from ..api.v1alpha1.modeldeployment import (
    Runtime as ServingRuntime,
)
from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from ..audit import facts as audit_facts
from ..audit.records import Fact, Subject
from ..builders.context import SPEC_HASH_ANNOTATION, Owner, Residency, spec_hash
from ..builders.serving import (
    DEPLOYMENT_UID_LABEL,
    FETCH_BASE_CONTAINER,
    ServedModel,
    ServingConfig,
    build_deployment,
    served_model_name,
    serving_name,
    wanted_replicas,
)
from ..builders.serving_children import (
    build_hpa,
    build_network_policy,
    build_pdb,
    build_service,
    service_url,
)
from ..config import Settings
from ..k8s.client import (
    DEPLOYMENT,
    FINETUNEJOB,
    HPA,
    MODELDEPLOYMENT,
    NETWORK_POLICY,
    PDB,
    POD,
    SERVICE,
    ApiError,
    Kind,
)
from ..k8s.ensure import delete_owned, ensure
from ..k8s.events import last_change, transition_key
from ..policy.places import hub_mirror, routes_document
from ..status.modeldeployment import ServingObserved, compute_status
from ..status.patch import status_patch
from ..status.serving_facts import blockers, deployment_facts, fetch_record, fetched_digest
from ..validation.model_source import Resolution, resolve_model
from ..validation.modeldeployment import parse_spec, validate
from .audit_trail import record, subject, with_trail
from .finetunejob import _now
from .indexes import labels_of_namespace, one, policies_of
from .state import JobRef, OperatorState, state_of

log = logging.getLogger(__name__)
# How long an unchanged deployment goes without a pass: a safety net, as any change to its
# Deployment, pods or FineTuneJob wakes it (the indexes).
SAFETY_NET_SECONDS = 300.0
CHILD_KINDS: tuple[Kind, ...] = (HPA, PDB, NETWORK_POLICY, SERVICE, DEPLOYMENT)
_WARNING_PHASES = frozenset({ModelDeploymentPhase.FAILED, ModelDeploymentPhase.DEGRADED})


def serving_config(settings: Settings) -> ServingConfig:
    """The serving builders' view of the settings."""
    return ServingConfig(
        vllm_image=settings.vllm_image,
        server_image=settings.serving_image or settings.runtime_image,
        model_cache_claim=settings.model_cache_claim,
        progress_deadline_seconds=settings.serving_progress_deadline_seconds,
    )


def parse_status(status: Mapping[str, Any] | None) -> ModelDeploymentStatus | None:
    """The stored status, typed; None when absent or unreadable (then it is recomputed)."""
    if not status or "phase" not in status:
        return None
    try:
        return ModelDeploymentStatus.model_validate(dict(status))
    except ValidationError:
        log.warning("ignoring an unreadable ModelDeployment status", exc_info=True)
        return None


def _default_image(spec: ModelDeploymentSpec, cfg: ServingConfig) -> str:
    return cfg.vllm_image if spec.runtime == ServingRuntime.VLLM else cfg.server_image


def _placement(
    pods: list[dict[str, Any]], nodes: kopf.Index[str, Any] | None, region_label: str
) -> tuple[PodPlacement, ...]:
    result = []
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            continue
        labels = (one(nodes, node) if nodes is not None else None) or {}
        name = str(pod["metadata"]["name"])
        result.append(PodPlacement(pod=name, node=node, region=labels.get(region_label, "unknown")))
    return tuple(result)


@dataclass(frozen=True)
class ServingChildren:
    """Every child a ModelDeployment wants; the Deployment carries a hash of them all."""

    network_policy: dict[str, Any]
    deployment: dict[str, Any]
    service: dict[str, Any]
    hpa: dict[str, Any] | None
    pdb: dict[str, Any] | None

    @property
    def digest(self) -> str:
        return str(self.deployment["metadata"]["annotations"][SPEC_HASH_ANNOTATION])


def desired_children(
    state: OperatorState,
    spec: ModelDeploymentSpec,
    owner: Owner,
    residency: Residency,
    policy: SovereigntyPolicySpec,
    model: ServedModel,
) -> ServingChildren:
    """The children as built, the Deployment annotated with a hash that covers every one of
    them: a pass whose hash matches the live Deployment's has nothing to ensure. Pure."""
    cfg = serving_config(state.settings)
    network_policy = build_network_policy(spec, owner, policy)
    deployment = build_deployment(spec, owner, residency, model, state.build, cfg)
    service = build_service(spec, owner)
    hpa, pdb = build_hpa(spec, owner), build_pdb(spec, owner)
    digest = spec_hash(
        {
            "networkPolicy": network_policy["spec"],
            "deployment": deployment["spec"],
            "labels": deployment["metadata"].get("labels", {}),
            "service": service["spec"],
            "hpa": hpa["spec"] if hpa else None,
            "pdb": pdb["spec"] if pdb else None,
        }
    )
    metadata = deployment["metadata"]
    annotations = {**metadata.get("annotations", {}), SPEC_HASH_ANNOTATION: digest}
    deployment = {**deployment, "metadata": {**metadata, "annotations": annotations}}
    return ServingChildren(network_policy, deployment, service, hpa, pdb)


def _ensure_children(
    state: OperatorState, children: ServingChildren, spec: ModelDeploymentSpec, owner: Owner
) -> dict[str, Any]:
    """Create or correct every child; delete the optional ones this spec does not want.
    Returns the live Deployment."""
    ensure(state.kube, children.network_policy)
    live = ensure(state.kube, children.deployment).obj
    ensure(state.kube, children.service)
    for kind, desired in ((HPA, children.hpa), (PDB, children.pdb)):
        if desired is None:
            delete_owned(state.kube, kind, owner.namespace, serving_name(owner.name), owner.uid)
        else:
            ensure(state.kube, desired)
    scaling = spec.autoscaling
    if scaling and not spec.suspend and (live.get("spec") or {}).get("replicas") == 0:
        # An HPA never scales up from zero: resuming hands it minReplicas to start from.
        live = state.kube.merge_patch(
            DEPLOYMENT,
            owner.namespace,
            serving_name(owner.name),
            {"spec": {"replicas": scaling.min_replicas}},
        )
    return live


def delete_children(state: OperatorState, namespace: str, name: str, uid: str) -> None:
    """Delete every child this deployment controls (the garbage collector would too, later,
    via owner references)."""
    for kind in CHILD_KINDS:
        delete_owned(state.kube, kind, namespace, serving_name(name), uid)


def write_status(
    state: OperatorState,
    namespace: str,
    name: str,
    current: Mapping[str, Any] | None,
    new: ModelDeploymentStatus,
    kopf_patch: kopf.Patch | None = None,
) -> bool:
    """The whole status in one write, only when it changed: into Kopf's own patch (from the
    handlers, written with Kopf's record of what it handled), else one merge patch. False
    when the object was deleted while the pass ran."""
    patch = status_patch(current, new)
    if patch is None:
        return True
    if kopf_patch is not None:
        kopf_patch.setdefault("status", {}).update(patch)
        return True
    try:
        state.kube.merge_patch(
            MODELDEPLOYMENT, namespace, name, {"status": patch}, subresource="status"
        )
    except ApiError as error:
        if error.status != 404:  # 404: deleted while the pass ran, nothing left to record
            raise
        return False
    return True


def _announce(
    state: OperatorState,
    body: kopf.Body,
    previous: ModelDeploymentStatus | None,
    new: ModelDeploymentStatus,
) -> None:
    """An Event on every phase transition, carrying the message that explains it."""
    if previous is not None and previous.phase == new.phase:
        return
    ready = next(c for c in new.conditions if c.type == "Ready")
    message = new.error.message if new.error else ready.message
    kind = "Warning" if new.phase in _WARNING_PHASES else "Normal"
    before = previous.phase.value if previous else "Pending"
    changed = last_change(previous.conditions) if previous else None
    state.event(
        body,
        kind,
        new.phase.value,
        f"{before} -> {new.phase.value}: {message}",
        transition_key(before, new.phase.value, changed),
    )


def serving_pods(
    state: OperatorState, indexes: Mapping[str, Any], namespace: str, uid: str
) -> list[dict[str, Any]]:
    """The deployment's pods: from the index, or listed before the index exists."""
    if "sovai_serving_pods" in indexes:
        store = indexes["sovai_serving_pods"].get(uid, ())
        return sorted((dict(p) for p in store), key=lambda p: str(p["metadata"]["name"]))
    return state.kube.list(POD, namespace, f"{DEPLOYMENT_UID_LABEL}={uid}")


def source_key(spec: ModelDeploymentSpec | None, namespace: str) -> str | None:
    """ "namespace/name" of the FineTuneJob the deployment serves, if it names one."""
    ref = spec.model.fine_tune_job_ref if spec is not None else None
    return f"{namespace}/{ref.name}" if ref else None


def _seen(indexes: Mapping[str, Any], uid: str, source: str | None) -> Hashable:
    """What a follow-up pass over a deployment looks at: its Deployment, its pods, and the
    phase of the FineTuneJob it serves, all from the indexes. A spec change is an update event,
    which the update handler reconciles at once."""
    deployment = one(indexes["sovai_deployments"], uid) if "sovai_deployments" in indexes else None
    pods = indexes.get("sovai_serving_pods", {}).get(uid, ())
    jobs = indexes.get("sovai_finetunejobs")
    return (
        ((deployment or {}).get("metadata") or {}).get("resourceVersion"),
        tuple(sorted(str(p["metadata"]["resourceVersion"]) for p in pods)),
        one(jobs, source) if jobs is not None and source else None,
    )


def needs_pass(state: OperatorState, uid: str, ref: JobRef) -> bool:
    """Whether a follow-up pass over a deployment has anything to do: something it serves or
    runs changed, or the safety net's time came. No I/O: it runs for every deployment on every
    tick."""
    return state.due(uid, _seen(state.indexes, uid, ref.source))


def follow(state: OperatorState, uid: str, ref: JobRef) -> None:
    """A follow-up pass, from the shared sweep: read the deployment as it is now, then
    reconcile it."""
    body = state.current(uid, ref, MODELDEPLOYMENT)
    if body is not None:
        reconcile(state, body, handler="mdep-follow", raise_permanent=False, indexes=state.indexes)


def reconcile(
    state: OperatorState,
    body: kopf.Body,
    *,
    handler: str,
    raise_permanent: bool,
    indexes: Mapping[str, Any],
    kopf_patch: kopf.Patch | None = None,
) -> None:
    """One level-based pass over a ModelDeployment. With ``kopf_patch`` (the create, resume
    and update handlers) the status goes into Kopf's own patch; without it (follow-ups), it
    is patched here."""
    meta = body.metadata
    namespace, name, uid = meta.namespace, meta.name, str(meta.uid)
    if meta.get("deletionTimestamp") or namespace in (indexes.get("sovai_terminating") or {}):
        # Being deleted, or its namespace is: the API server refuses new children there (403
        # "being terminated"), and the cleanup, not a pass, is what is due.
        return
    assert namespace is not None
    assert name is not None
    with state.job_lock(uid), state.measured(KIND, handler):
        status = body.get("status")
        previous = parse_status(status)
        generation = int(meta.get("generation") or 1)
        spec, failure = parse_spec(body.get("spec") or {})
        about = subject(KIND, body)
        last_digest = previous.audit.policy_digest if previous and previous.audit else None
        policy_digest = last_digest
        live: dict[str, Any] | None = None
        observed: ServingObserved
        if spec is None:
            assert failure is not None
            validation, resolution = failure, None
            observed = ServingObserved(generation, validation, None)
        else:
            ref = spec.model.fine_tune_job_ref
            ftj = state.kube.get_or_none(FINETUNEJOB, namespace, ref.name) if ref else None
            resolution = resolve_model(spec, namespace, ftj)
            policies = policies_of(indexes.get("sovai_policies"))
            cfg = serving_config(state.settings)
            validation = validate(
                spec,
                namespace,
                labels_of_namespace(state.kube, indexes.get("sovai_namespaces"), namespace),
                policies,
                state.settings.default_policy,
                _default_image(spec, cfg),
                resolution.uri,
                resolution.base.uri if resolution.base else None,
                state.platform,
            )
            owner = Owner(name=name, namespace=namespace, uid=uid, kind=KIND)
            observed = ServingObserved(
                generation,
                validation,
                resolution,
                suspend=spec.suspend,
                wanted_replicas=wanted_replicas(spec),
                url=service_url(owner, spec),
                served_model_name=served_model_name(spec, owner),
            )
            if not validation.ok:
                # Nothing that breaks a policy keeps running, even if it ran before.
                delete_children(state, namespace, name, uid)
            elif resolution.uri is not None:
                assert validation.policy_name is not None
                policy = policies[validation.policy_name]
                policy_digest = audit_facts.content_digest(policy)
                # Recorded before any child is made or changed: what it is to serve, under
                # which rules.
                admission = _admission(about, generation, resolution, ref_name(spec, namespace))
                bound = audit_facts.policy_facts(
                    about, validation.policy_name, policy_digest, validation.regions, last_digest
                )
                record(state, body, about, [*bound, admission])
                residency = Residency(
                    validation.policy_name,
                    policy.region_label,
                    validation.regions,
                    routes_document(policy),
                    hub_mirror(validation.places),
                )
                model = ServedModel(
                    resolution.uri, resolution.base, resolution.adapter_rank, resolution.provenance
                )
                children = desired_children(state, spec, owner, residency, policy, model)
                known = (
                    one(indexes["sovai_deployments"], uid)
                    if "sovai_deployments" in indexes
                    else None
                )
                known_digest = ((known or {}).get("metadata") or {}).get("annotations", {})
                if known is not None and known_digest.get(SPEC_HASH_ANNOTATION) == children.digest:
                    live = dict(known)  # every child is as built: nothing to send
                else:
                    try:
                        live = _ensure_children(state, children, spec, owner)
                    except ApiError as error:
                        if not error.namespace_terminating:
                            raise
                        # The namespace's deletion began after this pass did: the cleanup is due.
                        log.info("%s/%s: its namespace is being deleted", namespace, name)
                        return
                pods = serving_pods(state, indexes, namespace, uid)
                base_uri = model.base.uri if model.base else None
                observed = replace(
                    observed,
                    deployment=deployment_facts(live),
                    blockers=blockers(pods),
                    placement=_placement(pods, indexes.get("sovai_nodes"), policy.region_label),
                    fetched_digest=fetched_digest(pods, model.uri),
                    fetched_base_digest=(
                        fetched_digest(pods, base_uri, FETCH_BASE_CONTAINER) if base_uri else None
                    ),
                    fetch=fetch_record(pods, model.uri),
                    base_fetch=(
                        fetch_record(pods, base_uri, FETCH_BASE_CONTAINER) if base_uri else None
                    ),
                )
        new = compute_status(observed, previous, _now())
        facts = _serving_facts(about, generation, observed, live, new)
        new = with_trail(new, record(state, body, about, facts, policy_digest), previous)
        if not write_status(state, namespace, name, status, new, kopf_patch):
            state.forget(uid)
            return
        source = source_key(spec, namespace)
        state.jobs[uid] = JobRef(namespace, name, KIND, source)
        # Any change to what it serves or runs ends the wait; this is only the safety net.
        state.seen[uid] = (_seen(indexes, uid, source), time.monotonic() + SAFETY_NET_SECONDS)
        _announce(state, body, previous, new)
    if not validation.ok and raise_permanent:
        raise kopf.PermanentError(validation.message or "invalid ModelDeployment")


def ref_name(spec: ModelDeploymentSpec, namespace: str) -> str | None:
    ref = spec.model.fine_tune_job_ref
    return f"{namespace}/{ref.name}" if ref else None


def _admission(
    about: Subject, generation: int, resolution: Resolution, source_job: str | None
) -> Fact:
    details: dict[str, Any] = {"generation": generation, "modelUri": resolution.uri}
    if source_job:
        details["sourceJob"] = source_job
    if resolution.provenance is not None and resolution.provenance.digest:
        details["modelDigest"] = resolution.provenance.digest
    if resolution.base is not None:
        details["baseModel"] = resolution.base.uri
    return Fact(about, audit_facts.ADMITTED, f"admitted/{generation}", details)


def _serving_facts(
    about: Subject,
    generation: int,
    observed: ServingObserved,
    live: Mapping[str, Any] | None,
    new: ModelDeploymentStatus,
) -> list[Fact]:
    """What this pass observed, for the audit log: a refusal, or the Deployment, its pods and
    what it serves."""
    validation = observed.validation
    if not validation.ok:
        reason, message = validation.code or "Invalid", validation.message or ""
        return [audit_facts.refusal(about, generation, reason, message)]
    found = []
    meta = (live or {}).get("metadata") or {}
    if meta.get("uid"):
        found.append(
            audit_facts.child_fact(about, "Deployment", str(meta["name"]), str(meta["uid"]))
        )
    found += audit_facts.placement_facts(about, new.placement or ())
    return found + audit_facts.serving_facts(about, new)


def on_change(body: kopf.Body, memo: Any, patch: kopf.Patch, **kwargs: Any) -> None:
    """Create, resume and spec updates: a spec change rolls the Deployment out. Later passes
    (the referenced job, the rollout, the pods) are the shared follow-up sweep's."""
    reconcile(
        state_of(memo),
        body,
        handler="mdep-reconcile",
        raise_permanent=True,
        indexes=kwargs,
        kopf_patch=patch,
    )


def on_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Delete the children explicitly; Kopf then removes the finalizer."""
    cleanup(state_of(memo), body)


def cleanup(state: OperatorState, body: kopf.Body) -> None:
    """What deleting a ModelDeployment undoes: its children (those it controls)."""
    meta = body.metadata
    assert meta.namespace is not None
    assert meta.name is not None
    with state.job_lock(str(meta.uid)), state.measured(KIND, "mdep-cleanup"):
        # Recorded first: a deletion that cannot be recorded waits (Kopf keeps the finalizer).
        previous = parse_status(body.get("status"))
        phase = previous.phase.value if previous else None
        record(state, body, subject(KIND, body), [audit_facts.deletion(subject(KIND, body), phase)])
        delete_children(state, meta.namespace, meta.name, str(meta.uid))
    state.forget(str(meta.uid))


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the ModelDeployment handlers with explicit, stable ids."""
    mdep = (GROUP, VERSION, PLURAL)
    kopf.on.create(*mdep, id="mdep-reconcile", registry=registry)(on_change)
    kopf.on.resume(*mdep, id="mdep-resume", registry=registry)(on_change)
    kopf.on.update(*mdep, id="mdep-update", field="spec", registry=registry)(on_change)
    kopf.on.delete(*mdep, id="mdep-cleanup", registry=registry)(on_delete)
