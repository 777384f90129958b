"""The training job's configuration: the JSON file the operator writes (job.json, which the head
pod shows from its annotation).

The shape is the operator <-> training contract (docs/training.md). Keys are camelCase; unknown
keys are rejected so that a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import hashlib
import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .hyperparameters import AUTO, Auto, HyperparameterError, plan_batches

API_VERSION = "sovereign-ai.eu/v1alpha1"


class ConfigError(ValueError):
    """A job config that cannot be used; the message names each field and what is allowed."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class JobRef(_Model):
    namespace: str = Field(min_length=1, description="Namespace of the FineTuneJob.")
    name: str = Field(min_length=1, description="Name of the FineTuneJob.")
    uid: str = Field(min_length=1, description="metadata.uid of the FineTuneJob.")


class BaseModelSource(_Model):
    uri: str = Field(
        min_length=1,
        description="hf://org/name, s3://bucket/prefix, pvc://claim/path, models:/name/version, "
        "file:///abs/path or a plain local path.",
    )
    revision: str | None = Field(default=None, description="Hub revision (hf:// only).")
    training_flops: float | None = Field(
        default=None,
        gt=0,
        description="The base model's own training compute in FLOP, where known (from the "
        "policy's model source); compared with the fine-tune's compute (accounting.py).",
    )


class DatasetFormat(StrEnum):
    CHAT = "chat"
    INSTRUCT = "instruct"
    TEXT = "text"


class Dataset(_Model):
    training_uri: str = Field(
        min_length=1, description="JSONL: local path, pvc://, s3://, https://"
    )
    validation_uri: str | None = Field(default=None, description="Optional validation JSONL.")
    format: DatasetFormat = Field(
        description="chat (messages), instruct (prompt/completion), text."
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^(sha256:)?[0-9a-fA-F]{64}$",
        description="Expected sha256 of the training file (64 hex digits, optional sha256:).",
    )

    @property
    def expected_sha256(self) -> str | None:
        return self.sha256.lower().removeprefix("sha256:") if self.sha256 else None


class Hyperparameters(_Model):
    """What the job trains with. epochs, batchSize and microBatchSize may come as "auto":
    their values depend on the dataset's size, so the trainer chooses them (resolved)."""

    epochs: Annotated[int, Field(ge=1, le=1000)] | Auto
    batch_size: Annotated[int, Field(ge=1)] | Auto = Field(
        description='Global batch: sequences per optimizer step, or "auto".'
    )
    micro_batch_size: Annotated[int, Field(ge=1)] | Auto = Field(
        description='Sequences per forward pass per worker, or "auto".'
    )
    learning_rate: float = Field(gt=0, lt=1)
    max_seq_length: int = Field(ge=8, le=1_048_576)
    warmup_ratio: float = Field(ge=0, lt=1)
    seed: int = Field(ge=0)


class LoraSettings(_Model):
    rank: int = Field(ge=1, le=4096)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)


class Method(_Model):
    type: Literal["full", "lora"]
    hyperparameters: Hyperparameters
    lora: LoraSettings | None = None
    merge_adapter: bool = False

    @model_validator(mode="after")
    def _lora_needs_settings(self) -> Method:
        if self.type == "lora" and self.lora is None:
            raise ValueError("method.lora is required when method.type is 'lora'")
        return self


class Resources(_Model):
    workers: int = Field(ge=1, le=4096)
    gpus_per_worker: int = Field(ge=0, le=16, description="0 means CPU workers.")


class Tracking(_Model):
    experiment_name: str = Field(min_length=1)
    registered_model_name: str = Field(min_length=1)


class Output(_Model):
    uri: str | None = Field(
        default=None, description="Where to copy the final model: local path, pvc:// or s3://."
    )


class Checkpointing(_Model):
    every_steps: int = Field(ge=1)
    keep: int = Field(ge=1)
    max_failures: int = Field(ge=-1, description="-1 retries forever.")


class Placement(_Model):
    regions: list[str] = Field(default_factory=list)
    policy_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="The SovereigntyPolicy the job runs under (shown in the model card).",
    )


class Energy(_Model):
    pue: float | None = Field(
        default=None,
        ge=1,
        le=5,
        description="Power usage effectiveness of the data centre; without it the energy "
        "estimate is the GPUs' own (accounting.py).",
    )


class Audit(_Model):
    chain_head: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9:._/+=-]{0,254}$",
        description="The audit chain's head when the job was submitted (model card).",
    )


