"""ValidatingAdmissionPolicies (no webhook) that check FineTuneJobs and ModelDeployments
against every SovereigntyPolicy that selects their namespace, and the MutatingAdmissionPolicy
that gives a new FineTuneJob the operator's finalizer as it is created.

The CEL here and policy/ (the operator's re-check) implement the same rules; tests hold
both to the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.v1alpha1 import finetunejob, modeldeployment, sovereigntypolicy
from ..api.v1alpha1.common import API_VERSION, FINALIZER, GROUP, VERSION
from .crds import PART_OF_LABELS

# Without any SovereigntyPolicy nothing can be proven about residency, so nothing new is
# admitted. Updates are let through (see _bindings) so that existing objects stay deletable.
CREATE_PARAMETER_NOT_FOUND_ACTION = "Deny"
UPDATE_PARAMETER_NOT_FOUND_ACTION = "Allow"

POLICY = "params"
SPEC = "object.spec"
NAMESPACE_LABELS = "namespaceObject.metadata.labels"


@dataclass(frozen=True)
class Check:
    """One validation: a condition that must hold when the policy applies."""

    name: str
    condition: str
    message: str
    message_expression: str


def _listing(items: str) -> str:
    """CEL: a list of strings, comma-joined, or (none)."""
    return f"(size({items}) == 0 ? '(none)' : {items}.join(', '))"


def _host(uri: str) -> str:
    """CEL: the host of a URI as policy patterns see it: the first non-empty segment after
    the scheme, without an @alias (bucket, claim, organisation, model name, top directory)."""
    segments = f"{uri}.substring({uri}.indexOf(':') + 1).split('/').filter(s, s != '')"
    return f"(size({segments}) == 0 ? '' : {segments}[0].split('@')[0])"


def _uri_allowed(uri: str, host_variable: str, patterns: str) -> str:
    """CEL: some pattern of the list has the URI's scheme and matches its host."""
    host = f"variables.{host_variable}"
    match = (
        f"(p.host.startsWith('*') ? {host}.endsWith(p.host.substring(1)) : "
        f"(p.host.endsWith('*') ? {host}.startsWith(p.host.substring(0, size(p.host) - 1)) : "
        f"{host} == p.host))"
    )
    return f"{patterns}.exists(p, {uri}.startsWith(p.scheme + ':') && {match})"


def _selects_namespace() -> str:
    """CEL: the policy's namespaceSelector matches the object's namespace."""
    selector = f"{POLICY}.spec.namespaceSelector"
    labels = NAMESPACE_LABELS
    has_labels = f"has({labels})"
    match_labels = (
        f"(!has({selector}.matchLabels) || {selector}.matchLabels.all(k, {has_labels} && "
        f"k in {labels} && {labels}[k] == {selector}.matchLabels[k]))"
    )
    present = f"({has_labels} && e.key in {labels})"
    requirement = (
        f"(e.operator == 'In' ? ({present} && {labels}[e.key] in e.values) : "
        f"e.operator == 'NotIn' ? (!{present} || !({labels}[e.key] in e.values)) : "
        f"e.operator == 'Exists' ? {present} : !{present})"
    )
    match_expressions = (
        f"(!has({selector}.matchExpressions) || {selector}.matchExpressions.all(e, {requirement}))"
    )
    return f"!has({selector}) || ({match_labels} && {match_expressions})"


def _present(field: str) -> str:
    """CEL: the spec field is set. has() of a field inside an absent object is an error, so
    every optional object on the way is tested first (spec's own fields are tested by has())."""
    parts = field.split(".")
    return " && ".join(f"has({SPEC}.{'.'.join(parts[: i + 1])})" for i in range(1, len(parts)))


def _uri_check(name: str, field: str, optional: bool, host_variable: str, list_name: str) -> Check:
    uri = f"{SPEC}.{field}"
    patterns = f"{POLICY}.spec.{list_name}"
    allowed = _uri_allowed(uri, host_variable, patterns)
    present = _present(field)
    absent = f"!({present})" if "&&" in present else f"!{present}"
    condition = f"{absent} || {allowed}" if optional else allowed
    shown = _listing(
        f"{patterns}.map(p, p.scheme + '://' + p.host + "
        "(has(p.endpoint) ? ' at ' + p.endpoint : ''))"
    )
    return Check(
        name=name,
        condition=condition,
        message=f"spec.{field} is not allowed by the SovereigntyPolicy's {list_name}",
        message_expression=(
            f"'spec.{field}: ' + {uri} + ' is not in {list_name} of SovereigntyPolicy ' + "
            f"{POLICY}.metadata.name + '; allowed: ' + {shown}"
        ),
    )


