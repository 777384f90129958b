"""Operator settings: one typed object read from SOVAI_* environment variables at startup.

The Helm chart's values map one-to-one onto these variables.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .images.references import RUNTIME_IMAGE

ENV_PREFIX = "SOVAI_"


class Settings(BaseSettings):
    """Everything the operator can be configured with. Read once, at startup."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    runtime_image: str = Field(
        default=RUNTIME_IMAGE,
        description=(
            "Runtime image (Ray, training, model fetch, CPU serving; images/runtime) used when "
            "a FineTuneJob names none."
        ),
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description=(
            "MLFLOW_TRACKING_URI given to training pods; unset: the trainer's default. The "
            "operator reads it too (http or https), for the result of a job whose log no longer "
            "gives it, with MLFLOW_TRACKING_TOKEN or _USERNAME/_PASSWORD from its own "
            "environment."
        ),
    )
    mlflow_secret_name: str | None = Field(
        default=None,
        description=(
            "Secret in the job's namespace whose keys MLFLOW_TRACKING_USERNAME / "
            "MLFLOW_TRACKING_PASSWORD / MLFLOW_TRACKING_TOKEN are passed via secretKeyRef."
        ),
    )
    hf_hub_offline: bool = Field(
        default=True, description="HF_HUB_OFFLINE for training pods (air-gapped by default)."
    )
    default_policy: str | None = Field(
        default=None, description="SovereigntyPolicy used when a job names none."
    )
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch (comma-separated); empty: the whole cluster.",
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Prometheus port; 0 off.")
    health_port: int = Field(default=8081, ge=0, le=65535, description="Liveness port; 0 off.")
    replicas: int = Field(
        default=1, ge=1, description="Operator replicas; peering is used only when > 1."
    )
    peering_name: str = Field(default="sovereign-ai-operator", description="Kopf peering name.")
    post_events: bool = Field(default=True, description="Post Kubernetes Events.")
    startup_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Overrides every job's spec.execution.startupDeadlineSeconds (tests, demos); "
            "unset: each job's own value."
        ),
    )
    result_deadline_seconds: int = Field(
        default=600,
        ge=1,
        description=(
            "How long after a Ray job succeeded its result (the trainer's SOVAI_RESULT line) "
            "may stay unreadable before the FineTuneJob fails with ResultLost; until then it "
            "is read again, and the job is not called Succeeded without it."
        ),
    )
    reconcile_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Interval of the level-based follow-up of jobs and deployments.",
    )
    max_workers: int = Field(default=16, ge=1, description="Threads for the sync handlers.")
    worker_limit: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Objects Kopf processes at once (its per-object workers); unset: no limit. A small "
            "limit stalls bursts: a worker keeps its slot while it waits for its own patch "
            "to come back (docs/benchmarks.md)."
        ),
    )
    head_cpu: str = Field(default="2", description="CPU of the Ray head pod.")
    head_memory: str = Field(default="8Gi", description="Memory of the Ray head pod.")
    ray_version: str = Field(default="2.60.0", description="Ray version in the runtime image.")
    training_command: str = Field(
        default="python -m sovereign_training train",
        description="Trainer command; the operator appends --config <path to job.json>.",
    )
    vllm_image: str = Field(
        default="registry.sovereign-ai.eu/vllm/vllm-openai:v0.11.0",
        description="Serving image of ModelDeployments with runtime vllm that name none.",
    )
    serving_image: str | None = Field(
        default=None,
        description=(
            "Image with `sovereign_training fetch` and `serve` (the model-fetch init container "
            "and runtime transformers); unset: runtime_image."
        ),
    )
    model_cache_claim: str | None = Field(
        default=None,
        description=(
            "PVC (ReadWriteMany, in each ModelDeployment's namespace) used as model cache, so "
            "restarts do not fetch again; unset: an emptyDir per pod."
        ),
    )
    serving_progress_deadline_seconds: int = Field(
        default=600,
        ge=1,
        description="A serving rollout without progress this long makes the deployment Degraded.",
    )
    audit_uri: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?$",
        description=(
            "The audit log: s3://bucket/prefix in an S3-compatible store, ideally a bucket "
            "with Object Lock (docs/compliance.md); unset: no audit log is kept. Credentials "
            "come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."
        ),
    )
    audit_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s?#@]+$",
        description="URL of the store that holds audit_uri; unset: AWS S3.",
    )
    audit_region: str | None = Field(
        default=None, description="Region to sign audit log requests for; unset: boto3's."
    )
    log_format: str = Field(default="json", pattern="^(json|text)$", description="json or text.")
    log_level: str = Field(default="INFO", description="Python log level.")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


def describe_errors(error: ValidationError) -> str:
    """A settings error as the variables the user set: ``SOVAI_METRICS_PORT: Input should be
    less than or equal to 65535 (got '70000')``."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        variable = f"{ENV_PREFIX}{field.upper()}" if field in Settings.model_fields else field
        lines.append(f"{variable}: {item['msg']} (got {item['input']!r})")
    return "; ".join(lines)
