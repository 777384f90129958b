"""Backend rayCluster: a FineTuneJob submitted to a real local Ray head through the Job
Submission REST API, with Ray's token authentication on, reporting success and failure.

The test starts `ray start --head` (ray[default], for the dashboard) and MLflow on sqlite; the
job runs the real trainer (`python -m sovereign_training train`) on a tiny model the test
creates and the sample chat data, so what the operator reports is what training did.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from secrets_audit import record as audit_record
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.services import LocalMlflow, LocalRayHead

from .operator_process import (
    OperatorProcess,
    conditions,
    events,
    finetunejob,
    policy_for,
    setup_namespace,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DATA = REPO_ROOT / "examples" / "data" / "eu-data-protection-chat.jsonl"
MODEL_NAME = "tiny-llama-on-ray"
REGION_LABEL = "topology.kubernetes.io/region"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMlflow]:
    folder = tmp_path_factory.mktemp("mlflow")
    with LocalMlflow(folder / "data", folder / "logs") as server:
        yield server


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sovereign_training.tiny import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayHead]:
    """A real Ray head with its dashboard, token authentication on, stopped by process group.
    Its node says it is in eu-west-par (a Ray node label), as a provider's nodes would."""
    with LocalRayHead(
        tmp_path_factory.mktemp("ray-head"), labels={REGION_LABEL: "eu-west-par"}
    ) as head:
        yield head


@pytest.fixture
def operator(
    crds: LocalCluster, namespace: str, tmp_path: Path, ray_head: LocalRayHead, mlflow: LocalMlflow
) -> Iterator[OperatorProcess]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ray-token", "namespace": namespace},
        "data": {"token": base64.b64encode(ray_head.token.encode()).decode()},
    }
    crds.apply(secret)
    setup_namespace(
        crds,
        namespace,
        rayClusters=[
            {
                "name": name,
                "address": ray_head.address,
                "region": region,
                "authTokenSecretRef": {"namespace": namespace, "name": "ray-token", "key": "token"},
            }
            # The same head declared a second time, in Frankfurt: the policy says so, the
            # node says otherwise.
            for name, region in (("local-eu", "eu-west-par"), ("said-fra", "eu-central-fra"))
        ],
        # The operator's tracking server is a place the policy must declare.
        storageEndpoints=[
            *policy_for(namespace)["spec"]["storageEndpoints"],
            {"name": "mlflow", "url": mlflow.tracking_uri, "region": "eu-west-par"},
        ],
    )
    # The local Ray head runs jobs as this machine's processes, with this interpreter.
    env = {
        "SOVAI_TRAINING_COMMAND": f"{sys.executable} -m sovereign_training train",
        "SOVAI_MLFLOW_TRACKING_URI": mlflow.tracking_uri,
    }
    with OperatorProcess(crds, tmp_path, namespaces=[namespace], env=env) as process:
        yield process
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", "--wait=false", check=False)


def ray_job(ray_head: LocalRayHead, submission_id: str) -> dict[str, object]:
    response = requests.get(
        f"{ray_head.address}/api/jobs/{submission_id}",
        timeout=5,
        headers=ray_head.auth_headers(),
    )
    response.raise_for_status()
    info: dict[str, object] = response.json()
    return info


def submissions_of(ray_head: LocalRayHead, uid: str) -> list[str]:
    """The submission ids the Ray head holds for the job of this uid (its metadata), sorted."""
    listing = requests.get(
        f"{ray_head.address}/api/jobs/", timeout=5, headers=ray_head.auth_headers()
    ).json()
    return sorted(
        str(j["submission_id"])
        for j in listing
        if (j.get("metadata") or {}).get("sovereign-ai.eu/job-uid") == uid
    )


def cpu_job(
    name: str,
    namespace: str,
    model: Path,
    training_uri: str,
    cluster: str = "local-eu",
    epochs: int = 1,
    **execution: object,
) -> dict[str, object]:
    return finetunejob(
        name,
        namespace,
        baseModel={"uri": model.as_uri()},
        dataset={"trainingUri": training_uri, "format": "chat"},
        method={
            "type": "full",
            "hyperparameters": {
                "epochs": epochs,
                "batchSize": 8,
                "microBatchSize": 8,
                "learningRate": "3e-3",
                "maxSeqLength": 128,
            },
        },
        resources={"workers": 1, "gpusPerWorker": 0, "cpu": "1", "memory": "1Gi"},
        execution={"backend": "rayCluster", "rayClusterRef": cluster, **execution},
        tracking={"experimentName": "raycluster-backend", "registeredModelName": MODEL_NAME},
    )


def test_the_token_is_required_by_the_ray_head(ray_head: LocalRayHead) -> None:
    assert requests.get(f"{ray_head.address}/api/jobs/", timeout=5).status_code == 401


