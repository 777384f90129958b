"""FineTuneJob end to end on the real control plane, the real KubeRay operator and kwok nodes.

The operator runs as a subprocess. KubeRay reports a Ray job running by itself once kwok runs
its submitter pod, and fails an attempt whose submitter finished without a Ray job to show
(the retry test waits for that). A Ray dashboard cannot run inside kwok's fake pods, so a
success, and the failure the cleanup test needs at a given moment, are reported through the
RayJob's status subresource (``patch_rayjob_status``), as KubeRay would; the e2e tier runs
real Ray jobs on the real node.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.builders.jobconfig import CONFIG_ANNOTATION, job_config_of
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.nodes import GPU_PRODUCT_LABEL, REGION_LABEL
from sovereign_operator.devcluster.services import LocalMlflow
from sovereign_training.progress import RESULT_KEYS, result_body
from sovereign_training.tracking import JOB_UID_TAG, finish_run, keep_result, open_run

from .operator_process import (
    EU_REGIONS,
    OperatorProcess,
    conditions,
    events,
    finetunejob,
    ftj,
    get_json,
    owned,
    patch_rayjob_status,
    policy_for,
    rayjobs,
    setup_namespace,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RESULT_DEADLINE = 20
SHORT_DEADLINE = 12


@contextmanager
def operator_with(
    crds: LocalCluster,
    namespace: str,
    tmp_path: Path,
    policy: dict[str, Any] | None = None,
    **env: str,
) -> Iterator[OperatorProcess]:
    """The operator for one namespace and its test policy (``policy``: spec keys it replaces),
    with extra SOVAI_* settings."""
    setup_namespace(crds, namespace, **(policy or {}))
    with OperatorProcess(crds, tmp_path, namespaces=[namespace], env=env) as process:
        yield process
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", "--wait=false", check=False)


@pytest.fixture
def operator(crds: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    # A short result deadline, so that a success whose result cannot be read ends in time.
    with operator_with(
        crds, namespace, tmp_path, SOVAI_RESULT_DEADLINE_SECONDS=str(RESULT_DEADLINE)
    ) as process:
        yield process


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMlflow]:
    """A real MLflow tracking server (sqlite, artifacts served by the server)."""
    folder = tmp_path_factory.mktemp("mlflow")
    with LocalMlflow(folder / "data", folder / "logs") as server:
        yield server


@pytest.fixture
def mlflow_operator(
    crds: LocalCluster, namespace: str, tmp_path: Path, mlflow: LocalMlflow
) -> Iterator[OperatorProcess]:
    """The operator with the short result deadline and a tracking server, which the policy
    declares (as it must, for the jobs to log there)."""
    endpoints = [
        *policy_for(namespace)["spec"]["storageEndpoints"],
        {"name": "mlflow", "url": mlflow.tracking_uri, "region": "eu-west-par"},
    ]
    with operator_with(
        crds,
        namespace,
        tmp_path,
        {"storageEndpoints": endpoints},
        SOVAI_RESULT_DEADLINE_SECONDS=str(RESULT_DEADLINE),
        SOVAI_MLFLOW_TRACKING_URI=mlflow.tracking_uri,
    ) as process:
        yield process


@pytest.fixture
def short_deadline_operator(
    crds: LocalCluster, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """Every job's start-up deadline SHORT_DEADLINE seconds (below what a spec may say)."""
    with operator_with(
        crds, namespace, tmp_path, SOVAI_STARTUP_DEADLINE_SECONDS=str(SHORT_DEADLINE)
    ) as process:
        yield process


def node_labels(cluster: LocalCluster) -> dict[str, dict[str, str]]:
    return {
        n["metadata"]["name"]: n["metadata"]["labels"] for n in get_json(cluster, "nodes")["items"]
    }


