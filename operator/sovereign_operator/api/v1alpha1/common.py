"""Types shared by the three kinds: the camelCase base model, references, placement, conditions."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP: Final = "sovereign-ai.eu"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "sovereign-ai.eu/v1alpha1"
CATEGORY: Final = "sovereign-ai"
# Kopf's finalizer on every FineTuneJob and ModelDeployment (the operator's cleanup runs first).
FINALIZER: Final = "sovereign-ai.eu/finalizer"

# RFC 1123 label, the rule for most Kubernetes object names we reference.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# RFC 1123 subdomain (ConfigMap, Secret, SovereigntyPolicy names).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Kubernetes resource.Quantity, as controller-gen emits it for int-or-string quantities.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# A label value, such as a region name.
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
# Bounds on list sizes and string lengths keep the CEL rules' estimated cost within budget.
MAX_REGIONS = 32
# The largest value a Kubernetes int32 field holds (what the children's APIs declare).
INT32_MAX: Final = 2**31 - 1
MAX_LIST = 64
RegionName = Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)]

_SUFFIXES: Final[dict[str, int | Decimal]] = {
    "": 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY_PARTS = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9.]+)?)(.*)$")


def quantity_value(value: int | str) -> Decimal:
    """The amount a Kubernetes quantity stands for ("500m" -> 0.5, "2Gi" -> 2147483648)."""
    if isinstance(value, int):
        return Decimal(value)
    match = _QUANTITY_PARTS.match(value)
    if match is None or match.group(2) not in _SUFFIXES:
        raise ValueError(f"{value!r} is not a quantity such as 500m, 4 or 32Gi")
    return Decimal(match.group(1)) * Decimal(_SUFFIXES[match.group(2)])


# Kubernetes keeps a quantity exactly only below 2^63 units (8Ei): a larger one is stored
# rounded, which a child's spec would then never match.
QUANTITY_LIMIT: Final = 2**63


def _positive_quantity(value: int | str) -> int | str:
    if not 0 < quantity_value(value) < QUANTITY_LIMIT:
        raise ValueError(
            f"must be greater than zero and less than 8Ei, such as 500m, 4 or 32Gi (got {value!r})"
        )
    return value


# The same rule at admission, in the CRD (CEL's Kubernetes quantity library).
POSITIVE_QUANTITY_RULE: Final = {
    "rule": (
        "type(self) == string ? quantity(self).isGreaterThan(quantity('0')) && "
        "quantity(self).isLessThan(quantity('8Ei')) : self > 0"
    ),
    "message": "must be greater than zero and less than 8Ei, such as 500m, 4 or 32Gi",
}

# A CPU or memory amount: an integer or a Kubernetes quantity string such as "500m" or "32Gi",
# greater than zero (KubeRay cannot create pods that ask for none, or for less).
Quantity = Annotated[
    int | Annotated[str, Field(pattern=QUANTITY_PATTERN)],
    AfterValidator(_positive_quantity),
    Field(json_schema_extra={"x-kubernetes-validations": [POSITIVE_QUANTITY_RULE]}),
]


class ApiModel(BaseModel):
    """Base of every API model: camelCase JSON, Python names accepted, unknown keys refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        validate_default=True,
    )

    def to_json_dict(self) -> dict[str, object]:
        """The object as Kubernetes stores it: camelCase keys, no nulls, JSON scalars."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# Where Kopf keeps what it last handled of an object (spec, labels, annotations) as JSON.
# It lives in the status, so that it is written in the same request as the status the
# handler computed: one write per reconcile instead of two (see docs/benchmarks.md).
LAST_HANDLED_FIELD: Final = "lastHandledConfiguration"


class OperatorStatus(ApiModel):
    """Base of the statuses the operator writes."""

    last_handled_configuration: str | None = Field(
        default=None,
        description=(
            "Internal: digests of the spec and of the labels and annotations the operator "
            "last handled (sha256:<spec>.<rest>); compared with the object to tell a change "
            "from a creation or a replay."
        ),
    )


# The credential variables a Secret may give a pod (builders.podtemplate.CREDENTIAL_KEYS);
# nothing else in a Secret, such as an endpoint URL, reaches the pods.
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN")
CREDENTIAL_KEY_RULE: JsonDict = {
    "rule": (
        "!has(self.key) || self.key.upperAscii().replace('-', '_').replace('.', '_') in "
        f"{list(CREDENTIAL_KEYS)}"
    ),
    "message": f"key must name a credential: one of {', '.join(CREDENTIAL_KEYS)} (any case)",
    "fieldPath": ".key",
}


def credential_variable(key: str) -> str:
    """The variable a Secret key becomes (hf-token -> HF_TOKEN)."""
    return key.upper().replace("-", "_").replace(".", "_")


class SecretKeyRef(ApiModel):
    """A key of a Secret in the namespace of the object that names it. Only credentials reach
    the pods: the Secret's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and
    HF_TOKEN, each as the variable of its name."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [CREDENTIAL_KEY_RULE]})

    name: str = Field(
        description="Name of the Secret, in the same namespace as this object.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    key: str | None = Field(
        default=None,
        description=(
            "The one key of the Secret to use, named after its variable (for example HF_TOKEN, "
            "any case). When omitted, each of the credential keys the Secret has is used; its "
            "other keys never reach a pod."
        ),
        min_length=1,
        max_length=253,
    )

    @field_validator("key")
    @classmethod
    def _credential_key(cls, key: str | None) -> str | None:
        if key is not None and credential_variable(key) not in CREDENTIAL_KEYS:
            raise ValueError(str(CREDENTIAL_KEY_RULE["message"]))
        return key


