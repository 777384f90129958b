"""ModelDeployment: model resolution, policy re-check, rollout facts and compute_status."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.common import ErrorInfo, PodPlacement, StoragePlace
from sovereign_operator.api.v1alpha1.finetunejob import BaseModelSource
from sovereign_operator.api.v1alpha1.modeldeployment import (
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.builders.serving import Provenance
from sovereign_operator.status.finetunejob import Validation
from sovereign_operator.status.modeldeployment import ServingObserved, compute_status
from sovereign_operator.status.serving_facts import (
    DeploymentFacts,
    FetchRecord,
    blocker_reason,
    deployment_facts,
    fetch_record,
    fetched_digest,
)
from sovereign_operator.validation.model_source import Resolution, resolve_model
from sovereign_operator.validation.modeldeployment import parse_spec, validate

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
        places=(
            StoragePlace(
                field="spec.model.fineTuneJobRef",
                uri=URI,
                note="the trainer's default MLflow store (no tracking URI set)",
            ),
        ),
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
            ("Unknown", "Unknown", "Unknown", "False", "False"),
        ),
        (
            observed(validation=FAILED_POLICY),
            "Failed",
            ("True", "False", "Unknown", "False", "False"),
        ),
        (
            observed(resolution=WAITING, deployment=None),
            "Pending",
            ("False", "True", "Unknown", "False", "False"),
        ),
        (
            observed(resolution=JOB_FAILED, deployment=None),
            "Failed",
            ("False", "True", "Unknown", "False", "False"),
        ),
        (
            observed(suspend=True, deployment=facts(0, 0)),
            "Suspended",
            ("True", "True", "Unknown", "False", "False"),
        ),
        (observed(deployment=None), "Deploying", ("True", "True", "Unknown", "True", "False")),
        (
            observed(deployment=facts(ready=0, complete=False)),
            "Deploying",
            ("True", "True", "Unknown", "True", "False"),
        ),
        (
            observed(
                deployment=facts(ready=0, complete=False, exceeded=True), blockers=UNSCHEDULABLE
            ),
            "Degraded",
            ("True", "True", "Unknown", "False", "False"),
        ),
        (observed(), "Ready", ("True", "True", "Unknown", "False", "True")),
        (
            observed(deployment=facts(ready=1)),
            "Degraded",
            ("True", "True", "Unknown", "False", "False"),
        ),
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
        "ModelVerified",
        "Progressing",
        "Ready",
    ]
    assert tuple(c.status.value for c in status.conditions) == conditions
    assert all(c.observed_generation == 2 for c in status.conditions)


def test_degraded_takes_its_reason_from_pod_status() -> None:
    obs = observed(deployment=facts(ready=0, complete=False, exceeded=True), blockers=UNSCHEDULABLE)
    ready = compute_status(obs, None, T0).conditions[4]
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
        "ModelVerified": T0,
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


JOB_UID = "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab"
JOB_DIGEST = "sha256:" + "ab" * 32
TAMPERED = "sha256:" + "cd" * 32
PROVENANCE = Provenance(job_uid=JOB_UID, digest=JOB_DIGEST)
FROM_JOB = Resolution(URI, "FineTuneJobSucceeded", "ok", provenance=PROVENANCE)
GIVEN = Resolution(URI, "UriGiven", "spec.model.uri: serving models:/chat/3")
REFUSAL = {
    "uri": URI,
    "reason": "DigestMismatch",
    "error": f"{URI}: the digest of what was fetched into /models/model is {TAMPERED}; "
    f"expected {JOB_DIGEST}",
    "expected": JOB_DIGEST,
    "actual": TAMPERED,
}
VERIFIED = {"uri": URI, "fingerprint": JOB_DIGEST, "digest": JOB_DIGEST}


def test_a_fine_tune_jobs_model_must_prove_the_jobs_uid_and_recorded_digest() -> None:
    job = ftj("Succeeded")
    job["metadata"]["uid"] = JOB_UID
    assert resolve_model(ref_spec(), "team-a", job).provenance == Provenance(JOB_UID, None)
    job["status"]["mlflow"] = {"modelUri": URI, "modelDigest": JOB_DIGEST}
    assert resolve_model(ref_spec(), "team-a", job).provenance == PROVENANCE
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": URI}})
    assert resolve_model(spec, "team-a", None).provenance is None


def init_status(
    name: str, state: dict[str, Any], last: dict[str, Any] | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {"name": name, "state": state}
    if last is not None:
        status["lastState"] = last
    return {"status": {"initContainerStatuses": [status]}}


def ended(code: int, record: dict[str, Any]) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "message": json.dumps(record)}}


CRASH_LOOP = {"waiting": {"reason": "CrashLoopBackOff"}}


@pytest.mark.parametrize(
    ("pod", "record"),
    [
        # Refused just now, or refused before and waiting to retry: the refusal counts.
        (
            init_status("fetch-model", ended(3, REFUSAL)),
            FetchRecord(URI, reason="DigestMismatch", error=REFUSAL["error"]),
        ),
        (
            init_status("fetch-model", CRASH_LOOP, ended(3, REFUSAL)),
            FetchRecord(URI, reason="DigestMismatch", error=REFUSAL["error"]),
        ),
        # A later try that succeeded makes the refusal history.
        (
            init_status(
                "fetch-model",
                ended(0, VERIFIED | {"expectedDigest": JOB_DIGEST, "jobUid": JOB_UID}),
                ended(3, REFUSAL),
            ),
            FetchRecord(URI, digest=JOB_DIGEST, expected_digest=JOB_DIGEST, job_uid=JOB_UID),
        ),
        (init_status("fetch-model", ended(0, VERIFIED)), FetchRecord(URI, digest=JOB_DIGEST)),
        (init_status("fetch-model", ended(3, REFUSAL | {"uri": "models:/other/1"})), None),
        (init_status("fetch-base-model", ended(3, REFUSAL)), None),
    ],
)
def test_fetch_record_reads_a_refusal_from_the_init_containers_termination_message(
    pod: dict[str, Any], record: FetchRecord | None
) -> None:
    assert fetch_record([pod], URI) == record


def test_one_refusing_pod_is_enough() -> None:
    pods = [
        init_status("fetch-model", ended(0, VERIFIED)),
        init_status("fetch-model", CRASH_LOOP, ended(3, REFUSAL)),
    ]
    found = fetch_record(pods, URI)
    assert found is not None
    assert found.reason == "DigestMismatch"
    assert fetched_digest(pods, URI) == JOB_DIGEST  # what the other pod serves


def conditions_of(status: ModelDeploymentStatus) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status.value, c.reason, c.message) for c in status.conditions}


def test_a_tampered_model_is_refused_and_the_deployment_says_why() -> None:
    refused = FetchRecord(URI, reason="DigestMismatch", error=REFUSAL["error"])
    obs = observed(
        resolution=FROM_JOB,
        deployment=facts(ready=0, complete=False),
        blockers=("pod p container fetch-model: CrashLoopBackOff: ",),
        fetch=refused,
    )
    status = compute_status(obs, None, T0)
    message = f"init container fetch-model refused {URI}: {REFUSAL['error']}"
    assert TAMPERED in message
    assert JOB_DIGEST in message
    cond = conditions_of(status)
    assert cond["ModelVerified"] == ("False", "DigestMismatch", message)
    assert cond["Ready"] == ("False", "DigestMismatch", message)
    assert cond["Progressing"][0] == "False"
    assert status.phase.value == "Failed"
    assert status.error == ErrorInfo(
        code="DigestMismatch", message=message, field="spec.model.fineTuneJobRef"
    )


def test_a_verified_model_is_ready_with_model_verified_true() -> None:
    checked = FetchRecord(URI, digest=JOB_DIGEST, expected_digest=JOB_DIGEST, job_uid=JOB_UID)
    obs = observed(resolution=FROM_JOB, fetched_digest=JOB_DIGEST, fetch=checked)
    status = compute_status(obs, None, T0)
    assert status.phase.value == "Ready"
    assert conditions_of(status)["ModelVerified"] == (
        "True",
        "Verified",
        f"{URI}: its MLflow version names the FineTuneJob's uid {JOB_UID}; the fetched files "
        f"have the digest its trainer recorded ({JOB_DIGEST})",
    )
    # Pods come and go: the verdict stays for the same model until a pod says otherwise.
    later = compute_status(observed(resolution=FROM_JOB), status, T0)
    assert conditions_of(later)["ModelVerified"][:2] == ("True", "Verified")


def test_the_operator_also_compares_the_fetched_digest_with_the_jobs_record() -> None:
    # A pod whose fetch did not check (e.g. from a template before the job recorded it).
    obs = observed(resolution=FROM_JOB, fetched_digest=TAMPERED, fetch=FetchRecord(URI, TAMPERED))
    status = compute_status(obs, None, T0)
    assert status.phase.value == "Failed"
    assert conditions_of(status)["ModelVerified"] == (
        "False",
        "DigestMismatch",
        f"{URI}: the pods fetched digest {TAMPERED}; the FineTuneJob's trainer recorded "
        f"{JOB_DIGEST}",
    )


@pytest.mark.parametrize(
    ("fetch", "verdict"),
    [
        (FetchRecord(URI, JOB_DIGEST, expected_digest=JOB_DIGEST), ("True", "DigestVerified")),
        (FetchRecord(URI, JOB_DIGEST), ("Unknown", "NoExpectation")),
    ],
)
def test_a_given_uri_is_verified_only_against_its_versions_digest_tag(
    fetch: FetchRecord, verdict: tuple[str, str]
) -> None:
    status = compute_status(
        observed(resolution=GIVEN, fetched_digest=JOB_DIGEST, fetch=fetch), None, T0
    )
    assert status.phase.value == "Ready"
    assert conditions_of(status)["ModelVerified"][:2] == verdict


def test_a_refused_base_names_the_base_field() -> None:
    base = BaseModelSource(uri="models:/base/2")
    on_base = replace(GIVEN, base=base)
    refused = FetchRecord("models:/base/2", reason="ProvenanceMismatch", error="tag differs")
    status = compute_status(observed(resolution=on_base, base_fetch=refused), None, T0)
    assert status.error is not None
    assert (status.error.code, status.error.field) == ("ProvenanceMismatch", "spec.model.baseModel")
    assert conditions_of(status)["ModelVerified"] == (
        "False",
        "ProvenanceMismatch",
        "init container fetch-base-model refused models:/base/2: tag differs",
    )


def test_a_fetch_that_did_not_check_the_jobs_uid_does_not_verify_it() -> None:
    unchecked = FetchRecord(URI, JOB_DIGEST)  # a pod of a template from before the gate
    obs = observed(resolution=FROM_JOB, fetched_digest=JOB_DIGEST, fetch=unchecked)
    status = compute_status(obs, None, T0)
    assert status.phase.value == "Ready"
    assert conditions_of(status)["ModelVerified"] == (
        "Unknown",
        "NotVerified",
        f"{URI}: fetched {JOB_DIGEST} without checking its provenance",
    )