def test_raycluster_backend_runs_a_real_job_to_success(
    crds: LocalCluster,
    namespace: str,
    operator: OperatorProcess,
    ray_head: LocalRayHead,
    mlflow: LocalMlflow,
    tiny_model: Path,
) -> None:
    crds.apply(cpu_job("on-ray", namespace, tiny_model, SAMPLE_DATA.as_uri()))
    obj = wait_phase(crds, namespace, "on-ray", "Succeeded", timeout=600, log=operator.log_tail)
    status = obj["status"]
    uid = obj["metadata"]["uid"]
    assert status["submissionId"] == f"sovai-{uid}-1"
    assert status["regions"] == ["eu-west-par"]
    version = status["mlflow"]["modelVersion"]
    assert status["fineTunedModel"] == f"models:/{MODEL_NAME}/{version}"
    assert status["progress"]["percentage"] == 100
    assert status["progress"]["step"] == status["progress"]["totalSteps"] > 0
    assert status["progress"]["trainLoss"] > 0
    # Where the node said it was (its Ray label), not what the operator told it.
    assert [p["region"] for p in status["placement"]] == ["eu-west-par"]
    assert conditions(obj)["Succeeded"]["status"] == "True"
    info = ray_job(ray_head, status["submissionId"])
    assert info["status"] == "SUCCEEDED"
    assert info["metadata"] == {
        "sovereign-ai.eu/job-uid": uid,
        "sovereign-ai.eu/finetunejob": f"{namespace}/on-ray",
    }
    # MLflow holds what the status names: the finished run, and the version registered from it.
    run = requests.get(
        f"{mlflow.tracking_uri}/api/2.0/mlflow/runs/get",
        params={"run_id": status["mlflow"]["runId"]},
        timeout=10,
    ).json()["run"]
    assert run["info"]["status"] == "FINISHED"
    registered = requests.get(
        f"{mlflow.tracking_uri}/api/2.0/mlflow/model-versions/get",
        params={"name": MODEL_NAME, "version": version},
        timeout=10,
    ).json()["model_version"]
    assert registered["run_id"] == status["mlflow"]["runId"]
    # Their tags and params go through the tier's secrets audit.
    audit_record(f"MLflow run {run['info']['run_id']}", run)
    audit_record(f"MLflow model version {MODEL_NAME}/{version}", registered)
    # Exactly one submission, and the token never reached the log.
    assert submissions_of(ray_head, uid) == [f"sovai-{uid}-1"]
    assert ray_head.token not in operator.log_text()


def test_raycluster_backend_reports_a_failed_job(
    crds: LocalCluster,
    namespace: str,
    operator: OperatorProcess,
    ray_head: LocalRayHead,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    # A dataset that is not there: the trainer checks it before any worker starts, and fails;
    # with backoffLimit 1 the operator submits it once more, then reports the failure.
    missing = (tmp_path / "absent" / "train.jsonl").as_uri()
    crds.apply(cpu_job("broken", namespace, tiny_model, missing, backoffLimit=1))
    obj = wait_phase(crds, namespace, "broken", "Failed", timeout=300, log=operator.log_tail)
    failed = conditions(obj)["Failed"]
    assert failed["reason"] == "RayJobFailed"
    assert "dataset.trainingUri" in failed["message"], failed["message"]
    assert "(after 2 attempts, spec.execution.backoffLimit 1)" in failed["message"]
    assert obj["status"]["error"]["code"] == "RayJobFailed"
    assert any(e["type"] == "Warning" for e in events(crds, namespace, "broken"))
    uid = obj["metadata"]["uid"]
    assert obj["status"]["submissionId"] == f"sovai-{uid}-1-r1"
    mine = submissions_of(ray_head, uid)
    assert mine == [f"sovai-{uid}-1", f"sovai-{uid}-1-r1"]
    assert all(ray_job(ray_head, sid)["status"] == "FAILED" for sid in mine)


def test_a_node_outside_the_jobs_regions_trains_nothing(
    crds: LocalCluster,
    namespace: str,
    operator: OperatorProcess,
    ray_head: LocalRayHead,
    tiny_model: Path,
) -> None:
    """The policy declares this cluster in Frankfurt; its node says Paris. Before, the operator
    told the trainer the region from the policy, and the job succeeded with "eu-central-fra"
    as its placement evidence."""
    crds.apply(cpu_job("said-fra", namespace, tiny_model, SAMPLE_DATA.as_uri(), "said-fra"))
    obj = wait_phase(crds, namespace, "said-fra", "Failed", timeout=300, log=operator.log_tail)
    assert obj["status"]["regions"] == ["eu-central-fra"]
    failed = conditions(obj)["Failed"]
    assert failed["reason"] == "RayJobFailed"
    refusal = (
        "is in eu-west-par (its topology.kubernetes.io/region label), outside the allowed "
        "regions [eu-central-fra]"
    )
    assert refusal in failed["message"], failed["message"]
    assert "fineTunedModel" not in obj["status"]


def test_a_job_past_its_active_deadline_is_stopped(
    crds: LocalCluster,
    namespace: str,
    operator: OperatorProcess,
    ray_head: LocalRayHead,
    tiny_model: Path,
) -> None:
    """activeDeadlineSeconds holds on a Ray cluster too: KubeRay is not there to enforce it,
    so the operator stops the submission once it has run that long."""
    crds.apply(
        cpu_job(
            "endless", namespace, tiny_model, SAMPLE_DATA.as_uri(),
            epochs=100, activeDeadlineSeconds=60, startupDeadlineSeconds=60,
        )
    )  # fmt: skip
    obj = wait_phase(crds, namespace, "endless", "Failed", timeout=300, log=operator.log_tail)
    failed = conditions(obj)["Failed"]
    assert failed["reason"] == "DeadlineExceeded", failed
    assert "activeDeadlineSeconds (60 s)" in failed["message"]
    # Ray stops the job on its own time after the request.
    sid = obj["status"]["submissionId"]
    wait_for(lambda: ray_job(ray_head, sid)["status"] == "STOPPED", 60, "Ray to stop the job")