class NamespacedSecretKeyRef(ApiModel):
    """A key of a Secret in a named namespace (used by cluster-scoped objects)."""

    namespace: str = Field(description="Namespace of the Secret.", pattern=DNS_LABEL, max_length=63)
    name: str = Field(description="Name of the Secret.", pattern=DNS_SUBDOMAIN, max_length=253)
    key: str = Field(description="Key inside the Secret that holds the value.", min_length=1)


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """The taint effect a toleration matches."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A Kubernetes toleration, copied onto every pod template the operator creates."""

    key: str | None = Field(
        default=None,
        description="Taint key to match; empty with operator Exists matches all.",
        max_length=317,
    )
    operator: TolerationOperator = Field(
        default=TolerationOperator.EQUAL, description="Exists or Equal (default Equal)."
    )
    value: str | None = Field(
        default=None, description="Taint value to match with Equal.", max_length=63
    )
    effect: TaintEffect | None = Field(
        default=None, description="Taint effect to match; empty matches every effect."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        description="For NoExecute: how long the pod stays bound after the taint appears.",
    )


class Placement(ApiModel):
    """Where the workload may run. The operator intersects this with the SovereigntyPolicy."""

    regions: list[RegionName] | None = Field(
        default=None,
        max_length=MAX_REGIONS,
        description=(
            "Regions the workload may run in, as values of the policy's region label. Every "
            "entry must be allowed by the SovereigntyPolicy. Empty means every allowed region."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    policy_ref: str | None = Field(
        default=None,
        description=(
            "Name of the SovereigntyPolicy whose settings (region label, Ray clusters, egress) "
            "the operator uses. It must select this namespace. When omitted, the operator uses "
            "the policy named by its settings (SOVAI_DEFAULT_POLICY), else the single policy "
            "that selects the namespace. Every policy that selects the namespace is enforced "
            "either way."
        ),
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    queue_name: str | None = Field(
        default=None,
        description="Kueue LocalQueue; passed through as the kueue.x-k8s.io/queue-name label.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    tolerations: list[Toleration] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="Tolerations added to every pod template the operator creates.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )


class ConditionStatus(StrEnum):
    """Status of a condition, as in metav1.Condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(description="Type of the condition, in CamelCase (e.g. Succeeded).")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="Machine-readable CamelCase reason for the last transition.",
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        max_length=1024,
    )
    message: str = Field(
        default="", description="Human-readable detail; names the field when one is at fault."
    )
    last_transition_time: datetime = Field(
        description="When the status last changed (not when it was last checked)."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )


class PodPlacement(ApiModel):
    """Evidence of where one pod ran: the node and that node's region label."""

    pod: str = Field(description="Name of the pod.")
    node: str = Field(description="Name of the node the pod was bound to.")
    region: str = Field(description="Value of the policy's region label on that node.")


AUDIT_HEAD_PATTERN = r"^[0-9]{1,12}:sha256:[0-9a-f]{64}$"


class AuditTrail(ApiModel):
    """Where this object's records are in the operator's audit log (docs/compliance.md):
    `sovai audit verify` checks that the head named here is in the chain, unchanged."""

    log: str | None = Field(default=None, description="The audit log (s3://bucket/prefix/).")
    head: str | None = Field(
        default=None,
        pattern=AUDIT_HEAD_PATTERN,
        description="The last record about this object: position:sha256:digest.",
    )
    admission: str | None = Field(
        default=None,
        pattern=AUDIT_HEAD_PATTERN,
        description=(
            "The record of its admission (position:sha256:digest), which the trainer also "
            "writes into the model card and the model version's MLflow tags."
        ),
    )
    policy_digest: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="sha256 of the SovereigntyPolicy spec it was last checked against.",
    )


class StoragePlace(ApiModel):
    """Evidence of where one URI goes: the endpoint of the SovereigntyPolicy it resolved to,
    with that endpoint's URL and region, or what kind of place it is when it has no URL."""

    field: str = Field(description="The spec field (or operator setting) that names the URI.")
    uri: str = Field(description="The URI.")
    # Named so that `field` sorts first: kubectl describe lists a map's keys in order, and each
    # entry must start with what it is about.
    storage_endpoint: str | None = Field(
        default=None, description="The SovereigntyPolicy's storageEndpoints entry."
    )
    url: str | None = Field(default=None, description="The URL the pods were given.")
    region: str | None = Field(default=None, description="The endpoint's region.")
    note: str | None = Field(
        default=None, description="For a place without a URL: a claim, a node path, a cache."
    )


class ErrorInfo(ApiModel):
    """Why the object failed, shaped like OpenAI's error object."""

    code: str = Field(
        description="Stable machine-readable code, e.g. PolicyViolation or ImagePullFailed."
    )
    message: str = Field(description="Human-readable explanation, naming what is allowed.")
    field: str | None = Field(
        default=None, description="JSON path of the offending field, e.g. spec.dataset.trainingUri."
    )
