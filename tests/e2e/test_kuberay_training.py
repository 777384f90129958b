"""The kuberay backend for real: a FineTuneJob trains in Ray pods on the real node, and a
ModelDeployment serves its result from a pod there.

The operator runs as the chart's Deployment; KubeRay makes the head, two CPU workers and the
submitter from the runtime image; the two workers train data-parallel (gloo) across pods, on
a claim that every pod mounts; MLflow runs in the cluster as a real tracking server. The job's
LoRA adapter (unmerged, the default) is then served on its base by the transformers runtime and
asked for a chat completion by the official openai client. Nothing here writes a status: the
tests only apply the custom resources and read what the components did.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kueue_queues import queue_objects
from secrets_audit import record as audit_record
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.incluster import (
    LOCAL_S3,
    MLFLOW_PORT,
    S3_SECRET,
    local_places,
)
from sovereign_operator.devcluster.s3store import (
    admin_client,
    audit_environment,
    audit_settings,
    make_locked_bucket,
    objects,
)
from sovereign_operator.devcluster.samples import cpu_lora_job, cpu_serving

from .kube_helpers import (
    SYSTEM_NAMESPACE,
    get,
    install_operator,
    port_forward,
    small_node_config,
    start_mlflow,
    team_namespace,
    uninstall_operator,
    wait,
)

# The first test's set-up holds the tier's cluster start (importing the images into the node's
# containerd, minutes on a cold store) and the whole training run: its own waits (900 s each)
# should fail first, with the job's state, rather than the per-test timeout of `make test`.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

REGION = "eu-west-par"
CLAIM = "shared"
BUCKET = "eu-e2e-data"
ARTIFACTS_BUCKET = "eu-e2e-mlflow"
AUDIT_BUCKET = "eu-e2e-audit"
AUDIT_PREFIX = "e2e"
TRAINING_POD_COMPONENTS = ("ray-head", "ray-worker", "ray-submitter")


@pytest.fixture(scope="module")
def training_operator(node_cluster: LocalCluster) -> Iterator[str]:
    """MLflow in the cluster and the operator as a pod, set up to use it; yields the tracking
    URI. Small head and submitter requests: the node has two cores for everything."""
    tracking_uri = start_mlflow(node_cluster, ARTIFACTS_BUCKET, REGION)
    store = node_cluster.s3_credentials
    assert store is not None
    make_locked_bucket(store, AUDIT_BUCKET)
    install_operator(
        node_cluster,
        {
            **small_node_config(tracking_uri),
            **audit_settings(store, AUDIT_BUCKET, AUDIT_PREFIX),
        },
        policy=local_places(store, SYSTEM_NAMESPACE, REGION),
        values={"audit": {"credentialsSecret": S3_SECRET}},
    )

    def mlflow_ready() -> bool:
        status = get(node_cluster, "deployment", "mlflow", "-n", SYSTEM_NAMESPACE)["status"]
        return bool(status.get("availableReplicas"))

    wait(mlflow_ready, 300, "MLflow Available", node_cluster)
    yield tracking_uri
    uninstall_operator(node_cluster)
    node_cluster.kubectl("delete", "deployment,service", "mlflow", "-n", SYSTEM_NAMESPACE)


@pytest.fixture(scope="module")
def shared_claim(
    node_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A namespace and a claim on a folder of the node holding the tiny base model and the
    sample chat data: what pvc://shared/... names in the job."""
    namespace = f"e2e-train-{uuid.uuid4().hex[:6]}"
    folder = tmp_path_factory.mktemp("shared-claim") / "claim"
    team_namespace(node_cluster, namespace, folder, claim=CLAIM, bucket=BUCKET)
    yield namespace, folder
    # Waited for, while the operator still runs (training_operator is torn down after this):
    # it must finalize the FineTuneJob and the ModelDeployment, and a namespace left
    # terminating would hand its objects to the next test's operator.
    node_cluster.kubectl("delete", "namespace", namespace, "--timeout=180s", timeout=200)
    node_cluster.kubectl("delete", "pv", f"{namespace}-{CLAIM}", "--wait=false", check=False)


def mlflow_get(cluster: LocalCluster, tracking_uri: str, path: str) -> dict[str, Any]:
    """MLflow's REST API from this machine, through the Service's cluster IP (kube-proxy's
    rules), with the Service's name as the Host: this machine does not use the cluster's DNS."""
    host = tracking_uri.split("//", 1)[1]
    service = get(cluster, "service", "mlflow", "-n", SYSTEM_NAMESPACE)
    url = f"http://{service['spec']['clusterIP']}:{MLFLOW_PORT}{path}"
    request = urllib.request.Request(url, headers={"Host": host})
    with urllib.request.urlopen(request, timeout=10) as response:
        found: dict[str, Any] = json.loads(response.read())
    return found


