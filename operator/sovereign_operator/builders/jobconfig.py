"""The job.json the trainer reads (the operator <-> training contract), and how it reaches the
Ray head: an annotation of the head's pod, which a downward API volume shows as a file."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from ..api.v1alpha1.finetunejob import (
    AUTO,
    FineTuneJobSpec,
    LoraConfig,
    MethodType,
    ResolvedHyperparameters,
)
from ..api.v1alpha1.hyperparameters import data_dependent_autos
from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from .context import (
    COMPONENT_LABEL,
    JOB_NAME_LABEL,
    JOB_UID_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    Owner,
    Residency,
)
from .names import rayjob_name

CONFIG_KEY = "job.json"
CONFIG_DIR = "/etc/sovereign-ai"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
# The head pod's annotation that holds job.json (builders/podtemplate.py config_volume).
CONFIG_ANNOTATION = "sovereign-ai.eu/job-config"
_MODEL_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def base_model_name(uri: str) -> str:
    """The short name of a base model URI: hf://org/name -> name, models:/name/3 -> name."""
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :]
        return re.split(r"[/@]", rest, maxsplit=1)[0]
    path = uri.split("://", 1)[-1].rstrip("/")
    return path.rsplit("/", 1)[-1] or "model"


def registered_model_name(spec: FineTuneJobSpec, owner: Owner) -> str:
    """spec.tracking.registeredModelName, else <baseModelName>-<suffix or job name>."""
    if spec.tracking.registered_model_name:
        return spec.tracking.registered_model_name
    name = f"{base_model_name(spec.base_model.uri)}-{spec.suffix or owner.name}"
    return _MODEL_NAME_UNSAFE.sub("-", name)[:256]


def experiment_name(spec: FineTuneJobSpec, owner: Owner) -> str:
    """spec.tracking.experimentName, else <namespace>/<name>."""
    return spec.tracking.experiment_name or f"{owner.namespace}/{owner.name}"


def build_job_config(
    spec: FineTuneJobSpec,
    owner: Owner,
    hyperparameters: ResolvedHyperparameters,
    residency: Residency,
    *,
    policy: SovereigntyPolicySpec | None = None,
    chain_head: str | None = None,
) -> dict[str, Any]:
    """The TrainingConfig document of the contract (sovereign_training.config, which the
    contract test feeds it to). Hyperparameters are as resolved, except those left "auto" whose
    value depends on the dataset's size: those stay "auto", and the trainer chooses them.

    From ``policy``: baseModel.trainingFlops when its baseModels declares the job's exact base
    model URI, and energy.pue. ``chain_head`` is the audit chain's head when the job was
    submitted (audit.chainHead). A fact not known is left out, so that the document of a job
    without any is the same as before they existed (its digest is in the RayJob's hash)."""
    lora: dict[str, Any] | None = None
    if spec.method.type == MethodType.LORA:
        settings = spec.method.lora or LoraConfig()
        lora = {
            "rank": settings.rank,
            "alpha": settings.alpha,
            "dropout": settings.dropout,
            "targetModules": list(settings.target_modules),
        }
    sized: dict[str, int | str] = {
        "epochs": hyperparameters.epochs,
        "batchSize": hyperparameters.batch_size,
        "microBatchSize": hyperparameters.micro_batch_size,
    }
    sized |= dict.fromkeys(data_dependent_autos(spec), AUTO)
    base_model: dict[str, Any] = {"uri": spec.base_model.uri, "revision": spec.base_model.revision}
    training_flops = policy.base_model_training_flops(spec.base_model.uri) if policy else None
    if training_flops is not None:
        base_model["trainingFlops"] = training_flops
    document: dict[str, Any] = {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "TrainingConfig",
        "job": {"namespace": owner.namespace, "name": owner.name, "uid": owner.uid},
        "baseModel": base_model,
        "dataset": {
            "trainingUri": spec.dataset.training_uri,
            "validationUri": spec.dataset.validation_uri,
            "format": spec.dataset.format.value,
            "sha256": spec.dataset.sha256,
        },
        "method": {
            "type": spec.method.type.value,
            "hyperparameters": {
                **sized,
                "learningRate": hyperparameters.learning_rate,
                "maxSeqLength": hyperparameters.max_seq_length,
                "warmupRatio": hyperparameters.warmup_ratio,
                "seed": hyperparameters.seed,
            },
            "lora": lora,
            "mergeAdapter": spec.method.merge_adapter,
        },
        "resources": {
            "workers": spec.resources.workers,
            "gpusPerWorker": spec.resources.gpus_per_worker,
        },
        "tracking": {
            "experimentName": experiment_name(spec, owner),
            "registeredModelName": registered_model_name(spec, owner),
        },
        "output": {"uri": spec.output.uri},
        "checkpointing": {
            "everySteps": spec.checkpointing.every_steps,
            "keep": spec.checkpointing.keep,
            "maxFailures": spec.checkpointing.max_failures,
        },
        "placement": {"regions": list(residency.regions), "policyName": residency.policy_name},
    }
    pue = policy.energy.pue if policy and policy.energy else None
    if pue is not None:
        document["energy"] = {"pue": pue}
    if chain_head is not None:
        document["audit"] = {"chainHead": chain_head}
    return document


def job_config_text(
    spec: FineTuneJobSpec,
    owner: Owner,
    hyperparameters: ResolvedHyperparameters,
    residency: Residency,
    *,
    policy: SovereigntyPolicySpec | None = None,
    chain_head: str | None = None,
) -> str:
    """job.json as the trainer reads it: build_job_config's document, as stable JSON (its
    digest is in the RayJob's entrypoint)."""
    document = build_job_config(
        spec, owner, hyperparameters, residency, policy=policy, chain_head=chain_head
    )
    # Compact: it is an annotation's value, where indentation is only escaped newlines.
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def config_digest(text: str) -> str:
    """sha256 of a job.json: the RayJob's entrypoint names it, so that a changed job.json
    changes the RayJob too, and the trainer checks that the file it reads is that one."""
    return hashlib.sha256(text.encode()).hexdigest()


def child_labels(owner: Owner, component: str) -> dict[str, str]:
    """Labels every child carries: who owns it (uid, name-derived) and which part it is."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        JOB_NAME_LABEL: rayjob_name(owner.name),
        JOB_UID_LABEL: owner.uid,
        COMPONENT_LABEL: component,
    }


def job_config_of(rayjob: Mapping[str, Any]) -> str | None:
    """The job.json a RayJob carries (its head pod template's annotation), as build_rayjob put
    it there; None when it carries none. For readers: `sovai` tools, tests."""
    head = (((rayjob.get("spec") or {}).get("rayClusterSpec") or {}).get("headGroupSpec")) or {}
    annotations = ((head.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(CONFIG_ANNOTATION)
    return value if isinstance(value, str) else None
