"""FineTuneJob: fine-tune a base model on a dataset, on allowed nodes, tracked in MLflow."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.config import JsonDict

from .common import (
    API_VERSION,
    DNS_LABEL,
    INT32_MAX,
    MAX_LIST,
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

KIND: Final = "FineTuneJob"
PLURAL: Final = "finetunejobs"

AUTO: Final = "auto"
Auto = Literal["auto"]

# Where models and data may come from. The SovereigntyPolicy narrows these further.
# An S3 bucket here has no dots and an S3 URI no query or fragment: a dotted bucket reads as a
# host name (s3://eu-x.s3.us-east-1.amazonaws.com matches "eu-*"), and some S3 libraries take
# the endpoint from a query string (?endpoint_override=); either could move the data elsewhere.
S3_BUCKET = r"s3://[a-z0-9][a-z0-9-]{1,61}[a-z0-9]"
S3_PATH = r"[^\s?#]"
MODEL_URI_PATTERN = (
    r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
    rf"|{S3_BUCKET}(/{S3_PATH}*)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?"
    r"|models:/[A-Za-z0-9][^\s/@]*(/[0-9]+|@[A-Za-z0-9_-]+)"
    r"|file:///[^\s]*)$"
)
# No hf:// datasets: the trainer reads JSONL files only, and a hub dataset is not one file. An
# accepted spec must not fail only at run time, so they are refused at admission; mirror the
# file to S3 or a claim instead.
DATA_URI_PATTERN = (
    rf"^({S3_BUCKET}/{S3_PATH}+"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^\s]+"
    r"|file:///[^\s]+)$"
)
OUTPUT_URI_PATTERN = (
    rf"^({S3_BUCKET}(/{S3_PATH}*)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?"
    r"|file:///[^\s]+)$"
)
# A fully qualified image: registry host, path, and a tag or digest.
IMAGE_PATTERN = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?/[^\s]+$"


class BaseModelSource(ApiModel):
    """The model to start from."""

    uri: str = Field(
        description=(
            "Where the base model is: hf://org/name (Hugging Face), s3://bucket/path, "
            "pvc://claim/path, models:/name/version or models:/name@alias (MLflow registry), "
            "or file:///abs/path (development). The SovereigntyPolicy's allowedModelSources "
            "must allow it."
        ),
        pattern=MODEL_URI_PATTERN,
        max_length=2048,
    )
    revision: str | None = Field(
        default=None,
        description="Revision to pin: a git commit, branch or tag for hf://; ignored otherwise.",
        max_length=255,
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None, description="Credentials for the source (HF_TOKEN or S3 keys)."
    )


class DatasetFormat(StrEnum):
    """Layout of each JSONL record."""

    CHAT = "chat"
    INSTRUCT = "instruct"
    TEXT = "text"


class Dataset(ApiModel):
    """The training data: JSONL files."""

    training_uri: str = Field(
        description=(
            "JSONL training file: s3://bucket/key, pvc://claim/path or file:///abs/path (a "
            "Hugging Face dataset: mirror its JSONL file to one of these). The "
            "SovereigntyPolicy's allowedStorage must allow it."
        ),
        pattern=DATA_URI_PATTERN,
        max_length=2048,
    )
    validation_uri: str | None = Field(
        default=None,
        description="Optional JSONL validation file, same schemes and policy as trainingUri.",
        pattern=DATA_URI_PATTERN,
        max_length=2048,
    )
    format: DatasetFormat = Field(
        default=DatasetFormat.CHAT,
        description=(
            "chat: {messages:[{role,content}]}; instruct: {prompt,completion}; text: {text}."
        ),
    )
    sha256: str | None = Field(
        default=None,
        description="Expected SHA-256 of the training file; the job fails when it differs.",
        pattern=r"^[a-f0-9]{64}$",
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None, description="Credentials for reading the dataset (S3 keys)."
    )


class MethodType(StrEnum):
    """Fine-tuning method."""

    FULL = "full"
    LORA = "lora"


EpochsValue = Annotated[int, Field(ge=1, le=100)] | Auto
BatchSizeValue = Annotated[int, Field(ge=1, le=4096)] | Auto
MicroBatchSizeValue = Annotated[int, Field(ge=1, le=512)] | Auto
# Kubernetes APIs avoid floats (they do not round-trip), and no structural schema holds a
# number-or-string; so on the wire the learning rate is a string, "auto" or a decimal such as
# "2e-4", like a resource.Quantity. In Python it is a float or "auto".
LEARNING_RATE_PATTERN = r"^(auto|([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?)$"
LEARNING_RATE_RULE: JsonDict = {
    "rule": "self == 'auto' || (double(self) > 0.0 && double(self) <= 1.0)",
    "message": 'spec.method.hyperparameters.learningRate must be "auto" or a number in (0, 1], '
    'as a string such as "2e-4"',
}
LearningRateValue = Annotated[
    Annotated[float, Field(gt=0, le=1)] | Auto,
    # Positional ("0.00001", not "1e-05"): YAML 1.1 writers such as PyYAML leave "1e-05"
    # unquoted, and kubectl then reads a number where the schema wants a string.
    PlainSerializer(lambda v: v if v == AUTO else format(Decimal(repr(v)), "f"), return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": LEARNING_RATE_PATTERN,
            "maxLength": 32,
            "x-kubernetes-validations": [LEARNING_RATE_RULE],
        }
    ),
]


class Hyperparameters(ApiModel):
    """Training hyperparameters. The trainer resolves "auto" once it knows the dataset's size
    (the rules are in sovereign_training.hyperparameters) and reports the values it trains with,
    which the operator records in status.resolvedHyperparameters."""

    epochs: EpochsValue = Field(
        default=AUTO,
        description=(
            'Passes over the training data, 1-100, or "auto": about 3000 examples seen, '
            "clamped to 1-10 epochs, or 3 when the dataset size is unknown."
        ),
    )
    batch_size: BatchSizeValue = Field(
        default=AUTO,
        description=(
            "Global batch size (examples per optimizer step, over all workers), 1-4096, or "
            '"auto": the largest power of two <= size/100, clamped to 4-64 (8 when the size '
            "is unknown), rounded up to a multiple of workers x microBatchSize (x 4 for lora, "
            "x 2 for full when that is auto too)."
        ),
    )
    micro_batch_size: MicroBatchSizeValue = Field(
        default=AUTO,
        description=(
            "Examples per worker per forward pass; gradient accumulation makes up the rest. "
            '1-512, or "auto": the largest power of two <= 4 (lora) or 2 (full) that divides '
            "batchSize / workers."
        ),
    )
    learning_rate: LearningRateValue = Field(
        default=AUTO,
        description=(
            'Peak learning rate in (0, 1] as a string such as "2e-4", or "auto": 2e-4 for '
            "lora, 1e-5 for full."
        ),
    )
    max_seq_length: int = Field(
        default=2048,
        ge=16,
        le=131072,
        description="Longest tokenized example; longer ones are cut.",
    )
    warmup_ratio: float = Field(
        default=0.03,
        ge=0,
        le=0.5,
        description="Fraction of steps spent warming up the learning rate.",
    )
    seed: int = Field(
        default=42, ge=0, le=2**31 - 1, description="Random seed, for reproducibility."
    )


class LoraConfig(ApiModel):
    """LoRA adapter settings (PEFT)."""

    rank: int = Field(default=16, ge=1, le=512, description="Rank r of the low-rank update.")
    alpha: int = Field(
        default=32, ge=1, le=4096, description="Scaling numerator; scale = alpha / rank."
    )
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        max_length=MAX_LIST,
        default=["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="Names of the linear modules to adapt (e.g. q_proj, v_proj).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


LORA_ONLY_WITH_LORA_RULE: JsonDict = {
    "rule": "!has(self.lora) || self.type == 'lora'",
    "message": "spec.method.lora is only allowed when spec.method.type is lora",
    "fieldPath": ".lora",
}
MERGE_ONLY_WITH_LORA_RULE: JsonDict = {
    "rule": "!has(self.mergeAdapter) || !self.mergeAdapter || self.type == 'lora'",
    "message": "spec.method.mergeAdapter is only allowed when spec.method.type is lora",
    "fieldPath": ".mergeAdapter",
}


class Method(ApiModel):
    """How to fine-tune: full weights or a LoRA adapter, and the hyperparameters."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [LORA_ONLY_WITH_LORA_RULE, MERGE_ONLY_WITH_LORA_RULE]
        }
    )

    type: MethodType = Field(
        default=MethodType.LORA,
        description="full (all weights) or lora (an adapter). Default lora.",
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters,
        description='Training hyperparameters; "auto" where allowed.',
    )
    lora: LoraConfig | None = Field(
        default=None,
        description="LoRA settings; only with type lora. Defaults apply when omitted.",
    )
    merge_adapter: bool = Field(
        default=False,
        description="lora only: merge the adapter into the base weights before registering.",
    )


