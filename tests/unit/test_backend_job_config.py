"""What each backend hands the trainer (job.json, with the policy's facts and the audit chain's
head) and what it keeps of the trainer's result (all of it, keys it does not know included)."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec, ResolvedHyperparameters
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.backends.context import JobContext
from sovereign_operator.backends.kuberay import KubeRayBackend
from sovereign_operator.backends.pods import PodFacts
from sovereign_operator.backends.raycluster import RayClusterBackend
from sovereign_operator.backends.types import BackendState
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.jobconfig import job_config_of
from sovereign_operator.builders.rayjob import SUBMITTER_COMPONENT
from sovereign_operator.k8s.client import Kube

CHAIN_HEAD = "sha256:" + "cd" * 32
BASE_MODEL = "hf://acme/tiny-llama"
POLICY = SovereigntyPolicySpec.model_validate(
    {
        "allowedRegions": ["eu-west-par"],
        "rayClusters": [
            {"name": "shared-eu", "address": "http://ray-head:8265", "region": "eu-west-par"}
        ],
        "baseModels": [{"uri": BASE_MODEL, "trainingFlops": 3.8e25}],
        "energy": {"pue": 1.3},
    }
)
HP = ResolvedHyperparameters(
    epochs=1,
    batch_size=8,
    micro_batch_size=4,
    learning_rate=2e-4,
    max_seq_length=512,
    warmup_ratio=0.0,
    seed=1,
)
DIGEST = "ab" * 32
# A result as the trainer prints it, with `inputs`, which the operator does not read itself.
RESULT = {
    "runId": "r1",
    "modelUri": "models:/tiny-llama-ft/1",
    "modelDigest": DIGEST,
    "nodes": [{"node": "gpu-1", "region": "eu-west-par"}],
    "inputs": {
        "datasets": {"training": "ef" * 32, "validation": "01" * 32},
        "baseModel": {"uri": BASE_MODEL, "revision": "0123abcd"},
    },
}
LOG = "starting\nSOVAI_RESULT " + json.dumps(RESULT, separators=(",", ":")) + "\ndone\n"


def context(backend: str, chain_head: str | None) -> JobContext:
    execution: dict[str, Any] = {"backend": backend}
    if backend == "rayCluster":
        execution["rayClusterRef"] = "shared-eu"
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": BASE_MODEL},
            "dataset": {"trainingUri": "s3://eu-data/train.jsonl"},
            "execution": execution,
        }
    )
    owner = Owner(name="ft", namespace="team-a", uid="0000-1111")
    return JobContext(
        spec=spec,
        owner=owner,
        generation=1,
        residency=Residency("eu-only", "topology.kubernetes.io/region", ("eu-west-par",)),
        hyperparameters=HP,
        policy=POLICY,
        build=BuildConfig(runtime_image="registry.eu/sovai/training:1"),
        previous=None,
        pods=(PodFacts("ft-submitter", "team-a", "node-1", "Succeeded", (), SUBMITTER_COMPONENT),),
        chain_head=chain_head,
    )


class FakeKube:
    """Records what is created; a RayJob comes back finished, its submitter's log holds LOG."""

    def __init__(self) -> None:
        self.created: dict[str, dict[str, Any]] = {}

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.created[manifest["kind"]] = manifest
        if manifest["kind"] == "RayJob":
            status = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
            return {**manifest, "status": status}
        return manifest

    def log_tail(self, namespace: str, pod: str, container: str, lines: int, limit: int) -> str:
        return LOG


class FakeJobsApi:
    """Ray's Job Submission API: records the submission; the job then has succeeded."""

    def __init__(self) -> None:
        self.env: dict[str, str] | None = None

    def info(self, submission_id: str) -> dict[str, Any] | None:
        return None if self.env is None else {"status": "SUCCEEDED"}

    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        metadata: dict[str, str],
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        self.env = (runtime_env or {})["env_vars"]

    def logs(self, submission_id: str) -> str:
        return LOG


def kuberay_job_json(chain_head: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    kube = FakeKube()
    observation = KubeRayBackend(cast(Kube, kube)).reconcile(context("kuberay", chain_head))
    assert observation.state == BackendState.SUCCEEDED
    document: dict[str, Any] = json.loads(job_config_of(kube.created["RayJob"]) or "{}")
    return document, observation.result


def raycluster_job_json(
    chain_head: str | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    api = FakeJobsApi()
    monkeypatch.setattr(RayClusterBackend, "_api", lambda self, endpoint: api)
    backend = RayClusterBackend(cast(Kube, FakeKube()), "python -m sovereign_training", None, True)
    observation = backend.reconcile(context("rayCluster", chain_head))
    assert observation.state == BackendState.SUCCEEDED
    assert api.env is not None
    document: dict[str, Any] = json.loads(api.env["SOVAI_JOB_CONFIG"])
    return document, observation.result


@pytest.mark.parametrize("backend", ["kuberay", "rayCluster"])
def test_the_trainer_gets_the_policy_facts_and_the_chain_head(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "kuberay":
        document, result = kuberay_job_json(CHAIN_HEAD)
    else:
        document, result = raycluster_job_json(CHAIN_HEAD, monkeypatch)
    assert document["baseModel"] == {"uri": BASE_MODEL, "revision": None, "trainingFlops": 3.8e25}
    assert document["energy"] == {"pue": 1.3}
    assert document["audit"] == {"chainHead": CHAIN_HEAD}
    # The whole result is kept, `inputs` included, for the audit log.
    assert result == RESULT


@pytest.mark.parametrize("backend", ["kuberay", "rayCluster"])
def test_without_a_chain_head_job_json_has_no_audit_section(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "kuberay":
        document, _ = kuberay_job_json(None)
    else:
        document, _ = raycluster_job_json(None, monkeypatch)
    assert "audit" not in document
    assert document["energy"] == {"pue": 1.3}
