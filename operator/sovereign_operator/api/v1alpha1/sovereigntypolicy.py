"""SovereigntyPolicy (cluster-scoped): where work may run and what it may read, write and pull."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from .common import (
    API_VERSION,
    DNS_LABEL,
    LABEL_VALUE_PATTERN,
    MAX_LIST,
    MAX_REGIONS,
    ApiModel,
    NamespacedSecretKeyRef,
    RegionName,
)
from .finetunejob import S3_BUCKET, S3_PATH

KIND: Final = "SovereigntyPolicy"
PLURAL: Final = "sovereigntypolicies"

DEFAULT_REGION_LABEL = "topology.kubernetes.io/region"
# A qualified label key: optional DNS prefix, then a name.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
# "*", "*suffix", "prefix*" or an exact host.
HOST_PATTERN = r"^(\*[A-Za-z0-9._-]*|[A-Za-z0-9._-]+\*?)$"
REGISTRY_PATTERN = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*$"
RegistryPrefix = Annotated[str, Field(max_length=253, pattern=REGISTRY_PATTERN)]


class UriScheme(StrEnum):
    """URI schemes the operator can read from or write to."""

    S3 = "s3"
    PVC = "pvc"
    HF = "hf"
    MODELS = "models"
    FILE = "file"


URI_PATTERN_ENDPOINT_RULE: JsonDict = {
    "rule": "self.scheme != 's3' || has(self.endpoint)",
    "message": (
        "an s3 entry must name its endpoint: the storageEndpoints entry where buckets "
        "matching host live (an S3 URI does not say where its bucket is)"
    ),
}


class UriPattern(ApiModel):
    """A location: a URI scheme and a pattern for its host. The host is the first path segment
    after the scheme: the S3 bucket, the PVC claim, the Hugging Face organisation, the MLflow
    registered model name, or the top directory of a file:// path. An s3 entry also names the
    endpoint its buckets live at, so that a URI resolves to a place, not only to a name."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [URI_PATTERN_ENDPOINT_RULE]}
    )

    scheme: UriScheme = Field(description="s3, pvc, hf, models or file.")
    host: str = Field(
        description=(
            '"*" (any), "*suffix", "prefix*" or an exact host (bucket, claim, '
            "organisation, registered model name or top directory)."
        ),
        pattern=HOST_PATTERN,
        max_length=253,
    )
    endpoint: str | None = Field(
        default=None,
        description=(
            "Name of the storageEndpoints entry that serves these URIs: required for s3 (the "
            "S3 service the buckets live at; pods talk to exactly its URL), and for hf the "
            "Hugging Face mirror when the operator's hub is not offline."
        ),
        pattern=DNS_LABEL,
        max_length=63,
    )


ENDPOINT_URL_PATTERN = (
    r"^https?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[^\s?#@]*)?$"
)


class StorageEndpoint(ApiModel):
    """A place where data, models or runs are kept: an S3-compatible service, an MLflow
    tracking server or a Hugging Face mirror, and the region it is in. URIs resolve to these
    (see UriPattern.endpoint), and the operator's MLflow tracking URI must be one of them."""

    name: str = Field(
        description="Name UriPattern.endpoint refers to.", pattern=DNS_LABEL, max_length=63
    )
    url: str = Field(
        description=(
            "Base URL of the service, e.g. https://s3.gra.io.cloud.ovh.net or "
            "http://mlflow.mlflow.svc:5000; no query, fragment or user info."
        ),
        pattern=ENDPOINT_URL_PATTERN,
        max_length=2048,
    )
    region: RegionName = Field(
        description="Region the service stores its data in; must be one of allowedRegions."
    )
    cidrs: list[Annotated[str, Field(max_length=43)]] = Field(
        default=[],
        max_length=MAX_LIST,
        description=(
            "Addresses the service is reached at (CIDRs); training and serving pods may "
            "connect to them (their egress NetworkPolicy). Empty: only through allowedCIDRs."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(c, isCIDR(c))",
                    "message": "spec.storageEndpoints[].cidrs entries must be CIDRs",
                }
            ],
        },
    )


class RayClusterEndpoint(ApiModel):
    """An existing Ray cluster that FineTuneJobs may submit to (backend rayCluster)."""

    name: str = Field(
        description="Name FineTuneJobs use in spec.execution.rayClusterRef.",
        pattern=DNS_LABEL,
        max_length=63,
    )
    address: str = Field(
        description="http(s) URL of the Ray dashboard (Job Submission API), e.g. http://ray-eu:8265.",
        pattern=r"^https?://[^\s/]+(:[0-9]+)?(/[^\s]*)?$",
        max_length=2048,
    )
    region: RegionName = Field(
        description="Region the cluster runs in; must be one of allowedRegions."
    )
    auth_token_secret_ref: NamespacedSecretKeyRef | None = Field(
        default=None,
        description="Secret holding a bearer token for the dashboard, if it needs one.",
    )


