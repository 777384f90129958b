"""Parse a ModelDeployment spec and re-check it against every SovereigntyPolicy that selects its
namespace, with the resolved model URI. Pure: everything it needs is passed in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api.v1alpha1.modeldeployment import KIND, ModelDeploymentSpec
from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from ..policy import check_modeldeployment
from ..policy.places import NO_PLATFORM, Platform
from ..policy.residency import modeldeployment_places
from ..status.finetunejob import Validation
from .finetunejob import bind_policy, enforce_policies, no_region, parse_spec_as


def parse_spec(raw: Mapping[str, Any]) -> tuple[ModelDeploymentSpec | None, Validation | None]:
    """The typed spec, or a failed Validation naming the first bad field."""
    return parse_spec_as(ModelDeploymentSpec, raw)


def validate(
    spec: ModelDeploymentSpec,
    namespace: str,
    namespace_labels: Mapping[str, str],
    policies: Mapping[str, SovereigntyPolicySpec],
    default_policy: str | None,
    default_image: str,
    resolved_model_uri: str | None,
    resolved_base_uri: str | None = None,
    platform: Platform = NO_PLATFORM,
) -> Validation:
    """Bind the policy, apply every selecting policy, intersect the regions. On success the
    Validation carries the evidence (policy, allowed, requested and effective regions)."""
    bound, selecting, failure = bind_policy(
        spec, namespace, namespace_labels, policies, default_policy, kind=KIND
    )
    if failure is not None or bound is None:
        assert failure is not None
        return failure
    failure, regions = enforce_policies(
        selecting,
        policies,
        bound,
        lambda name, policy: check_modeldeployment(
            spec,
            policy,
            name,
            default_image=default_image,
            resolved_model_uri=resolved_model_uri,
            resolved_base_uri=resolved_base_uri,
            platform=platform,
        ),
        spec.placement.regions,
    )
    if failure is not None:
        return failure
    if not regions.effective:
        return no_region(bound, namespace, regions)
    return Validation(
        ok=True,
        policy_name=bound,
        allowed_regions=regions.allowed,
        requested_regions=regions.requested,
        regions=regions.effective,
        places=modeldeployment_places(
            spec, policies[bound], platform, resolved_model_uri, resolved_base_uri
        ),
    )
