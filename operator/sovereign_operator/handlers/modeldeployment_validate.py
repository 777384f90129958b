"""Parse a ModelDeployment spec and re-check it against every SovereigntyPolicy that selects its
namespace, with the resolved model URI. Pure: everything it needs is passed in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..api.v1alpha1.modeldeployment import KIND, ModelDeploymentSpec
from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from ..policy import check_modeldeployment
from .finetunejob_status import Validation
from .finetunejob_validate import bind_policy


def parse_spec(raw: Mapping[str, Any]) -> tuple[ModelDeploymentSpec | None, Validation | None]:
    """The typed spec, or a failed Validation naming the first bad field."""
    try:
        return ModelDeploymentSpec.model_validate(dict(raw)), None
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        field = f"spec.{location}" if location else "spec"
        return None, Validation(
            ok=False, code="InvalidSpec", field=field, message=f"{field}: {first['msg']}"
        )


def validate(
    spec: ModelDeploymentSpec,
    namespace: str,
    namespace_labels: Mapping[str, str],
    policies: Mapping[str, SovereigntyPolicySpec],
    default_policy: str | None,
    default_image: str,
    resolved_model_uri: str | None,
) -> Validation:
    """Bind the policy, apply every selecting policy, intersect the regions. On success the
    Validation carries the evidence (policy, allowed, requested and effective regions)."""
    bound, selecting, failure = bind_policy(
        spec, namespace, namespace_labels, policies, default_policy, kind=KIND
    )
    if failure is not None or bound is None:
        assert failure is not None
        return failure
    allowed: set[str] | None = None
    for name in selecting:
        policy = policies[name]
        for violation in check_modeldeployment(
            spec,
            policy,
            name,
            default_image=default_image,
            resolved_model_uri=resolved_model_uri,
        ):
            return Validation(
                ok=False,
                code="PolicyViolation",
                field=violation.field,
                message=violation.message,
                residency=True,
                policy_name=bound,
            )
        permitted = set(policy.allowed_regions)
        allowed = permitted if allowed is None else allowed & permitted
    allowed_regions = tuple(sorted(allowed or ()))
    requested = tuple(spec.placement.regions) if spec.placement.regions else None
    regions = tuple(r for r in allowed_regions if requested is None or r in requested)
    if not regions:
        return Validation(
            ok=False,
            code="PolicyViolation",
            field="spec.placement.regions",
            residency=True,
            policy_name=bound,
            message=f"spec.placement.regions: {list(requested or ())} has no region allowed by "
            f"the policies of namespace {namespace}; allowed: {list(allowed_regions)}",
        )
    return Validation(
        ok=True,
        policy_name=bound,
        allowed_regions=allowed_regions,
        requested_regions=requested,
        regions=regions,
    )