class TrainingConfig(_Model):
    api_version: Literal["sovereign-ai.eu/v1alpha1"]
    kind: Literal["TrainingConfig"]
    job: JobRef
    base_model: BaseModelSource
    dataset: Dataset
    method: Method
    resources: Resources
    tracking: Tracking
    output: Output = Field(default_factory=Output)
    checkpointing: Checkpointing
    placement: Placement = Field(default_factory=Placement)
    energy: Energy = Field(default_factory=Energy)
    audit: Audit = Field(default_factory=Audit)

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainingConfig:
        hp = self.method.hyperparameters
        if hp.batch_size == AUTO or hp.micro_batch_size == AUTO:
            return self  # checked when resolved
        per_step = hp.micro_batch_size * self.resources.workers
        if hp.batch_size % per_step:
            raise ValueError(
                f"method.hyperparameters.batchSize ({hp.batch_size}) must be a multiple of "
                f"microBatchSize x resources.workers ({hp.micro_batch_size} x "
                f"{self.resources.workers} = {per_step})"
            )
        return self

    def resolved(self, examples: int) -> TrainingConfig:
        """This config with every "auto" hyperparameter chosen for a training set of
        ``examples`` examples (the rules: hyperparameters.py). Raises ConfigError when the
        explicit values cannot work together."""
        hp = self.method.hyperparameters
        try:
            plan = plan_batches(
                hp.epochs,
                hp.batch_size,
                hp.micro_batch_size,
                method=self.method.type,
                workers=self.resources.workers,
                examples=examples,
            )
        except HyperparameterError as error:
            raise ConfigError(f"method.hyperparameters.{error}") from error
        chosen = hp.model_copy(
            update={
                "epochs": plan.epochs,
                "batch_size": plan.batch_size,
                "micro_batch_size": plan.micro_batch_size,
            }
        )
        method = self.method.model_copy(update={"hyperparameters": chosen})
        return self.model_copy(update={"method": method})

    def chosen(self) -> ChosenHyperparameters:
        """The hyperparameters once resolved; raises ConfigError while one is still "auto"."""
        hp = self.method.hyperparameters
        if AUTO in (hp.epochs, hp.batch_size, hp.micro_batch_size):
            raise ConfigError("method.hyperparameters: still 'auto'; resolve them first")
        return ChosenHyperparameters.model_validate(hp.model_dump())

    def accumulation_steps(self, workers: int | None = None) -> int:
        """Micro-batches per worker per optimizer step, so that
        batchSize = microBatchSize x accumulation x workers."""
        hp = self.chosen()
        return hp.batch_size // (hp.micro_batch_size * (workers or self.resources.workers))


class ChosenHyperparameters(_Model):
    """Hyperparameters with nothing left "auto": what the trainer trains with and reports."""

    epochs: int
    batch_size: int
    micro_batch_size: int
    learning_rate: float
    max_seq_length: int
    warmup_ratio: float
    seed: int


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{loc}: {err['msg']}")
    return "invalid training config:\n  " + "\n  ".join(lines)


def parse_config(data: dict[str, object]) -> TrainingConfig:
    """Validate a config dict; raises ConfigError naming each bad field."""
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from exc


def wait_for_digest(path: Path, sha256: str, timeout: float, poll: float = 2.0) -> bytes:
    """The file's bytes once their sha256 is ``sha256``.

    The operator names the digest of the job.json it wrote in the RayJob's entrypoint; the
    file is the head pod's annotation through the downward API, which reaches an already
    running pod only at the kubelet's next sync (about a minute). Training on the previous
    job.json would silently ignore a spec change, so the trainer waits for the one it was
    started for, and fails clearly if it never comes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(f"--config: file not found: {path}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual == sha256.lower():
            return data
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"--config: {path} has sha256 {actual}, but the job was started for {sha256}: "
                f"the updated job.json did not reach this pod within {timeout:.0f} s"
            )
        time.sleep(poll)


def load_config(
    path: str | Path, sha256: str | None = None, wait_seconds: float = 300.0
) -> TrainingConfig:
    """Read and validate the job.json the operator mounted; with ``sha256``, once it is that
    file (wait_for_digest)."""
    try:
        if sha256 is not None:
            text = wait_for_digest(Path(path), sha256, wait_seconds).decode("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"--config: file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a JSON object")
    return parse_config(data)
