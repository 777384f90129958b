"""Small helpers the end-to-end tests share: helm, kubectl get, and waiting with a diagnosis."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sovereign_operator.builders.podtemplate import IMAGE_UID  # must write the claim's folder
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.incluster import (
    host_path_claim,
    mlflow_server,
    mlflow_tracking_uri,
    s3_secret,
)
from sovereign_operator.devcluster.s3store import make_bucket, upload
from sovereign_operator.images.references import RUNTIME_IMAGE

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "sovereign-ai-operator"
RELEASE, SYSTEM_NAMESPACE = "sovai", "sovereign-ai-system"
FULLNAME = "sovai-sovereign-ai-operator"


def helm(cluster: LocalCluster, *args: str) -> str:
    argv = [str(cluster.binaries["helm"]), f"--kubeconfig={cluster.kubeconfig}", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def get(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return found


def diagnosis(cluster: LocalCluster, namespaces: tuple[str, ...]) -> str:
    """What a failed wait shows: the pods, the operator's log and the namespaces' events."""
    parts = []
    for namespace in (SYSTEM_NAMESPACE, *namespaces):
        for argv in (
            ("get", "pods", "-o", "wide", "-n", namespace),
            ("describe", "pods", "-n", namespace),
            ("get", "events", "--sort-by=.lastTimestamp", "-n", namespace),
        ):
            parts.append(cluster.kubectl(*argv, check=False).stdout[-6000:])
    logs = cluster.kubectl(
        "logs", f"deployment/{FULLNAME}", "-n", SYSTEM_NAMESPACE, "--tail=80", check=False
    )
    return "\n".join([*parts, logs.stdout, logs.stderr])


def wait(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    cluster: LocalCluster,
    namespaces: tuple[str, ...] = (),
    interval: float = 1.0,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"not {what} within {timeout} s\n{diagnosis(cluster, namespaces)}")


def install_operator(
    cluster: LocalCluster,
    config: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
) -> None:
    """helm install of the chart (the operator image as its Deployment), Available; with
    ``policy``'s keys set in its default policy's spec (the chart declares no place) and
    ``values``' top-level keys set too."""
    args = ["install", RELEASE, str(CHART), "-n", SYSTEM_NAMESPACE, "--create-namespace", "--wait"]
    if config:
        args += ["--set-json", f"config={json.dumps(config)}"]
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    for key, value in (policy or {}).items():
        args += ["--set-json", f"sovereigntyPolicy.spec.{key}={json.dumps(value)}"]
    helm(cluster, *args)

    def available() -> bool:
        status = get(cluster, "deployment", FULLNAME, "-n", SYSTEM_NAMESPACE).get("status", {})
        return bool(status.get("availableReplicas"))

    # Ready means its /healthz answered kubelet's probe: Kopf is up and logged in.
    wait(available, 180, "Available", cluster)


def uninstall_operator(cluster: LocalCluster) -> None:
    helm(cluster, "uninstall", RELEASE, "-n", SYSTEM_NAMESPACE, "--wait")


@contextlib.contextmanager
def port_forward(cluster: LocalCluster, namespace: str, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward` to `target` (such as svc/NAME) on loopback, as a user would run
    it (through the API server and the kubelet); yields the local port kubectl chose."""
    argv = [str(cluster.binaries["kubectl"]), f"--kubeconfig={cluster.kubeconfig}",
            "port-forward", "--address=127.0.0.1", "-n", namespace, target, f":{port}"]  # fmt: skip
    forward = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline()  # "Forwarding from 127.0.0.1:40123 -> 8265"
        found = re.search(r"127\.0\.0\.1:(\d+) ->", first)
        if found is None:
            forward.kill()
            _, stderr = forward.communicate(timeout=10)
            raise AssertionError(f"kubectl port-forward {target}: {first!r} {stderr}")
        yield int(found.group(1))
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def start_mlflow(cluster: LocalCluster, bucket: str, region: str) -> str:
    """MLflow as a Deployment in the system namespace (not waited for), its artifacts in
    ``bucket`` of the cluster's S3 store, whose keys it gets in a Secret; returns its tracking
    URI. What the platform runs beside the product."""
    store = cluster.s3_credentials
    assert store is not None, "the e2e cluster runs its S3 store"
    cluster.kubectl("create", "namespace", SYSTEM_NAMESPACE, check=False)
    make_bucket(store, bucket)
    cluster.apply(s3_secret(SYSTEM_NAMESPACE, store))
    for manifest in mlflow_server(
        SYSTEM_NAMESPACE, RUNTIME_IMAGE, [region], artifacts=(store, bucket)
    ):
        cluster.apply(manifest)
    return mlflow_tracking_uri(SYSTEM_NAMESPACE)


def small_node_config(tracking_uri: str) -> dict[str, Any]:
    """The operator's settings (chart `config`) for jobs on the real node's two cores."""
    return {
        "mlflowTrackingUri": tracking_uri,
        "headCpu": "500m",
        "headMemory": "4Gi",  # the driver, the TrainController and Ray's own daemons
        "reconcileIntervalSeconds": 2,
        "startupDeadlineSeconds": 900,
    }


def team_namespace(
    cluster: LocalCluster, namespace: str, folder: Path, *, claim: str, bucket: str
) -> None:
    """A namespace with the S3 store's keys (Secret S3_SECRET), the sample chat data at
    s3://<bucket>/data/train.jsonl, and a claim ``claim`` on ``folder`` of the node, which gets
    the tiny base model (pvc://<claim>/models/tiny): what a team has before its jobs."""
    from sovereign_training.tiny import create_tiny_model

    store = cluster.s3_credentials
    assert store is not None, "the e2e cluster runs its S3 store"
    assert cluster.real_node is not None
    create_tiny_model(folder / "models" / "tiny")
    upload(store, bucket, "data/train.jsonl",
           REPO_ROOT / "examples" / "data" / "eu-data-protection-chat.jsonl")  # fmt: skip
    for path in (folder, *folder.rglob("*")):
        os.chown(path, IMAGE_UID, IMAGE_UID)
    os.chmod(folder.parent, 0o755)
    cluster.kubectl("create", "namespace", namespace)
    cluster.apply(s3_secret(namespace, store))
    for manifest in host_path_claim(claim, namespace, str(folder), cluster.real_node.name):
        cluster.apply(manifest)