GPU_TYPE_NEEDS_GPUS_RULE: JsonDict = {
    "rule": "!has(self.gpuType) || self.gpusPerWorker > 0",
    "message": "spec.resources.gpuType needs spec.resources.gpusPerWorker > 0",
    "fieldPath": ".gpuType",
}


class TrainingResources(ApiModel):
    """Compute for the Ray worker group (Kubeflow Trainer's numNodes x resourcesPerNode)."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [GPU_TYPE_NEEDS_GPUS_RULE]}
    )

    workers: int = Field(default=1, ge=1, le=64, description="Number of Ray Train workers (pods).")
    gpus_per_worker: int = Field(
        default=1, ge=0, le=16, description="nvidia.com/gpu per worker; 0 trains on CPUs."
    )
    gpu_type: str | None = Field(
        default=None,
        description=(
            "Required value of the nvidia.com/gpu.product node label, e.g. NVIDIA-H100-80GB-HBM3."
        ),
        max_length=63,
    )
    cpu: Quantity = Field(default="4", description="CPU request and limit per worker.")
    memory: Quantity = Field(default="32Gi", description="Memory request and limit per worker.")


class ExecutionBackend(StrEnum):
    """Where the Ray job runs."""

    KUBERAY = "kuberay"
    RAY_CLUSTER = "rayCluster"


class CleanupAction(StrEnum):
    """What to delete once the job has finished and ttlSecondsAfterFinished has passed."""

    DELETE_CLUSTER = "DeleteCluster"
    KEEP_CLUSTER = "KeepCluster"


class Cleanup(ApiModel):
    """Cleanup of the Ray cluster after the job, separately for success and failure.
    The FineTuneJob itself is never deleted: it is the evidence."""

    on_success: CleanupAction = Field(
        default=CleanupAction.DELETE_CLUSTER,
        description="After success: DeleteCluster (default) or KeepCluster.",
    )
    on_failure: CleanupAction = Field(
        default=CleanupAction.KEEP_CLUSTER,
        description="After failure: KeepCluster (default, for debugging) or DeleteCluster.",
    )


RAY_CLUSTER_REF_RULE: JsonDict = {
    # has(self.backend): the rule also judges the schema default {} before it is filled in.
    "rule": "(has(self.backend) && self.backend == 'rayCluster') == has(self.rayClusterRef)",
    "message": (
        "spec.execution.rayClusterRef is required when spec.execution.backend is rayCluster "
        "and not allowed otherwise"
    ),
    "fieldPath": ".rayClusterRef",
}
STARTUP_WITHIN_ACTIVE_RULE: JsonDict = {
    "rule": (
        "!has(self.activeDeadlineSeconds) || "
        "self.startupDeadlineSeconds <= self.activeDeadlineSeconds"
    ),
    "message": (
        "spec.execution.startupDeadlineSeconds must not exceed spec.execution.activeDeadlineSeconds"
    ),
    "fieldPath": ".startupDeadlineSeconds",
}


class Execution(ApiModel):
    """How the job is run: a KubeRay RayJob, or a submission to a declared Ray cluster."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [RAY_CLUSTER_REF_RULE, STARTUP_WITHIN_ACTIVE_RULE]
        }
    )

    backend: ExecutionBackend = Field(
        default=ExecutionBackend.KUBERAY,
        description=(
            "kuberay (default): the operator creates a RayJob. rayCluster: it submits to an "
            "existing Ray cluster declared in the SovereigntyPolicy (rayClusterRef)."
        ),
    )
    ray_cluster_ref: str | None = Field(
        default=None,
        description=(
            "With backend rayCluster: name of a rayClusters[] entry of the SovereigntyPolicy."
        ),
        pattern=DNS_LABEL,
        max_length=63,
    )
    image: str | None = Field(
        default=None,
        description=(
            "Fully qualified training image (registry/path:tag or @digest). Defaults to the "
            "operator's training image. Its registry must be in the policy's allowedRegistries."
        ),
        pattern=IMAGE_PATTERN,
        max_length=1024,
    )
    startup_deadline_seconds: int = Field(
        default=900,
        ge=30,
        le=86400,
        description=(
            "Fail the job (code StartupTimeout) if training has not started this long after "
            "creation: unschedulable pods, image pull errors, no matching GPU nodes."
        ),
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=60,
        le=INT32_MAX,  # KubeRay's RayJob field is an int32
        description="Fail the job (code DeadlineExceeded) after this long from start; unset: none.",
    )
    backoff_limit: int = Field(
        default=0, ge=0, le=10, description="Retries of the whole job after a failure."
    )
    ttl_seconds_after_finished: int = Field(
        default=3600,
        ge=0,
        le=INT32_MAX,  # KubeRay's RayJob field is an int32
        description="Seconds after finishing before the cleanup actions apply.",
    )
    cleanup: Cleanup = Field(
        default_factory=Cleanup, description="What to delete after success and after failure."
    )


