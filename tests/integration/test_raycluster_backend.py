"""Backend rayCluster: a FineTuneJob submitted to a real local Ray head through the Job
Submission REST API, with Ray's token authentication on, reporting success and failure.

The test starts `ray start --head` (ray[default], for the dashboard) and writes a small real
entrypoint that reads job.json as the trainer would and prints the SOVAI_PROGRESS and
SOVAI_RESULT lines; the operator is told to run it instead of the trainer.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from operator_process import (
    OperatorProcess,
    conditions,
    events,
    finetunejob,
    setup_namespace,
    wait_phase,
)

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.services import LocalRayHead

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENTRYPOINT = """
import json, os, socket, sys

config = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
job = config["job"]
print("SOVAI_PROGRESS " + json.dumps({"step": 5, "totalSteps": 10, "epoch": 0.5, "trainLoss": 2.5}))
if "fail" in config["dataset"]["trainingUri"]:
    print("training data unreadable", file=sys.stderr)
    sys.exit(3)
done = {"step": 10, "totalSteps": 10, "epoch": 1.0, "trainLoss": 1.25}
print("SOVAI_PROGRESS " + json.dumps(done))
result = {
    "runId": "run-" + job["uid"][:8], "experimentId": "1",
    "modelName": config["tracking"]["registeredModelName"], "modelVersion": "1",
    "modelUri": "models:/" + config["tracking"]["registeredModelName"] + "/1",
    "outputUri": None, "tokensTrained": 1234, "gpuHours": 0.0,
    "nodes": [{"node": socket.gethostname(), "region": os.environ["SOVAI_NODE_REGION"]}],
}
print("SOVAI_RESULT " + json.dumps(result, separators=(",", ":")))
"""


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayHead]:
    """A real Ray head with its dashboard, token authentication on, stopped by process group."""
    with LocalRayHead(tmp_path_factory.mktemp("ray-head")) as head:
        yield head


@pytest.fixture
def operator(
    crds: LocalCluster, namespace: str, tmp_path: Path, ray_head: LocalRayHead
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
                "name": "local-eu",
                "address": ray_head.address,
                "region": "eu-west-par",
                "authTokenSecretRef": {"namespace": namespace, "name": "ray-token", "key": "token"},
            }
        ],
    )
    script = tmp_path / "entrypoint.py"
    script.write_text(ENTRYPOINT)
    env = {"SOVAI_TRAINING_COMMAND": f"{sys.executable} {script}"}
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


def cpu_job(name: str, namespace: str, training_uri: str) -> dict[str, object]:
    return finetunejob(
        name,
        namespace,
        dataset={"trainingUri": training_uri},
        resources={"workers": 1, "gpusPerWorker": 0, "cpu": "1", "memory": "1Gi"},
        execution={"backend": "rayCluster", "rayClusterRef": "local-eu"},
    )


def test_the_token_is_required_by_the_ray_head(ray_head: LocalRayHead) -> None:
    assert requests.get(f"{ray_head.address}/api/jobs/", timeout=5).status_code == 401


def test_raycluster_backend_runs_a_real_job_to_success(
    crds: LocalCluster, namespace: str, operator: OperatorProcess, ray_head: LocalRayHead
) -> None:
    crds.apply(cpu_job("on-ray", namespace, "s3://eu-data/faq/train.jsonl"))
    obj = wait_phase(crds, namespace, "on-ray", "Succeeded", timeout=180, log=operator.log_tail)
    status = obj["status"]
    uid = obj["metadata"]["uid"]
    assert status["submissionId"] == f"sovai-{uid}-1"
    assert status["regions"] == ["eu-west-par"]
    assert status["mlflow"]["runId"] == f"run-{uid[:8]}"
    assert status["fineTunedModel"] == "models:/tiny-llama-on-ray/1"
    assert status["progress"]["percentage"] == 100
    assert status["progress"]["trainLoss"] == 1.25
    assert [p["region"] for p in status["placement"]] == ["eu-west-par"]
    assert conditions(obj)["Succeeded"]["status"] == "True"
    info = ray_job(ray_head, status["submissionId"])
    assert info["status"] == "SUCCEEDED"
    assert info["metadata"] == {
        "sovereign-ai.eu/job-uid": uid,
        "sovereign-ai.eu/finetunejob": f"{namespace}/on-ray",
    }
    # Exactly one submission, and the token never reached the log.
    listing = requests.get(
        f"{ray_head.address}/api/jobs/",
        timeout=5,
        headers=ray_head.auth_headers(),
    ).json()
    mine = [j for j in listing if (j.get("metadata") or {}).get("sovereign-ai.eu/job-uid") == uid]
    assert len(mine) == 1
    assert ray_head.token not in operator.log_text()


def test_raycluster_backend_reports_a_failed_job(
    crds: LocalCluster, namespace: str, operator: OperatorProcess, ray_head: LocalRayHead
) -> None:
    crds.apply(cpu_job("broken", namespace, "s3://eu-data/fail/train.jsonl"))
    obj = wait_phase(crds, namespace, "broken", "Failed", timeout=180, log=operator.log_tail)
    failed = conditions(obj)["Failed"]
    assert failed["reason"] == "RayJobFailed"
    assert "exit code 3" in failed["message"]
    assert obj["status"]["error"]["code"] == "RayJobFailed"
    assert obj["status"]["progress"]["step"] == 5
    assert any(e["type"] == "Warning" for e in events(crds, namespace, "broken"))