def _common_checks(image_field: str) -> list[Check]:
    regions = f"{SPEC}.placement.regions"
    allowed_regions = f"{POLICY}.spec.allowedRegions"
    image = f"{SPEC}.{image_field}"
    registries = f"{POLICY}.spec.allowedRegistries"
    return [
        Check(
            name="policy-ref-selects-namespace",
            condition=(
                f"!has({SPEC}.placement.policyRef) || "
                f"{SPEC}.placement.policyRef != {POLICY}.metadata.name || variables.selected"
            ),
            message="spec.placement.policyRef names a SovereigntyPolicy that does not select "
            "this namespace",
            message_expression=(
                f"'spec.placement.policyRef: SovereigntyPolicy ' + {POLICY}.metadata.name + "
                "' does not select namespace ' + namespaceObject.metadata.name"
            ),
        ),
        Check(
            name="regions-allowed",
            condition=f"!has({regions}) || {regions}.all(r, r in {allowed_regions})",
            message="spec.placement.regions contains a region the SovereigntyPolicy does not allow",
            message_expression=(
                f"'spec.placement.regions: ' + "
                f"{regions}.filter(r, !(r in {allowed_regions})).join(', ') + "
                f"' not allowed by SovereigntyPolicy ' + {POLICY}.metadata.name + "
                f"'; allowed regions: ' + {_listing(allowed_regions)}"
            ),
        ),
        Check(
            name="image-registry-allowed",
            condition=f"!has({image}) || {registries}.exists(r, {image}.startsWith(r + '/'))",
            message=f"spec.{image_field} is not from a registry the SovereigntyPolicy allows",
            message_expression=(
                f"'spec.{image_field}: ' + {image} + ' is not in allowedRegistries of "
                f"SovereigntyPolicy ' + {POLICY}.metadata.name + '; allowed: ' + "
                f"{_listing(registries)}"
            ),
        ),
    ]


def finetunejob_checks() -> list[Check]:
    """Every admission check of a FineTuneJob."""
    ref = f"{SPEC}.execution.rayClusterRef"
    regions = f"{SPEC}.placement.regions"
    clusters = f"{POLICY}.spec.rayClusters"
    return [
        *_common_checks("execution.image"),
        _uri_check(
            "base-model-allowed", "baseModel.uri", False, "baseModelHost", "allowedModelSources"
        ),
        _uri_check(
            "training-data-allowed", "dataset.trainingUri", False, "trainingHost", "allowedStorage"
        ),
        _uri_check(
            "validation-data-allowed",
            "dataset.validationUri",
            True,
            "validationHost",
            "allowedStorage",
        ),
        _uri_check("output-allowed", "output.uri", True, "outputHost", "allowedStorage"),
        Check(
            name="ray-cluster-declared",
            condition=f"!has({ref}) || {clusters}.exists(c, c.name == {ref})",
            message="spec.execution.rayClusterRef names a Ray cluster the SovereigntyPolicy "
            "does not declare",
            message_expression=(
                f"'spec.execution.rayClusterRef: ' + {ref} + ' is not declared in rayClusters "
                f"of SovereigntyPolicy ' + {POLICY}.metadata.name + '; declared: ' + "
                f"{_listing(f'{clusters}.map(c, c.name)')}"
            ),
        ),
        Check(
            name="ray-cluster-region-requested",
            condition=(
                f"!has({ref}) || !has({regions}) || "
                f"{clusters}.exists(c, c.name == {ref} && c.region in {regions})"
            ),
            message="spec.execution.rayClusterRef: the Ray cluster's region is not in "
            "spec.placement.regions",
            message_expression=(
                f"'spec.execution.rayClusterRef: Ray cluster ' + {ref} + ' runs in ' + "
                f"{_listing(f'{clusters}.filter(c, c.name == {ref}).map(c, c.region)')} + "
                f"', which is not in spec.placement.regions (' + {regions}.join(', ') + ')'"
            ),
        ),
    ]


def modeldeployment_checks() -> list[Check]:
    """Every admission check of a ModelDeployment."""
    return [
        *_common_checks("serving.image"),
        _uri_check("model-allowed", "model.uri", True, "modelHost", "allowedModelSources"),
        _uri_check(
            "base-model-allowed",
            "model.baseModel.uri",
            True,
            "baseModelHost",
            "allowedModelSources",
        ),
    ]


def _variables(uris: dict[str, str]) -> list[dict[str, str]]:
    variables = [{"name": "selected", "expression": _selects_namespace()}]
    for name, field in uris.items():
        uri = f"{SPEC}.{field}"
        variables.append({"name": name, "expression": f"{_present(field)} ? {_host(uri)} : ''"})
    return variables


