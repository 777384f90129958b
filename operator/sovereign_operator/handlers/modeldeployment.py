"""ModelDeployment handlers: parse -> resolve and check -> ensure children -> write status.

One reconcile serves create, resume, spec updates and the level-based timer; the timer is what
notices a FineTuneJob that succeeds later, a rollout that stalls, and pods that become ready.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
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
from ..builders.context import Owner, Residency
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
from .audit_trail import record, subject, with_trail
from .finetunejob import _now
from .indexes import labels_of_namespace, one, policies_of
from .modeldeployment_observe import blockers, deployment_facts, fetch_record, fetched_digest
from .modeldeployment_resolve import Resolution, resolve_model
from .modeldeployment_status import ServingObserved, compute_status
from .modeldeployment_validate import parse_spec, validate
from .runtime import Runtime, runtime_of
from .status_patch import status_patch

log = logging.getLogger(__name__)
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


def _ensure_children(
    rt: Runtime,
    spec: ModelDeploymentSpec,
    owner: Owner,
    residency: Residency,
    policy: SovereigntyPolicySpec,
    model: ServedModel,
) -> dict[str, Any]:
    """Create or correct every child; delete the optional ones this spec does not want.
    Returns the live Deployment."""
    cfg = serving_config(rt.settings)
    ensure(rt.kube, build_network_policy(spec, owner, policy))
    live = ensure(rt.kube, build_deployment(spec, owner, residency, model, rt.build, cfg)).obj
    ensure(rt.kube, build_service(spec, owner))
    for kind, desired in ((HPA, build_hpa(spec, owner)), (PDB, build_pdb(spec, owner))):
        if desired is None:
            delete_owned(rt.kube, kind, owner.namespace, serving_name(owner.name), owner.uid)
        else:
            ensure(rt.kube, desired)
    scaling = spec.autoscaling
    if scaling and not spec.suspend and (live.get("spec") or {}).get("replicas") == 0:
        # An HPA never scales up from zero: resuming hands it minReplicas to start from.
        live = rt.kube.merge_patch(
            DEPLOYMENT,
            owner.namespace,
            serving_name(owner.name),
            {"spec": {"replicas": scaling.min_replicas}},
        )
    return live


def delete_children(rt: Runtime, namespace: str, name: str, uid: str) -> None:
    """Delete every child this deployment controls (the garbage collector would too, later,
    via owner references)."""
    for kind in CHILD_KINDS:
        delete_owned(rt.kube, kind, namespace, serving_name(name), uid)


def write_status(
    rt: Runtime,
    namespace: str,
    name: str,
    current: Mapping[str, Any] | None,
    new: ModelDeploymentStatus,
) -> None:
    """The whole status in one merge patch, only when it changed."""
    patch = status_patch(current, new)
    if patch is None:
        return
    try:
        rt.kube.merge_patch(
            MODELDEPLOYMENT, namespace, name, {"status": patch}, subresource="status"
        )
    except ApiError as error:
        if error.status != 404:  # 404: deleted while the pass ran, nothing left to record
            raise


def _announce(
    rt: Runtime,
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
    rt.event(
        body,
        kind,
        new.phase.value,
        f"{before} -> {new.phase.value}: {message}",
        transition_key(before, new.phase.value, changed),
    )


def reconcile(
    rt: Runtime,
    body: kopf.Body,
    *,
    handler: str,
    raise_permanent: bool,
    indexes: Mapping[str, Any],
) -> None:
    """One level-based pass over a ModelDeployment."""
    meta = body.metadata
    namespace, name, uid = meta.namespace, meta.name, str(meta.uid)
    if meta.get("deletionTimestamp") or namespace in (indexes.get("sovai_terminating") or {}):
        # Being deleted, or its namespace is: the API server refuses new children there (403
        # "being terminated"), and the cleanup, not a pass, is what is due.
        return
    assert namespace is not None
    assert name is not None
    with rt.job_lock(uid), rt.measured(KIND, handler):
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
            ftj = rt.kube.get_or_none(FINETUNEJOB, namespace, ref.name) if ref else None
            resolution = resolve_model(spec, namespace, ftj)
            policies = policies_of(indexes.get("sovai_policies"))
            cfg = serving_config(rt.settings)
            validation = validate(
                spec,
                namespace,
                labels_of_namespace(rt.kube, indexes.get("sovai_namespaces"), namespace),
                policies,
                rt.settings.default_policy,
                _default_image(spec, cfg),
                resolution.uri,
                resolution.base.uri if resolution.base else None,
                rt.platform,
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
                delete_children(rt, namespace, name, uid)
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
                record(rt, body, about, [*bound, admission])
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
                try:
                    live = _ensure_children(rt, spec, owner, residency, policy, model)
                except ApiError as error:
                    if not error.namespace_terminating:
                        raise
                    # The namespace's deletion began after this pass did: the cleanup is due.
                    log.info("%s/%s: its namespace is being deleted", namespace, name)
                    return
                pods = rt.kube.list(POD, namespace, f"{DEPLOYMENT_UID_LABEL}={uid}")
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
        new = with_trail(new, record(rt, body, about, facts, policy_digest), previous)
        write_status(rt, namespace, name, status, new)
        _announce(rt, body, previous, new)
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


def on_change(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Create, resume and spec updates: a spec change rolls the Deployment out."""
    reconcile(
        runtime_of(memo), body, handler="mdep-reconcile", raise_permanent=True, indexes=kwargs
    )


def on_timer(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """The level-based follow-up: the referenced job, the rollout, the pods."""
    reconcile(runtime_of(memo), body, handler="mdep-follow", raise_permanent=False, indexes=kwargs)


def on_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Delete the children explicitly; Kopf then removes the finalizer."""
    cleanup(runtime_of(memo), body)


def cleanup(rt: Runtime, body: kopf.Body) -> None:
    """What deleting a ModelDeployment undoes: its children (those it controls)."""
    meta = body.metadata
    assert meta.namespace is not None
    assert meta.name is not None
    with rt.job_lock(str(meta.uid)), rt.measured(KIND, "mdep-cleanup"):
        # Recorded first: a deletion that cannot be recorded waits (Kopf keeps the finalizer).
        previous = parse_status(body.get("status"))
        phase = previous.phase.value if previous else None
        record(rt, body, subject(KIND, body), [audit_facts.deletion(subject(KIND, body), phase)])
        delete_children(rt, meta.namespace, meta.name, str(meta.uid))
    rt.forget(str(meta.uid))


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Register the ModelDeployment handlers with explicit, stable ids."""
    mdep = (GROUP, VERSION, PLURAL)
    kopf.on.create(*mdep, id="mdep-reconcile", registry=registry)(on_change)
    kopf.on.resume(*mdep, id="mdep-resume", registry=registry)(on_change)
    kopf.on.update(*mdep, id="mdep-update", field="spec", registry=registry)(on_change)
    kopf.timer(
        *mdep,
        id="mdep-follow",
        registry=registry,
        interval=settings.reconcile_interval_seconds,
        initial_delay=settings.reconcile_interval_seconds,
    )(on_timer)
    kopf.on.delete(*mdep, id="mdep-cleanup", registry=registry)(on_delete)
