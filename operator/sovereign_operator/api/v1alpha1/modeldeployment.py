"""ModelDeployment: serve a model as an OpenAI-compatible endpoint, on allowed nodes only."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from .common import (
    API_VERSION,
    DNS_SUBDOMAIN,
    MAX_REGIONS,
    ApiModel,
    AuditTrail,
    Condition,
    ErrorInfo,
    OperatorStatus,
    Placement,
    PodPlacement,
    Quantity,
    RegionName,
    SecretKeyRef,
    StoragePlace,
)
from .finetunejob import IMAGE_PATTERN, MODEL_URI_PATTERN, BaseModelSource

KIND: Final = "ModelDeployment"
PLURAL: Final = "modeldeployments"


class FineTuneJobRef(ApiModel):
    """A FineTuneJob in the same namespace; its registered model is served once it succeeds."""

    name: str = Field(description="Name of the FineTuneJob.", pattern=DNS_SUBDOMAIN, max_length=253)


MODEL_EXACTLY_ONE_RULE: JsonDict = {
    "rule": "has(self.fineTuneJobRef) != has(self.uri)",
    "message": "spec.model must set exactly one of fineTuneJobRef or uri",
}
BASE_ONLY_WITH_URI_RULE: JsonDict = {
    "rule": "!has(self.baseModel) || has(self.uri)",
    "message": (
        "spec.model.baseModel is only for spec.model.uri; a fineTuneJobRef's base is the "
        "job's spec.baseModel"
    ),
    "fieldPath": ".baseModel",
}


class ModelSource(ApiModel):
    """Which model to serve: the result of a FineTuneJob, or a model URI."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [MODEL_EXACTLY_ONE_RULE, BASE_ONLY_WITH_URI_RULE]
        }
    )

    fine_tune_job_ref: FineTuneJobRef | None = Field(
        default=None, description="Serve the model registered by this FineTuneJob."
    )
    uri: str | None = Field(
        default=None,
        description=(
            "Serve this model: models:/name/version, s3://bucket/path, pvc://claim/path, "
            "hf://org/name or file:///abs/path. The SovereigntyPolicy's allowedModelSources "
            "must allow it."
        ),
        pattern=MODEL_URI_PATTERN,
        max_length=2048,
    )
    base_model: BaseModelSource | None = Field(
        default=None,
        description=(
            "When spec.model.uri is a LoRA adapter (not merged): the base model it was trained "
            "on, fetched beside it and served with it. allowedModelSources must allow it too."
        ),
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Credentials the fetch of spec.model.uri uses (S3 keys or HF_TOKEN), by reference: "
            "only the Secret's credential keys reach the fetch container, never the server."
        ),
    )


class Runtime(StrEnum):
    """Serving runtime."""

    VLLM = "vllm"
    TRANSFORMERS = "transformers"


class ScaleMetric(StrEnum):
    """Resource metric the HorizontalPodAutoscaler follows."""

    CPU = "cpu"
    MEMORY = "memory"


MIN_LE_MAX_RULE: JsonDict = {
    "rule": "self.minReplicas <= self.maxReplicas",
    "message": (
        "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas"
    ),
    "fieldPath": ".minReplicas",
}


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler between minReplicas and maxReplicas."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [MIN_LE_MAX_RULE]})

    min_replicas: int = Field(default=1, ge=1, le=100, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, le=100, description="Most replicas.")
    metric: ScaleMetric = Field(default=ScaleMetric.CPU, description="cpu or memory.")
    target_average_utilization: int = Field(
        default=80, ge=1, le=100, description="Target average utilization of the metric, percent."
    )


class ServingResources(ApiModel):
    """Compute per replica."""

    gpus_per_replica: int = Field(
        default=1, ge=0, le=16, description="nvidia.com/gpu per replica; 0 serves on CPUs."
    )
    gpu_type: str | None = Field(
        default=None,
        description="Required value of the nvidia.com/gpu.product node label.",
        max_length=63,
    )
    cpu: Quantity = Field(default="4", description="CPU request and limit per replica.")
    memory: Quantity = Field(default="16Gi", description="Memory request and limit per replica.")


class Serving(ApiModel):
    """Settings of the OpenAI-compatible server."""

    served_model_name: str | None = Field(
        default=None,
        description="Model name clients pass in requests; defaults to metadata.name.",
        max_length=256,
    )
    max_model_len: int | None = Field(
        default=None, ge=16, le=1048576, description="Context length; defaults to the model's."
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=16, description="GPUs one model copy is split over (vllm)."
    )
    port: int = Field(default=8000, ge=1024, le=65535, description="Container and Service port.")
    image: str | None = Field(
        default=None,
        description=(
            "Fully qualified serving image; defaults to the operator's image for the runtime. "
            "Its registry must be in the policy's allowedRegistries."
        ),
        pattern=IMAGE_PATTERN,
        max_length=1024,
    )


