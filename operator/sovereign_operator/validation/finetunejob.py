"""The Validating step, pure: parse the spec, bind the SovereigntyPolicy, re-check the policy,
intersect the regions and resolve "auto" hyperparameters. Everything it needs is passed in."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..api.v1alpha1.common import PodPlacement
from ..api.v1alpha1.finetunejob import ExecutionBackend, FineTuneJobSpec
from ..api.v1alpha1.hyperparameters import (
    HyperparameterError,
    data_dependent_autos,
    resolve_hyperparameters,
)
from ..api.v1alpha1.modeldeployment import ModelDeploymentSpec
from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from ..policy import Violation, check_finetunejob, selects_namespace
from ..policy.places import NO_PLATFORM, Platform
from ..policy.residency import finetunejob_places
from ..status.finetunejob import Validation

SpecT = TypeVar("SpecT", bound=BaseModel)


def _field_of(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"spec.{location}" if location else "spec", first["msg"]


def parse_spec(spec: Mapping[str, Any]) -> tuple[FineTuneJobSpec | None, Validation | None]:
    """The typed FineTuneJob spec, or a failed Validation naming the first bad field."""
    return parse_spec_as(FineTuneJobSpec, spec)


def parse_spec_as(
    model: type[SpecT], spec: Mapping[str, Any]
) -> tuple[SpecT | None, Validation | None]:
    """The typed spec of any kind, or a failed Validation naming the first bad field."""
    try:
        return model.model_validate(dict(spec)), None
    except ValidationError as error:
        field, message = _field_of(error)
        return None, Validation(
            ok=False, code="InvalidSpec", field=field, message=f"{field}: {message}"
        )


def bind_policy(
    spec: FineTuneJobSpec | ModelDeploymentSpec,
    namespace: str,
    namespace_labels: Mapping[str, str],
    policies: Mapping[str, SovereigntyPolicySpec],
    default_policy: str | None,
    kind: str = "FineTuneJob",
) -> tuple[str | None, list[str], Validation | None]:
    """(bound policy name, every policy selecting the namespace, or a failure).
    ``kind`` names the object in messages (ModelDeployments bind policies the same way)."""
    selecting = sorted(n for n, p in policies.items() if selects_namespace(p, namespace_labels))
    ref = spec.placement.policy_ref
    if ref:
        if ref not in policies:
            return (
                None,
                selecting,
                Validation(
                    ok=False,
                    code="PolicyNotFound",
                    field="spec.placement.policyRef",
                    residency=True,
                    message=f"spec.placement.policyRef: SovereigntyPolicy {ref!r} does not exist; "
                    f"policies selecting namespace {namespace}: {selecting or 'none'}",
                ),
            )
        if ref not in selecting:
            return (
                None,
                selecting,
                Validation(
                    ok=False,
                    code="PolicyNotApplicable",
                    field="spec.placement.policyRef",
                    residency=True,
                    message=f"spec.placement.policyRef: SovereigntyPolicy {ref!r} does not select "
                    f"namespace {namespace}; allowed: {selecting or 'none'}",
                ),
            )
        return ref, selecting, None
    if default_policy and default_policy in selecting:
        return default_policy, selecting, None
    if len(selecting) == 1:
        return selecting[0], selecting, None
    if not selecting:
        return (
            None,
            selecting,
            Validation(
                ok=False,
                code="NoPolicy",
                field="spec.placement.policyRef",
                residency=True,
                message=f"no SovereigntyPolicy selects namespace {namespace}; a {kind} only "
                "runs where a policy says where it may run",
            ),
        )
    return (
        None,
        selecting,
        Validation(
            ok=False,
            code="AmbiguousPolicy",
            field="spec.placement.policyRef",
            residency=True,
            message=f"spec.placement.policyRef: several policies select namespace {namespace} "
            f"({', '.join(selecting)}); name one",
        ),
    )


def validate(
    raw_spec: Mapping[str, Any],
    namespace: str,
    namespace_labels: Mapping[str, str],
    policies: Mapping[str, SovereigntyPolicySpec],
    default_policy: str | None,
    default_image: str,
    platform: Platform = NO_PLATFORM,
) -> tuple[FineTuneJobSpec | None, Validation]:
    """Parse and check a FineTuneJob spec; on success the Validation carries the evidence."""
    spec, failure = parse_spec(raw_spec)
    if spec is None:
        assert failure is not None
        return None, failure
    bound, selecting, failure = bind_policy(
        spec, namespace, namespace_labels, policies, default_policy
    )
    if failure is not None or bound is None:
        assert failure is not None
        return spec, failure
    failure, decided = enforce_policies(
        selecting,
        policies,
        bound,
        lambda name, policy: check_finetunejob(
            spec, policy, name, default_image=default_image, platform=platform
        ),
        spec.placement.regions,
    )
    if failure is not None:
        return spec, failure
    allowed_regions, requested, regions = decided.allowed, decided.requested, decided.effective
    if spec.execution.backend == ExecutionBackend.RAY_CLUSTER:
        # check_finetunejob has refused undeclared clusters already.
        endpoint = next(
            c for c in policies[bound].ray_clusters if c.name == spec.execution.ray_cluster_ref
        )
        if endpoint.region not in regions:
            return spec, Validation(
                ok=False,
                code="PolicyViolation",
                field="spec.execution.rayClusterRef",
                residency=True,
                policy_name=bound,
                message=f"spec.execution.rayClusterRef: Ray cluster {endpoint.name} runs in "
                f"{endpoint.region}, outside the allowed regions {list(regions)}",
            )
        regions = (endpoint.region,)
    if not regions:
        return spec, no_region(bound, namespace, decided)
    try:
        hyperparameters = resolve_hyperparameters(spec)
    except HyperparameterError as error:
        return spec, Validation(ok=False, code="InvalidSpec", field=error.field, message=str(error))
    return spec, Validation(
        ok=True,
        policy_name=bound,
        allowed_regions=allowed_regions,
        requested_regions=requested,
        regions=regions,
        hyperparameters=hyperparameters,
        chosen_by_trainer=data_dependent_autos(spec),
        places=finetunejob_places(spec, policies[bound], platform),
    )


@dataclass(frozen=True)
class Regions:
    """Where work may run: allowed by every selecting policy, requested, and both."""

    allowed: tuple[str, ...]
    requested: tuple[str, ...] | None
    effective: tuple[str, ...]


def enforce_policies(
    selecting: Sequence[str],
    policies: Mapping[str, SovereigntyPolicySpec],
    bound: str,
    violations_of: Callable[[str, SovereigntyPolicySpec], Iterable[Violation]],
    requested_regions: Sequence[str] | None,
) -> tuple[Validation | None, Regions]:
    """Apply every policy that selects the namespace, not only the bound one; intersect their
    regions with the requested ones. The first violation becomes a failed Validation."""
    allowed: set[str] | None = None
    for name in selecting:
        policy = policies[name]
        for violation in violations_of(name, policy):
            failure = Validation(
                ok=False,
                code="PolicyViolation",
                field=violation.field,
                message=violation.message,
                residency=True,
                policy_name=bound,
            )
            return failure, Regions((), None, ())
        permitted = set(policy.allowed_regions)
        allowed = permitted if allowed is None else allowed & permitted
    allowed_regions = tuple(sorted(allowed or ()))
    requested = tuple(requested_regions) if requested_regions else None
    effective = tuple(r for r in allowed_regions if requested is None or r in requested)
    return None, Regions(allowed_regions, requested, effective)


def no_region(bound: str, namespace: str, regions: Regions) -> Validation:
    """The failure when no region is both allowed and requested."""
    return Validation(
        ok=False,
        code="PolicyViolation",
        field="spec.placement.regions",
        residency=True,
        policy_name=bound,
        message=f"spec.placement.regions: {list(regions.requested or ())} has no region allowed "
        f"by the policies of namespace {namespace}; allowed: {list(regions.allowed)}",
    )


def pods_within_regions(validation: Validation, pods: tuple[PodPlacement, ...]) -> Validation:
    """The validation, failed when a pod runs in a region outside the job's (a region whose
    node label is not known yet is not judged)."""
    outside = [p for p in pods if p.region != "unknown" and p.region not in validation.regions]
    if not outside:
        return validation
    where = "; ".join(f"pod {p.pod} runs on node {p.node} in {p.region}" for p in outside)
    message = (
        f"{where}, outside the regions SovereigntyPolicy {validation.policy_name} allows for "
        f"this job [{', '.join(validation.regions)}]"
    )
    return replace(
        validation,
        ok=False,
        code="PodOutsideAllowedRegions",
        message=message,
        field="spec.placement.regions",
        residency=True,
    )
