"""Which model a ModelDeployment serves. Pure: the caller passes the referenced FineTuneJob.

A FineTuneJob's model is served only with a clean provenance: the job has Succeeded and its
ResidencyVerified condition is True. Until then the deployment waits and says why.

A FineTuneJob's model also carries what its fetch must prove (Provenance): the job's uid, which
its MLflow version's tags must name, and the digest the trainer recorded
(status.mlflow.modelDigest).

An unmerged LoRA adapter is served on its base model, which the serving pod fetches beside it:
for a fineTuneJobRef the job's spec.baseModel (already admitted by the policy), for a uri the
spec's model.baseModel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..api.v1alpha1.finetunejob import (
    BaseModelSource,
    FineTuneJobConditionType,
    FineTuneJobPhase,
    FineTuneJobSpec,
    LoraConfig,
    MethodType,
)
from ..api.v1alpha1.modeldeployment import ModelDeploymentSpec
from ..builders.serving import Provenance

REF_FIELD = "spec.model.fineTuneJobRef"
_FINAL = frozenset({FineTuneJobPhase.FAILED.value, FineTuneJobPhase.CANCELLED.value})


@dataclass(frozen=True)
class Resolution:
    """The model URI to serve, or why there is none yet. ``final``: waiting will not help."""

    uri: str | None
    reason: str
    message: str
    final: bool = False
    base: BaseModelSource | None = None  # set when the model is an adapter served on a base
    adapter_rank: int | None = None  # the adapter's LoRA rank, when known
    provenance: Provenance | None = None  # a fineTuneJobRef's: what the fetched model must prove


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def resolve_model(
    spec: ModelDeploymentSpec, namespace: str, fine_tune_job: Mapping[str, Any] | None
) -> Resolution:
    """The model URI of spec.model: the URI itself, or the referenced job's registered model."""
    if spec.model.uri:
        base = spec.model.base_model
        on_base = f" on base {base.uri}" if base else ""
        message = f"spec.model.uri: serving {spec.model.uri}{on_base}"
        return Resolution(spec.model.uri, "UriGiven", message, base=base)
    assert spec.model.fine_tune_job_ref is not None  # the spec's exactly-one rule
    name = spec.model.fine_tune_job_ref.name
    where = f"{REF_FIELD}: FineTuneJob {name}"
    if fine_tune_job is None:
        return Resolution(
            None,
            "FineTuneJobNotFound",
            f"{where} does not exist in namespace {namespace}; serving waits for it",
        )
    status = fine_tune_job.get("status") or {}
    phase = status.get("phase") or "not yet seen by the operator"
    if phase in _FINAL:
        return Resolution(
            None,
            "FineTuneJobFailed",
            f"{where} ended {phase}; it will not produce a model to serve",
            final=True,
        )
    if phase != FineTuneJobPhase.SUCCEEDED.value:
        return Resolution(
            None,
            "FineTuneJobNotSucceeded",
            f"{where} is {phase}; serving waits until it has Succeeded",
        )
    residency = _condition(status, FineTuneJobConditionType.RESIDENCY_VERIFIED.value)
    if residency.get("status") != "True":
        return Resolution(
            None,
            "ResidencyNotVerified",
            f"{where} has Succeeded but its ResidencyVerified condition is "
            f"{residency.get('status', 'absent')}; only models with verified residency are served",
        )
    uri = status.get("fineTunedModel") or (status.get("mlflow") or {}).get("modelUri")
    if not uri:
        return Resolution(
            None,
            "NoModelRecorded",
            f"{where} has Succeeded but recorded no model URI (status.fineTunedModel)",
        )
    job_spec = _job_spec(fine_tune_job)
    if job_spec is None:
        return Resolution(
            None,
            "FineTuneJobUnreadable",
            f"{where} has a spec this operator cannot read; serving waits for it to be fixed",
        )
    provenance = _provenance(fine_tune_job, status)
    method = job_spec.method
    if method.type == MethodType.LORA and not method.merge_adapter:
        base = job_spec.base_model
        rank = (method.lora or LoraConfig()).rank
        return Resolution(
            str(uri),
            "FineTuneJobSucceeded",
            f"{where} has Succeeded; serving its LoRA adapter {uri} on base {base.uri}",
            base=base,
            adapter_rank=rank,
            provenance=provenance,
        )
    return Resolution(
        str(uri),
        "FineTuneJobSucceeded",
        f"{where} has Succeeded; serving {uri}",
        provenance=provenance,
    )


def _provenance(fine_tune_job: Mapping[str, Any], status: Mapping[str, Any]) -> Provenance | None:
    uid = (fine_tune_job.get("metadata") or {}).get("uid")
    if not uid:
        return None  # every stored object has one; only hand-made test objects lack it
    digest = (status.get("mlflow") or {}).get("modelDigest")
    return Provenance(job_uid=str(uid), digest=str(digest) if digest else None)


def _job_spec(fine_tune_job: Mapping[str, Any]) -> FineTuneJobSpec | None:
    try:
        return FineTuneJobSpec.model_validate(dict(fine_tune_job.get("spec") or {}))
    except ValidationError:
        return None