class Tracking(ApiModel):
    """MLflow tracking and registry names."""

    experiment_name: str | None = Field(
        default=None,
        description="MLflow experiment; defaults to <namespace>/<name>.",
        max_length=256,
    )
    registered_model_name: str | None = Field(
        default=None,
        description=(
            "Name under which the result is registered in the MLflow registry; defaults to "
            "<baseModelName>-<suffix or job name>."
        ),
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=256,
    )


class Output(ApiModel):
    """Where to copy the final model besides the MLflow registry."""

    uri: str | None = Field(
        default=None,
        description=(
            "s3://bucket/prefix, pvc://claim/path or file:///abs/path. The SovereigntyPolicy's "
            "allowedStorage must allow it."
        ),
        pattern=OUTPUT_URI_PATTERN,
        max_length=2048,
    )


class Checkpointing(ApiModel):
    """Checkpoints reported to Ray Train; a restarted worker resumes from the latest."""

    every_steps: int = Field(
        default=200, ge=1, le=INT32_MAX, description="Save a checkpoint every N steps."
    )
    keep: int = Field(default=2, ge=1, le=100, description="Number of checkpoints to keep.")
    max_failures: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Worker failures Ray Train recovers from (FailureConfig).",
    )


BATCH_MULTIPLE_RULE: JsonDict = {
    "rule": (
        "type(self.method.hyperparameters.batchSize) != int || "
        "self.method.hyperparameters.batchSize % (self.resources.workers * "
        "(type(self.method.hyperparameters.microBatchSize) == int ? "
        "self.method.hyperparameters.microBatchSize : 1)) == 0"
    ),
    "message": (
        "spec.method.hyperparameters.batchSize must be a multiple of spec.resources.workers "
        "x spec.method.hyperparameters.microBatchSize"
    ),
    "fieldPath": ".method.hyperparameters.batchSize",
}


