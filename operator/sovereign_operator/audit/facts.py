"""The facts of one reconcile pass, derived from what the pass decided and observed.

Pure: each function takes the pass's spec, status and observations and returns every fact
they hold, each with a key that tells it apart within its object. The audit log records only
the facts whose key it has not recorded yet, so a pass may return all of them every time and
a restarted operator records nothing twice (log.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ..api.v1alpha1.common import PodPlacement
from ..api.v1alpha1.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from ..api.v1alpha1.modeldeployment import ModelDeploymentStatus
from .records import Fact, Subject

POLICY_BOUND = "PolicyBound"
POLICY_CHANGED = "PolicyChanged"
ADMITTED = "Admitted"


def known(**details: Any) -> dict[str, Any]:
    """The details whose value is known (a record leaves an unknown out, never null)."""
    return {name: value for name, value in details.items() if value is not None}


def content_digest(model: BaseModel) -> str:
    """sha256 of a model's canonical JSON (a policy's spec: which rules a job ran under)."""
    data = json.dumps(model.model_dump(mode="json", by_alias=True), sort_keys=True)
    return "sha256:" + hashlib.sha256(data.encode("utf-8")).hexdigest()


def policy_facts(
    subject: Subject,
    policy_name: str,
    policy_digest: str,
    regions: Sequence[str],
    previous_digest: str | None,
) -> list[Fact]:
    """The policy the object is bound to, and a change of its content while it lives."""
    changed = previous_digest is not None and previous_digest != policy_digest
    details: dict[str, Any] = {
        "policy": policy_name,
        "policyDigest": policy_digest,
        "regions": list(regions),
    }
    if changed:
        details["previousDigest"] = previous_digest
    event = POLICY_CHANGED if changed else POLICY_BOUND
    return [Fact(subject, event, f"policy/{policy_name}/{policy_digest}", details)]


def job_admission(subject: Subject, generation: int, spec: FineTuneJobSpec) -> Fact:
    """The operator's own check of a job passed: what it was admitted to train on."""
    base: dict[str, Any] = {"uri": spec.base_model.uri}
    if spec.base_model.revision:
        base["revision"] = spec.base_model.revision
    datasets = {"training": spec.dataset.training_uri}
    if spec.dataset.validation_uri:
        datasets["validation"] = spec.dataset.validation_uri
    details: dict[str, Any] = {"generation": generation, "baseModel": base, "datasets": datasets}
    if spec.output is not None and spec.output.uri:
        details["output"] = spec.output.uri
    return Fact(subject, ADMITTED, f"admitted/{generation}", details)


def refusal(subject: Subject, generation: int, reason: str, message: str) -> Fact:
    return Fact(
        subject,
        "Refused",
        f"refused/{generation}/{reason}",
        {"generation": generation, "reason": reason, "message": message[:1000]},
    )


def placement_facts(subject: Subject, placement: Sequence[PodPlacement]) -> list[Fact]:
    return [
        Fact(
            subject,
            "PodPlaced",
            f"pod/{place.pod}/{place.node}",
            {"pod": place.pod, "node": place.node, "region": place.region},
        )
        for place in placement
    ]


def child_fact(subject: Subject, kind: str, name: str, uid: str) -> Fact:
    return Fact(
        subject, "ChildCreated", f"child/{kind}/{uid}", {"kind": kind, "name": name, "uid": uid}
    )


def job_outcome_facts(
    subject: Subject,
    status: FineTuneJobStatus,
    result: Mapping[str, Any] | None,
    result_from: str | None = None,
) -> list[Fact]:
    """What the trainer reported (inputs with their digests, the model, the compute) and the
    phase the job is in. ``result_from``: where the result was read when not from the job's
    log ("MLflow run <id>"), which the model's record names."""
    facts = []
    inputs = (result or {}).get("inputs")
    if isinstance(inputs, dict) and inputs:
        facts.append(Fact(subject, "InputsVerified", "inputs", dict(inputs)))
    mlflow = status.mlflow
    if mlflow is not None and (mlflow.model_uri or status.output_uri):
        uri = mlflow.model_uri or status.output_uri or ""
        details = known(
            modelUri=uri,
            modelDigest=mlflow.model_digest,
            runId=mlflow.run_id,
            outputUri=status.output_uri,
            resultFrom=result_from,
        )
        key = f"model/{uri}/{mlflow.model_digest}"
        facts.append(Fact(subject, "ModelRegistered", key, details))
    if status.compute is not None:
        compute = status.compute.model_dump(mode="json", by_alias=True, exclude_none=True)
        facts.append(Fact(subject, "ComputeAccounted", "compute", compute))
    facts.append(phase_fact(subject, status.phase_name, status.observed_generation, status))
    return facts


def phase_fact(
    subject: Subject,
    phase: str,
    generation: int | None,
    status: FineTuneJobStatus | ModelDeploymentStatus,
) -> Fact:
    details: dict[str, Any] = {"phase": phase}
    if status.error is not None:
        details["reason"] = status.error.code
        details["message"] = status.error.message[:1000]
    return Fact(subject, "PhaseChanged", f"phase/{phase}/{generation}", details)


def serving_facts(subject: Subject, status: ModelDeploymentStatus) -> list[Fact]:
    """A deployment serving (which model, verified by which digest), scaled, or stopped."""
    facts = [phase_fact(subject, status.phase.value, status.observed_generation, status)]
    generation = status.observed_generation
    if status.phase.value == "Ready" and status.model_uri:
        details = known(
            modelUri=status.model_uri,
            modelDigest=status.model_digest,
            replicas=status.ready_replicas,
            url=status.url,
        )
        key = f"served/{status.model_uri}/{status.model_digest}"
        facts.append(Fact(subject, "Served", key, details))
    if status.replicas is not None:
        facts.append(
            Fact(
                subject,
                "Scaled",
                f"scaled/{generation}/{status.replicas}",
                {"replicas": status.replicas},
            )
        )
    if status.phase.value == "Suspended":
        facts.append(Fact(subject, "Stopped", f"stopped/{generation}", {"reason": "Suspended"}))
    return facts


def stopped(subject: Subject, generation: int, reason: str, message: str) -> Fact:
    """What ran was stopped by the operator (its policy no longer allows it)."""
    return Fact(
        subject,
        "Stopped",
        f"stopped/{generation}/{reason}",
        {"reason": reason, "message": message[:1000]},
    )


def deletion(subject: Subject, phase: str | None) -> Fact:
    return Fact(subject, "Deleted", "deleted", {"phase": phase} if phase else {})
