"""ModelDeployment: model resolution, policy re-check, rollout facts and compute_status."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.common import PodPlacement
from sovereign_operator.api.v1alpha1.finetunejob import BaseModelSource
from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.handlers.finetunejob_status import Validation
from sovereign_operator.handlers.modeldeployment_observe import (
    DeploymentFacts,
    blocker_reason,
    deployment_facts,
    fetched_digest,
)
from sovereign_operator.handlers.modeldeployment_resolve import Resolution, resolve_model
from sovereign_operator.handlers.modeldeployment_status import ServingObserved, compute_status
from sovereign_operator.handlers.modeldeployment_validate import parse_spec, validate

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
URI = "models:/chat/3"
VALID = Validation(
    ok=True,
    policy_name="eu-only",
    allowed_regions=("eu-central-fra", "eu-west-par"),
    requested_regions=None,
    regions=("eu-central-fra", "eu-west-par"),
)
RESOLVED = Resolution(URI, "FineTuneJobSucceeded", "spec.model.fineTuneJobRef: ok")
POLICY = SovereigntyPolicySpec.model_validate(
    {
        "allowedRegions": ["eu-west-par", "eu-central-fra"],
        "allowedModelSources": [{"scheme": "models", "host": "*"}],
        "allowedRegistries": ["registry.eu"],
    }
)


def ref_spec(**fields: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": {"fineTuneJobRef": {"name": "ft"}}, **fields}
    )


FTJ_SPEC: dict[str, Any] = {
    "baseModel": {"uri": "hf://mistralai/Mistral-7B-v0.3", "revision": "main"},
    "dataset": {"trainingUri": "s3://eu-data/train.jsonl"},
    "method": {"type": "full"},
}


def ftj(
    phase: str, residency: str = "True", uri: str | None = URI, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "ResidencyVerified", "status": residency}],
    }
    if uri:
        status["fineTunedModel"] = uri
    return {"metadata": {"name": "ft"}, "spec": spec or FTJ_SPEC, "status": status}


@pytest.mark.parametrize(
    ("job", "uri", "reason", "final"),
    [
        (None, None, "FineTuneJobNotFound", False),
        (ftj("Running"), None, "FineTuneJobNotSucceeded", False),
        (ftj("Queued"), None, "FineTuneJobNotSucceeded", False),
        (ftj("Failed"), None, "FineTuneJobFailed", True),
        (ftj("Cancelled"), None, "FineTuneJobFailed", True),
        (ftj("Succeeded", residency="False"), None, "ResidencyNotVerified", False),
        (ftj("Succeeded", uri=None), None, "NoModelRecorded", False),
        (ftj("Succeeded"), URI, "FineTuneJobSucceeded", False),
    ],
)
def test_fine_tune_job_ref_resolves_only_a_succeeded_verified_job(
    job: dict[str, Any] | None, uri: str | None, reason: str, final: bool
) -> None:
    resolution = resolve_model(ref_spec(), "team-a", job)
    assert (resolution.uri, resolution.reason, resolution.final) == (uri, reason, final)
    assert resolution.message.startswith("spec.model.fineTuneJobRef: FineTuneJob ft")


def test_a_running_job_says_serving_waits() -> None:
    assert resolve_model(ref_spec(), "team-a", ftj("Running")).message == (
        "spec.model.fineTuneJobRef: FineTuneJob ft is Running; serving waits until it has Succeeded"
    )


@pytest.mark.parametrize(
    ("method", "base", "rank"),
    [
        ({"type": "full"}, None, None),
        ({"type": "lora", "mergeAdapter": True}, None, None),
        ({"type": "lora"}, "hf://mistralai/Mistral-7B-v0.3", 16),
        ({"type": "lora", "lora": {"rank": 64}}, "hf://mistralai/Mistral-7B-v0.3", 64),
    ],
)
def test_an_unmerged_adapter_resolves_with_the_jobs_base_and_rank(
    method: dict[str, Any], base: str | None, rank: int | None
) -> None:
    job = ftj("Succeeded", spec={**FTJ_SPEC, "method": method})
    resolution = resolve_model(ref_spec(), "team-a", job)
    assert resolution.uri == URI
    assert (resolution.base.uri if resolution.base else None, resolution.adapter_rank) == (
        base,
        rank,
    )
    if base:
        assert resolution.base is not None
        assert resolution.base.revision == "main"
        assert resolution.message.endswith(f"serving its LoRA adapter {URI} on base {base}")


def test_a_job_whose_spec_cannot_be_read_is_waited_on_not_served() -> None:
    job = ftj("Succeeded", spec={"baseModel": {"uri": "hf://x/y"}})
    resolution = resolve_model(ref_spec(), "team-a", job)
    assert (resolution.uri, resolution.reason, resolution.final) == (
        None,
        "FineTuneJobUnreadable",
        False,
    )


def test_a_given_uri_is_served_on_the_given_base() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": "s3://eu-models/adapter", "baseModel": {"uri": "hf://mistralai/m"}}}
    )
    resolution = resolve_model(spec, "team-a", None)
    assert resolution.base is not None
    assert (resolution.uri, resolution.base.uri, resolution.adapter_rank) == (
        "s3://eu-models/adapter",
        "hf://mistralai/m",
        None,
    )


def test_uri_resolves_to_itself() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://eu-models/chat"}})
    assert resolve_model(spec, "team-a", None).uri == "s3://eu-models/chat"


def check(spec: ModelDeploymentSpec, uri: str | None) -> Validation:
    return validate(spec, "team-a", {}, {"eu-only": POLICY}, None, "registry.eu/vllm:1", uri)


def test_validate_binds_the_policy_and_intersects_regions() -> None:
    result = check(ref_spec(placement={"regions": ["eu-west-par"]}), URI)
    assert result == Validation(
        ok=True,
        policy_name="eu-only",
        allowed_regions=("eu-central-fra", "eu-west-par"),
        requested_regions=("eu-west-par",),
        regions=("eu-west-par",),
    )


@pytest.mark.parametrize(
    ("spec", "uri", "field"),
    [
        (ref_spec(placement={"regions": ["us-east-1"]}), URI, "spec.placement.regions"),
        (ref_spec(), "hf://acme/chat", "spec.model.fineTuneJobRef"),
        (ref_spec(serving={"image": "docker.io/vllm/vllm-openai:v1"}), URI, "spec.serving.image"),
    ],
)
def test_validate_names_the_field_that_breaks_the_policy(
    spec: ModelDeploymentSpec, uri: str, field: str
) -> None:
    result = check(spec, uri)
    assert (result.ok, result.code, result.field, result.residency) == (
        False,
        "PolicyViolation",
        field,
        True,
    )
    assert result.message is not None
    assert result.message.startswith(field)


def test_parse_spec_names_the_bad_field() -> None:
    spec, failure = parse_spec({"model": {"uri": URI}, "replicas": -1})
    assert spec is None
    assert failure is not None
    assert (failure.code, failure.field) == ("InvalidSpec", "spec.replicas")


def deployment(
    *, generation: int = 2, observed: int = 2, replicas: int = 2, ready: int = 2, reason: str = ""
) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed, "readyReplicas": ready}
    if reason:
        status["conditions"] = [{"type": "Progressing", "reason": reason}]
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": status,
    }


@pytest.mark.parametrize(
    ("live", "complete", "exceeded"),
    [
        (deployment(reason="NewReplicaSetAvailable"), True, False),
        (deployment(reason="ReplicaSetUpdated"), False, False),
        (deployment(reason="ProgressDeadlineExceeded"), False, True),
        # The controller has not seen the latest spec: an old "complete" does not count.
        (deployment(observed=1, reason="NewReplicaSetAvailable"), False, False),
    ],
)
def test_deployment_facts(live: dict[str, Any], complete: bool, exceeded: bool) -> None:
    facts = deployment_facts(live)
    assert facts is not None
    assert (facts.complete, facts.deadline_exceeded) == (complete, exceeded)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("pod p is unschedulable: 0/7 nodes are available", "Unschedulable"),
        ("pod p container server: ImagePullBackOff: back-off pulling", "ImagePullBackOff"),
        ("pod p container fetch-model: CrashLoopBackOff: ", "CrashLoopBackOff"),
        ("something else", "PodsNotReady"),
    ],
)
def test_blocker_reason(text: str, reason: str) -> None:
    assert blocker_reason(text) == reason


def fetch_pod(record: dict[str, Any] | str) -> dict[str, Any]:
    message = record if isinstance(record, str) else json.dumps(record)
    terminated = {"terminated": {"exitCode": 0, "message": message}}
    return {"status": {"initContainerStatuses": [{"name": "fetch-model", "state": terminated}]}}


@pytest.mark.parametrize(
    ("pods", "digest"),
    [
        ([fetch_pod({"uri": URI, "digest": "sha256:ab"})], "sha256:ab"),
        ([fetch_pod({"uri": "models:/other/1", "digest": "sha256:ab"})], None),
        ([fetch_pod("not json")], None),
        ([{"status": {}}], None),
    ],
)
def test_fetched_digest_comes_from_the_init_containers_termination_message(
    pods: list[dict[str, Any]], digest: str | None
) -> None:
    assert fetched_digest(pods, URI) == digest


def test_the_base_digest_comes_only_from_the_base_fetch_container() -> None:
    pod = fetch_pod({"uri": URI, "digest": "sha256:ab"})
    assert fetched_digest([pod], URI, "fetch-base-model") is None
    base_pod = json.loads(json.dumps(pod).replace('"fetch-model"', '"fetch-base-model"'))
    assert fetched_digest([base_pod], URI, "fetch-base-model") == "sha256:ab"


def facts(
    replicas: int = 2, ready: int = 2, complete: bool = True, exceeded: bool = False
) -> DeploymentFacts:
    return DeploymentFacts(replicas, ready, replicas, True, complete, exceeded)


def observed(**fields: Any) -> ServingObserved:
    base: dict[str, Any] = {
        "generation": 2,
        "validation": VALID,
        "resolution": RESOLVED,
        "deployment": facts(),
        "url": "http://chat.team-a.svc:8000/v1",
    }
    return ServingObserved(**{**base, **fields})


FAILED_POLICY = Validation(
    ok=False,
    code="PolicyViolation",
    field="spec.placement.regions",
    message="spec.placement.regions: us-east-1 not allowed",
    residency=True,
)
BAD_SPEC = Validation(
    ok=False, code="InvalidSpec", field="spec.replicas", message="spec.replicas: too small"
)
WAITING = Resolution(None, "FineTuneJobNotSucceeded", "ft is Running")
JOB_FAILED = Resolution(None, "FineTuneJobFailed", "ft ended Failed", final=True)
UNSCHEDULABLE = ("pod p is unschedulable: 0/7 nodes are available",)


@pytest.mark.parametrize(
    ("obs", "phase", "conditions"),
    [
        (
            observed(validation=BAD_SPEC, resolution=None, deployment=None),
            "Failed",
            ("Unknown", "Unknown", "False", "False"),
        ),
        (observed(validation=FAILED_POLICY), "Failed", ("True", "False", "False", "False")),
        (
            observed(resolution=WAITING, deployment=None),
            "Pending",
            ("False", "True", "False", "False"),
        ),
        (
            observed(resolution=JOB_FAILED, deployment=None),
            "Failed",
            ("False", "True", "False", "False"),
        ),
        (
            observed(suspend=True, deployment=facts(0, 0)),
            "Suspended",
            ("True", "True", "False", "False"),
        ),
        (observed(deployment=None), "Deploying", ("True", "True", "True", "False")),
        (
            observed(deployment=facts(ready=0, complete=False)),
            "Deploying",
            ("True", "True", "True", "False"),
        ),
        (
            observed(
                deployment=facts(ready=0, complete=False, exceeded=True), blockers=UNSCHEDULABLE
            ),
            "Degraded",
            ("True", "True", "False", "False"),
        ),
        (observed(), "Ready", ("True", "True", "False", "True")),
        (observed(deployment=facts(ready=1)), "Degraded", ("True", "True", "False", "False")),
    ],
)
def test_phase_and_conditions_come_from_the_same_facts(
    obs: ServingObserved, phase: str, conditions: tuple[str, ...]
) -> None:
    status = compute_status(obs, None, T0)
    assert status.phase.value == phase
    assert [c.type for c in status.conditions] == [
        "ModelResolved",
        "ResidencyVerified",
        "Progressing",
        "Ready",
    ]
    assert tuple(c.status.value for c in status.conditions) == conditions
    assert all(c.observed_generation == 2 for c in status.conditions)


def test_degraded_takes_its_reason_from_pod_status() -> None:
    obs = observed(deployment=facts(ready=0, complete=False, exceeded=True), blockers=UNSCHEDULABLE)
    ready = compute_status(obs, None, T0).conditions[3]
    assert ready.reason == "Unschedulable"
    assert ready.message == (
        "the rollout made no progress within its deadline (0/2 replicas ready): "
        "pod p is unschedulable: 0/7 nodes are available"
    )


def test_bad_input_is_an_error_naming_the_field() -> None:
    status = compute_status(observed(validation=BAD_SPEC, resolution=None), None, T0)
    assert status.error is not None
    assert (status.error.code, status.error.field) == ("InvalidSpec", "spec.replicas")


def test_ready_status_carries_the_evidence() -> None:
    placement = (
        PodPlacement(pod="chat-b", node="kwok-eu-west-par-gpu-1", region="eu-west-par"),
        PodPlacement(pod="chat-a", node="kwok-eu-central-fra-gpu-0", region="eu-central-fra"),
    )
    obs = observed(
        placement=placement, fetched_digest="sha256:ab", served_model_name="chat", wanted_replicas=2
    )
    assert compute_status(obs, None, T0).to_json_dict() | {"conditions": []} == {
        "phase": "Ready",
        "conditions": [],
        "observedGeneration": 2,
        "url": "http://chat.team-a.svc:8000/v1",
        "replicas": 2,
        "readyReplicas": 2,
        "modelUri": URI,
        "modelDigest": "sha256:ab",
        "servedModelName": "chat",
        "policyName": "eu-only",
        "regions": ["eu-central-fra", "eu-west-par"],
        "placement": [
            {"pod": "chat-a", "node": "kwok-eu-central-fra-gpu-0", "region": "eu-central-fra"},
            {"pod": "chat-b", "node": "kwok-eu-west-par-gpu-1", "region": "eu-west-par"},
        ],
    }


def test_transition_time_moves_only_when_a_condition_changes() -> None:
    first = compute_status(observed(deployment=facts(ready=0, complete=False)), None, T0)
    later = T0 + timedelta(minutes=5)
    second = compute_status(observed(), first, later)
    times = {c.type: c.last_transition_time for c in second.conditions}
    assert times == {
        "ModelResolved": T0,
        "ResidencyVerified": T0,
        "Progressing": later,
        "Ready": later,
    }


def test_the_base_of_an_adapter_and_its_digest_are_evidence_too() -> None:
    base = BaseModelSource(uri="hf://mistralai/m")
    on_base = Resolution(URI, "FineTuneJobSucceeded", "", base=base, adapter_rank=16)
    first = compute_status(
        observed(resolution=on_base, fetched_digest="sha256:ad", fetched_base_digest="sha256:ba"),
        None,
        T0,
    )
    assert (first.model_digest, first.base_model_uri, first.base_model_digest) == (
        "sha256:ad",
        "hf://mistralai/m",
        "sha256:ba",
    )
    # Kept while the pods that fetched it are gone; dropped when the base changes.
    assert compute_status(observed(resolution=on_base), first, T0).base_model_digest == "sha256:ba"
    other = replace(on_base, base=BaseModelSource(uri="hf://mistralai/n"))
    assert compute_status(observed(resolution=other), first, T0).base_model_digest is None
    assert compute_status(observed(), first, T0).base_model_uri is None


def test_digest_is_kept_while_the_model_is_the_same_and_dropped_when_it_changes() -> None:
    first = compute_status(observed(fetched_digest="sha256:ab"), None, T0)
    assert compute_status(observed(), first, T0).model_digest == "sha256:ab"
    other = Resolution("models:/chat/4", "UriGiven", "")
    assert compute_status(observed(resolution=other), first, T0).model_digest is None