CANCEL_IS_FINAL_RULE: JsonDict = {
    # A transition rule: judged on updates only, against the stored spec.
    "rule": "!oldSelf.cancel || self.cancel",
    "message": (
        "spec.cancel cannot be set back to false: a cancelled FineTuneJob stays cancelled; "
        "create a new FineTuneJob instead"
    ),
    "fieldPath": ".cancel",
}


class FineTuneJobSpec(ApiModel):
    """Desired state of a FineTuneJob. Immutable once the job has started, except suspend and
    cancel."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [BATCH_MULTIPLE_RULE, CANCEL_IS_FINAL_RULE]}
    )

    base_model: BaseModelSource = Field(description="The model to fine-tune.")
    dataset: Dataset = Field(description="The training (and optional validation) data.")
    method: Method = Field(
        default_factory=Method, description="Fine-tuning method and hyperparameters."
    )
    resources: TrainingResources = Field(
        default_factory=TrainingResources, description="Workers, GPUs, CPU and memory."
    )
    placement: Placement = Field(
        default_factory=Placement, description="Regions, policy, Kueue queue and tolerations."
    )
    execution: Execution = Field(
        default_factory=Execution, description="Backend, image, deadlines, retries and cleanup."
    )
    checkpointing: Checkpointing = Field(
        default_factory=Checkpointing, description="Checkpoint cadence and failure recovery."
    )
    tracking: Tracking = Field(
        default_factory=Tracking, description="MLflow experiment and model names."
    )
    output: Output = Field(default_factory=Output, description="Optional copy of the final model.")
    suffix: str | None = Field(
        default=None,
        description="Up to 40 characters added to the fine-tuned model's name (as in OpenAI).",
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        max_length=40,
    )
    suspend: bool = Field(
        default=False,
        description=(
            "true stops the job (its Ray cluster is deleted); false resumes from a checkpoint."
        ),
    )
    cancel: bool = Field(
        default=False,
        description=(
            "true cancels the job for good: its Ray job is stopped and its pods deleted, and the "
            "FineTuneJob stays, phase Cancelled, with its evidence. Cannot be set back to false."
        ),
    )


class FineTuneJobPhase(StrEnum):
    """Lifecycle of a FineTuneJob: OpenAI's job states plus Suspended. There is no Validating:
    the operator validates a job in the pass that first sees it, and that pass writes Queued
    or Failed. A job the operator has not seen yet has no phase."""

    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SUSPENDED = "Suspended"


class FineTuneJobConditionType(StrEnum):
    """Condition types a FineTuneJob reports."""

    INPUTS_VALIDATED = "InputsValidated"
    RESIDENCY_VERIFIED = "ResidencyVerified"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    CANCELLED = "Cancelled"  # only on a cancelled job (spec.cancel)
    # Set once the result says how the fine-tune's compute compares with the base model's
    # (absent while the base model's training compute is not known).
    MODIFICATION_THRESHOLD_EXCEEDED = "ModificationThresholdExceeded"


class Progress(ApiModel):
    """Training progress, from the trainer's SOVAI_PROGRESS lines."""

    step: int = Field(default=0, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, ge=0, description="Fractional epoch reached.")
    percentage: int = Field(default=0, ge=0, le=100, description="step / totalSteps, in percent.")
    train_loss: float | None = Field(default=None, description="Latest training loss.")
    eval_loss: float | None = Field(default=None, description="Latest validation loss.")
    tokens_per_second: float | None = Field(default=None, ge=0, description="Training throughput.")
    estimated_remaining_seconds: int | None = Field(
        default=None, ge=0, description="Estimated time left."
    )