class SelectorOperator(StrEnum):
    """Operator of a label selector requirement."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


SELECTOR_VALUES_RULE: JsonDict = {
    "rule": ("(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)"),
    "message": (
        "spec.namespaceSelector.matchExpressions[].values must be non-empty for In and NotIn "
        "and empty for Exists and DoesNotExist"
    ),
}


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [SELECTOR_VALUES_RULE]}
    )

    key: str = Field(description="Label key.", pattern=LABEL_KEY_PATTERN, max_length=317)
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="Values for In and NotIn; empty for Exists and DoesNotExist.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector; both parts must match. An empty selector matches all."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="Labels that must be present with exactly these values.",
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="Requirements that must all hold.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )


CIDR_RULE: JsonDict = {
    "rule": "self.all(c, isCIDR(c))",
    "message": "spec.egress.allowedCIDRs entries must be CIDRs such as 10.0.0.0/8",
}


class Egress(ApiModel):
    """Network egress allowed to workloads, applied as a NetworkPolicy."""

    allowed_cidrs: list[Annotated[str, Field(max_length=43)]] = Field(
        default=[],
        max_length=MAX_LIST,
        alias="allowedCIDRs",
        description=(
            "CIDRs that training and serving pods may connect to, besides cluster DNS, the "
            "storageEndpoints' cidrs and (training) the job's own pods. Empty denies all "
            "other egress."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "x-kubernetes-validations": [CIDR_RULE],
        },
    )


RAY_CLUSTER_REGION_RULE: JsonDict = {
    "rule": "!has(self.rayClusters) || self.rayClusters.all(c, c.region in self.allowedRegions)",
    "message": "spec.rayClusters[].region must be one of spec.allowedRegions",
    "fieldPath": ".rayClusters",
}
ENDPOINT_REGION_RULE: JsonDict = {
    "rule": (
        "!has(self.storageEndpoints) || "
        "self.storageEndpoints.all(e, e.region in self.allowedRegions)"
    ),
    "message": "spec.storageEndpoints[].region must be one of spec.allowedRegions",
    "fieldPath": ".storageEndpoints",
}


# The base model URIs a fact may be declared for: those of FineTuneJob.spec.baseModel.uri that
# name the same model wherever they are used. Not pvc:// or file:// (a claim is per namespace, a
# path per node), nor models:/name@alias (an alias moves to another version).
BASE_MODEL_FACT_URI_PATTERN = (
    r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
    rf"|{S3_BUCKET}(/{S3_PATH}*)?"
    r"|models:/[A-Za-z0-9][^\s/@]*/[0-9]+)$"
)


class BaseModelFacts(ApiModel):
    """What the platform team declares about one base model, which its weights do not say."""

    uri: str = Field(
        description=(
            "The base model, exactly as FineTuneJobs name it in spec.baseModel.uri: "
            "hf://org/name, s3://bucket/path or models:/name/version."
        ),
        pattern=BASE_MODEL_FACT_URI_PATTERN,
        max_length=2048,
    )
    training_flops: float = Field(
        gt=0,
        allow_inf_nan=False,
        description=(
            "The base model's own training compute in FLOP (floating-point operations), as "
            "its provider documents it, e.g. 3.8e+25."
        ),
    )


class Energy(ApiModel):
    """Facts about the data centres the policy's regions run in, for energy estimates."""

    pue: float | None = Field(
        default=None,
        ge=1,
        le=5,
        description=(
            "Power usage effectiveness of the data centres the allowed regions run in (the "
            "facility's energy / the IT equipment's energy), 1 to 5. FineTuneJobs' energy "
            "estimate (status.compute.energyKwh) is multiplied by it; without it the estimate "
            "is the GPUs' own energy."
        ),
    )


def _endpoint_declared_rule(list_name: str) -> JsonDict:
    names = "self.storageEndpoints.map(e, e.name)"
    return {
        "rule": (
            f"!has(self.{list_name}) || self.{list_name}.all(p, !has(p.endpoint) || "
            f"(has(self.storageEndpoints) && p.endpoint in {names}))"
        ),
        "message": f"spec.{list_name}[].endpoint must name an entry of spec.storageEndpoints",
        "fieldPath": f".{list_name}",
    }