JOB = "tiny-lora"
# Both jobs wait in the example's Kueue queue, whose CPU quota in the node's region holds one
# of them (each asks for 1.7 CPUs and 8.25 GiB: head, two workers, submitter): the second is
# admitted when the first has finished.
CPU_QUOTA_FOR_ONE = {"cpu": "2500m", "memory": "12Gi", "ephemeral-storage": "2Gi"}
QUEUED_JOB = "tiny-lora-queued"


REGION_TERMS = [
    {"matchExpressions": [
        {"key": "topology.kubernetes.io/region", "operator": "In", "values": [REGION]}
    ]}
]  # fmt: skip


def required_node_terms(pod: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = pod["spec"]["affinity"]["nodeAffinity"]
    terms: list[dict[str, Any]] = affinity["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return terms


def ray_cli(cluster: LocalCluster, namespace: str, cluster_name: str) -> dict[str, Any]:
    """Ray's own CLI against the job's cluster, as docs/operator.md ("Ray's CLI") tells a
    user to run it: the token from KubeRay's Secret, the dashboard through port-forward."""
    ftj_status = get(cluster, "finetunejob", JOB, "-n", namespace)["status"]
    rayjob = get(cluster, "rayjob", ftj_status["rayJobName"], "-n", namespace)
    assert rayjob["status"]["rayClusterName"] == cluster_name
    secret = get(cluster, "secret", cluster_name, "-n", namespace)
    token = base64.b64decode(secret["data"]["auth_token"]).decode()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    ray = str(Path(sys.executable).parent / "ray")
    with port_forward(cluster, namespace, f"svc/{cluster_name}-head-svc", 8265) as port:
        address = f"http://127.0.0.1:{port}"

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [ray, "job", *args, "--address", address]
            return subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=120, check=False
            )

        return {
            "job_id": rayjob["status"]["jobId"],
            "list": run("list"),
            "logs": run("logs", rayjob["status"]["jobId"]),
        }


@pytest.fixture(scope="module")
def training_run(
    node_cluster: LocalCluster, training_operator: str, shared_claim: tuple[str, Path]
) -> dict[str, Any]:
    """The FineTuneJob, applied once: what was seen while it ran, and its final status."""
    namespace, _ = shared_claim
    queue = queue_objects(namespace, CPU_QUOTA_FOR_ONE, flavors=(REGION,))
    node_cluster.apply(*queue)
    seen: dict[str, Any] = {"queue": queue[-1]["metadata"]["name"]}
    for name, model in ((JOB, "tiny-kuberay"), (QUEUED_JOB, "tiny-kuberay-queued")):
        job = cpu_lora_job(
            name,
            namespace,
            claim=CLAIM,
            bucket=BUCKET,
            secret=S3_SECRET,
            region=REGION,
            registered_model_name=model,
            experiment_name="e2e-kuberay",
        )
        job["spec"]["placement"]["queueName"] = seen["queue"]
        if name == QUEUED_JOB:
            job["spec"]["method"]["hyperparameters"]["epochs"] = 1  # it proves the queue only
        node_cluster.apply(job)
        time.sleep(1.1)  # Kueue orders by creation time, to the second

    def status() -> dict[str, Any]:
        return get(node_cluster, "finetunejob", JOB, "-n", namespace).get("status") or {}

    def running_with_progress() -> bool:
        current = status()
        if current.get("phase") in ("Failed", "Succeeded"):
            raise AssertionError(f"ended before any progress was seen: {current}")
        step = (current.get("progress") or {}).get("step") or 0
        if current.get("phase") == "Running" and step > 0:
            seen["status"] = current
            seen["behind"] = get(node_cluster, "finetunejob", QUEUED_JOB, "-n", namespace)
            seen["behind_rayjob"] = get(node_cluster, "rayjob", QUEUED_JOB, "-n", namespace)
            seen["pods"] = get(
                node_cluster, "pods", "-n", namespace, "-l", f"sovereign-ai.eu/finetunejob={JOB}"
            )["items"]
            seen["wide"] = node_cluster.kubectl("get", "pods", "-o", "wide", "-n", namespace).stdout
            return True
        return False

    wait(running_with_progress, 900, "Running with progress", node_cluster, (namespace,), 2)
    print(f"\nkubectl get pods -o wide, during training:\n{seen['wide']}")
    # While the head runs: a dashboard request without Ray's token (API server's service proxy).
    [head] = [p for p in seen["pods"] if p["metadata"]["labels"].get("ray.io/node-type") == "head"]
    cluster_name = head["metadata"]["labels"]["ray.io/cluster"]
    proxy = f"/api/v1/namespaces/{namespace}/services/{cluster_name}-head-svc:dashboard/proxy"
    seen["unauthenticated"] = node_cluster.kubectl(
        "get", "--raw", f"{proxy}/api/jobs/", check=False
    )
    seen["ray_cli"] = ray_cli(node_cluster, namespace, cluster_name)

    def finished() -> bool:
        return status().get("phase") in ("Succeeded", "Failed")

    wait(finished, 900, "finished", node_cluster, (namespace,), 2)
    seen["final"] = status()
    seen["rayjob"] = get(node_cluster, "rayjob", JOB, "-n", namespace)

    # The job behind it in the queue trains now, alone on the node, before serving starts.
    def behind_finished() -> bool:
        phase = get(node_cluster, "finetunejob", QUEUED_JOB, "-n", namespace)["status"]["phase"]
        return phase in ("Succeeded", "Failed")

    wait(behind_finished, 900, f"{QUEUED_JOB} finished", node_cluster, (namespace,), 2)
    seen["behind_final"] = get(node_cluster, "finetunejob", QUEUED_JOB, "-n", namespace)
    seen["behind_rayjob_final"] = get(node_cluster, "rayjob", QUEUED_JOB, "-n", namespace)
    return seen


def test_finetunejob_trains_in_ray_pods_on_the_real_node(
    node_cluster: LocalCluster,
    training_operator: str,
    shared_claim: tuple[str, Path],
    training_run: dict[str, Any],
) -> None:
    name = JOB
    seen = training_run
    progress = seen["status"]["progress"]
    assert progress["totalSteps"] > progress["step"] > 0
    assert progress["trainLoss"] > 0

    pods = {p["metadata"]["labels"]["sovereign-ai.eu/component"]: p for p in seen["pods"]}
    assert node_cluster.real_node is not None
    for component in TRAINING_POD_COMPONENTS:
        pod = pods[component]
        assert pod["spec"]["nodeName"] == node_cluster.real_node.name, component
        assert required_node_terms(pod) == REGION_TERMS, component
    workers = [p for p in seen["pods"] if p["metadata"]["labels"].get("ray.io/group") == "workers"]
    assert len(workers) == 2
    # Ray's token authentication is on: KubeRay gave the head its mode, and the dashboard
    # refuses a request without the token (through the API server's service proxy).
    head_env = {e["name"]: e.get("value") for e in pods["ray-head"]["spec"]["containers"][0]["env"]}
    assert head_env.get("RAY_AUTH_MODE") == "token"
    refused = seen["unauthenticated"]
    assert refused.returncode != 0, refused.stdout
    # kubectl words any 401 this way; its own client certificate works for every other call
    # here, so the 401 is the dashboard's.
    assert "You must be logged in to the server" in refused.stderr, refused.stderr
    # With the token from KubeRay's Secret, Ray's CLI lists the job and prints its log.
    cli = seen["ray_cli"]
    assert cli["list"].returncode == 0, cli["list"].stderr
    assert cli["job_id"] in cli["list"].stdout
    assert cli["logs"].returncode == 0, cli["logs"].stderr
    assert "SOVAI_PROGRESS" in cli["logs"].stdout

    final = seen["final"]
    assert final["phase"] == "Succeeded", json.dumps(final, indent=2)
    # The batch sizes were "auto": the trainer chose them from the data and reported them.
    chosen = final["resolvedHyperparameters"]
    assert (chosen["epochs"], chosen["batchSize"], chosen["microBatchSize"]) == (2, 8, 4), chosen
    mlflow = final["mlflow"]
    assert final["fineTunedModel"] == f"models:/tiny-kuberay/{mlflow['modelVersion']}"
    assert final["outputUri"] == f"s3://{BUCKET}/output/{name}"
    # The dataset came from the cluster's S3 store, and the adapter went back to it: each URI
    # resolved to the policy's endpoint, and the pods were given exactly that one.
    store = node_cluster.s3_credentials
    assert store is not None
    places = {p["field"]: p for p in final["storage"]}
    for field in ("spec.dataset.trainingUri", "spec.output.uri"):
        place = places[field]
        assert (place["storageEndpoint"], place["url"]) == (LOCAL_S3, store.endpoint)
        assert places[field]["region"] == REGION
    assert places["SOVAI_MLFLOW_TRACKING_URI"]["storageEndpoint"] == "mlflow"
    written = objects(store, BUCKET, f"output/{name}/")
    assert f"output/{name}/adapter_config.json" in written, written
    # MLflow keeps the registered model's files in the store too (its artifact destination).
    assert any(
        key.endswith("adapter_config.json") for key in objects(store, ARTIFACTS_BUCKET, "")
    ), objects(store, ARTIFACTS_BUCKET, "")

    # MLflow, asked directly: the run finished, and the version is registered from it.
    run = mlflow_get(
        node_cluster, training_operator, f"/api/2.0/mlflow/runs/get?run_id={mlflow['runId']}"
    )
    assert run["run"]["info"]["status"] == "FINISHED"
    version = mlflow_get(
        node_cluster,
        training_operator,
        f"/api/2.0/mlflow/model-versions/get?name=tiny-kuberay&version={mlflow['modelVersion']}",
    )
    assert version["model_version"]["run_id"] == mlflow["runId"]
    # Their tags and params go through the tier's secrets audit.
    audit_record(f"MLflow run {mlflow['runId']}", run)
    audit_record(f"MLflow model version tiny-kuberay/{mlflow['modelVersion']}", version)
    assert run["run"]["data"]["tags"], "the run has no tags to audit"
    # Two workers trained: the placement evidence names every pod, all in the region.
    placement = final["placement"]
    assert {p["region"] for p in placement} == {REGION}
    assert len([p for p in placement if "worker" in p["pod"]]) == 2


def test_a_job_behind_it_in_the_queue_waits_for_quota_then_trains(
    training_run: dict[str, Any],
) -> None:
    """Kueue's quota on the node's CPUs holds one job: the second waited in Queued, with its
    place and Kueue's reason, while the first trained, and trained once it had finished."""
    waiting = training_run["behind"]
    assert waiting["status"]["phase"] == "Queued", waiting["status"]
    running = {c["type"]: c for c in waiting["status"]["conditions"]}["Running"]
    assert (
        f"waits in queue {training_run['queue']} for quota (position 1 of 1 waiting; Kueue: "
        in (running["message"])
    ), running
    assert training_run["behind_rayjob"]["spec"]["suspend"] is True
    final = training_run["behind_final"]["status"]
    assert final["phase"] == "Succeeded", json.dumps(final, indent=2)
    assert final["fineTunedModel"].startswith("models:/tiny-kuberay-queued/")
    # It started only after the first had ended: KubeRay's times of the two RayJobs.
    first_end = training_run["rayjob"]["status"]["endTime"]
    second_start = training_run["behind_rayjob_final"]["status"]["startTime"]
    assert second_start >= first_end, (first_end, second_start)


SERVED_NAME = "tiny-chat"


def test_the_jobs_adapter_serves_from_a_pod_on_the_real_node(
    node_cluster: LocalCluster, shared_claim: tuple[str, Path], training_run: dict[str, Any]
) -> None:
    """The unmerged adapter, served on the job's base (both fetched by init containers) by the
    transformers runtime, answers the openai client through the Service (kube-proxy)."""
    from openai import OpenAI

    namespace, _ = shared_claim
    assert training_run["final"]["phase"] == "Succeeded", training_run["final"]
    name = "tiny-chat-server"
    node_cluster.apply(
        cpu_serving(name, namespace, job=JOB, region=REGION, served_model_name=SERVED_NAME)
    )

    def status() -> dict[str, Any]:
        return get(node_cluster, "modeldeployment", name, "-n", namespace).get("status") or {}

    def ready() -> bool:
        current = status()
        if current.get("phase") == "Failed":
            raise AssertionError(f"the ModelDeployment failed: {current}")
        return current.get("phase") == "Ready"

    wait(ready, 600, "Ready", node_cluster, (namespace,), 2)
    final = status()
    assert final["modelUri"] == training_run["final"]["fineTunedModel"]
    assert final["baseModelUri"] == f"pvc://{CLAIM}/models/tiny"
    # Both digests come from what the init containers fetched, as the kubelet reported it.
    assert final["modelDigest"].startswith("sha256:"), final
    assert final["baseModelDigest"].startswith("sha256:"), final
    assert final["modelDigest"] != final["baseModelDigest"]
    # fetch-model checked the adapter's provenance: its MLflow version names the job, and the
    # files hash to the digest the trainer recorded in the job's status.
    assert final["modelDigest"] == training_run["final"]["mlflow"]["modelDigest"]
    verified = next(c for c in final["conditions"] if c["type"] == "ModelVerified")
    assert (verified["status"], verified["reason"]) == ("True", "Verified"), verified
    [placed] = final["placement"]
    assert node_cluster.real_node is not None
    assert (placed["node"], placed["region"]) == (node_cluster.real_node.name, REGION)

    [pod] = get(node_cluster, "pods", "-n", namespace, "-l", "sovereign-ai.eu/component=serving")[
        "items"
    ]
    assert pod["spec"]["nodeName"] == node_cluster.real_node.name
    assert required_node_terms(pod) == REGION_TERMS  # the init containers run in this pod too
    fetched = {
        c["name"]: c["state"]["terminated"]["exitCode"]
        for c in pod["status"]["initContainerStatuses"]
    }
    assert fetched == {"fetch-base-model": 0, "fetch-model": 0}

    # The official client, from this machine, through the Service's cluster IP.
    service = get(node_cluster, "service", name, "-n", namespace)
    port = service["spec"]["ports"][0]["port"]
    client = OpenAI(
        base_url=f"http://{service['spec']['clusterIP']}:{port}/v1", api_key="unused", timeout=60
    )
    assert [m.id for m in client.models.list().data] == [SERVED_NAME]
    reply = client.chat.completions.create(
        model=SERVED_NAME,
        max_tokens=8,
        messages=[{"role": "user", "content": "Where may personal data be processed?"}],
    )
    assert reply.model == SERVED_NAME
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    print(f"\nanswer through the Service: {reply.choices[0].message.content!r}")


def audit_cli(
    cluster: LocalCluster, *args: str, mlflow_port: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`sovai audit ...` as a compliance officer runs it from their machine: the log's bucket
    with the store's keys, the cluster with their kubeconfig, MLflow through a port-forward."""
    store = cluster.s3_credentials
    assert store is not None
    env = {
        **os.environ,
        **audit_environment(store, AUDIT_BUCKET, AUDIT_PREFIX),
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    if mlflow_port is not None:
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{mlflow_port}"
    argv = [sys.executable, "-m", "sovereign_operator.cli", "audit", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)


def test_the_audit_log_tells_the_jobs_story_and_names_an_edited_record(
    node_cluster: LocalCluster,
    training_operator: str,
    shared_claim: tuple[str, Path],
    training_run: dict[str, Any],
) -> None:
    """After training and serving: the chain verifies against the cluster and MLflow, tells
    the job's story, and names the one record whose byte was then changed in the bucket."""
    namespace, _ = shared_claim
    final = training_run["final"]
    assert final["phase"] == "Succeeded", final
    trail = final["audit"]
    assert trail["log"] == f"s3://{AUDIT_BUCKET}/{AUDIT_PREFIX}/"
    # The model version carries the record of the job's admission (the trainer's tag).
    version = mlflow_get(
        node_cluster,
        training_operator,
        "/api/2.0/mlflow/model-versions/get?name=tiny-kuberay"
        f"&version={final['mlflow']['modelVersion']}",
    )
    tags = {t["key"]: t["value"] for t in version["model_version"].get("tags", [])}
    assert tags["sovai.audit.chain_head"] == trail["admission"]

    with port_forward(node_cluster, SYSTEM_NAMESPACE, "svc/mlflow", MLFLOW_PORT) as port:
        verified = audit_cli(node_cluster, "verify", mlflow_port=port)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "COMPLIANCE" in verified.stdout, verified.stdout  # the bucket's Object Lock

    shown = audit_cli(node_cluster, "show", f"ftj/{JOB}", "-n", namespace)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    story = shown.stdout
    print(f"\nsovai audit show ftj/{JOB}:\n{story}")
    for expected in (
        "PolicyBound",
        "Admitted",
        "PodPlaced",
        "InputsVerified",
        "ModelRegistered",
        final["mlflow"]["modelDigest"],
        REGION,
    ):
        assert expected in story, expected
    assert node_cluster.real_node is not None
    assert node_cluster.real_node.name in story
    audit_record("sovai audit show", {"stdout": story})  # records carry no secrets

    # One byte of one record, changed in the bucket by someone with the store's keys: Object
    # Lock keeps the original version, and the chain names the record.
    store = node_cluster.s3_credentials
    assert store is not None
    client = admin_client(store)
    key = f"{AUDIT_PREFIX}/records/{3:012d}.json"
    body = client.get_object(Bucket=AUDIT_BUCKET, Key=key)["Body"].read()
    edited = body.replace(b'"event":"', b'"event":"X', 1)
    client.put_object(Bucket=AUDIT_BUCKET, Key=key, Body=edited)
    verified = audit_cli(node_cluster, "verify", "--no-cluster")
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert "record 3:" in verified.stdout, verified.stdout