class MlflowInfo(ApiModel):
    """The MLflow run and the registered model version."""

    run_id: str | None = Field(default=None, description="MLflow run id.")
    experiment_id: str | None = Field(default=None, description="MLflow experiment id.")
    model_name: str | None = Field(default=None, description="Registered model name.")
    model_version: str | None = Field(default=None, description="Registered model version.")
    model_uri: str | None = Field(default=None, description="models:/name/version of the result.")
    model_digest: str | None = Field(
        default=None,
        description=(
            "sha256 of the registered model folder, as the trainer computed it; a ModelDeployment "
            "serving this job refuses a fetched model with another digest."
        ),
    )


class ComputeUsage(ApiModel):
    """Compute and energy the job used, as the trainer accounted them (docs/training.md)."""

    gpu_hours: float | None = Field(
        default=None,
        ge=0,
        description="Wall time from the driver's start to the final save x workers x GPUs per "
        "worker / 3600; 0 for CPU workers.",
    )
    cpu_core_hours: float | None = Field(
        default=None,
        ge=0,
        description="CPU workers only: wall time x workers x compute threads per worker / 3600.",
    )
    wall_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Seconds from the driver's start to the final save, restarts included.",
    )
    tokens: int | None = Field(default=None, ge=0, description="Tokens trained (no padding).")
    training_flops: float | None = Field(
        default=None,
        ge=0,
        description="FLOPs per token (forward and backward; LoRA-aware) x tokens trained.",
    )
    energy_kwh: float | None = Field(
        default=None,
        ge=0,
        description="GPU-hours x the GPU's board power x PUE; absent where not estimated.",
    )
    energy_method: str | None = Field(
        default=None, description="How energyKwh was estimated, or why it was not."
    )
    base_model_training_flops: float | None = Field(
        default=None, gt=0, description="The base model's own training compute, where known."
    )
    base_compute_ratio: float | None = Field(
        default=None,
        ge=0,
        description="trainingFlops / baseModelTrainingFlops; above 1/3 the "
        "ModificationThresholdExceeded condition is True.",
    )