class SovereigntyPolicySpec(ApiModel):
    """What FineTuneJobs and ModelDeployments in the selected namespaces may do.
    Enforced at admission (ValidatingAdmissionPolicy) and again by the operator."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                RAY_CLUSTER_REGION_RULE,
                ENDPOINT_REGION_RULE,
                _endpoint_declared_rule("allowedStorage"),
                _endpoint_declared_rule("allowedModelSources"),
            ]
        }
    )

    region_label: str = Field(
        default=DEFAULT_REGION_LABEL,
        description="Node label that carries the region; pods get a required affinity on it.",
        pattern=LABEL_KEY_PATTERN,
        max_length=317,
    )
    allowed_regions: list[RegionName] = Field(
        min_length=1,
        max_length=MAX_REGIONS,
        description="Values of regionLabel where work may run, e.g. eu-west-par.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    allowed_storage: list[UriPattern] = Field(
        default=[],
        max_length=MAX_LIST,
        description="Where datasets may be read from and outputs written to.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    allowed_model_sources: list[UriPattern] = Field(
        default=[],
        max_length=MAX_LIST,
        description="Where base models and served models may come from.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    storage_endpoints: list[StorageEndpoint] = Field(
        default=[],
        max_length=MAX_LIST,
        description=(
            "The places URIs resolve to: S3 services, MLflow tracking servers, Hugging Face "
            "mirrors, each with its region. Pods are given exactly these URLs."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    allowed_registries: list[RegistryPrefix] = Field(
        default=[],
        max_length=MAX_LIST,
        description=(
            "Registries (host[:port][/path]) images may come from; an image matches when it "
            'starts with an entry followed by "/". Empty allows only the operator\'s defaults.'
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    egress: Egress = Field(default_factory=Egress, description="Allowed network egress.")
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces this policy governs; omitted or empty selects every namespace.",
    )
    ray_clusters: list[RayClusterEndpoint] = Field(
        default=[],
        max_length=MAX_LIST,
        description="Existing Ray clusters FineTuneJobs may use with backend rayCluster.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    base_models: list[BaseModelFacts] = Field(
        default=[],
        max_length=MAX_LIST,
        description=(
            "The training compute of base models, by exact URI, for the EU AI Act's one-third "
            "threshold: the trainer of a FineTuneJob whose spec.baseModel.uri is listed "
            "compares the fine-tune's compute with the base model's "
            "(status.compute.baseComputeRatio), and the job's condition "
            "ModificationThresholdExceeded says whether it was more than one third (whoever "
            "modifies a general-purpose AI model with more than that becomes the provider of "
            "the modified model). A model not listed is compared only when its config.json "
            "declares training_flops."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uri"]},
    )
    energy: Energy | None = Field(
        default=None, description="Facts about the data centres, for energy estimates."
    )

    @field_validator("ray_clusters")
    @classmethod
    def _unique_cluster_names(cls, clusters: list[RayClusterEndpoint]) -> list[RayClusterEndpoint]:
        # The CRD's list-map keyed by name says the same at admission.
        _refuse_duplicates("spec.rayClusters", [c.name for c in clusters])
        return clusters

    @field_validator("storage_endpoints")
    @classmethod
    def _unique_endpoint_names(cls, endpoints: list[StorageEndpoint]) -> list[StorageEndpoint]:
        _refuse_duplicates("spec.storageEndpoints", [e.name for e in endpoints])
        return endpoints

    @field_validator("base_models")
    @classmethod
    def _unique_base_models(cls, models: list[BaseModelFacts]) -> list[BaseModelFacts]:
        _refuse_duplicates("spec.baseModels", [m.uri for m in models], "URIs")
        return models

    @model_validator(mode="after")
    def _endpoints_declared(self) -> SovereigntyPolicySpec:
        # The CRD's CEL rules say the same at admission.
        names = {e.name for e in self.storage_endpoints}
        for list_name, patterns in (
            ("allowedStorage", self.allowed_storage),
            ("allowedModelSources", self.allowed_model_sources),
        ):
            for index, pattern in enumerate(patterns):
                field = f"spec.{list_name}[{index}].endpoint"
                if pattern.scheme == UriScheme.S3 and not pattern.endpoint:
                    raise ValueError(f"{field}: an s3 entry must name its storageEndpoints entry")
                if pattern.endpoint and pattern.endpoint not in names:
                    raise ValueError(
                        f"{field}: {pattern.endpoint} is not declared in spec.storageEndpoints"
                    )
        for endpoint in self.storage_endpoints:
            if endpoint.region not in self.allowed_regions:
                raise ValueError(
                    f"spec.storageEndpoints: {endpoint.name} is in {endpoint.region}, which is "
                    "not one of spec.allowedRegions"
                )
        return self

    def endpoint(self, name: str | None) -> StorageEndpoint | None:
        """The storageEndpoints entry called ``name``, if declared."""
        return next((e for e in self.storage_endpoints if e.name == name), None)

    def base_model_training_flops(self, uri: str) -> float | None:
        """The training FLOPs declared in baseModels for exactly this URI, if any."""
        return next((m.training_flops for m in self.base_models if m.uri == uri), None)


def _refuse_duplicates(field: str, names: list[str], what: str = "names") -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{field}: duplicate {what} {duplicates}")


class SovereigntyPolicy(ApiModel):
    """A SovereigntyPolicy custom resource (cluster-scoped)."""

    api_version: Literal["sovereign-ai.eu/v1alpha1"] = Field(
        default=API_VERSION, description="sovereign-ai.eu/v1alpha1"
    )
    kind: Literal["SovereigntyPolicy"] = Field(default=KIND, description="SovereigntyPolicy")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: SovereigntyPolicySpec = Field(description="The policy.")
