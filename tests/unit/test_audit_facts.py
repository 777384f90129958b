"""The facts a pass derives for the audit log (pure), and their keys: the same facts twice
have the same keys, so the log records them once."""

from __future__ import annotations

from sovereign_operator.api.v1alpha1.common import PodPlacement
from sovereign_operator.api.v1alpha1.finetunejob import (
    FineTuneJobPhase,
    FineTuneJobSpec,
    FineTuneJobStatus,
    MlflowInfo,
)
from sovereign_operator.api.v1alpha1.modeldeployment import (
    ModelDeploymentPhase,
    ModelDeploymentStatus,
)
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.audit import facts
from sovereign_operator.audit.records import Subject

JOB = Subject("FineTuneJob", "team-a", "faq", "uid-1")
SPEC = FineTuneJobSpec.model_validate(
    {
        "baseModel": {"uri": "hf://sovereign-ai-test/tiny-llama", "revision": "main"},
        "dataset": {
            "trainingUri": "s3://eu-data/train.jsonl",
            "validationUri": "s3://eu-data/val.jsonl",
        },
        "output": {"uri": "s3://eu-models/faq"},
    }
)


def policy(*regions: str) -> SovereigntyPolicySpec:
    return SovereigntyPolicySpec.model_validate(
        {"regionLabel": "topology.kubernetes.io/region", "allowedRegions": list(regions)}
    )


def test_a_policys_digest_follows_its_content_only() -> None:
    assert facts.content_digest(policy("eu-west-par")) == facts.content_digest(
        policy("eu-west-par")
    )
    assert facts.content_digest(policy("eu-west-par")) != facts.content_digest(
        policy("eu-west-par", "eu-central-fra")
    )


def test_binding_then_changing_the_policy() -> None:
    first = facts.content_digest(policy("eu-west-par"))
    [bound] = facts.policy_facts(JOB, "eu-only", first, ["eu-west-par"], None)
    assert (bound.event, bound.details["policyDigest"]) == ("PolicyBound", first)
    # The same policy again: the same key, so nothing new is recorded.
    [again] = facts.policy_facts(JOB, "eu-only", first, ["eu-west-par"], first)
    assert again.key == bound.key
    assert again.event == "PolicyBound"
    second = facts.content_digest(policy("eu-west-par", "eu-central-fra"))
    [changed] = facts.policy_facts(JOB, "eu-only", second, ["eu-west-par"], first)
    assert changed.event == "PolicyChanged"
    assert changed.details["previousDigest"] == first
    assert changed.key != bound.key


def test_admission_records_what_the_job_trains_on() -> None:
    fact = facts.job_admission(JOB, 3, SPEC)
    assert fact.key == "admitted/3"
    assert fact.details == {
        "generation": 3,
        "baseModel": {"uri": "hf://sovereign-ai-test/tiny-llama", "revision": "main"},
        "datasets": {
            "training": "s3://eu-data/train.jsonl",
            "validation": "s3://eu-data/val.jsonl",
        },
        "output": "s3://eu-models/faq",
    }


def test_a_finished_jobs_outcome() -> None:
    status = FineTuneJobStatus(
        phase=FineTuneJobPhase.SUCCEEDED,
        observed_generation=1,
        mlflow=MlflowInfo(model_uri="models:/faq/2", model_digest="sha256:" + "a" * 64, run_id="r"),
        placement=[PodPlacement(pod="p-0", node="gpu-1", region="eu-west-par")],
    )
    inputs = {"datasets": {"training": "b" * 64}, "baseModel": {"uri": "hf://x/y", "revision": "c"}}
    found = {f.event: f for f in facts.job_outcome_facts(JOB, status, {"inputs": inputs})}
    assert found["InputsVerified"].details == inputs
    assert found["ModelRegistered"].details == {
        "modelUri": "models:/faq/2",
        "modelDigest": "sha256:" + "a" * 64,
        "runId": "r",
    }
    assert found["PhaseChanged"].key == "phase/Succeeded/1"
    [placed] = facts.placement_facts(JOB, status.placement or [])
    assert placed.details == {"pod": "p-0", "node": "gpu-1", "region": "eu-west-par"}
    # A result read from the job's MLflow run, not its log, says so in the model's record.
    kept = facts.job_outcome_facts(JOB, status, {"inputs": inputs}, "MLflow run r")
    [registered] = [f for f in kept if f.event == "ModelRegistered"]
    assert registered.details["resultFrom"] == "MLflow run r"
    # Without a result (a pass before the end) there is no inputs fact.
    assert "InputsVerified" not in {f.event for f in facts.job_outcome_facts(JOB, status, None)}


def test_serving_scaling_and_stopping() -> None:
    about = Subject("ModelDeployment", "team-a", "faq", "uid-2")
    ready = ModelDeploymentStatus(
        phase=ModelDeploymentPhase.READY,
        observed_generation=2,
        model_uri="models:/faq/2",
        model_digest="sha256:" + "a" * 64,
        replicas=2,
        ready_replicas=2,
        url="http://faq.team-a.svc:8000/v1",
    )
    found = {f.event: f for f in facts.serving_facts(about, ready)}
    assert found["Served"].details["replicas"] == 2
    assert found["Scaled"].key == "scaled/2/2"
    stopped = ready.model_copy(
        update={"phase": ModelDeploymentPhase.SUSPENDED, "replicas": 0, "observed_generation": 3}
    )
    events = {f.event for f in facts.serving_facts(about, stopped)}
    assert {"Stopped", "Scaled", "PhaseChanged"} <= events
    assert "Served" not in events


def test_refusal_and_deletion() -> None:
    refused = facts.refusal(JOB, 2, "PolicyViolation", "spec.dataset.trainingUri: not allowed")
    assert refused.key == "refused/2/PolicyViolation"
    assert facts.deletion(JOB, "Running").details == {"phase": "Running"}