class ResolvedHyperparameters(ApiModel):
    """Hyperparameters with every "auto" replaced by the value used."""

    epochs: int = Field(ge=1, description="Epochs used.")
    batch_size: int = Field(ge=1, description="Global batch size used.")
    micro_batch_size: int = Field(ge=1, description="Per-worker micro-batch size used.")
    learning_rate: float = Field(gt=0, description="Peak learning rate used.")
    max_seq_length: int = Field(ge=1, description="Maximum sequence length used.")
    warmup_ratio: float = Field(ge=0, description="Warm-up ratio used.")
    seed: int = Field(ge=0, description="Random seed used.")


class FineTuneJobStatus(OperatorStatus):
    """Observed state of a FineTuneJob, written by the operator."""

    phase: FineTuneJobPhase | None = Field(
        default=None, description="Lifecycle phase; absent until the operator has seen the job."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "InputsValidated, ResidencyVerified, Admitted, Running, Succeeded, Failed, Suspended, "
            "Cancelled on a cancelled job, and ModificationThresholdExceeded once the "
            "fine-tune's share of the base model's training compute is known."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status was computed from."
    )
    start_time: datetime | None = Field(
        default=None,
        description=(
            "When the backend job was submitted. Once set, the spec is immutable except suspend."
        ),
    )
    completion_time: datetime | None = Field(default=None, description="When the job finished.")
    ray_job_name: str | None = Field(
        default=None, description="Name of the owned RayJob (kuberay)."
    )
    submission_id: str | None = Field(
        default=None, description="Ray Job Submission id (rayCluster backend)."
    )
    policy_name: str | None = Field(
        default=None, description="The SovereigntyPolicy whose settings were applied."
    )
    regions: list[RegionName] | None = Field(
        default=None,
        max_length=MAX_REGIONS,
        description="Allowed regions the pods were pinned to (policy ∩ spec.placement.regions).",
    )
    placement: list[PodPlacement] | None = Field(
        default=None, description="Where each pod ran: pod, node, region (residency evidence)."
    )
    storage: list[StoragePlace] | None = Field(
        default=None,
        description=(
            "Where each URI goes: the SovereigntyPolicy endpoint (URL, region) it resolved to "
            "and the pods were given (residency evidence)."
        ),
    )
    progress: Progress | None = Field(default=None, description="Training progress and ETA.")
    resolved_hyperparameters: ResolvedHyperparameters | None = Field(
        default=None,
        description=(
            'Hyperparameters the job trains with, every "auto" resolved: as the trainer '
            "reported them once it knew the dataset's size; before that, set only when no "
            "value depends on the data."
        ),
    )
    mlflow: MlflowInfo | None = Field(default=None, description="MLflow run and registered model.")
    compute: ComputeUsage | None = Field(
        default=None, description="Compute and energy used, from the trainer's result."
    )
    audit: AuditTrail | None = Field(
        default=None, description="Its records in the operator's audit log (docs/compliance.md)."
    )
    fine_tuned_model: str | None = Field(
        default=None, description="URI of the fine-tuned model (models:/name/version)."
    )
    output_uri: str | None = Field(
        default=None,
        description="Where the final model was copied (spec.output.uri), as the trainer reported.",
    )
    error: ErrorInfo | None = Field(default=None, description="Why the job failed, if it did.")

    @property
    def phase_name(self) -> str:
        """The phase as written; "New" before the operator has written one."""
        return self.phase.value if self.phase is not None else "New"


class FineTuneJob(ApiModel):
    """A FineTuneJob custom resource: fine-tunes a base model on allowed nodes only."""

    api_version: Literal["sovereign-ai.eu/v1alpha1"] = Field(
        default=API_VERSION, description="sovereign-ai.eu/v1alpha1"
    )
    kind: Literal["FineTuneJob"] = Field(default=KIND, description="FineTuneJob")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: FineTuneJobSpec = Field(description="Desired state.")
    status: FineTuneJobStatus | None = Field(default=None, description="Observed state.")