def _policy(plural: str, checks: list[Check], uris: dict[str, str]) -> dict[str, Any]:
    validations = [
        {
            # A policy that does not select the namespace has nothing to say about the object.
            "expression": f"!variables.selected || ({c.condition})"
            if c.name != "policy-ref-selects-namespace"
            else c.condition,
            "message": c.message,
            "messageExpression": c.message_expression,
            "reason": "Forbidden",
        }
        for c in checks
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy_name(plural), "labels": dict(PART_OF_LABELS)},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": API_VERSION, "kind": sovereigntypolicy.KIND},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [plural],
                    }
                ]
            },
            # Metadata-only updates (labels, finalizers) of a stored object are not re-judged.
            "matchConditions": [
                {
                    "name": "spec-created-or-changed",
                    "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
                }
            ],
            "variables": _variables(uris),
            "validations": validations,
        },
    }


def policy_name(plural: str) -> str:
    """Name of the ValidatingAdmissionPolicy (and its binding) for a resource."""
    return f"{plural}.{GROUP}"


def _binding(plural: str, operation: str, not_found_action: str) -> dict[str, Any]:
    name = f"{policy_name(plural)}-{operation.lower()}"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": dict(PART_OF_LABELS)},
        "spec": {
            "policyName": policy_name(plural),
            # Every SovereigntyPolicy is a parameter; each one that selects the namespace
            # must allow the object.
            "paramRef": {"selector": {}, "parameterNotFoundAction": not_found_action},
            "matchResources": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "operations": [operation],
                        "resources": [plural],
                    }
                ]
            },
            "validationActions": ["Deny"],
        },
    }


def _bindings(plural: str) -> list[dict[str, Any]]:
    """CREATE fails closed when no SovereigntyPolicy exists. UPDATE does not: with no policy
    left, the API server would otherwise refuse every write to existing objects, including
    the operator removing its finalizer, so that nothing could be deleted. The operator
    refuses to run or place anything without a policy either way."""
    return [
        _binding(plural, "CREATE", CREATE_PARAMETER_NOT_FOUND_ACTION),
        _binding(plural, "UPDATE", UPDATE_PARAMETER_NOT_FOUND_ACTION),
    ]


FINALIZER_POLICY = f"{finetunejob.PLURAL}-finalizer.{GROUP}"


def finalizer_policy() -> list[dict[str, Any]]:
    """A MutatingAdmissionPolicy (GA in Kubernetes 1.36) and its binding that add the
    operator's finalizer to a FineTuneJob as the API server creates it.

    The operator must record a job's deletion in the audit log before the job is gone, so
    the job carries its finalizer. Without this policy, Kopf adds the finalizer itself on
    first sight: a write of its own, and a second watch round trip, before anything is made
    for the job. With it, the first event already shows the finalizer and the job's children
    are made at once. Kopf still adds it where the policy is absent (an older cluster, or
    ``admissionPolicy.enabled: false``): the policy saves work, nothing depends on it. It
    fails open for the same reason. The chart scopes the binding to the watched namespaces,
    so that no job gets a finalizer that no operator removes.
    """

    def match() -> dict[str, Any]:
        # Written out with every default the API server fills in (scope, matchPolicy and the
        # empty selectors): Argo CD 3.3 is built against an older Kubernetes API that lacks
        # this kind, so it cannot default it, and would show each default as drift for ever.
        return {
            "matchPolicy": "Equivalent",
            "namespaceSelector": {},
            "objectSelector": {},
            "resourceRules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "operations": ["CREATE"],
                    "resources": [finetunejob.PLURAL],
                    "scope": "*",
                }
            ],
        }

    labels = dict(PART_OF_LABELS)
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": FINALIZER_POLICY, "labels": labels},
            "spec": {
                "failurePolicy": "Ignore",
                "reinvocationPolicy": "Never",
                "matchConstraints": match(),
                "mutations": [
                    {
                        # Server-side apply semantics: finalizers is a set, so one the user
                        # wrote stays, and ours is not added twice.
                        "patchType": "ApplyConfiguration",
                        "applyConfiguration": {
                            "expression": (
                                "Object{metadata: Object.metadata{finalizers: "
                                f"['{FINALIZER}']}}}}"
                            )
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": FINALIZER_POLICY, "labels": labels},
            "spec": {"policyName": FINALIZER_POLICY, "matchResources": match()},
        },
    ]


def build_admission() -> list[dict[str, Any]]:
    """The admission policies and their bindings, policies first."""
    ftj = finetunejob.PLURAL
    mdep = modeldeployment.PLURAL
    return [
        _policy(
            ftj,
            finetunejob_checks(),
            {
                "baseModelHost": "baseModel.uri",
                "trainingHost": "dataset.trainingUri",
                "validationHost": "dataset.validationUri",
                "outputHost": "output.uri",
            },
        ),
        *_bindings(ftj),
        _policy(
            mdep,
            modeldeployment_checks(),
            {"modelHost": "model.uri", "baseModelHost": "model.baseModel.uri"},
        ),
        *_bindings(mdep),
        *finalizer_policy(),
    ]