def test_ftj_becomes_a_rayjob_whose_pods_bind_only_to_allowed_gpu_nodes(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    crds.apply(
        finetunejob(
            "pinned",
            namespace,
            resources={"workers": 3, "gpusPerWorker": 2, "cpu": "4", "memory": "16Gi"},
        )
    )
    obj = wait_phase(crds, namespace, "pinned", "Queued", log=operator.log_tail)
    uid = obj["metadata"]["uid"]
    cond = conditions(obj)
    assert cond["InputsValidated"]["status"] == "True"
    assert cond["ResidencyVerified"]["status"] == "True"
    assert f"SovereigntyPolicy pol-{namespace}" in cond["ResidencyVerified"]["message"]
    assert obj["status"]["regions"] == sorted(EU_REGIONS)
    # Every size-dependent hyperparameter is "auto": the trainer chooses it once it has read the
    # data and reports it; until then status claims no value the job may not train with.
    assert "resolvedHyperparameters" not in obj["status"]
    assert "epochs=auto batchSize=auto microBatchSize=auto" in cond["InputsValidated"]["message"]

    [rayjob] = rayjobs(crds, namespace)
    assert rayjob["metadata"]["ownerReferences"][0]["uid"] == uid
    # KubeRay accepted it and made the RayCluster.
    cluster_name = ray_cluster_of(crds, namespace, rayjob["metadata"]["name"])
    assert get_json(crds, "rayclusters.ray.io", cluster_name, "-n", namespace) is not None
    # job.json travels in the head pod template's annotation, and KubeRay kept it on the way
    # to the RayCluster's head (the pod reads it through a downward API volume).
    job_config = json.loads(job_config_of(rayjob) or "{}")
    assert job_config["placement"]["regions"] == ["eu-central-fra", "eu-west-par"]
    ray_cluster = get_json(crds, "rayclusters.ray.io", cluster_name, "-n", namespace)
    head = ray_cluster["spec"]["headGroupSpec"]["template"]["metadata"]
    assert head["annotations"][CONFIG_ANNOTATION] == job_config_of(rayjob)
    # The pods' egress NetworkPolicy, made before the RayJob: no pod of the job runs without it.
    netpol = get_json(crds, "networkpolicy", "pinned-egress", "-n", namespace)
    assert netpol["metadata"]["ownerReferences"][0]["uid"] == uid
    assert netpol["spec"]["podSelector"] == {"matchLabels": {"sovereign-ai.eu/job-uid": uid}}
    assert netpol["metadata"]["creationTimestamp"] <= rayjob["metadata"]["creationTimestamp"]

    # Head, 3 workers and then the submitter (created once the cluster is ready) all bind.
    def bound_pods() -> list[dict[str, Any]] | None:
        pods = owned(crds, "pods", namespace, uid)
        components = {p["metadata"]["labels"].get("sovereign-ai.eu/component") for p in pods}
        if (
            len(pods) >= 5
            and components >= {"ray-head", "ray-worker", "ray-submitter"}
            and all(p["spec"].get("nodeName") for p in pods)
        ):
            return pods
        return None

    pods = wait_for(
        bound_pods, 120, "head, workers and submitter to be bound", on_timeout=operator.log_tail
    )
    labels = node_labels(crds)
    for pod in pods:
        node = labels[pod["spec"]["nodeName"]]
        assert node[REGION_LABEL] in EU_REGIONS, pod["metadata"]["name"]
        assert node[REGION_LABEL] != "us-east-1"
        # Only the workers need a GPU node; the head and the submitter leave them free.
        if pod["metadata"]["labels"].get("sovereign-ai.eu/component") == "ray-worker":
            assert GPU_PRODUCT_LABEL in node, f"{pod['metadata']['name']} is not on a GPU node"

    # The placement evidence in status names every pod with its node's region.
    def evidence() -> list[dict[str, str]] | None:
        placement = ((ftj(crds, namespace, "pinned") or {}).get("status") or {}).get("placement")
        return placement if placement and len(placement) >= len(pods) else None

    placement = wait_for(evidence, 30, "status.placement for every pod")
    assert {p["region"] for p in placement} <= set(EU_REGIONS)
    assert {p["pod"] for p in placement} >= {p["metadata"]["name"] for p in pods}
    assert 'sovai_finetunejobs{phase="' in operator.metrics()


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_as_kuberay_reports(
    cluster: LocalCluster, namespace: str, name: str, operator: OperatorProcess
) -> None:
    """Wait until KubeRay reports the job's Ray job running (it does once the submitter pod
    runs, which kwok fakes) and the job says Running."""
    wait_phase(cluster, namespace, name, "Running", timeout=120, log=operator.log_tail)
    status = rayjob_status(cluster, namespace, name)
    assert status.get("jobDeploymentStatus") == "Running", status


def rayjob_status(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    """The RayJob's status as KubeRay last wrote it; empty while there is none."""
    rayjob = get_json(cluster, "rayjobs.ray.io", name, "-n", namespace) or {}
    status: dict[str, Any] = rayjob.get("status") or {}
    return status


def reading_result(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The job, once it waits to read the result of a Ray job that succeeded."""
    obj = ftj(cluster, namespace, name)
    if not obj or (obj.get("status") or {}).get("phase") != "Running":
        return None
    return obj if conditions(obj)["Running"]["reason"] == "ReadingResult" else None


def succeed(cluster: LocalCluster, namespace: str, name: str, operator: OperatorProcess) -> None:
    """Report the job's Ray job running, then succeeded, as KubeRay would."""
    run_as_kuberay_reports(cluster, namespace, name, operator)
    patch_rayjob_status(
        cluster,
        namespace,
        name,
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "endTime": now_rfc3339()},
    )


def test_a_success_whose_result_cannot_be_read_is_not_called_succeeded(
    crds: LocalCluster, namespace: str, mlflow_operator: OperatorProcess, mlflow: LocalMlflow
) -> None:
    # KubeRay reports success, but the result (the trainer's SOVAI_RESULT line: the registered
    # model and its digest) cannot be read: kwok's submitter pod has no log to serve, and the
    # job's MLflow run, where the trainer keeps it too, does not exist (no trainer ran). The
    # job is not called Succeeded without it (a ModelDeployment would wait on it forever); it
    # is read again until the result deadline, then the job fails with ResultLost, naming
    # what was tried.
    operator = mlflow_operator
    crds.apply(finetunejob("ok", namespace, suffix="faq"))
    succeed(crds, namespace, "ok", operator)
    obj = wait_for(
        lambda: reading_result(crds, namespace, "ok"),
        30,
        "the job to read the result",
        on_timeout=operator.log_tail,
    )
    assert "succeeded; reading its result" in conditions(obj)["Running"]["message"]
    assert "completionTime" not in obj["status"]
    obj = wait_phase(
        crds, namespace, "ok", "Failed", timeout=RESULT_DEADLINE + 40, log=operator.log_tail
    )
    status = obj["status"]
    uid = obj["metadata"]["uid"]
    assert status["error"]["code"] == "ResultLost"
    message = status["error"]["message"]
    assert f"could not be read within {RESULT_DEADLINE} s" in message
    assert (
        "from the SOVAI_RESULT line of the submitter's log or the job's MLflow run (MLflow at "
        f"{mlflow.tracking_uri} has no run in experiment '{namespace}/ok' tagged "
        f"sovai.job.uid={uid} that kept a result (sovai/result.json))"
    ) in message
    assert "fineTunedModel" not in status
    cond = conditions(obj)
    assert (cond["Succeeded"]["status"], cond["Failed"]["status"]) == ("False", "True")
    story = {e["reason"]: e["message"] for e in events(crds, namespace, "ok")}
    assert {"Queued", "Running", "Failed"} <= set(story)
    assert "Succeeded" not in story
    assert f"SovereigntyPolicy pol-{namespace} allows" in story["Queued"]


def keep_result_as_the_trainer_does(
    tracking_uri: str, experiment: str, namespace: str, name: str, uid: str, version: str
) -> tuple[str, dict[str, Any]]:
    """A run in ``experiment``, tagged as the job's (uid, namespace, name), keeping a result
    document, written with the trainer's own functions and MLflow's client: (run id, the
    document)."""
    tags = {JOB_UID_TAG: uid, "sovai.job.namespace": namespace, "sovai.job.name": name}
    run_id, experiment_id = open_run(tracking_uri, experiment, name, tags)
    values: dict[str, Any] = {key: None for key in RESULT_KEYS} | {
        "runId": run_id,
        "experimentId": experiment_id,
        "modelName": "faq",
        "modelVersion": version,
        "modelUri": f"models:/faq/{version}",
        "modelDigest": "sha256:" + "ab" * 32,
        "tokensTrained": 1234,
        "gpuHours": 0.5,
        "nodes": [{"node": "gpu-eu-west-par-0", "region": "eu-west-par"}],
    }
    body = result_body(values)
    keep_result(tracking_uri, run_id, body)
    finish_run(tracking_uri, run_id, ok=True)
    return run_id, json.loads(body)


def test_a_success_whose_log_is_gone_takes_its_result_from_the_jobs_mlflow_run(
    crds: LocalCluster, namespace: str, mlflow_operator: OperatorProcess, mlflow: LocalMlflow
) -> None:
    # kwok's submitter pod has no log to serve, as a real one whose pod is gone would not; the
    # trainer kept the result on its MLflow run too. The job becomes Succeeded with that
    # result, and its status and Event say where the result came from.
    operator = mlflow_operator
    crds.apply(finetunejob("kept", namespace, suffix="faq"))
    obj = wait_phase(crds, namespace, "kept", "Queued", log=operator.log_tail)
    uid = obj["metadata"]["uid"]
    experiment = f"{namespace}/kept"  # the default: <namespace>/<name>
    run_id, document = keep_result_as_the_trainer_does(
        mlflow.tracking_uri, experiment, namespace, "kept", uid, "3"
    )
    # A newer run in the same experiment with the job's uid tag, but not naming the job's
    # namespace: not this job's result.
    keep_result_as_the_trainer_does(mlflow.tracking_uri, experiment, "elsewhere", "kept", uid, "9")
    succeed(crds, namespace, "kept", operator)
    obj = wait_phase(crds, namespace, "kept", "Succeeded", timeout=30, log=operator.log_tail)
    status = obj["status"]
    assert status["fineTunedModel"] == "models:/faq/3"
    assert status["mlflow"] == {
        "runId": run_id,
        "experimentId": document["experimentId"],
        "modelName": "faq",
        "modelVersion": "3",
        "modelUri": "models:/faq/3",
        "modelDigest": "sha256:" + "ab" * 32,
    }
    assert "error" not in status
    assert status["completionTime"]
    said = f"its result was read from MLflow run {run_id}, the submitter's log not giving it"
    succeeded = conditions(obj)["Succeeded"]
    assert succeeded["status"] == "True"
    assert succeeded["message"] == f"training finished; registered models:/faq/3; {said}"
    story = {e["reason"]: e["message"] for e in events(crds, namespace, "kept")}
    assert said in story["Succeeded"]


def test_suspend_and_resume(crds: LocalCluster, namespace: str, operator: OperatorProcess) -> None:
    crds.apply(finetunejob("pausable", namespace))
    wait_phase(crds, namespace, "pausable", "Queued", log=operator.log_tail)
    # Kopf's record of what it handled is one short line, not a JSON copy of the spec.
    described = crds.kubectl("describe", "finetunejob", "pausable", "-n", namespace).stdout
    handled = [line for line in described.splitlines() if "Last Handled Configuration" in line]
    assert len(handled) == 1
    assert handled[0].split()[-1].startswith("sha256:")
    assert '{"' not in described
    crds.kubectl(
        "patch",
        "finetunejob",
        "pausable",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": true}}',
    )
    wait_for(
        lambda: get_json(crds, "rayjobs.ray.io", "pausable", "-n", namespace)["spec"].get(
            "suspend"
        ),
        30,
        "the RayJob to be suspended",
        on_timeout=operator.log_tail,
    )
    obj = wait_phase(crds, namespace, "pausable", "Suspended", log=operator.log_tail)
    assert conditions(obj)["Suspended"]["status"] == "True"
    # KubeRay tears the Ray cluster down while suspended.
    wait_for(
        lambda: (
            (get_json(crds, "rayjobs.ray.io", "pausable", "-n", namespace).get("status") or {}).get(
                "jobDeploymentStatus"
            )
            == "Suspended"
        ),
        60,
        "KubeRay to report the RayJob Suspended",
    )
    crds.kubectl(
        "patch",
        "finetunejob",
        "pausable",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": false}}',
    )
    wait_for(
        lambda: (
            not get_json(crds, "rayjobs.ray.io", "pausable", "-n", namespace)["spec"].get("suspend")
        ),
        30,
        "the RayJob to be resumed",
        on_timeout=operator.log_tail,
    )
    obj = wait_for(
        lambda: (
            (o := ftj(crds, namespace, "pausable"))
            and o["status"]["phase"] in ("Queued", "Running")
            and o
        ),
        60,
        "the job to be queued or running again",
        on_timeout=operator.log_tail,
    )
    cond = conditions(obj)
    assert cond["Suspended"]["status"] == "False"
    assert cond["Suspended"]["reason"] == "Resumed"
    assert len(rayjobs(crds, namespace)) == 1


def test_cancel_stops_the_ray_job_and_keeps_the_evidence(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    crds.apply(finetunejob("halt", namespace))
    run_as_kuberay_reports(crds, namespace, "halt", operator)
    crds.kubectl(
        "patch", "finetunejob", "halt", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"cancel": true}}',
    )  # fmt: skip
    obj = wait_phase(crds, namespace, "halt", "Cancelled", log=operator.log_tail)
    cond = conditions(obj)
    assert cond["Cancelled"]["status"] == "True"
    assert cond["Cancelled"]["reason"] == "CancelledBySpec"
    assert cond["Running"]["status"] == "False"
    assert "completionTime" in obj["status"]
    # Its Ray job is stopped (the RayJob and so its cluster and pods go); the FineTuneJob,
    # the evidence, stays, with the story in its Events.
    wait_for(lambda: not rayjobs(crds, namespace), 60, "the RayJob to be deleted")
    assert ftj(crds, namespace, "halt") is not None
    story = {e["reason"]: e["message"] for e in events(crds, namespace, "halt")}
    assert "Running -> Cancelled" in story["Cancelled"]
    assert "the job was cancelled (spec.cancel)" in story["Stopped"]
    # For good: it stays Cancelled, and no RayJob is made again.
    time.sleep(3)
    still = ftj(crds, namespace, "halt")
    assert still is not None
    assert still["status"]["phase"] == "Cancelled"
    assert not rayjobs(crds, namespace)


def test_a_job_cancelled_before_it_starts_makes_nothing(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    crds.apply(finetunejob("never", namespace, cancel=True))
    obj = wait_phase(crds, namespace, "never", "Cancelled", log=operator.log_tail)
    assert conditions(obj)["Cancelled"]["status"] == "True"
    assert not rayjobs(crds, namespace)
    assert get_json(crds, "networkpolicy", "never-egress", "-n", namespace) is None


def ray_cluster_of(cluster: LocalCluster, namespace: str, name: str) -> str:
    return str(
        wait_for(
            lambda: rayjob_status(cluster, namespace, name).get("rayClusterName"),
            90,
            "KubeRay to create the RayCluster",
        )
    )


def test_cleanup_keeps_the_cluster_after_a_failure_and_deletes_it_after_a_success(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    # spec.execution.cleanup as it comes by default: DeleteCluster after a success, KeepCluster
    # after a failure (to debug it), both with no delay.
    execution = {"ttlSecondsAfterFinished": 0}
    crds.apply(finetunejob("kept", namespace, execution=execution))
    crds.apply(finetunejob("dropped", namespace, execution=execution))
    clusters = {}
    for name in ("kept", "dropped"):
        wait_phase(crds, namespace, name, "Queued", log=operator.log_tail)
        clusters[name] = ray_cluster_of(crds, namespace, name)
    ended = {"endTime": now_rfc3339()}
    patch_rayjob_status(
        crds,
        namespace,
        "kept",
        {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed", **ended},
    )
    patch_rayjob_status(
        crds,
        namespace,
        "dropped",
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", **ended},
    )
    wait_phase(crds, namespace, "kept", "Failed", log=operator.log_tail)
    # After the success, the operator gives the RayJob the job's own TTL, and KubeRay deletes
    # the Ray cluster; the RayJob (and its submitter's log) stays.
    wait_for(
        lambda: get_json(crds, "rayclusters.ray.io", clusters["dropped"], "-n", namespace) is None,
        60,
        "KubeRay to delete the RayCluster of the job that succeeded",
        on_timeout=operator.log_tail,
    )
    dropped = get_json(crds, "rayjobs.ray.io", "dropped", "-n", namespace)
    assert dropped["spec"]["ttlSecondsAfterFinished"] == 0
    # After the failure, the cluster stays: "never" is the TTL KubeRay was given.
    kept = get_json(crds, "rayjobs.ray.io", "kept", "-n", namespace)
    assert kept["spec"]["ttlSecondsAfterFinished"] == 2**31 - 1
    assert get_json(crds, "rayclusters.ray.io", clusters["kept"], "-n", namespace) is not None


def test_delete_cleans_up_children_and_removes_the_finalizer(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    crds.apply(finetunejob("gone", namespace))
    obj = wait_phase(crds, namespace, "gone", "Queued", log=operator.log_tail)
    assert "sovereign-ai.eu/finalizer" in obj["metadata"]["finalizers"]
    crds.kubectl("delete", "finetunejob", "gone", "-n", namespace, "--wait=false")
    wait_for(
        lambda: ftj(crds, namespace, "gone") is None,
        60,
        "the FineTuneJob to be deleted",
        on_timeout=operator.log_tail,
    )
    wait_for(lambda: not rayjobs(crds, namespace), 60, "the RayJob to be deleted")
    assert get_json(crds, "networkpolicy", "gone-egress", "-n", namespace) is None


# No node has this GPU: the real scheduler leaves every pod Pending.
NO_NODE_HAS_THIS_GPU = {
    "workers": 1,
    "gpusPerWorker": 1,
    "gpuType": "NVIDIA-B200",
    "cpu": "2",
    "memory": "8Gi",
}


def test_unschedulable_job_fails_after_its_startup_deadline(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    crds.apply(
        finetunejob(
            "stuck",
            namespace,
            resources=NO_NODE_HAS_THIS_GPU,
            execution={"startupDeadlineSeconds": 30},
        )
    )
    wait_phase(crds, namespace, "stuck", "Queued", log=operator.log_tail)
    obj = wait_phase(crds, namespace, "stuck", "Failed", timeout=90, log=operator.log_tail)
    error = obj["status"]["error"]
    assert error["code"] == "StartupTimeout"
    assert "startupDeadlineSeconds (30 s)" in error["message"]
    assert "unschedulable" in error["message"]
    assert "didn't match Pod's node affinity/selector" in error["message"]
    # Given up: the RayJob and its pods go away instead of waiting forever.
    wait_for(lambda: not rayjobs(crds, namespace), 60, "the stuck RayJob to be deleted")


@contextmanager
def kuberay_nudged(cluster: LocalCluster, namespace: str, name: str) -> Iterator[None]:
    """Touch the RayJob's annotations every few seconds, which makes KubeRay look at it again.

    On kwok, KubeRay's dashboard calls fail (no Ray runs in the fake pods), so its passes over
    a running RayJob back off, doubling up to minutes apart, and it notices an attempt whose
    submitter has finished only at the next one: 1.5 to 3.5 minutes per attempt here. A change
    of the RayJob is a new pass at once. The touches write no status, and no field the
    operator sets."""
    stop = threading.Event()

    def touch() -> None:
        count = 0
        while not stop.wait(5):
            count += 1
            cluster.kubectl(
                "annotate", "rayjobs.ray.io", name, "-n", namespace, "--overwrite",
                f"test.sovereign-ai.eu/nudge={count}", check=False,
            )  # fmt: skip

    thread = threading.Thread(target=touch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def test_a_kuberay_retry_gets_the_whole_startup_deadline_again(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    """Each attempt fails by itself, in KubeRay: kwok completes the submitter pod, the fake
    cluster has no Ray job, and KubeRay fails the attempt once the submitter has been done for
    30 s. Under backoffLimit it then starts another with a new RayCluster, past the start-up
    deadline counted from the RayJob's creation: the retry must get the whole deadline again.
    Then the second attempt fails the same way, and that is the last."""
    deadline = 30
    crds.apply(
        finetunejob(
            "retried",
            namespace,
            execution={"startupDeadlineSeconds": deadline, "backoffLimit": 1},
        )
    )
    created = time.monotonic()
    with kuberay_nudged(crds, namespace, "retried"):
        obj = wait_phase(crds, namespace, "retried", "Running", timeout=90, log=operator.log_tail)
        assert conditions(obj)["Running"]["message"] == "the Ray job retried is running"

        def second_attempt_running() -> dict[str, Any] | None:
            obj = ftj(crds, namespace, "retried") or {}
            phase = (obj.get("status") or {}).get("phase")
            assert phase != "Failed", (obj.get("status") or {}).get("error")
            message = conditions(obj).get("Running", {}).get("message", "")
            return obj if phase == "Running" and message.endswith(", attempt 2 of 2") else None

        obj = wait_for(
            second_attempt_running, 180, "the second attempt to run", on_timeout=operator.log_tail
        )
        # It started, and waited for its pods, past the deadline counted from the creation.
        assert time.monotonic() - created > deadline
        [rayjob] = rayjobs(crds, namespace)
        assert rayjob["status"]["failed"] == 1
        # The way back to Queued was a Warning that named the attempt. (Why the first failed is in
        # it only when a pass saw the RayJob while KubeRay still showed it: on kwok the next
        # attempt begins at once, as there are no real pods to wait for.)
        back = "Running -> Queued: "
        [retried] = [e for e in events(crds, namespace, "retried") if e["message"].startswith(back)]
        assert (retried["type"], retried["reason"]) == ("Warning", "Queued")
        assert retried["message"].startswith(f"{back}RayJob retried is starting, attempt 2 of 2")
        # Both attempts' pods are in the placement evidence: the first attempt's are gone.
        heads = {p["pod"] for p in obj["status"]["placement"] if "-head-" in p["pod"]}
        assert len(heads) == 2, obj["status"]["placement"]

        # The second attempt fails the same way, and that is the last: KubeRay's reason and
        # message, with how many attempts ran, in the condition, the error and a Warning Event.
        obj = wait_phase(crds, namespace, "retried", "Failed", timeout=180, log=operator.log_tail)
        failed = conditions(obj)["Failed"]
        assert failed["status"] == "True"
        assert failed["reason"] == "JobDeploymentStatusTransitionGracePeriodExceeded"
        assert "did not reach terminal state" in failed["message"]
        assert failed["message"].endswith("(after 2 attempts, spec.execution.backoffLimit 1)")
        assert obj["status"]["error"] == {"code": failed["reason"], "message": failed["message"]}
        warnings = [e for e in events(crds, namespace, "retried") if e["type"] == "Warning"]
        assert any("(after 2 attempts" in e["message"] for e in warnings), warnings


def test_operator_killed_mid_lifecycle_resumes_without_duplicates(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    for index in range(3):
        crds.apply(finetunejob(f"crash-{index}", namespace))
    for index in range(3):
        wait_phase(crds, namespace, f"crash-{index}", "Queued", log=operator.log_tail)
    operator.kill()
    # While it is down, KubeRay runs one job (kwok runs its submitter pod), and one finishes.
    wait_for(
        lambda: rayjob_status(crds, namespace, "crash-1").get("jobDeploymentStatus") == "Running",
        90,
        "KubeRay to run crash-1",
    )
    patch_rayjob_status(
        crds, namespace, "crash-2", {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    )
    crds.apply(finetunejob("crash-3", namespace))
    operator.start()
    wait_phase(crds, namespace, "crash-1", "Running", log=operator.log_tail)
    wait_for(lambda: reading_result(crds, namespace, "crash-2"), 60, "crash-2 to finish")
    wait_phase(crds, namespace, "crash-3", "Queued", log=operator.log_tail)
    patch_rayjob_status(
        crds, namespace, "crash-1", {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    )
    wait_for(lambda: reading_result(crds, namespace, "crash-1"), 60, "crash-1 to finish")
    for index in range(4):
        job = ftj(crds, namespace, f"crash-{index}")
        assert job is not None, f"crash-{index} is gone"
        uid = job["metadata"]["uid"]
        assert len(owned(crds, "rayjobs.ray.io", namespace, uid)) == 1
        assert len(owned(crds, "networkpolicies", namespace, uid)) == 1
    assert len(rayjobs(crds, namespace)) == 4


def test_a_200_character_name_gets_valid_child_names(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    name = ("fine-tune-" * 20)[:199] + "x"
    assert len(name) == 200
    crds.apply(finetunejob(name, namespace))
    obj = wait_phase(crds, namespace, name, "Queued", log=operator.log_tail)
    rayjob_name = obj["status"]["rayJobName"]
    assert len(rayjob_name) <= 47
    [rayjob] = rayjobs(crds, namespace)
    assert rayjob["metadata"]["name"] == rayjob_name
    wait_for(
        lambda: (
            get_json(crds, "rayjobs.ray.io", rayjob_name, "-n", namespace).get("status") or {}
        ).get("rayClusterName"),
        90,
        "KubeRay to accept the long-named job",
    )
    assert json.loads(job_config_of(rayjob) or "{}")["job"]["name"] == name


def test_invalid_input_fails_with_a_condition_and_event_naming_the_field(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    crds.apply(finetunejob("lost", namespace, placement={"policyRef": "no-such-policy"}))
    obj = wait_phase(crds, namespace, "lost", "Failed", log=operator.log_tail)
    assert obj["status"]["error"]["field"] == "spec.placement.policyRef"
    residency = conditions(obj)["ResidencyVerified"]
    assert residency["status"] == "False"
    assert "no-such-policy" in residency["message"]
    assert any("spec.placement.policyRef" in e["message"] for e in events(crds, namespace, "lost"))
    assert not rayjobs(crds, namespace)
    assert operator.process is not None
    assert operator.process.poll() is None


# A policy tightened or deleted under a job that already has a RayJob: the operator stops what
# runs within a sweep, fails the job with the reason, and keeps the job and its evidence.


def in_frankfurt(name: str, namespace: str) -> dict[str, object]:
    placement = {"policyRef": f"pol-{namespace}", "regions": ["eu-central-fra"]}
    return finetunejob(name, namespace, placement=placement)


def stopped(crds: LocalCluster, namespace: str, name: str) -> bool:
    obj = ftj(crds, namespace, name) or {}
    phase = (obj.get("status") or {}).get("phase")
    return phase == "Failed" and not rayjobs(crds, namespace)


def queued_in_frankfurt(
    crds: LocalCluster, namespace: str, name: str, operator: OperatorProcess
) -> None:
    crds.apply(in_frankfurt(name, namespace))
    wait_phase(crds, namespace, name, "Queued", log=operator.log_tail)
    assert rayjobs(crds, namespace)


def wait_stopped(crds: LocalCluster, namespace: str, name: str, operator: OperatorProcess) -> None:
    wait_for(
        lambda: stopped(crds, namespace, name),
        45,
        "the job Failed and its RayJob gone",
        on_timeout=operator.log_tail,
    )


def test_a_tightened_policy_stops_the_jobs_rayjob(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    queued_in_frankfurt(crds, namespace, "fra", operator)
    # Frankfurt is no longer allowed: nothing about the job changed, only the policy.
    crds.apply(policy_for(namespace, allowedRegions=["eu-west-par"]))
    wait_stopped(crds, namespace, "fra", operator)
    obj = ftj(crds, namespace, "fra")
    assert obj is not None  # the job, and its evidence, stay
    residency = conditions(obj)["ResidencyVerified"]
    assert residency["status"] == "False"
    assert "eu-central-fra" in residency["message"]
    reasons = {e["reason"] for e in events(crds, namespace, "fra")}
    assert "Stopped" in reasons


def test_a_deleted_policy_stops_the_jobs_rayjob(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    queued_in_frankfurt(crds, namespace, "orphan", operator)
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}")
    wait_stopped(crds, namespace, "orphan", operator)


def test_a_pod_left_in_a_dropped_region_stops_the_job(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    """A job that named no regions is pinned to every allowed one; the policy then drops the
    region one of its pods already runs in. Still valid on paper, the job is not: residency is
    where the pods are."""
    crds.apply(finetunejob("anywhere", namespace))
    obj = wait_for(
        lambda: (
            (o := ftj(crds, namespace, "anywhere"))
            and (o.get("status") or {}).get("placement")
            and o
        ),
        90,
        "a pod of the job bound to a node",
        on_timeout=operator.log_tail,
    )
    dropped = obj["status"]["placement"][0]["region"]
    [kept] = [region for region in EU_REGIONS if region != dropped]
    endpoint = {"name": "scw", "url": "https://s3.fr-par.scw.cloud", "region": kept}
    crds.apply(
        policy_for(
            namespace,
            allowedRegions=[kept],
            storageEndpoints=[endpoint],
            allowedStorage=[{"scheme": "s3", "host": "eu-*", "endpoint": "scw"}],
        )
    )
    wait_for(
        lambda: stopped(crds, namespace, "anywhere"),
        45,
        "the job Failed and its RayJob gone",
        on_timeout=operator.log_tail,
    )
    residency = conditions(ftj(crds, namespace, "anywhere") or {})["ResidencyVerified"]
    assert (residency["status"], residency["reason"]) == ("False", "PodOutsideAllowedRegions")
    assert f"in {dropped}, outside" in residency["message"]