REPLICAS_XOR_AUTOSCALING_RULE: JsonDict = {
    "rule": "!(has(self.replicas) && has(self.autoscaling))",
    "message": "spec.replicas and spec.autoscaling are mutually exclusive",
    "fieldPath": ".replicas",
}
VLLM_NEEDS_GPU_RULE: JsonDict = {
    "rule": "self.runtime != 'vllm' || self.resources.gpusPerReplica >= 1",
    "message": (
        "spec.runtime vllm needs spec.resources.gpusPerReplica >= 1; use transformers on CPUs"
    ),
    "fieldPath": ".runtime",
}
TENSOR_PARALLEL_RULE: JsonDict = {
    "rule": "self.serving.tensorParallelSize <= (self.resources.gpusPerReplica > 0 ? "
    "self.resources.gpusPerReplica : 1)",
    "message": (
        "spec.serving.tensorParallelSize must not exceed spec.resources.gpusPerReplica (1 on CPUs)"
    ),
    "fieldPath": ".serving.tensorParallelSize",
}


class ModelDeploymentSpec(ApiModel):
    """Desired state of a ModelDeployment."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                REPLICAS_XOR_AUTOSCALING_RULE,
                VLLM_NEEDS_GPU_RULE,
                TENSOR_PARALLEL_RULE,
            ]
        }
    )

    model: ModelSource = Field(description="The model to serve.")
    runtime: Runtime = Field(
        default=Runtime.VLLM,
        description="vllm (GPU, default) or transformers (the project's CPU/GPU server).",
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Fixed number of replicas (1 when neither this nor autoscaling is set).",
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Autoscale instead of a fixed replica count."
    )
    resources: ServingResources = Field(
        default_factory=ServingResources, description="GPUs, CPU and memory per replica."
    )
    placement: Placement = Field(
        default_factory=Placement, description="Regions, policy, Kueue queue and tolerations."
    )
    serving: Serving = Field(default_factory=Serving, description="Server settings.")
    suspend: bool = Field(default=False, description="true scales the deployment to zero.")


class ModelDeploymentPhase(StrEnum):
    """Lifecycle of a ModelDeployment."""

    PENDING = "Pending"
    DEPLOYING = "Deploying"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ModelDeploymentConditionType(StrEnum):
    """Condition types a ModelDeployment reports."""

    MODEL_RESOLVED = "ModelResolved"
    RESIDENCY_VERIFIED = "ResidencyVerified"
    MODEL_VERIFIED = "ModelVerified"
    PROGRESSING = "Progressing"
    READY = "Ready"


class ModelDeploymentStatus(OperatorStatus):
    """Observed state of a ModelDeployment, written by the operator."""

    phase: ModelDeploymentPhase = Field(
        default=ModelDeploymentPhase.PENDING, description="Lifecycle phase."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "ModelResolved, ResidencyVerified, ModelVerified (the fetched model is the one "
            "expected: a fineTuneJobRef's carries the job's uid in its MLflow tags and the "
            "digest its trainer recorded), Progressing, Ready."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status was computed from."
    )
    url: str | None = Field(
        default=None, description="In-cluster base URL of the OpenAI-compatible API (…/v1)."
    )
    replicas: int | None = Field(default=None, ge=0, description="Replicas wanted now.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Replicas ready to serve.")
    model_uri: str | None = Field(default=None, description="The resolved model URI being served.")
    model_digest: str | None = Field(
        default=None, description="sha256 of the served weights, as fetched by the init container."
    )
    base_model_uri: str | None = Field(
        default=None, description="The base model an unmerged LoRA adapter is served on."
    )
    base_model_digest: str | None = Field(
        default=None, description="sha256 of that base model, as fetched by its init container."
    )
    served_model_name: str | None = Field(default=None, description="Model name clients use.")
    policy_name: str | None = Field(
        default=None, description="The SovereigntyPolicy whose settings were applied."
    )
    regions: list[RegionName] | None = Field(
        default=None, max_length=MAX_REGIONS, description="Allowed regions the pods were pinned to."
    )
    placement: list[PodPlacement] | None = Field(
        default=None, description="Where each replica runs: pod, node, region."
    )
    storage: list[StoragePlace] | None = Field(
        default=None,
        description=(
            "Where the served model (and an adapter's base) come from: the SovereigntyPolicy "
            "endpoint (URL, region) each resolved to (residency evidence)."
        ),
    )
    audit: AuditTrail | None = Field(
        default=None, description="Its records in the operator's audit log (docs/compliance.md)."
    )
    error: ErrorInfo | None = Field(
        default=None, description="Why the deployment failed, if it did."
    )


class ModelDeployment(ApiModel):
    """A ModelDeployment custom resource: an OpenAI-compatible endpoint on allowed nodes."""

    api_version: Literal["sovereign-ai.eu/v1alpha1"] = Field(
        default=API_VERSION, description="sovereign-ai.eu/v1alpha1"
    )
    kind: Literal["ModelDeployment"] = Field(default=KIND, description="ModelDeployment")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired state.")
    status: ModelDeploymentStatus | None = Field(default=None, description="Observed state.")
