"""Residency and allowlist checks of FineTuneJob and ModelDeployment specs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from ..api.v1alpha1.common import Placement, StoragePlace
from ..api.v1alpha1.finetunejob import FineTuneJobSpec
from ..api.v1alpha1.modeldeployment import ModelDeploymentSpec
from ..api.v1alpha1.sovereigntypolicy import (
    SelectorOperator,
    SovereigntyPolicySpec,
    UriPattern,
)
from .places import (
    NO_PLATFORM,
    TRACKING_FIELD,
    Platform,
    Unresolved,
    resolve,
    tracking_place,
)
from .uris import describe, image_allowed
from .violations import Violation


def _listing(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "(none)"


def selects_namespace(policy: SovereigntyPolicySpec, labels: Mapping[str, str]) -> bool:
    """Whether the policy's namespaceSelector matches a namespace with these labels
    (no selector, or an empty one, matches every namespace)."""
    selector = policy.namespace_selector
    if selector is None:
        return True
    for key, wanted in (selector.match_labels or {}).items():
        if labels.get(key) != wanted:
            return False
    for requirement in selector.match_expressions or []:
        present = requirement.key in labels
        values = requirement.values or []
        op = requirement.operator
        if op == SelectorOperator.IN and not (present and labels[requirement.key] in values):
            return False
        if op == SelectorOperator.NOT_IN and present and labels[requirement.key] in values:
            return False
        if op == SelectorOperator.EXISTS and not present:
            return False
        if op == SelectorOperator.DOES_NOT_EXIST and present:
            return False
    return True


def effective_regions(placement: Placement, policy: SovereigntyPolicySpec) -> list[str]:
    """The regions pods may be pinned to: the requested ones that the policy allows, in the
    order requested, or every allowed region when none were requested. Empty means nowhere."""
    if not placement.regions:
        return list(policy.allowed_regions)
    return [r for r in placement.regions if r in policy.allowed_regions]


def _regions(placement: Placement, policy: SovereigntyPolicySpec, name: str) -> Iterator[Violation]:
    denied = [r for r in placement.regions or [] if r not in policy.allowed_regions]
    if denied:
        yield Violation(
            field="spec.placement.regions",
            message=f"spec.placement.regions: {', '.join(denied)} not allowed by "
            f"SovereigntyPolicy {name}; allowed regions: {_listing(policy.allowed_regions)}",
            allowed=tuple(policy.allowed_regions),
        )


def _uri(
    field: str,
    uri: str | None,
    policy: SovereigntyPolicySpec,
    list_name: str,
    name: str,
    platform: Platform,
) -> Iterator[Violation]:
    if uri is None:
        return
    patterns = _patterns(policy, list_name)
    place = resolve(field, uri, patterns, policy, platform)
    if isinstance(place, StoragePlace):
        return
    if place is None:
        allowed = describe(patterns)
        yield Violation(
            field=field,
            message=f"{field}: {uri} is not in {list_name} of SovereigntyPolicy {name}; "
            f"allowed: {_listing(allowed)}",
            allowed=allowed,
        )
        return
    yield _undeclared(field, f"{field}: {place.reason}, in SovereigntyPolicy {name}", policy)


def _undeclared(field: str, message: str, policy: SovereigntyPolicySpec) -> Violation:
    """A URI that resolves to no declared place: the message ends with the endpoints there are."""
    declared = tuple(f"{e.name} ({e.url})" for e in policy.storage_endpoints)
    return Violation(
        field=field,
        message=f"{message}; declared endpoints: {_listing(declared)}",
        allowed=tuple(e.name for e in policy.storage_endpoints),
    )


def _patterns(policy: SovereigntyPolicySpec, list_name: str) -> Sequence[UriPattern]:
    if list_name == "allowedStorage":
        return policy.allowed_storage
    return policy.allowed_model_sources


def _tracking(policy: SovereigntyPolicySpec, name: str, platform: Platform) -> Iterator[Violation]:
    place = tracking_place(policy, platform)
    if not isinstance(place, Unresolved):
        return
    yield _undeclared(
        TRACKING_FIELD,
        f"{place.reason} of SovereigntyPolicy {name} (the operator's MLflow tracking URI: runs "
        "and models go there)",
        policy,
    )


def _image(
    field: str,
    image: str | None,
    default_image: str | None,
    policy: SovereigntyPolicySpec,
    name: str,
) -> Iterator[Violation]:
    effective = image or default_image
    if effective is None or image_allowed(effective, policy.allowed_registries):
        return
    what = effective if image else f"{effective} (the operator's default image)"
    yield Violation(
        field=field,
        message=f"{field}: {what} is not in allowedRegistries of SovereigntyPolicy {name}; "
        f"allowed: {_listing(policy.allowed_registries)}",
        allowed=tuple(policy.allowed_registries),
    )


def _ray_cluster(
    spec: FineTuneJobSpec, policy: SovereigntyPolicySpec, name: str
) -> Iterator[Violation]:
    ref = spec.execution.ray_cluster_ref
    if ref is None:
        return
    field = "spec.execution.rayClusterRef"
    declared = tuple(c.name for c in policy.ray_clusters)
    cluster = next((c for c in policy.ray_clusters if c.name == ref), None)
    if cluster is None:
        yield Violation(
            field=field,
            message=f"{field}: {ref} is not declared in rayClusters of SovereigntyPolicy "
            f"{name}; declared: {_listing(declared)}",
            allowed=declared,
        )
        return
    requested = spec.placement.regions
    if requested and cluster.region not in requested:
        yield Violation(
            field=field,
            message=f"{field}: Ray cluster {ref} runs in {cluster.region}, which is not in "
            f"spec.placement.regions ({', '.join(requested)})",
            allowed=tuple(c.name for c in policy.ray_clusters if c.region in requested),
        )


def check_finetunejob(
    spec: FineTuneJobSpec,
    policy: SovereigntyPolicySpec,
    policy_name: str,
    *,
    default_image: str | None = None,
    platform: Platform = NO_PLATFORM,
) -> list[Violation]:
    """Every rule of the policy that the FineTuneJob spec breaks, in a stable order.

    default_image: the image the operator uses when spec.execution.image is empty; it must
    be allowed too (admission cannot see it). platform: the operator's own places (its MLflow
    tracking URI), which must be declared endpoints of the policy.
    """
    name = policy_name
    return [
        *_regions(spec.placement, policy, name),
        *_image("spec.execution.image", spec.execution.image, default_image, policy, name),
        *(
            violation
            for field, uri, list_name in _finetunejob_uris(spec)
            for violation in _uri(field, uri, policy, list_name, name, platform)
        ),
        *_tracking(policy, name, platform),
        *_ray_cluster(spec, policy, name),
    ]


def _finetunejob_uris(spec: FineTuneJobSpec) -> list[tuple[str, str | None, str]]:
    """(field, URI, the policy list that governs it) of every URI a FineTuneJob names."""
    return [
        ("spec.baseModel.uri", spec.base_model.uri, "allowedModelSources"),
        ("spec.dataset.trainingUri", spec.dataset.training_uri, "allowedStorage"),
        ("spec.dataset.validationUri", spec.dataset.validation_uri, "allowedStorage"),
        ("spec.output.uri", spec.output.uri, "allowedStorage"),
    ]


def finetunejob_places(
    spec: FineTuneJobSpec, policy: SovereigntyPolicySpec, platform: Platform
) -> tuple[StoragePlace, ...]:
    """Where each URI of a FineTuneJob that passed check_finetunejob goes (its evidence)."""
    places = [
        resolve(field, uri, _patterns(policy, list_name), policy, platform)
        for field, uri, list_name in _finetunejob_uris(spec)
        if uri is not None
    ]
    places.append(tracking_place(policy, platform))
    return tuple(p for p in places if isinstance(p, StoragePlace))


def check_modeldeployment(
    spec: ModelDeploymentSpec,
    policy: SovereigntyPolicySpec,
    policy_name: str,
    *,
    default_image: str | None = None,
    resolved_model_uri: str | None = None,
    resolved_base_uri: str | None = None,
    platform: Platform = NO_PLATFORM,
) -> list[Violation]:
    """Every rule of the policy that the ModelDeployment spec breaks.

    resolved_model_uri: for a fineTuneJobRef, the model URI it resolved to; checked against
    allowedModelSources like spec.model.uri (admission cannot resolve it). resolved_base_uri:
    the base an adapter is served on (spec.model.baseModel.uri, or the job's base model).
    """
    name = policy_name
    return [
        *_regions(spec.placement, policy, name),
        *_image("spec.serving.image", spec.serving.image, default_image, policy, name),
        *(
            violation
            for field, uri in _modeldeployment_uris(spec, resolved_model_uri, resolved_base_uri)
            for violation in _uri(field, uri, policy, "allowedModelSources", name, platform)
        ),
    ]


def _modeldeployment_uris(
    spec: ModelDeploymentSpec, resolved_model_uri: str | None, resolved_base_uri: str | None
) -> list[tuple[str, str | None]]:
    """(field, URI) of the model a ModelDeployment serves and of an adapter's base."""
    model_field = "spec.model.uri" if spec.model.uri else "spec.model.fineTuneJobRef"
    base_given = spec.model.base_model
    base_field = "spec.model.baseModel.uri" if base_given else "spec.model.fineTuneJobRef"
    return [
        (model_field, spec.model.uri or resolved_model_uri),
        (base_field, base_given.uri if base_given else resolved_base_uri),
    ]


def modeldeployment_places(
    spec: ModelDeploymentSpec,
    policy: SovereigntyPolicySpec,
    platform: Platform,
    resolved_model_uri: str | None = None,
    resolved_base_uri: str | None = None,
) -> tuple[StoragePlace, ...]:
    """Where the served model (and an adapter's base) come from: the serving evidence."""
    places = [
        resolve(field, uri, policy.allowed_model_sources, policy, platform)
        for field, uri in _modeldeployment_uris(spec, resolved_model_uri, resolved_base_uri)
        if uri is not None
    ]
    return tuple(p for p in places if isinstance(p, StoragePlace))
